"""Fitting and scoring one candidate: the evaluation shared by every search.

Three ways to score a candidate learner, all against ONE set of scoring
nuisances (:func:`metalearn.scoring.fit_scoring_nuisance`) per search:

* **out-of-fold** (default): ``fit_predict`` on the training rows gives
  honest out-of-fold effects, scored against scoring nuisances
  cross-fitted on the same rows;
* **validation set**: ``fit`` on the training rows, effects predicted for
  ``X_val`` and scored against scoring nuisances cross-fitted on the
  validation rows;
* **outer folds** (``cv=k``): ``fit`` on k-1 outer folds and predict the
  k-th, fold by fold (so that a trial can be pruned after any fold); the
  assembled out-of-fold effects are scored like the first way.

Scores (lower is better unless the name ends in ``_gain``): the mean over
treated variants of the R-loss, DR-loss and plug-in loss with their
constant-effect ``_baseline`` and ``_gain``; ``final_loss``, the loss the
final stage minimises computed with the learner's own nuisances (R-loss for
the R-learner, DR-loss for the DR-learner, ``nan`` otherwise); and the
losses of the learner's own nuisance models (``outcome_rmse``,
``marginal_rmse``, ``propensity_log_loss``; ``log_loss`` for class outcomes)
on the scored rows (out-of-fold, or their fold-mean prediction).
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import narwhals.stable.v2 as nw
import numpy as np

from metalearn._core.data import Data, prepare_data
from metalearn._core.tasks import make_folds
from metalearn._core.validation import control_index
from metalearn.learners.base import MetaLearner
from metalearn.learners.nuisance import Nuisance
from metalearn.scoring import LOSSES, CATEScorer, _check_design, _row_losses
from metalearn.scoring._losses import _outcome_eval, _score, resolve_metrics
from metalearn.scoring._nuisance import ScoringNuisance
from metalearn.tuning._cache import NuisanceCache, Prepared, needed_kinds

__all__ = [
    "Dataset",
    "Evaluator",
    "Outcome",
    "check_scoring",
    "make_dataset",
    "score_direction",
    "score_names",
]

_MAXIMIZE_SUFFIXES = ("_gain", "_r2", "_roc_auc", "_accuracy")


# ----------------------------------------------------------------- the data
def take_rows(X: Any, rows: np.ndarray) -> Any:
    """Rows of a pandas/Polars frame (same type) or of an array."""
    frame = nw.from_native(X, eager_only=True, pass_through=True)
    if isinstance(frame, nw.DataFrame):
        return frame[rows.tolist()].to_native()
    return np.asarray(X)[rows]


@dataclass
class Dataset:
    """The user's data of one role (training or validation), converted once."""

    X: Any
    y: Any
    w: Any
    sample_weight: Any
    propensity: Any
    data: Data

    def fit_kwargs(self) -> dict[str, Any]:
        # Group codes (not the user's labels): the same folds and data fingerprint.
        return {
            "sample_weight": self.sample_weight,
            "propensity": self.propensity,
            "groups": self.data.groups,
        }

    def take(self, rows: np.ndarray) -> Dataset:
        """The rows ``rows``, sliced from the converted data (nothing is converted again).

        The subset keeps the full data's column schema, so a category that
        occurs in one row is known to every outer fold.
        """
        d = self.data.take(rows)
        return Dataset(None, None, None, d.sample_weight, d.propensity, d)


def make_dataset(
    X: Any,
    y: Any,
    w: Any,
    *,
    sample_weight: Any,
    propensity: Any,
    classification: bool,
    role: str = "",
    groups: Any = None,
    schema: Any = None,
) -> Dataset:
    for name, value in (("X", X), ("y", y), ("w", w)):
        if value is None:
            raise ValueError(
                f"`{name}{role}` is required: a search fits and scores CATE models on rows "
                "(X, y, w)."
            )
    data = prepare_data(
        X,
        y,
        w,
        classification=classification,
        sample_weight=sample_weight,
        propensity=propensity,
        groups=groups,
        schema=schema,
    )
    return Dataset(X, y, w, sample_weight, propensity, data)


# ------------------------------------------------------------------- scores
def score_names(classification: bool) -> list[str]:
    """Every score of a candidate, in column order."""
    metrics = resolve_metrics(None, classification=classification)
    names = [f"{loss}{s}" for loss in LOSSES for s in ("", "_baseline", "_gain")]
    names.append("final_loss")
    m_out, m_e = metrics["outcome"][0], metrics["propensity"][0]
    names += [f"outcome_{m_out}", f"marginal_{m_out}", f"propensity_{m_e}"]
    return names


def score_direction(name: str) -> str:
    """``"maximize"`` for gains and accuracy-like metrics, else ``"minimize"``."""
    return "maximize" if name.endswith(_MAXIMIZE_SUFFIXES) else "minimize"


def check_scoring(scoring: Any, classification: bool, *, multi: bool) -> list[str]:
    """``scoring`` (a name, or a list of names when ``multi``) -> list of score names."""
    allowed = [n for n in score_names(classification) if not n.endswith("_baseline")]
    names = [scoring] if isinstance(scoring, str) else scoring
    if not multi and not isinstance(scoring, str):
        raise TypeError(f"`scoring` must be a score name, one of {allowed}; got {scoring!r}.")
    if not isinstance(names, Sequence) or isinstance(names, str) or len(names) == 0:
        raise ValueError(
            f"`scoring` must be a score name or a non-empty list of them; got {scoring!r}."
        )
    for name in names:
        if name not in allowed:
            raise ValueError(
                f"`scoring` names an unknown score {name!r}; use one of {allowed} (lower is "
                "better, except for the `_gain` scores)."
            )
    if len(set(names)) != len(names):
        raise ValueError(f"`scoring` lists a score twice: {list(names)}.")
    return list(names)


@dataclass
class Outcome:
    """Scores and costs of one evaluated candidate."""

    scores: dict[str, float]
    fit_time: float
    score_time: float
    nuisance_time: float
    nuisance_fits: int
    final_fits: int
    row_losses: list[dict[str, Any]] | None = None  # per-row terms (``run(keep_rows=True)``)


@dataclass
class _Split:
    fit: Dataset
    scored: Dataset | None  # None: out-of-fold effects of `fit_predict` on `fit`
    rows: np.ndarray | None = None  # outer fold: the training rows `scored` holds


@dataclass
class _Own:
    """A learner's own nuisance predictions on the scored rows."""

    mu: np.ndarray | None
    marginal: dict[int, np.ndarray]
    e: np.ndarray | None
    known: bool


def _summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in LOSSES:
        sel = [r for r in rows if r["loss"] == name]
        for suffix, col in (("", "value"), ("_baseline", "baseline"), ("_gain", "gain")):
            out[name + suffix] = float(np.mean([r[col] for r in sel]))
    return out


def _restrict(sn: ScoringNuisance, rows: np.ndarray) -> ScoringNuisance:
    return replace(
        sn,
        w=sn.w[rows],
        target=sn.target[rows],
        outcomes=sn.outcomes[rows],
        propensity=sn.propensity[rows],
        marginal={k: v[rows] for k, v in sn.marginal.items()},
        folds=sn.folds[rows],
        sample_weight=None if sn.sample_weight is None else sn.sample_weight[rows],
    )


def _pair_code(kind: str, control: int) -> int:
    _, a, b = kind.split(":")
    return int(b) if int(a) == control else int(a)


def _own_oof(est: MetaLearner, data: Data) -> _Own | None:
    nuis = getattr(est, "nuisance_", None)
    if nuis is None:
        return None
    kinds = needed_kinds(est, data, honest=True)
    c = est._control_code
    return _Own(
        mu=nuis.oof_["mu"] if "mu" in kinds else None,
        marginal={_pair_code(k, c): nuis.oof_[k] for k in kinds if k.startswith("m:")},
        e=nuis.oof_["e"] if "e" in kinds else None,
        known=nuis.models_.get("e", 0) is None,
    )


def _own_heldout(est: MetaLearner, scored: Dataset, Xa: np.ndarray) -> _Own | None:
    nuis: Nuisance | None = getattr(est, "nuisance_", None)
    if nuis is None:
        return None
    kinds = needed_kinds(est, scored.data, honest=False)
    c = est._control_code
    method = "predict_proba" if nuis.classes_ is not None else "predict"
    marginal = {
        _pair_code(k, c): nuis._mean_predict(nuis.models_[k], Xa, method)
        for k in kinds
        if k.startswith("m:")
    }
    e = None
    known = nuis.models_.get("e", 0) is None
    if "e" in kinds:
        e = scored.data.propensity if scored.data.propensity is not None else nuis.e_predict(Xa)
    return _Own(
        mu=nuis.mu_predict(Xa) if kinds & {"mu", "mu_full"} else None,
        marginal=marginal,
        e=e,
        known=known or scored.data.propensity is not None,
    )


def _final_loss(est: MetaLearner, data: Data, own: _Own, tau3: np.ndarray) -> float:
    """The final stage's own loss, asked of the learner (its ``_final_loss`` hook)."""
    loss = est._final_loss(data.target_matrix(), data.w, own, tau3, data.sample_weight)
    return float("nan") if loss is None else float(loss)


def _own_scores(
    est: MetaLearner, data: Data, own: _Own | None, tau3: np.ndarray, metrics: dict[str, Any]
) -> dict[str, float]:
    m_out, m_e = metrics["outcome"], metrics["propensity"]
    out = {
        "final_loss": float("nan"),
        f"outcome_{m_out[0]}": float("nan"),
        f"marginal_{m_out[0]}": float("nan"),
        f"propensity_{m_e[0]}": float("nan"),
    }
    if own is None:
        return out
    if own.mu is not None:
        vals = []
        for k in range(data.n_variants):
            rows = np.flatnonzero(data.w == k)
            vals.append(_outcome_eval(m_out, data, rows, own.mu[rows, k, :]))
        out[f"outcome_{m_out[0]}"] = float(np.nanmean(vals))
    if own.marginal:
        vals = []
        for k, m in own.marginal.items():
            rows = np.flatnonzero((data.w == k) | (data.w == est._control_code))
            vals.append(_outcome_eval(m_out, data, rows, m[rows]))
        out[f"marginal_{m_out[0]}"] = float(np.nanmean(vals))
    if own.e is not None and not own.known:
        out[f"propensity_{m_e[0]}"] = _score(m_e, data.w, own.e, data.sample_weight)
    out["final_loss"] = _final_loss(est, data, own, tau3)
    return out


# ---------------------------------------------------------------- evaluator
Report = Callable[[dict[str, float], int], None]


class Evaluator:
    """Fits and scores candidates of one search against one set of scoring nuisances."""

    def __init__(
        self,
        train: Dataset,
        *,
        val: Dataset | None = None,
        cv: int | None = None,
        random_state: Any = None,
        scoring_nuisance: Any = None,
        propensity_clip: float = 0.01,
        n_jobs: int | None = None,
        cache_size: int | None = None,
    ) -> None:
        if scoring_nuisance is not None and not isinstance(
            scoring_nuisance, Nuisance | ScoringNuisance
        ):
            raise TypeError(
                "`scoring_nuisance` must be a metalearn.Nuisance template or a ScoringNuisance "
                f"from `fit_scoring_nuisance`; got {type(scoring_nuisance).__name__}."
            )
        if cv is not None:
            if isinstance(cv, bool) or not isinstance(cv, int | np.integer) or cv < 2:
                raise ValueError(f"`cv` must be None or an integer >= 2; got {cv!r}.")
            if val is not None:
                raise ValueError(
                    "Pass either a validation set (`X_val`, `y_val`, `w_val`) or `cv`, not both."
                )
        self.train, self.val, self.cv = train, val, cv
        self.scored = val if val is not None else train
        self.classification = train.data.classes is not None
        self.metrics = resolve_metrics(None, classification=self.classification)
        self.propensity_clip = propensity_clip
        self.n_jobs = n_jobs
        self.cache = NuisanceCache(max_size=cache_size, n_jobs=n_jobs)
        template = scoring_nuisance if isinstance(scoring_nuisance, Nuisance) else None
        self._given_sn = scoring_nuisance if isinstance(scoring_nuisance, ScoringNuisance) else None
        self._scorer = CATEScorer("r_loss", nuisance=template, propensity_clip=propensity_clip)
        self._sn: dict[int, ScoringNuisance] = {}
        self._lock = threading.Lock()
        self.splits = self._make_splits(random_state)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def mode(self) -> str:
        return "validation" if self.val is not None else "cv" if self.cv else "oof"

    def _make_splits(self, random_state: Any) -> list[_Split]:
        if self.val is not None:
            return [_Split(self.train, self.val)]
        if self.cv is None:
            return [_Split(self.train, None)]
        d = self.train.data
        strata = d.w if d.classes is None else d.w * len(d.classes) + d.y
        what = "treatment variant" if d.classes is None else "(variant, outcome class) pair"
        seed = 0 if random_state is None else random_state
        folds = make_folds(strata, int(self.cv), seed, what=what, groups=d.groups)
        out = []
        for f in range(int(self.cv)):
            test = np.flatnonzero(folds == f)
            fit = self.train.take(np.flatnonzero(folds != f))
            out.append(_Split(fit, self.train.take(test), test))
        return out

    # -- scoring nuisances
    def control_of(self, learner: MetaLearner) -> int:
        return control_index(self.scored.data.variants, learner.control)

    def scoring(self, control: int) -> ScoringNuisance:
        """The scoring nuisances of the scored rows for a control (fitted once)."""
        with self._lock:
            if control in self._sn:
                return self._sn[control]
            sn = self._scorer.scoring_for(
                self.scored.data,
                control,
                self._given_sn,
                n_jobs=self.n_jobs,
                clip=self.propensity_clip,
            )
            self._sn[control] = sn
            return sn

    # -- candidates
    def prepare(self, learner: MetaLearner) -> list[Prepared]:
        """Fit (or find) the nuisance stage of every split: the first phase of a search."""
        return [
            self.cache.prepare(learner, s.fit.data, honest=s.scored is None) for s in self.splits
        ]

    def run(
        self,
        learner: MetaLearner,
        prepared: list[Prepared] | None = None,
        *,
        report: Report | None = None,
        adjust: Callable[[MetaLearner], Any] | None = None,
        keep_rows: bool = False,
    ) -> Outcome:
        """Fit ``learner`` on every split and score it.

        ``report(scores_so_far, step)`` is called after each outer fold but the
        last (``cv=k``); it may raise to stop (pruning). ``adjust`` is applied
        to each prepared learner before its fit (thread limits). ``keep_rows``
        keeps the per-row loss terms in the outcome (``row_losses``).
        """
        control = self.control_of(learner)
        sn = self.scoring(control)
        fit_time = score_time = nuisance_time = 0.0
        nuisance_fits = final_fits = 0
        own_parts: list[dict[str, float]] = []
        tau_all: np.ndarray | None = None
        seen: list[np.ndarray] = []
        for i, split in enumerate(self.splits):
            prep = (
                prepared[i]
                if prepared is not None
                else self.cache.prepare(learner, split.fit.data, honest=split.scored is None)
            )
            nuisance_fits += prep.nuisance_fits
            nuisance_time += prep.nuisance_time
            est = prep.learner
            if adjust is not None:
                adjust(est)
            shared = getattr(est, "nuisance", None) if est._uses_nuisance else None
            before = getattr(shared, "n_model_fits_", 0)
            fd = split.fit
            start = time.perf_counter()
            if split.scored is None:
                tau_oof = est._fit_data(fd.data, honest=True)
            else:
                est._fit_data(fd.data, honest=False)
            fit_time += time.perf_counter() - start
            extra = getattr(shared, "n_model_fits_", 0) - before
            nuisance_fits += extra
            final_fits += est.n_model_fits_ - extra
            start = time.perf_counter()
            if split.scored is None:
                data = fd.data
                assert tau_oof is not None
                tau3 = tau_oof
                own_parts.append(_own_scores(est, data, _own_oof(est, data), tau3, self.metrics))
                tau_all = tau3
            else:
                scored = split.scored
                _check_design(est, scored.data)
                tau3, Xa = _encoded_tau(est, scored)
                own = _own_heldout(est, scored, Xa)
                own_parts.append(_own_scores(est, scored.data, own, tau3, self.metrics))
                if split.rows is None:
                    tau_all = tau3
                else:
                    if tau_all is None:
                        tau_all = np.empty((self.train.data.n, *tau3.shape[1:]))
                    tau_all[split.rows] = tau3
                    seen.append(split.rows)
                    if report is not None and i < len(self.splits) - 1:
                        rows = np.sort(np.concatenate(seen))
                        partial = _summary(
                            _row_losses(tau_all[rows], _restrict(sn, rows), self.propensity_clip)
                        )
                        partial.update(_mean_scores(own_parts))
                        score_time += time.perf_counter() - start
                        report(partial, i)
                        start = time.perf_counter()
            score_time += time.perf_counter() - start
        start = time.perf_counter()
        assert tau_all is not None
        loss_rows = _row_losses(tau_all, sn, self.propensity_clip)
        scores = _summary(loss_rows)
        scores.update(_mean_scores(own_parts))
        score_time += time.perf_counter() - start
        ordered = {
            name: scores.get(name, float("nan")) for name in score_names(self.classification)
        }
        return Outcome(
            ordered,
            fit_time,
            score_time,
            nuisance_time,
            nuisance_fits,
            final_fits,
            loss_rows if keep_rows else None,
        )

    def refit(self, learner: MetaLearner) -> MetaLearner:
        """Fit ``learner`` on all training rows, sharing the cached nuisance stage.

        The returned learner keeps the parameters it was built with (as if
        ``learner.fit(X, y, w)`` had been called) and holds the fitted state
        of a fit that shares the cached nuisance.
        """
        prep = self.cache.prepare(learner, self.train.data, honest=False)
        est = prep.learner
        est._fit_data(self.train.data, honest=False)
        if est is learner:
            return learner
        params = set(learner.get_params(deep=False))
        for name, value in vars(est).items():
            if name not in params:
                setattr(learner, name, value)
        return learner


def _encoded_tau(est: MetaLearner, scored: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """A fitted learner's (n, K-1, D) effects on already converted rows, and those rows."""
    Xa = scored.data.X
    params = inspect.signature(est._predict_tau).parameters
    if "propensity" in params and scored.data.propensity is not None:
        return est._predict_tau(Xa, propensity=scored.data.propensity), Xa  # type: ignore[call-arg]
    return est._predict_tau(Xa), Xa


def _mean_scores(parts: list[dict[str, float]]) -> dict[str, float]:
    if not parts:
        return {}
    out = {}
    for name in parts[0]:
        vals = np.array([p[name] for p in parts], dtype=np.float64)
        out[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    return out


def search_evaluator(
    search: Any,
    data: tuple[Any, Any, Any, Any, Any, Any],
    val_data: tuple[Any, Any, Any, Any, Any, Any],
    *,
    classification: bool,
    n_jobs: int | None,
    cache_size: int | None = None,
) -> Evaluator:
    """The :class:`Evaluator` of a search's ``fit``: training rows and an optional validation set.

    ``data`` and ``val_data`` are ``(X, y, w, sample_weight, propensity, groups)``; the
    search supplies ``cv``, ``random_state``, ``scoring_nuisance`` and
    ``propensity_clip``.
    """
    from metalearn.tuning._report import validation_set

    X, y, w, sw, prop, groups = data
    train = make_dataset(
        X, y, w, sample_weight=sw, propensity=prop, classification=classification, groups=groups
    )
    X_val, y_val, w_val, sw_val, prop_val, groups_val = val_data
    val = None
    if validation_set(X_val, y_val, w_val):
        val = make_dataset(
            X_val,
            y_val,
            w_val,
            sample_weight=sw_val,
            propensity=prop_val,
            classification=classification,
            role="_val",
            groups=groups_val,
            schema=train.data.schema,
        )
    return Evaluator(
        train,
        val=val,
        cv=search.cv,
        random_state=search.random_state,
        scoring_nuisance=search.scoring_nuisance,
        propensity_clip=search.propensity_clip,
        n_jobs=n_jobs,
        cache_size=cache_size,
    )
