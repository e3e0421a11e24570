r"""One call that picks a CATE learner and its settings: :func:`auto_cate`.

A preset of :class:`~metalearn.MetaLearnerOptunaSearch` over several
learners, their LightGBM models and settings, staged so that the budget goes
where it pays:

1. the outcome and the propensity models are tuned first, each on its own
   cross-validated loss (two small studies);
2. with those frozen, one study picks the learner (R, X, DR, T by default)
   and its final-stage settings on a CATE loss (the R-loss by default),
   scored against one shared, cross-fitted yardstick. With ``cv`` the
   trials are scored on outer folds and reported after each, and a
   successive-halving pruner stops unpromising ones early;
3. the best few learners are stacked
   (:class:`~metalearn.StackedLearner`, weights fitted on the same loss)
   and the stack replaces the single pick unless the pick is clearly
   better: its loss lower by more than two paired standard errors. The
   pick's loss is the best of many trials on the same rows, so it is
   biased low (the winner's curse), while the stack's weights are
   cross-fitted; a tie goes to the stack.

The result, :class:`AutoCATE`, holds the fitted learner, the search, the
stack, what was tried (``trials``, ``summary()``, ``plot()``) and the
search's selection check (does the pick beat a constant effect?).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone

from metalearn._core.defaults import default_classifier, default_regressor
from metalearn._core.results import TableResult, frame_rows
from metalearn.learners.base import MetaLearner, learner_registry
from metalearn.learners.stack import StackedLearner
from metalearn.tuning._selection import (
    SelectionCheck,
    constant_gain,
    paired_lead,
    selection_loss,
)
from metalearn.tuning.optuna import MetaLearnerOptunaSearch

__all__ = ["AutoCATE", "auto_cate"]

#: Share of ``time_budget`` each of the three studies may use; the refit of the pick and
#: the stack come after them.
STUDY_SHARE = 0.22


@dataclass(frozen=True, repr=False, eq=False)
class AutoCATE(TableResult):
    """What :func:`auto_cate` chose, and what it tried.

    Attributes
    ----------
    learner : fitted learner
        The choice, refitted on all rows: the best single learner of the
        search, the stack of the best ones, or the constant-effect learner
        when neither clearly beats a constant effect (``constant_fallback``).
    choice : str
        ``"stack"``, ``"constant"`` or the class name of the single learner.
    loss : str
        The CATE loss that decided.
    single_loss, stack_loss : float
        The out-of-fold loss of the best single learner and of the stack
        (NaN without a stack), both against the search's yardstick.
    stack_lead, stack_lead_std_error : float
        ``single_loss - stack_loss`` from the same rows and its paired
        standard error (NaN without a stack).
    search : MetaLearnerOptunaSearch
        The fitted search (its ``results_``, ``studies_``, ``selection_``).
    stack : StackedLearner or None
        The fitted stack.
    selection : SelectionCheck or None
        The search's check of its pick against a constant effect and the
        runner-up.
    constant_gain, constant_gain_std_error : float
        The loss of the best constant effect minus that of the stack or
        single pick that won (positive: it does better than the constant),
        and its paired standard error, from the same rows.
    constant : fitted learner or None
        The constant-effect learner, when it was fitted (the choice did not
        clearly beat the constant, and ``constant_fallback``).

    Examples
    --------
    >>> import warnings
    >>> import metalearn as ml
    >>> sim = ml.datasets.simulate_nie_wager("B", n=600, seed=0)
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     auto = ml.auto_cate(sim.X, sim.y, sim.w, n_trials=3, nuisance_trials=2,
    ...                         learners=["T", "DR"], stack=0, n_folds=2, random_state=0)
    >>> auto.stack is None, auto.choice in ("TLearner", "DRLearner", "constant")
    (True, True)
    >>> int(auto.summary()["chosen"].sum())
    1
    """

    learner: Any
    choice: str
    loss: str
    single_loss: float
    stack_loss: float
    stack_lead: float
    stack_lead_std_error: float
    search: Any
    stack: Any
    selection: SelectionCheck | None
    constant_gain: float = float("nan")
    constant_gain_std_error: float = float("nan")
    constant: Any = None

    @property
    def trials(self) -> Any:
        """One row per trial of every study (the search's ``results_``)."""
        return self.search.results_

    def predict(self, X: Any) -> np.ndarray:
        """The chosen learner's CATE estimates for ``X`` (see ``learner.predict``)."""
        return np.asarray(self.learner.predict(X))

    def _summary_rows(self) -> list[dict[str, Any]]:
        rows = []
        for r in frame_rows(self.search.results_):
            if r.get("stage") != "final" or r.get("state") != "COMPLETE":
                continue
            rows.append(
                {
                    "candidate": f"trial {r['trial']}",
                    "learner": r.get("learner"),
                    self.loss: r.get(self.loss),
                    "chosen": False,
                }
            )
        best = self.search.best_trial_.number
        for row in rows:
            row["chosen"] = self.choice not in ("stack", "constant") and (
                row["candidate"] == f"trial {best}"
            )
        if self.stack is not None:
            names = ", ".join(type(lrn).__name__ for lrn in self.stack.learners_)
            rows.append(
                {
                    "candidate": "stack",
                    "learner": f"StackedLearner({names})",
                    self.loss: self.stack_loss,
                    "chosen": self.choice == "stack",
                }
            )
        if self.constant is not None:
            rows.append(
                {
                    "candidate": "constant",
                    "learner": f"{type(self.constant).__name__}(effect_model=DummyRegressor())",
                    self.loss: self.selection.constant_loss if self.selection else float("nan"),
                    "chosen": self.choice == "constant",
                }
            )
        return rows

    def __repr__(self) -> str:
        return (
            f"AutoCATE(choice={self.choice!r}, {self.loss}: single {self.single_loss:.4g}, "
            f"stack {self.stack_loss:.4g}, {len(self._summary_rows())} candidates)"
        )

    def plot(self, *, ax: Any = None) -> Any:
        """The loss of every final-stage trial by learner, with the stack and the constant effect.

        Parameters
        ----------
        ax : matplotlib Axes, optional

        Returns
        -------
        matplotlib Axes
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4))
        rows = [r for r in self._summary_rows() if r["candidate"] not in ("stack", "constant")]
        learners = sorted({str(r["learner"]) for r in rows})
        for name in learners:
            mine = [(i, r[self.loss]) for i, r in enumerate(rows) if str(r["learner"]) == name]
            ax.scatter([i for i, _ in mine], [v for _, v in mine], label=name, s=18)
        if self.stack is not None and np.isfinite(self.stack_loss):
            ax.axhline(self.stack_loss, color="black", lw=1, label="stack")
        if self.selection is not None:
            ax.axhline(
                self.selection.constant_loss, color="grey", ls="--", lw=1, label="constant effect"
            )
        ax.set_xlabel("trial of the final study")
        ax.set_ylabel(f"{self.loss} (lower is better)")
        ax.legend(fontsize="small")
        return ax


def _learner_templates(
    learners: Any, n_folds: int, n_jobs: int | None, random_state: int | None
) -> dict[str, MetaLearner]:
    registry = learner_registry()
    if isinstance(learners, str) or not learners:
        raise ValueError(
            f"`learners` must be a non-empty list of learner names {list(registry)} or learners; "
            f"got {learners!r}."
        )
    out: dict[str, MetaLearner] = {}
    for item in learners:
        if isinstance(item, MetaLearner):
            out[type(item).__name__] = clone(item)
            continue
        cls = registry.get(str(item))
        if cls is None:
            raise ValueError(
                f"Unknown learner {item!r} in `learners`; use names of {list(registry)}."
            )
        params = {"random_state": random_state, "n_jobs": n_jobs, "n_folds": n_folds}
        accepted = cls().get_params(deep=False)
        out[str(item)] = cls(**{k: v for k, v in params.items() if k in accepted})
    return out


def _tuned(template: Any, frozen: dict[str, Any], prefix: str) -> Any:
    """``template`` with the tuned ``<prefix>__*`` settings of the nuisance studies."""
    params = {k.split("__", 1)[1]: v for k, v in frozen.items() if k.startswith(prefix + "__")}
    return clone(template).set_params(**params) if params else clone(template)


def _tuned_nuisance(search: Any) -> dict[str, Any]:
    """The default outcome and propensity models with the nuisance studies' settings."""
    frozen = search.nuisance_params_
    classification = search.best_estimator_._classification
    outcome = default_classifier() if classification else default_regressor()
    return {
        "outcome_model": _tuned(outcome, frozen, "outcome_model"),
        "propensity_model": _tuned(default_classifier(), frozen, "propensity_model"),
    }


def auto_cate(
    X: Any,
    y: Any,
    w: Any = None,
    *,
    time_budget: float | None = None,
    n_trials: int = 30,
    nuisance_trials: int = 15,
    learners: Any = ("R", "X", "DR", "T"),
    stack: int = 3,
    constant_fallback: bool = True,
    scoring: str = "r_loss",
    cv: int | None = None,
    n_folds: int = 5,
    sample_weight: Any = None,
    propensity: Any = None,
    groups: Any = None,
    storage: Any = None,
    study_name: str | None = None,
    n_jobs: int | None = None,
    random_state: int | None = 0,
) -> AutoCATE:
    r"""Pick a CATE learner and its settings on a CATE loss, within a time budget.

    Parameters
    ----------
    X, y, w
        Features, outcome and treatment variant, as for the learners' ``fit``.
    time_budget : float, optional
        Seconds for the search: each of its three studies (outcome models,
        propensity models, learner and final stage) stops after 22% of it
        (``STUDY_SHARE``), or after its number of trials, whichever comes
        first; the refit of the pick, the selection check and the stack use
        the rest. The final study runs at least ``max(len(learners), stack)``
        trials (at most ``n_trials``) whatever the budget, so that a busy
        machine still compares candidates. Optuna stops a study between
        trials, so the total can exceed the budget by about one trial.
    n_trials : int, default=30
        Trials of the final study (learner choice and final-stage settings).
    nuisance_trials : int, default=15
        Trials of each nuisance study.
    learners : list of str or learners, default=("R", "X", "DR", "T")
        The learners to choose from (short names of the registry, or
        learner instances whose other settings are kept). The first is the
        first trial of the final study (its default settings), which is the
        pick when a short budget allows few trials: the R-learner, the most
        accurate default on the simulators and real-covariate benchmarks
        (``benchmarks/RESULTS.md``).
    stack : int, default=3
        Stack the best ``stack`` distinct candidates of the final study and
        keep the stack unless the best single candidate's loss is lower by
        more than two paired standard errors; ``0`` or ``1``: no stack.
    constant_fallback : bool, default=True
        When the stack or single pick that won does not clearly beat the
        best constant effect on the loss (the 95% interval of its paired
        gain, ``constant_gain``, reaches zero), return a constant-effect
        learner instead: the R-learner (``scoring="r_loss"``) or DR-learner
        (``"dr_loss"``) with the tuned nuisance models and
        ``effect_model=DummyRegressor()``, whose effect is that loss's best
        constant (the overlap-weighted average effect for the R-loss, the
        AIPW average effect for the DR-loss). Effects that the data cannot
        tell from one average effect are reported as that average rather
        than as noise around it (on Nie and Wager's setup C, where the
        effect is constant, this cut the mean test MSE from 0.10 to 0.01;
        ``benchmarks/RESULTS.md``, "Automatic choice"). ``False`` keeps the
        winner, with the :class:`SelectionWarning` of the search.
    scoring : {"r_loss", "dr_loss"}, default="r_loss"
        The CATE loss that decides (trials, stack weights and the choice).
    cv : int, optional
        Score final-stage trials on ``cv`` outer folds, with a
        successive-halving pruner stopping weak trials after the first
        folds; ``None`` scores each trial's honest out-of-fold effects in
        one fit.
    n_folds : int, default=5
        Cross-fitting folds of the learners named in ``learners`` and of the
        stack (learner instances keep their own).
    sample_weight, propensity, groups : optional
        As for the learners' ``fit`` (a known ``propensity`` replaces the
        propensity models, and their study is skipped).
    storage, study_name : optional
        An Optuna storage (e.g. ``"sqlite:///auto.db"``) to make the search
        resumable and shareable, as in :class:`MetaLearnerOptunaSearch`.
    n_jobs : int, optional
        Trials run side by side (default one at a time) and the learners'
        workers.
    random_state : int, default=0
        Seeds the samplers, folds and models.

    Returns
    -------
    AutoCATE
        ``learner`` (fitted), ``choice``, ``trials``, ``summary()``,
        ``plot()``, ``selection`` and the fitted ``search`` and ``stack``.

    Examples
    --------
    >>> import warnings
    >>> import metalearn as ml
    >>> sim = ml.datasets.simulate_nie_wager("A", n=800, seed=0)
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     auto = ml.auto_cate(sim.X, sim.y, sim.w, n_trials=4, nuisance_trials=2,
    ...                         learners=["T", "DR"], stack=2, n_folds=2, random_state=0)
    >>> auto.choice in ("stack", "TLearner", "DRLearner", "constant")
    True
    >>> auto.predict(sim.X[:3]).shape
    (3,)
    >>> list(auto.summary().columns)
    ['candidate', 'learner', 'r_loss', 'chosen']
    """
    import optuna

    from metalearn.scoring import _row_losses, _tau3

    loss = selection_loss(scoring)
    if loss not in ("r_loss", "dr_loss") or scoring != loss:
        raise ValueError(f'`scoring` must be "r_loss" or "dr_loss"; got {scoring!r}.')
    if time_budget is not None and (
        isinstance(time_budget, bool)
        or not isinstance(time_budget, int | float)
        or time_budget <= 0
    ):
        raise ValueError(
            f"`time_budget` must be a positive number of seconds; got {time_budget!r}."
        )
    if isinstance(stack, bool) or not isinstance(stack, int | np.integer) or stack < 0:
        raise ValueError(f"`stack` must be a non-negative integer; got {stack!r}.")
    templates = _learner_templates(learners, n_folds, n_jobs, random_state)
    timeout = None if time_budget is None else STUDY_SHARE * float(time_budget)
    search = MetaLearnerOptunaSearch(
        templates,
        "lightgbm",
        n_trials=n_trials,
        nuisance_trials=nuisance_trials,
        timeout=timeout,
        min_trials=max(len(templates), int(stack), 1),
        scoring=loss,
        cv=cv,
        pruner=optuna.pruners.SuccessiveHalvingPruner() if cv else None,
        storage=storage,
        study_name=study_name,
        n_jobs=1 if n_jobs is None else n_jobs,
        random_state=random_state,
    )
    search.fit(X, y, w, sample_weight=sample_weight, propensity=propensity, groups=groups)
    single_loss = float(search.best_score_)  # type: ignore[arg-type]
    fitted_stack = None
    stack_rows: list[dict[str, Any]] = []
    stack_loss = lead = lead_se = float("nan")
    top = search.top_candidates(int(stack)) if stack >= 2 else []
    if len(top) >= 2:
        fitted_stack = StackedLearner(
            [(f"rank{i + 1}", lrn) for i, lrn in enumerate(top)],
            loss=loss,
            **_tuned_nuisance(search),
            n_folds=n_folds,
            n_jobs=n_jobs,
            random_state=random_state,
        )
        oof = fitted_stack.fit_predict(
            X, y, w, sample_weight=sample_weight, propensity=propensity, groups=groups
        )
        sn = search.scoring_nuisance_
        assert sn is not None
        stack_rows = _row_losses(
            _tau3(oof, sn.n, len(sn.treated), sn.target.shape[1]), sn, search.propensity_clip
        )
        stack_loss = float(np.mean([r["value"] for r in stack_rows if r["loss"] == loss]))
        check = search.selection_
        if check is not None and check._winner_rows is not None:
            lead, lead_se = paired_lead(loss, stack_rows, check._winner_rows, sn.n)
    # The pick's loss is the best of many trials on these rows, so it is biased low (the
    # winner's curse); the stack's weights are cross-fitted. Keep the stack unless the pick
    # is clearly better: its lead over the stack is more than two paired standard errors.
    use_stack = fitted_stack is not None and not (lead < -2.0 * lead_se)
    chosen = fitted_stack if use_stack else search.best_estimator_
    choice = "stack" if use_stack else type(chosen).__name__
    check = search.selection_
    gain = gain_se = float("nan")
    if use_stack and search.scoring_nuisance_ is not None:
        gain, gain_se = constant_gain(loss, stack_rows, search.scoring_nuisance_.n)
    elif check is not None:
        gain, gain_se = check.constant_gain, check.constant_gain_std_error
    constant = None
    if constant_fallback and np.isfinite(gain) and not gain - _Z95 * gain_se > 0:
        constant = _constant_learner(search, loss, n_folds, n_jobs, random_state).fit(
            X, y, w, sample_weight=sample_weight, propensity=propensity, groups=groups
        )
        chosen, choice = constant, "constant"
    return AutoCATE(
        learner=chosen,
        choice=choice,
        loss=loss,
        single_loss=single_loss,
        stack_loss=stack_loss,
        stack_lead=lead,
        stack_lead_std_error=lead_se,
        search=search,
        stack=fitted_stack,
        selection=search.selection_,
        constant_gain=gain,
        constant_gain_std_error=gain_se,
        constant=constant,
    )


_Z95 = 1.959963984540054  # the searches' SelectionCheck uses the same 95% level


def _constant_learner(
    search: Any, loss: str, n_folds: int, n_jobs: int | None, random_state: int | None
) -> MetaLearner:
    """The loss's own learner with the tuned nuisance models and a constant final stage."""
    from sklearn.dummy import DummyRegressor

    cls = learner_registry()["R" if loss == "r_loss" else "DR"]
    return cls(
        **_tuned_nuisance(search),
        effect_model=DummyRegressor(),
        n_folds=n_folds,
        n_jobs=n_jobs,
        random_state=random_state,
    )
