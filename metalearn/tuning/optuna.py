"""Bayesian tuning of meta-learners with Optuna, staged and resumable.

:class:`MetaLearnerOptunaSearch` runs Optuna studies over a learner's
settings and scores trials with the CATE losses of :mod:`metalearn.scoring`
against one shared set of scoring nuisances. By default it tunes in stages:

1. the nuisance models on their own losses (cross-validated RMSE or
   log-loss of the outcome model, log-loss of the propensity model): they
   are ordinary supervised problems, tuned fold by fold with pruning;
2. the final stage (and the choice of learner) on the R-loss or DR-loss,
   with the tuned nuisance settings frozen, so that every trial reuses one
   fitted nuisance stage.

Studies live in any Optuna storage: in memory by default, a journal file or
SQLite for resumable runs, PostgreSQL or MySQL for several machines. With
``load_if_exists=True`` an interrupted search resumes where it stopped and
``n_trials`` counts the finished trials of all workers together, met exactly;
trials left running by a killed worker are found by a heartbeat, failed and
run again (see :mod:`metalearn.tuning._storage`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator

from metalearn._core.tasks import available_cpus, share_threads
from metalearn.learners.base import MetaLearner
from metalearn.tuning._evaluate import (
    Evaluator,
    check_scoring,
    score_direction,
    score_names,
    search_evaluator,
)
from metalearn.tuning._params import (
    LEARNER_KEY,
    applies,
    build_candidate,
)
from metalearn.tuning._report import BestEstimatorPredictions, results_frame
from metalearn.tuning._selection import SelectionCheck, check_selection, selection_loss
from metalearn.tuning._spaces import (
    Choices,
    check_space,
    default_params,
    import_optuna,
    is_nuisance_name,
    learner_options,
    lightgbm_space,
    sample_space,
)
from metalearn.tuning._stage import NuisanceStage, outcome_mode
from metalearn.tuning._storage import (
    DROPPED_ATTR,
    ERROR_ATTR,
    TrialBudget,
    create_or_load_study,
    fit_errors,
    heartbeat_mode,
    open_storage,
)

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import FrozenTrial, Trial

__all__ = ["MetaLearnerOptunaSearch"]

_STAGES = ("outcome", "propensity", "final")


class MetaLearnerOptunaSearch(BestEstimatorPredictions, BaseEstimator):
    """Optuna tuning of a meta-learner on CATE losses: staged, resumable, distributed.

    Parameters
    ----------
    learner : learner, or dict of str to learner
        The template, or named learners to choose between (a conditional
        space: the trial picks a name under ``"learner"``).
    search_space : dict, callable or "lightgbm", default="lightgbm"
        A dict of ``set_params`` names to Optuna distributions
        (``FloatDistribution``, ``IntDistribution``,
        ``CategoricalDistribution`` of plain values). ``"learner"`` with a
        ``CategoricalDistribution`` of names (learner class names such as
        ``"DRLearner"``, built from the template's shared settings, or the
        keys of a ``learner`` dict) makes it conditional: each trial picks a
        learner, then suggests the names that apply to it. A callable
        ``space(trial) -> dict`` may suggest anything and return any values
        (whole models, a ``"learner"`` name or instance). ``"lightgbm"`` is
        :func:`lightgbm_space` of the learner(s).
    n_trials : int, default=50
        Finished (complete or pruned) trials of each study, all workers on
        the storage together, met exactly; a resumed study runs only the
        missing ones. Failed trials do not count: a trial whose fit raised
        (its error is kept in the trial's ``"error"`` user attribute), a
        trial of a killed worker, and a trial dropped because the other
        workers filled the study first are replaced by new trials. A worker
        gives up after ``n_trials`` failed trials of its own, and the search
        raises if the study then has no complete trial.
    nuisance_trials : int, optional
        Trials of each nuisance study (default: ``n_trials``).
    timeout : float, optional
        Seconds each study may run, per call of :meth:`fit`, once it holds
        ``min_trials`` finished trials. Optuna stops a study between trials,
        so a study can run over by one trial.
    min_trials : int, default=1
        Finished trials each study runs before ``timeout`` may stop it (at
        most the study's number of trials): a short budget on a slow or busy
        machine still compares that many candidates.
    scoring : str or list of str, default="r_loss"
        The score(s) minimised (``_gain`` scores maximised) by the final
        study; a list makes it multi-objective (e.g. ``["r_loss",
        "dr_loss"]``). Names as for :class:`MetaLearnerGridSearch`.
    staged : bool or "auto", default="auto"
        Tune ``outcome_model__*`` and ``propensity_model__*`` names first on
        their own cross-validated losses, then the rest with those frozen.
        ``"auto"``: staged when a dict space holds nuisance names and the
        learner has a nuisance stage. A callable space cannot be staged.
    cv : int or None, default=None
        How final-stage trials are scored without a validation set: ``None``
        scores the out-of-fold effects of ``fit_predict`` (one fit per
        trial); an integer k fits on k-1 outer folds and predicts the k-th,
        reporting after each fold so that a pruner can stop the trial.
    storage : None, str, path or optuna storage, default=None
        In memory (``None``), a database URL (``"sqlite:///tune.db"``,
        ``"postgresql://..."``), a journal file path (``"tune.log"``), or
        any ``optuna.storages`` object. A URL or path is checked and opened
        before any fitting: a directory, or a file whose directory is
        missing or not writable, raises a ``ValueError`` naming
        ``storage``. Several workers (processes or machines) may start at
        once on a fresh database or journal file.
    study_name : str, optional
        Name of the study in the storage (default ``"metalearn"``); staged
        searches use ``<name>:outcome``, ``<name>:propensity`` and
        ``<name>:final``.
    load_if_exists : bool, default=True
        Resume (and share) an existing study of that name.
    heartbeat_interval : int or None, default=60
        Seconds between the heartbeats of a running trial, by which a trial
        left running by a killed worker (``SIGKILL``, a lost machine) is
        found: once its heartbeat is ``grace_period`` seconds old, the next
        worker to look marks it failed and queues its settings again (up to
        3 times), so the study still reaches ``n_trials``. A database URL
        gets Optuna's heartbeat (``RDBStorage(url, heartbeat_interval=...,
        grace_period=..., heartbeat_stale_trial_callback=
        RetryHeartbeatStaleTrialCallback(3))``); a journal file, and any
        storage object without a heartbeat of its own, gets metalearn's
        (a ``"metalearn_heartbeat"`` user attribute of the trial, in seconds
        since the epoch: the workers' clocks must agree). An ``RDBStorage``
        object with a heartbeat keeps its own settings. ``None``: no
        heartbeat; a killed worker's trial stays running and holds its slot
        of ``n_trials``.
    grace_period : int, optional
        Seconds without a heartbeat before a running trial counts as killed
        (default ``2 * heartbeat_interval``). Make it longer than any pause a
        busy machine may impose on a worker: a live trial marked failed is
        lost.
    sampler : optuna sampler, optional
        Default: a ``TPESampler`` per study, seeded with ``random_state`` for the
        final stage and with a seed derived from it for each nuisance study.
    pruner : optuna pruner, optional
        Default: Optuna's (``MedianPruner``). Pruning acts on the fold-by-
        fold reports of the nuisance stage, and of the final stage with
        ``cv``; multi-objective studies are not pruned.
    enqueue_defaults : bool, default=True
        Run the template's own settings as the first trial of each study
        (the names of a dict space it can express; nothing for a callable),
        once: the worker that creates the study enqueues them.
    refit : bool, default=True
        Refit the best trial's learner on all training rows.
    scoring_nuisance : Nuisance or ScoringNuisance, optional
        The yardstick of the final stage, as for
        :class:`MetaLearnerGridSearch`.
    propensity_clip : float, default=0.01
        Clipping of estimated scoring propensities.
    n_jobs : int, default=1
        Trials run side by side in threads (Optuna's ``n_jobs``; ``-1``:
        one per CPU). The trials share the thread budget, the CPUs this
        process may use (the thread rule of the user guide's Parallelism
        page): each trial's fits, on the learner's own ``n_jobs`` workers,
        divide ``budget // n_jobs`` threads among themselves.
    show_progress_bar : bool, default=False
        Optuna's progress bar for each study.
    random_state : int, optional
        Seeds the default sampler, the nuisance-stage folds and the outer
        folds of ``cv``.

    Attributes
    ----------
    study_ : optuna.study.Study
        The final study (for ``optuna.visualization``).
    studies_ : dict of str to Study
        Every study run, by stage (``"outcome"``, ``"propensity"``, ``"final"``).
    nuisance_params_ : dict
        The nuisance settings frozen for the final stage.
    best_trial_ : optuna.trial.FrozenTrial
        The best final trial (multi-objective: the Pareto-optimal trial best
        on the first score).
    best_params_ : dict
        Its settings, frozen nuisance settings included (the learner choice
        under ``"learner"`` as a name).
    best_score_ : float or dict of str to float
        Its ``scoring`` value(s).
    best_estimator_ : learner
        The best learner refitted on all training rows (``refit=True``).
    results_ : frame
        One row per trial of every study: ``stage``, ``trial``, ``state``,
        ``learner``, one column per parameter, ``params``, every score,
        ``fit_time``, ``score_time``, ``nuisance_time``, ``nuisance_fits``,
        ``final_fits``, ``duration``, ``worker`` (host:pid) and ``error``
        (the error of a failed trial). Trials dropped by a race between
        workers are left out.
    scoring_ : list of str
        The scores of the final study.
    selection_ : SelectionCheck or None
        How clearly the best trial beats the constant-effect baseline and
        the runner-up trial on the first score, with paired standard errors
        (``None`` when that score is not a CATE loss); a
        ``SelectionWarning`` when it does not beat the constant effect. The
        check refits the best and the runner-up trial once more.

    See Also
    --------
    MetaLearnerGridSearch : Exhaustive search with the same scores.
    lightgbm_space : The LightGBM preset.

    References
    ----------
    .. [1] Akiba, T., Sano, S., Yanase, T., Ohta, T. and Koyama, M. (2019).
       Optuna: a next-generation hyperparameter optimization framework. KDD.
    .. [2] Nie, X. and Wager, S. (2021). Quasi-oracle estimation of
       heterogeneous treatment effects. Biometrika 108(2), 299-319.
    .. [3] Machlanski, D., Samothrakis, S. and Clarke, P. (2023).
       Hyperparameter tuning and model evaluation in causal effect
       estimation. arXiv:2303.01412.

    Examples
    --------
    >>> import optuna
    >>> import metalearn as ml
    >>> from optuna.distributions import CategoricalDistribution, FloatDistribution
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> sim = ml.datasets.simulate_nie_wager("B", n=1000, seed=0)
    >>> learner = ml.DRLearner(outcome_model=Ridge(), propensity_model=LogisticRegression(),
    ...                        effect_model=Ridge(), n_folds=3, random_state=0)
    >>> space = {
    ...     "learner": CategoricalDistribution(["RLearner", "DRLearner"]),
    ...     "outcome_model__alpha": FloatDistribution(1e-3, 1e3, log=True),
    ...     "effect_model__alpha": FloatDistribution(1e-2, 1e4, log=True),
    ... }
    >>> search = ml.MetaLearnerOptunaSearch(
    ...     learner, space, n_trials=6, random_state=0,
    ...     scoring_nuisance=ml.Nuisance(outcome_model=LinearRegression(),
    ...                                  propensity_model=LogisticRegression(),
    ...                                  n_folds=3, random_state=0),
    ... ).fit(sim.X, sim.y, sim.w)
    >>> sorted(search.studies_)
    ['final', 'outcome']
    >>> sorted(search.best_params_)
    ['effect_model__alpha', 'learner', 'outcome_model__alpha']
    >>> search.results_.filter(search.results_["stage"] == "final")["nuisance_fits"].sum() <= 9
    True
    """

    def __init__(
        self,
        learner: Any,
        search_space: Any = "lightgbm",
        *,
        n_trials: int = 50,
        nuisance_trials: int | None = None,
        timeout: float | None = None,
        min_trials: int = 1,
        scoring: str | list[str] = "r_loss",
        staged: bool | str = "auto",
        cv: int | None = None,
        storage: Any = None,
        study_name: str | None = None,
        load_if_exists: bool = True,
        heartbeat_interval: int | None = 60,
        grace_period: int | None = None,
        sampler: Any = None,
        pruner: Any = None,
        enqueue_defaults: bool = True,
        refit: bool = True,
        scoring_nuisance: Any = None,
        propensity_clip: float = 0.01,
        n_jobs: int = 1,
        show_progress_bar: bool = False,
        random_state: int | None = None,
    ) -> None:
        self.learner = learner
        self.search_space = search_space
        self.n_trials = n_trials
        self.nuisance_trials = nuisance_trials
        self.timeout = timeout
        self.min_trials = min_trials
        self.scoring = scoring
        self.staged = staged
        self.cv = cv
        self.storage = storage
        self.study_name = study_name
        self.load_if_exists = load_if_exists
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.sampler = sampler
        self.pruner = pruner
        self.enqueue_defaults = enqueue_defaults
        self.refit = refit
        self.scoring_nuisance = scoring_nuisance
        self.propensity_clip = propensity_clip
        self.n_jobs = n_jobs
        self.show_progress_bar = show_progress_bar
        self.random_state = random_state

    # ---------------------------------------------------------------- checks
    def _check_params(self) -> None:
        for name in ("n_trials", "nuisance_trials", "min_trials"):
            value = getattr(self, name)
            if value is None and name == "nuisance_trials":
                continue
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
        for name in ("heartbeat_interval", "grace_period"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(
                    f"`{name}` must be None or a positive integer (seconds); got {value!r}."
                )
        if isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, int | np.integer):
            raise ValueError(f"`n_jobs` must be an integer (-1: all cores); got {self.n_jobs!r}.")
        if self.staged not in (True, False, "auto"):
            raise ValueError(f'`staged` must be True, False or "auto"; got {self.staged!r}.')

    def _space(self, choices: Choices) -> Any:
        space = self.search_space
        if isinstance(space, str):
            if space != "lightgbm":
                raise ValueError(
                    f'`search_space` must be a dict, a callable or "lightgbm"; got {space!r}.'
                )
            targets = choices.named if choices.named is not None else choices.base
            space = lightgbm_space(targets)
            if not space:
                raise ValueError(
                    '`search_space="lightgbm"` found no LightGBM sub-model in `learner`; give '
                    "a dict of distributions for its models."
                )
            if choices.named is not None and len(choices.named) > 1:
                from optuna.distributions import CategoricalDistribution

                space = {LEARNER_KEY: CategoricalDistribution(list(choices.named)), **space}
            return space
        if callable(space) and not isinstance(space, Mapping):
            return space
        space = check_space(space, choices)
        if choices.named is not None and len(choices.named) > 1 and LEARNER_KEY not in space:
            from optuna.distributions import CategoricalDistribution

            space = {LEARNER_KEY: CategoricalDistribution(list(choices.named)), **space}
        return space

    # ---------------------------------------------------------------- studies
    def _study(self, stage: str, directions: list[str], staged: bool) -> Study:
        optuna = import_optuna()
        base = self.study_name or "metalearn"
        name = f"{base}:{stage}" if staged else base
        sampler = self.sampler
        if sampler is None:
            sampler = optuna.samplers.TPESampler(seed=_stage_seed(self.random_state, stage))
        study, created = create_or_load_study(
            self._storage_obj,
            sampler=sampler,
            pruner=self.pruner,
            study_name=name,
            directions=directions,
            load_if_exists=bool(self.load_if_exists),
        )
        self._created[stage] = created
        got = [d.name.lower() for d in study.directions]
        if got != directions:
            raise ValueError(
                f"The stored study {name!r} optimises {got} but `scoring` asks for "
                f"{directions}; use another `study_name`, or the study's own scoring."
            )
        study.set_user_attr("metalearn_stage", stage)
        return study

    def _optimize(
        self,
        study: Study,
        stage: str,
        objective: Callable[[Trial], Any],
        n_trials: int,
        defaults: Any,
    ) -> None:
        """Run ``study`` until it holds ``n_trials`` finished trials, all workers together."""
        if self.enqueue_defaults and defaults is not None and self._created.get(stage):
            study.enqueue_trial(defaults)  # the creator only: the defaults run once per study
        budget = TrialBudget(
            study,
            int(n_trials),
            mode=heartbeat_mode(self._storage_obj, self.heartbeat_interval),
            heartbeat_interval=self.heartbeat_interval,
            grace_period=self.grace_period,
            timeout=self.timeout,
            min_trials=min(int(self.min_trials), int(n_trials)),
            max_failures=int(n_trials),
        )
        budget.run(
            objective,
            # Optuna reads -1 as os.cpu_count() trial threads; the budget is the CPUs we may use.
            n_jobs=available_cpus() if int(self.n_jobs) == -1 else int(self.n_jobs),
            show_progress_bar=bool(self.show_progress_bar),
        )

    @staticmethod
    def _reporter(trial: Trial, name: str | None) -> Callable[[Any, int], None] | None:
        """Report an intermediate value (``value[name]``, or ``value`` itself for ``""``)."""
        if name is None:
            return None

        def report(value: Any, step: int) -> None:
            v = value[name] if name else value
            if not np.isfinite(v):
                return
            trial.report(float(v), step)
            if trial.should_prune():
                import optuna

                raise optuna.TrialPruned()

        return report

    # -------------------------------------------------------------------- fit
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
    ) -> MetaLearnerOptunaSearch:
        """Run (or resume) the studies, then refit the best learner.

        Parameters are those of :meth:`MetaLearnerGridSearch.fit`: training
        rows, optional known propensities, weights and cluster ``groups``, and an optional
        validation set (``X_val``, ``y_val``, ``w_val``) on which final-stage
        trials are scored (the nuisance stage always cross-validates on the
        training rows).

        Returns
        -------
        self : object
        """
        optuna = import_optuna()
        self._check_params()
        choices = Choices(self.learner)
        space = self._space(choices)
        is_dict = isinstance(space, Mapping)
        options = (
            learner_options(space, choices) if is_dict else {choices.default_name(): choices.base}
        )
        classification = {bool(lrn._classification) for lrn in options.values()}
        if len(classification) > 1:
            raise ValueError(
                "The learners of the search mix classifier and regressor outcome models; "
                "their losses are not comparable."
            )
        cls_flag = classification.pop()
        scoring = check_scoring(self.scoring, cls_flag, multi=True)
        base = choices.base
        mode = outcome_mode(base)
        nuisance_names = [n for n in space if is_dict and is_nuisance_name(n)] if is_dict else []
        staged = self.staged
        if staged == "auto":
            staged = bool(is_dict and nuisance_names and mode is not None)
        elif staged and not is_dict:
            raise ValueError(
                "`staged=True` needs a dict `search_space` (nuisance names are told apart by "
                "their `outcome_model__` / `propensity_model__` prefix); a callable space is "
                "tuned in one stage: pass `staged=False`."
            )
        elif staged and mode is None:
            raise ValueError(
                f"`staged=True` but the learner ({type(base).__name__}) has no separate "
                "nuisance stage to tune first; pass `staged=False`."
            )
        self._storage_obj = open_storage(
            self.storage,
            heartbeat_interval=self.heartbeat_interval,
            grace_period=self.grace_period,
        )
        self._created: dict[str, bool] = {}
        ev = search_evaluator(
            self,
            (X, y, w, sample_weight, propensity, groups),
            (X_val, y_val, w_val, sample_weight_val, propensity_val, groups_val),
            classification=cls_flag,
            n_jobs=None,
            cache_size=16,
        )
        applicable = _Applicable(options)
        self.studies_: dict[str, Study] = {}
        frozen: dict[str, Any] = {}
        if staged:
            assert is_dict and mode is not None
            frozen = self._nuisance_stages(space, choices, base, mode, ev.train, ev)
        final_space: Any = space
        if staged:
            final_space = {k: v for k, v in space.items() if not is_nuisance_name(k)}
        directions = [score_direction(s) for s in scoring]
        study = self._study("final", directions, bool(staged))
        self.studies_["final"] = study
        workers = int(self.n_jobs) if int(self.n_jobs) > 0 else available_cpus()
        prune_on = scoring[0] if len(scoring) == 1 and self.cv else None
        worker = f"{socket.gethostname()}:{os.getpid()}"

        def params_of(trial: Any) -> dict[str, Any]:
            if is_dict and not final_space:
                return {}
            return sample_space(trial, final_space, choices, applicable=applicable)

        def candidate(params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
            """The learner choice of ``params`` and the parameters to set on its template."""
            chosen = params.get(LEARNER_KEY, choices.default_name())
            name = chosen if isinstance(chosen, str) else type(chosen).__name__
            fixed = {k: v for k, v in frozen.items() if applicable(name, k)}
            rest = {k: v for k, v in params.items() if k != LEARNER_KEY}
            return chosen, {**fixed, **rest}

        def build(params: dict[str, Any]) -> MetaLearner:
            chosen, merged = candidate(params)
            return build_candidate(choices.get(chosen), merged, where="search_space")

        def objective(trial: Trial) -> Any:
            params = params_of(trial)
            learner = build(params)
            trial.set_user_attr("learner", type(learner).__name__)
            trial.set_user_attr("worker", worker)
            # The sampler may propose a finished trial's settings again (a learner choice with
            # nothing left to tune, a small categorical space): the fit is deterministic, so
            # the trial takes that trial's scores instead of fitting again.
            done = trial.study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
            )
            twin = next((t for t in done if t.params == trial.params), None)
            if twin is not None:
                for key, value in twin.user_attrs.items():
                    if key not in ("worker", "repeat_of"):
                        trial.set_user_attr(key, value)
                trial.set_user_attr("repeat_of", twin.number)
                return twin.values if len(twin.values) > 1 else twin.values[0]
            with fit_errors(), share_threads(workers):  # trials side by side share the threads
                out = ev.run(learner, report=self._reporter(trial, prune_on))
            trial.set_user_attr("scores", _jsonable(out.scores))
            for key in ("fit_time", "score_time", "nuisance_time"):
                trial.set_user_attr(key, float(getattr(out, key)))
            trial.set_user_attr("nuisance_fits", int(out.nuisance_fits))
            trial.set_user_attr("final_fits", int(out.final_fits))
            values = [out.scores[s] for s in scoring]
            return values if len(values) > 1 else values[0]

        defaults = None
        n_final = int(self.n_trials)
        if is_dict:
            defaults = default_params(final_space, choices) if final_space else {}
            if not final_space:
                n_final = 1  # nothing left to tune: one trial scores the tuned nuisances
        self._optimize(study, "final", objective, n_final, defaults)
        self.study_ = study
        self.scoring_ = scoring
        self.nuisance_params_ = frozen
        best = _best_trial(study, directions)
        self.best_trial_ = best
        replay = params_of(optuna.trial.FixedTrial(best.params, best.number))
        chosen_learner = replay.get(LEARNER_KEY, choices.default_name())
        chosen_name = (
            chosen_learner if isinstance(chosen_learner, str) else type(chosen_learner).__name__
        )
        fixed = {k: v for k, v in frozen.items() if applicable(chosen_name, k)}
        self.best_params_ = {**fixed, **replay}
        values = best.values
        self.best_score_ = (
            float(values[0])
            if len(scoring) == 1
            else {s: float(v) for s, v in zip(scoring, values, strict=True)}
        )
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        # Every finished trial as (learner choice, parameters): for top_candidates().
        self._trial_candidates = {
            t.number: (
                t.values[0],
                candidate(params_of(optuna.trial.FixedTrial(t.params, t.number))),
            )
            for t in complete
        }
        self.selection_ = self._check_selection(study, best, scoring[0], ev, build, params_of)
        if self.refit:
            start = time.perf_counter()
            self.best_estimator_ = ev.refit(build(replay))
            self.refit_time_ = time.perf_counter() - start
        self.scoring_nuisance_ = ev._sn.get(ev.control_of(build(replay))) if ev._sn else None
        self.results_ = self._results(cls_flag, X)
        ev.cache.clear()
        return self

    def top_candidates(self, n: int) -> list[MetaLearner]:
        """The learners of the ``n`` best complete trials of the final study, unfitted.

        Ranked by the first score; trials with the same parameters count once.

        Parameters
        ----------
        n : int
            How many; fewer when fewer trials completed.

        Returns
        -------
        list of learners
            Best first, e.g. for :meth:`metalearn.StackedLearner.from_search`.
        """
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "_trial_candidates")
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"`n` must be a positive integer; got {n!r}.")
        sign = -1.0 if score_direction(self.scoring_[0]) == "maximize" else 1.0
        ranked = sorted(
            (v for v in self._trial_candidates.values() if np.isfinite(v[0])),
            key=lambda v: sign * v[0],
        )
        choices = Choices(self.learner)
        out: list[MetaLearner] = []
        seen: list[tuple[Any, dict[str, Any]]] = []
        for _, (chosen, params) in ranked:
            if (chosen, params) in seen:
                continue
            seen.append((chosen, params))
            out.append(build_candidate(choices.get(chosen), params, where="search_space"))
            if len(out) == int(n):
                break
        return out

    def _check_selection(
        self,
        study: Study,
        best: FrozenTrial,
        scoring: str,
        ev: Evaluator,
        build: Callable[[dict[str, Any]], MetaLearner],
        params_of: Callable[[Any], dict[str, Any]],
    ) -> SelectionCheck | None:
        """The best trial against the constant effect and the runner-up (by the first score),
        on the per-row loss terms of both, refitted once more."""
        loss = selection_loss(scoring)
        if loss is None:
            return None
        optuna = import_optuna()
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        sign = -1.0 if score_direction(scoring) == "maximize" else 1.0
        rest = sorted(
            (t for t in complete if t.number != best.number and np.isfinite(t.values[0])),
            key=lambda t: sign * t.values[0],
        )

        def rows_of(trial: FrozenTrial) -> tuple[int, list[dict[str, Any]]]:
            learner = build(params_of(optuna.trial.FixedTrial(trial.params, trial.number)))
            with fit_errors():
                rows = ev.run(learner, keep_rows=True).row_losses
            assert rows is not None
            return trial.number, rows

        winner = rows_of(best)
        runner = rows_of(rest[0]) if rest else None
        return check_selection(loss, winner, runner, ev.scored.data.n, what=type(self).__name__)

    def _nuisance_stages(
        self,
        space: Mapping[str, Any],
        choices: Choices,
        base: MetaLearner,
        mode: str,
        train: Any,
        ev: Evaluator,
    ) -> dict[str, Any]:
        """Tune the outcome and propensity models; return their best settings."""
        frozen: dict[str, Any] = {}
        n_trials = int(self.nuisance_trials or self.n_trials)
        workers = int(self.n_jobs) if int(self.n_jobs) > 0 else available_cpus()
        worker = f"{socket.gethostname()}:{os.getpid()}"
        for stage, prefix, kind in (
            ("outcome", "outcome_model", mode),
            ("propensity", "propensity_model", "propensity"),
        ):
            names = {k: d for k, d in space.items() if k.split("__")[0] == prefix}
            if not names:
                continue
            # The model of the stage is that of the first learner choice that has it (with
            # learner choices T and DR, the DR-learner's propensity model).
            first = next(iter(names))
            owners = [base, *learner_options(space, choices).values()]
            owner = next((lrn for lrn in owners if applies(lrn, first)), None)
            if owner is None:
                continue
            if stage == "propensity" and train.data.propensity is not None:
                continue  # known propensities: nothing to tune
            nstage = NuisanceStage(
                train.data,
                kind,
                control=owner.control,
                n_folds=owner.n_folds,
                random_state=self.random_state if self.random_state is not None else 0,
                metrics=ev.metrics,
                n_jobs=owner.n_jobs,
            )
            metric = ev.metrics["propensity" if stage == "propensity" else "outcome"][0]
            score = f"{'marginal' if kind == 'marginal' else stage}_{metric}"
            direction = score_direction(score)
            study = self._study(stage, [direction], True)
            self.studies_[stage] = study

            def objective(
                trial: Trial,
                names: Any = names,
                nstage: Any = nstage,
                prefix: str = prefix,
                score: str = score,
                owner: MetaLearner = owner,
            ) -> float:
                params = {k: _suggest(trial, k, d) for k, d in names.items()}
                built = build_candidate(owner, params, where="search_space")
                model = built.get_params(deep=False)[prefix]
                trial.set_user_attr("worker", worker)
                trial.set_user_attr("learner", type(owner).__name__)
                start = time.perf_counter()
                with fit_errors(), share_threads(workers):  # side by side: shared threads
                    loss = nstage.loss(model, report=self._reporter(trial, ""))
                trial.set_user_attr("scores", _jsonable({score: loss}))
                trial.set_user_attr("fit_time", time.perf_counter() - start)
                return loss

            defaults = default_params(names, choices, list(names)) if names else None
            self._optimize(study, stage, objective, n_trials, defaults)
            frozen.update(_best_trial(study, [direction]).params)
        return frozen

    def _results(self, classification: bool, X: Any) -> Any:
        records = []
        param_names: list[str] = []
        cols = score_names(classification)
        for stage in _STAGES:
            study = self.studies_.get(stage)
            if study is None:
                continue
            for t in study.get_trials(deepcopy=False):
                attrs = t.user_attrs
                if DROPPED_ATTR in attrs:
                    continue  # a race between workers, not a candidate
                scores = attrs.get("scores", {})
                params = {k: v for k, v in t.params.items() if k != LEARNER_KEY}
                param_names.extend(k for k in params if k not in param_names)
                duration = t.duration.total_seconds() if t.duration is not None else None
                records.append(
                    {
                        "stage": stage,
                        "trial": t.number,
                        "state": t.state.name,
                        "learner": t.params.get(LEARNER_KEY, attrs.get("learner")),
                        "params": params,
                        **{c: _float(scores.get(c)) for c in cols},
                        "fit_time": attrs.get("fit_time"),
                        "score_time": attrs.get("score_time"),
                        "nuisance_time": attrs.get("nuisance_time"),
                        "nuisance_fits": attrs.get("nuisance_fits"),
                        "final_fits": attrs.get("final_fits"),
                        "duration": duration,
                        "worker": attrs.get("worker"),
                        "error": attrs.get(ERROR_ATTR),
                    }
                )
        return results_frame(records, param_names, X)


class _Applicable:
    """Memoised ``applies(learner_choice, name)`` (thread-safe, cheap after the first call)."""

    def __init__(self, options: dict[str, MetaLearner]) -> None:
        self.options = options
        self._memo: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()

    def __call__(self, choice: str, name: str) -> bool:
        key = (choice, name)
        with self._lock:
            if key in self._memo:
                return self._memo[key]
        learner = self.options.get(choice)
        ok = learner is not None and applies(learner, name)
        with self._lock:
            self._memo[key] = ok
        return ok


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    from metalearn.tuning._spaces import suggest

    return suggest(trial, name, dist)


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _jsonable(scores: dict[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if np.isfinite(v) else None) for k, v in scores.items()}


def _best_trial(study: Study, directions: list[str]) -> FrozenTrial:
    optuna = import_optuna()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        errors = [
            t.user_attrs[ERROR_ATTR]
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
            if ERROR_ATTR in t.user_attrs
        ]
        first = f" The first error: {errors[0]}." if errors else ""
        raise RuntimeError(
            f"The study {study.study_name!r} has no complete trial: every trial failed or was "
            f"pruned.{first} Look at the `error` user attribute of `study.trials`; fix the "
            "search space or raise `n_trials`."
        )
    if len(directions) == 1:
        return study.best_trial
    front = study.best_trials
    sign = -1.0 if directions[0] == "maximize" else 1.0
    return min(front, key=lambda t: sign * t.values[0])


def _stage_seed(random_state: Any, stage: str) -> int | None:
    """The default sampler's seed of one study: ``random_state`` for the final stage, and
    a seed derived from it and the stage's name for each nuisance study, so that studies
    whose spaces have the same shape do not propose the same values in lockstep."""
    if random_state is None or stage == "final":
        return None if random_state is None else int(random_state)
    entropy = [int(random_state) % 2**32, zlib.crc32(stage.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])
