"""Exhaustive and randomized searches over learner settings, scored on CATE losses.

Every candidate is scored against one shared set of scoring nuisances (see
:mod:`metalearn.scoring`), and candidates that share their nuisance
configuration share one fitted nuisance stage: a grid of G final-stage
settings costs one nuisance stage plus G final stages.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import FitFailedWarning

from metalearn._core import progress as _progress
from metalearn._core.tasks import n_workers, send_once
from metalearn.learners.base import MetaLearner
from metalearn.tuning._evaluate import (
    Evaluator,
    Outcome,
    check_scoring,
    score_direction,
    score_names,
    search_evaluator,
)
from metalearn.tuning._params import LEARNER_KEY, build_candidate, check_learner, limit_threads
from metalearn.tuning._report import (
    BestEstimatorPredictions,
    best_index,
    ranks,
    results_frame,
)
from metalearn.tuning._selection import SelectionCheck, check_selection, selection_loss
from metalearn.tuning._storage import describe_error

__all__ = ["MetaLearnerGridSearch", "MetaLearnerRandomizedSearch"]


def _check_error_score(error_score: Any) -> float | None:
    """``error_score`` as the score of a failed candidate (None: ``"raise"``)."""
    if isinstance(error_score, str) and error_score == "raise":
        return None
    if isinstance(error_score, bool) or not isinstance(error_score, Real):
        raise ValueError(
            f'`error_score` must be "raise" or a number (the score of a candidate whose fit '
            f"fails, e.g. np.nan); got {error_score!r}."
        )
    return float(error_score)


def _check_grid(grid: Any, name: str, *, distributions: bool) -> list[dict[str, Any]]:
    """``grid`` (a dict or a list of dicts) checked value by value."""
    dicts = [grid] if isinstance(grid, Mapping) else grid
    if not isinstance(dicts, Sequence) or isinstance(dicts, str):
        raise TypeError(
            f"`{name}` must be a dict of parameter names to lists of values, or a list of "
            f"such dicts; got {type(grid).__name__}."
        )
    if len(dicts) == 0:
        raise ValueError(
            f"`{name}` is empty: give at least one dict of parameter names to lists of values."
        )
    out = []
    for i, d in enumerate(dicts):
        where = name if isinstance(grid, Mapping) else f"{name}[{i}]"
        if not isinstance(d, Mapping):
            raise TypeError(f"`{where}` must be a dict; got {type(d).__name__}.")
        for key, values in d.items():
            if not isinstance(key, str):
                raise TypeError(f"`{where}` keys must be parameter names (str); got {key!r}.")
            if distributions and hasattr(values, "rvs"):
                continue
            if isinstance(values, str) or not isinstance(values, Sequence | np.ndarray):
                kind = (
                    "list of values or a distribution with `rvs`"
                    if distributions
                    else ("list of values")
                )
                raise TypeError(
                    f"`{where}[{key!r}]` must be a non-empty {kind}; got {values!r}. Wrap a "
                    f"single value in a list: [{values!r}]."
                )
            if len(values) == 0:
                raise ValueError(
                    f"`{where}[{key!r}]` is an empty list: give at least one value for "
                    f"parameter {key!r}, or leave it out."
                )
            if key == LEARNER_KEY:
                for v in values:
                    check_learner(v, f"{where}['learner']")
        out.append(dict(d))
    return out


class _BaseSearch(BestEstimatorPredictions, BaseEstimator):
    """Shared fit logic of the grid and randomized searches."""

    _space_name = "param_grid"

    def _candidates(self) -> list[dict[str, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(
        self,
        X: Any,
        y: Any,
        w: Any = None,
        *,
        sample_weight: Any = None,
        propensity: Any = None,
        X_val: Any = None,
        y_val: Any = None,
        w_val: Any = None,
        sample_weight_val: Any = None,
        propensity_val: Any = None,
        groups: Any = None,
        groups_val: Any = None,
    ) -> _BaseSearch:
        """Fit and score every candidate; pick the best; refit it.

        Parameters
        ----------
        X : frame or array-like of shape (n_samples, n_features)
            Training features.
        y : array-like of shape (n_samples,)
            Training outcomes.
        w : array-like of shape (n_samples,)
            Treatment variant of each training row.
        sample_weight : array-like of shape (n_samples,), optional
            Row weights, for the fits and the scores.
        propensity : float or array-like, optional
            Known propensities of the training rows (randomized designs).
        X_val, y_val, w_val : optional
            A validation set: candidates are fitted on the training rows and
            scored on these. Without it, candidates are scored by
            cross-fitting on the training rows (see ``cv``).
        sample_weight_val, propensity_val : optional
            Weights and known propensities of the validation rows.
        groups, groups_val : array-like, optional
            Cluster labels of the training (and validation) rows: every
            cross-fitting and scoring split keeps each group in one fold, and
            the candidates are fitted with ``groups``.

        Returns
        -------
        self : object
        """
        from sklearn.utils.parallel import Parallel, delayed

        template = check_learner(self.learner)
        error_score = _check_error_score(self.error_score)
        catch = error_score is not None
        params = self._candidates()
        learners = [build_candidate(template, p, where=self._space_name) for p in params]
        kinds = {bool(lrn._classification) for lrn in learners}
        if len(kinds) > 1:
            raise ValueError(
                f"The candidates of `{self._space_name}` mix classifier and regressor outcome "
                "models; their losses are not comparable. Search one outcome type at a time."
            )
        classification = kinds.pop()
        scoring = check_scoring(self.scoring, classification, multi=False)[0]
        ev = search_evaluator(
            self,
            (X, y, w, sample_weight, propensity, groups),
            (X_val, y_val, w_val, sample_weight_val, propensity_val, groups_val),
            classification=classification,
            n_jobs=self.n_jobs,
        )
        for lrn in learners:
            ev.scoring(ev.control_of(lrn))
        errors: list[str | None] = [None] * len(learners)
        prepared: list[Any] = []
        for i, lrn in enumerate(_progress.candidates(learners)):  # phase 1: nuisance stages
            try:
                prepared.append(ev.prepare(lrn))
            except Exception as exc:
                if not catch:
                    raise
                errors[i] = describe_error(exc)
                prepared.append(None)
        workers = n_workers(self.n_jobs)
        items = list(zip(learners, prepared, strict=True))
        if workers > 1 and len(items) > 1:  # phase 2: final stages, side by side
            n_chunks = min(len(items), 4 * workers)
            chunks = [items[i::n_chunks] for i in range(n_chunks)]
            shared_ev = send_once(ev)  # the training data: to a Dask cluster once, not per chunk
            done = Parallel(n_jobs=self.n_jobs)(
                delayed(_run_chunk)(shared_ev, chunk, workers, catch) for chunk in chunks
            )
            outcomes: list[Outcome | str | None] = [None] * len(items)
            for i, chunk_out in enumerate(done):
                outcomes[i::n_chunks] = chunk_out
        else:
            outcomes = [_run_chunk(ev, [it], 1, catch)[0] for it in _progress.candidates(items)]
        for i, out in enumerate(outcomes):
            if isinstance(out, str):
                errors[i] = out
        failed = [i for i, e in enumerate(errors) if e is not None]
        if failed and len(failed) == len(params):
            first = failed[0]
            raise ValueError(
                f"All {len(params)} candidates of `{self._space_name}` failed to fit, so none "
                f"can be picked. The first, {_params_text(params[first])}, raised "
                f"{errors[first]}. Pass error_score='raise' to see the traceback."
            )
        for i in failed:
            warnings.warn(
                f"Candidate {i} of `{self._space_name}`, {_params_text(params[i])}, failed to fit "
                f"and scores {error_score}: {errors[i]}",
                FitFailedWarning,
                stacklevel=2,
            )
        all_scores = score_names(classification)
        records: list[dict[str, Any]] = []
        names: list[str] = []
        for i, (p, lrn, out) in enumerate(zip(params, learners, outcomes, strict=True)):
            names.extend(k for k in p if k != LEARNER_KEY and k not in names)
            record: dict[str, Any] = {
                "candidate": i,
                "learner": type(lrn).__name__,
                "params": {k: v for k, v in p.items() if k != LEARNER_KEY},
            }
            if isinstance(out, Outcome):
                record.update(out.scores)
                costs: dict[str, Any] = {
                    "fit_time": out.fit_time,
                    "score_time": out.score_time,
                    "nuisance_time": out.nuisance_time,
                    "nuisance_fits": out.nuisance_fits,
                    "final_fits": out.final_fits,
                }
            else:  # failed: every score is `error_score`, the costs are unknown
                record.update(dict.fromkeys(all_scores, error_score))
                costs = dict.fromkeys(
                    ("fit_time", "score_time", "nuisance_time", "nuisance_fits", "final_fits")
                )
            record.update(costs)
            record["error"] = errors[i]
            records.append(record)
        # A failed candidate is never picked, whatever its `error_score`.
        values = [np.nan if errors[i] is not None else r[scoring] for i, r in enumerate(records)]
        direction = score_direction(scoring)
        for r, rank in zip(records, ranks(values, direction), strict=True):
            r["rank"] = int(rank)
        self.results_ = results_frame(records, names, X)
        self.best_index_ = best_index(values, direction)
        self.best_params_ = params[self.best_index_]
        self._candidate_params = params  # for StackedLearner.from_search
        self.best_score_ = float(values[self.best_index_])
        self.scoring_ = scoring
        self.n_candidates_ = len(params)
        fitted = [o for o in outcomes if isinstance(o, Outcome)]
        self.n_nuisance_fits_ = int(sum(o.nuisance_fits for o in fitted))
        self.n_final_fits_ = int(sum(o.final_fits for o in fitted))
        best = learners[self.best_index_]
        self.scoring_nuisance_ = ev.scoring(ev.control_of(best))
        self.selection_ = self._check_selection(ev, learners, prepared, values, direction)
        self.nuisance_cache_info_ = {
            "configurations": len(ev.cache),
            "hits": ev.cache.hits,
            "misses": ev.cache.misses,
            "fits": ev.cache.n_model_fits,
        }
        if self.refit:
            import time

            start = time.perf_counter()
            self.best_estimator_ = ev.refit(build_candidate(template, self.best_params_))
            self.refit_time_ = time.perf_counter() - start
        ev.cache.clear()
        return self

    def top_candidates(self, n: int) -> list[MetaLearner]:
        """The ``n`` best candidates (by rank; failed ones never), as unfitted learners.

        Parameters
        ----------
        n : int
            How many; fewer when fewer candidates scored.

        Returns
        -------
        list of learners
            Built from the search's template and each candidate's parameters,
            best first, e.g. for :meth:`metalearn.StackedLearner.from_search`.
        """
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "results_")
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"`n` must be a positive integer; got {n!r}.")
        ranked = np.argsort(np.asarray(self.results_["rank"]), kind="stable")
        errors = list(self.results_["error"])
        keep = [int(i) for i in ranked if errors[int(i)] is None][: int(n)]
        template = check_learner(self.learner)
        return [
            build_candidate(template, self._candidate_params[i], where=self._space_name)
            for i in keep
        ]

    def _check_selection(
        self,
        ev: Evaluator,
        learners: list[MetaLearner],
        prepared: list[Any],
        values: list[float],
        direction: str,
    ) -> SelectionCheck | None:
        """The pick against the constant effect and the runner-up, on the per-row loss terms
        of both (refitted once more from their prepared nuisance stages)."""
        loss = selection_loss(self.scoring_)
        if loss is None:
            return None
        key = np.asarray(values, dtype=np.float64)
        key = -key if direction == "maximize" else key
        key[~np.isfinite(key)] = np.inf
        key[self.best_index_] = np.inf
        i = self.best_index_
        j = int(np.argmin(key)) if np.isfinite(key).any() else None
        if j is not None and ev.control_of(learners[j]) != ev.control_of(learners[i]):
            j = None  # another control: its losses compare other effects
        winner = (i, self._rows_of(ev, learners[i], prepared[i]))
        runner = None if j is None else (j, self._rows_of(ev, learners[j], prepared[j]))
        return check_selection(
            loss, winner, runner, ev.scored.data.n, what=f"{type(self).__name__}"
        )

    @staticmethod
    def _rows_of(ev: Evaluator, learner: MetaLearner, prep: Any) -> list[dict[str, Any]]:
        rows = ev.run(learner, prep, keep_rows=True).row_losses
        assert rows is not None
        return rows


def _run_chunk(
    ev: Evaluator, items: list[tuple[MetaLearner, Any]], workers: int, catch: bool
) -> list[Outcome | str | None]:
    """The outcome of each candidate; with ``catch``, the error text of one that fails.

    ``None`` for a candidate whose nuisance stage already failed (no ``prep``).
    """

    def adjust(est: MetaLearner) -> None:
        limit_threads(est, workers)

    out: list[Outcome | str | None] = []
    for lrn, prep in items:
        if prep is None:
            out.append(None)
            continue
        try:
            out.append(ev.run(lrn, prep, adjust=adjust if workers > 1 else None))
        except Exception as exc:
            if not catch:
                raise
            out.append(describe_error(exc))
    return out


def _params_text(params: dict[str, Any]) -> str:
    from metalearn.tuning._params import short_repr

    shown = {k: short_repr(v) for k, v in params.items()}
    return repr(shown) if shown else "the template's own settings"


_SHARED_DOC = """
    scoring : str, default="r_loss"
        The score that picks the best candidate: ``"r_loss"``, ``"dr_loss"``,
        ``"plugin"`` (CATE losses against the shared scoring nuisances; lower
        is better), their ``"_gain"`` over the constant effect (higher is
        better), ``"final_loss"`` (the final stage's own loss: R-/DR-learners)
        or a nuisance loss such as ``"outcome_rmse"``, ``"marginal_rmse"``,
        ``"propensity_log_loss"``. Every score is in ``results_``.
    refit : bool, default=True
        Refit the best candidate on all training rows as ``best_estimator_``
        (sharing the cached nuisance stage, so no nuisance model is refitted).
    cv : int or None, default=None
        Without a validation set: ``None`` scores the honest out-of-fold
        effects of ``fit_predict`` (one fit per candidate); an integer k fits
        each candidate on k-1 outer folds and predicts the k-th, k times.
    scoring_nuisance : Nuisance or ScoringNuisance, optional
        The yardstick: a :class:`~metalearn.Nuisance` template cross-fitted
        on the scored rows, or a :class:`~metalearn.scoring.ScoringNuisance`
        already fitted on them. Default: that of
        :func:`metalearn.scoring.fit_scoring_nuisance` (LightGBM, 5 folds).
    propensity_clip : float, default=0.01
        Clipping of estimated scoring propensities.
    n_jobs : int, default=None
        Joblib workers: the flat batch of each nuisance stage, then the
        candidates' final stages side by side. The candidates share the
        thread budget, the CPUs this process may use (the thread rule of the
        user guide's Parallelism page): every-core base models get
        ``budget // n_jobs`` threads, divided again among the learner's own
        ``n_jobs`` workers.
    error_score : "raise" or float, default=np.nan
        The score of a candidate whose fit raises (its nuisance stage or its
        final stage): the search warns (``FitFailedWarning``, naming the
        candidate's parameters and the error), records the error in the
        ``error`` column of ``results_`` and goes on; a failed candidate is
        never picked, whatever the value. If every candidate fails the
        search raises a ``ValueError``. ``"raise"`` lets the first error
        through, stopping the search.
    random_state : int, default=None
        Seeds the outer folds (``cv``)"""


class MetaLearnerGridSearch(_BaseSearch):
    __doc__ = f"""Exhaustive search over learner settings, scored on CATE losses.

    Each candidate is the ``learner`` with one combination of ``param_grid``
    set (nested names such as ``effect_model__max_depth``, whole sub-models
    such as ``outcome_model``, and the whole learner under ``"learner"``).
    Candidates are scored against one shared set of scoring nuisances, on a
    validation set or by cross-fitting, and candidates that share their
    nuisance configuration (outcome and propensity models, ``n_folds``,
    ``random_state``, outcome pooling) share one fitted nuisance stage.

    Parameters
    ----------
    learner : learner
        The template: an S-, T-, X-, R- or DR-learner (not fitted).
    param_grid : dict or list of dicts
        Parameter names (as in ``learner.set_params``) to non-empty lists of
        values; a list of dicts searches the union of their grids. The key
        ``"learner"`` takes a list of learners, to search several learner
        types at once (the other names then apply to each of them). A
        sub-model left at ``None`` gets its default LightGBM model when a
        nested name reaches into it.{_SHARED_DOC}.

    Attributes
    ----------
    results_ : frame
        One row per candidate: ``candidate``, ``learner``, one column per
        searched parameter, ``params``, every score (``r_loss``,
        ``r_loss_baseline``, ``r_loss_gain``, the same for ``dr_loss`` and
        ``plugin``, ``final_loss``, the nuisance losses), ``fit_time``,
        ``score_time``, ``nuisance_time``, ``nuisance_fits``,
        ``final_fits`` (base-model fits made for it), ``error`` (the error
        of a failed candidate, else None) and ``rank``. A pandas frame when
        ``X`` is one, else Polars.
    best_index_ : int
        Row of the best candidate.
    best_params_ : dict
        Its parameters.
    best_score_ : float
        Its value of the ``scoring`` score.
    best_estimator_ : learner
        The best candidate refitted on all training rows (``refit=True``).
        It holds the parameters of the candidate, and a fitted nuisance stage
        shared with the search.
    scoring_ : str
        The score that picked it.
    scoring_nuisance_ : ScoringNuisance
        The yardstick the candidates were scored against.
    n_candidates_, n_nuisance_fits_, n_final_fits_ : int
        Candidates, and base-model fits of nuisance and final stages in all.
    nuisance_cache_info_ : dict
        Nuisance configurations fitted, cache hits and misses, fits.
    selection_ : SelectionCheck or None
        How clearly the pick beats the constant-effect baseline and the
        runner-up on the picking loss, with paired standard errors (see
        :mod:`metalearn.tuning._selection`; ``None`` when ``scoring`` is not a
        CATE loss). The search warns (``SelectionWarning``) when the pick does
        not beat the constant effect. The check refits the pick and the
        runner-up once more on their fitted nuisance stages.
    refit_time_ : float
        Seconds to refit the best candidate.

    See Also
    --------
    MetaLearnerRandomizedSearch : Random draws from the grid or distributions.
    MetaLearnerOptunaSearch : Staged Bayesian tuning with Optuna.
    metalearn.scoring.make_cate_scorer : A scorer for scikit-learn's own searches.

    References
    ----------
    .. [1] Nie, X. and Wager, S. (2021). Quasi-oracle estimation of
       heterogeneous treatment effects. Biometrika 108(2), 299-319.
    .. [2] Saito, Y. and Yasui, S. (2020). Counterfactual cross-validation:
       stable model selection procedure for causal inference models. ICML.
    .. [3] Machlanski, D., Samothrakis, S. and Clarke, P. (2023).
       Hyperparameter tuning and model evaluation in causal effect
       estimation. arXiv:2303.01412.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    >>> sim = ml.datasets.simulate_nie_wager("B", n=1000, seed=0)
    >>> learner = ml.DRLearner(outcome_model=LinearRegression(),
    ...                        propensity_model=LogisticRegression(),
    ...                        effect_model=Ridge(), n_folds=3, random_state=0)
    >>> yardstick = ml.Nuisance(outcome_model=LinearRegression(),
    ...                         propensity_model=LogisticRegression(), n_folds=3,
    ...                         random_state=0)
    >>> search = ml.MetaLearnerGridSearch(
    ...     learner, {{"effect_model__alpha": [0.1, 100.0, 1e5]}}, scoring="dr_loss",
    ...     scoring_nuisance=yardstick).fit(sim.X, sim.y, sim.w)
    >>> search.best_params_
    {{'effect_model__alpha': 0.1}}
    >>> search.results_["nuisance_fits"].to_list()  # one nuisance stage for all three
    [6, 0, 0]
    >>> search.predict(sim.X[:2]).shape
    (2,)
    """

    def __init__(
        self,
        learner: Any,
        param_grid: Any,
        *,
        scoring: str = "r_loss",
        refit: bool = True,
        cv: int | None = None,
        scoring_nuisance: Any = None,
        propensity_clip: float = 0.01,
        n_jobs: int | None = None,
        error_score: Any = np.nan,
        random_state: int | None = None,
    ) -> None:
        self.learner = learner
        self.param_grid = param_grid
        self.scoring = scoring
        self.refit = refit
        self.cv = cv
        self.scoring_nuisance = scoring_nuisance
        self.propensity_clip = propensity_clip
        self.n_jobs = n_jobs
        self.error_score = error_score
        self.random_state = random_state

    def _candidates(self) -> list[dict[str, Any]]:
        from sklearn.model_selection import ParameterGrid

        grid = _check_grid(self.param_grid, "param_grid", distributions=False)
        return [dict(p) for p in ParameterGrid(grid)]


class MetaLearnerRandomizedSearch(_BaseSearch):
    __doc__ = f"""Randomized search over learner settings, scored on CATE losses.

    Like :class:`MetaLearnerGridSearch`, with ``n_iter`` candidates drawn
    from ``param_distributions``: lists are sampled uniformly, objects with
    an ``rvs`` method (``scipy.stats`` distributions) are sampled from.
    Candidates that draw the same nuisance configuration share its fit.

    Parameters
    ----------
    learner : learner
        The template: an S-, T-, X-, R- or DR-learner (not fitted).
    param_distributions : dict or list of dicts
        Parameter names to non-empty lists or distributions; with a list
        of dicts each draw first picks a dict. ``"learner"`` takes a list of
        learners.
    n_iter : int, default=10
        Number of candidates drawn (fewer if a grid of lists is smaller).{_SHARED_DOC}
        and the draws (a seed makes them reproducible).

    Attributes
    ----------
    results_, best_index_, best_params_, best_score_, best_estimator_
        As in :class:`MetaLearnerGridSearch`.
    scoring_, scoring_nuisance_, n_candidates_, n_nuisance_fits_, n_final_fits_
        As in :class:`MetaLearnerGridSearch`.
    nuisance_cache_info_, refit_time_, selection_
        As in :class:`MetaLearnerGridSearch`.

    See Also
    --------
    MetaLearnerGridSearch : Every combination of a grid.

    References
    ----------
    .. [1] Bergstra, J. and Bengio, Y. (2012). Random search for
       hyper-parameter optimization. JMLR 13, 281-305.

    Examples
    --------
    >>> import metalearn as ml
    >>> from scipy.stats import loguniform
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    >>> from metalearn.tuning import MetaLearnerRandomizedSearch
    >>> sim = ml.datasets.simulate_nie_wager("B", n=1000, seed=0)
    >>> learner = ml.RLearner(outcome_model=LinearRegression(),
    ...                       propensity_model=LogisticRegression(),
    ...                       effect_model=Ridge(), n_folds=3, random_state=0)
    >>> search = MetaLearnerRandomizedSearch(
    ...     learner, {{"effect_model__alpha": loguniform(1e-2, 1e4)}}, n_iter=4,
    ...     random_state=0, scoring_nuisance=ml.Nuisance(
    ...         outcome_model=LinearRegression(), propensity_model=LogisticRegression(),
    ...         n_folds=3, random_state=0)).fit(sim.X, sim.y, sim.w)
    >>> search.results_.height, search.n_nuisance_fits_  # one nuisance stage
    (4, 6)
    """

    _space_name = "param_distributions"

    def __init__(
        self,
        learner: Any,
        param_distributions: Any,
        *,
        n_iter: int = 10,
        scoring: str = "r_loss",
        refit: bool = True,
        cv: int | None = None,
        scoring_nuisance: Any = None,
        propensity_clip: float = 0.01,
        n_jobs: int | None = None,
        error_score: Any = np.nan,
        random_state: int | None = None,
    ) -> None:
        self.learner = learner
        self.param_distributions = param_distributions
        self.n_iter = n_iter
        self.scoring = scoring
        self.refit = refit
        self.cv = cv
        self.scoring_nuisance = scoring_nuisance
        self.propensity_clip = propensity_clip
        self.n_jobs = n_jobs
        self.error_score = error_score
        self.random_state = random_state

    def _candidates(self) -> list[dict[str, Any]]:
        import warnings

        from sklearn.model_selection import ParameterSampler

        if isinstance(self.n_iter, bool) or not isinstance(self.n_iter, int | np.integer):
            raise TypeError(f"`n_iter` must be a positive integer; got {self.n_iter!r}.")
        if self.n_iter < 1:
            raise ValueError(f"`n_iter` must be a positive integer; got {self.n_iter!r}.")
        dists = _check_grid(self.param_distributions, "param_distributions", distributions=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The total space of parameters")
            sampler = ParameterSampler(dists, int(self.n_iter), random_state=self.random_state)
            return [dict(p) for p in sampler]
