r"""Stacking of meta-learners: a weighted combination fitted on a CATE loss.

Nie and Wager (2021, section 4.3) propose to combine several CATE
estimators :math:`\hat\tau_1, \dots, \hat\tau_J` into

.. math:: \hat\tau(x) = c + \sum_j \alpha_j \hat\tau_j(x), \qquad \alpha_j \ge 0,

with :math:`c` and :math:`\alpha` minimising the R-loss of the combination
on out-of-fold estimates. Mahajan et al. (2024) find that such ensembles of
the best candidates of a search beat picking one. :class:`StackedLearner`
does this for any metalearn learners: each base learner gives honest
out-of-fold effects (its ``fit_predict``), the stack's own cross-fitted
nuisance stage gives the loss, and the weights solve a non-negative least
squares problem (free intercept) per treated variant and outcome column:

* ``loss="r_loss"``: :math:`\min \sum_i \omega_i [\tilde Y_i - \tilde T_i(c
  + \hat\tau_i^\top \alpha)]^2` over the rows of the pair, with the
  residuals :math:`\tilde Y = Y - \hat m(X)` and :math:`\tilde T = T -
  \hat p(X)` of :func:`metalearn._core.formulas.r_residuals`;
* ``loss="dr_loss"``: :math:`\min \sum_i \omega_i [\Gamma_i - c - \hat\tau_i^\top
  \alpha]^2` with the AIPW pseudo-outcomes :math:`\Gamma` of
  :func:`metalearn._core.formulas.aipw_scores`.

The stack is a learner: ``predict``, ``fit_predict``, ``ate`` (the AIPW
estimate from its own nuisances), ``evaluate``, ``explainer`` (exact SHAP
values by linearity where every base learner has exact ones) and the
scoring functions take it as they take any learner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import nnls
from sklearn.base import clone

from metalearn._core.data import Data
from metalearn._core.formulas import aipw_scores, pair_propensity, r_residuals
from metalearn.learners.base import MetaLearner, PlanTerm
from metalearn.learners.nuisance import Nuisance

__all__ = ["StackedLearner"]

_LOSSES = ("r_loss", "dr_loss")


class StackedLearner(MetaLearner):
    r"""A non-negative combination of meta-learners fitted on the R-loss or the DR-loss.

    Parameters
    ----------
    learners : list of metalearn learners, or of (name, learner) pairs
        The base learners (unfitted templates; each is cloned). They must
        agree on the kind of outcome (regression or classification) and
        on ``control``.
    loss : {"r_loss", "dr_loss"}, default="r_loss"
        The loss the weights minimise (see :mod:`metalearn.learners.stack`).
    outcome_model, propensity_model : estimator, default=None
        Models of the stack's own nuisance stage, from which the loss is
        computed (``None``: LightGBM defaults, as in the learners).
    nuisance : Nuisance, default=None
        A :class:`~metalearn.Nuisance` template or fitted instance to use
        instead of ``outcome_model`` and ``propensity_model``.
    control : object, default=None
        The reference variant (that of every base learner).
    handle_unknown : {"error", "missing"}, default="error"
        Categories unseen at fit, as in the learners.
    n_folds : int, default=5
        Cross-fitting folds of the stack's nuisance stage.
    propensity_clip : float or (float, float), default=0.01
        Clip of the propensities in the loss.
    n_jobs : int, default=None
        Joblib workers of the stack's nuisance stage.
    random_state : int, default=None
        Seeds the folds and models of the nuisance stage.

    Attributes
    ----------
    learners_ : list of fitted learners
        The base learners, fitted by ``fit_predict`` on the training rows.
    names_ : list of str
        Their names.
    weights_ : ndarray of shape (n_variants - 1, n_outputs, n_learners)
        The weights :math:`\alpha` (non-negative).
    intercept_ : ndarray of shape (n_variants - 1, n_outputs)
        The intercepts :math:`c`.
    oof_effects_ : ndarray of shape (n_samples, n_learners, n_variants - 1, n_outputs)
        The base learners' out-of-fold effects the weights were fitted on.
    variants_, control_, classes_, nuisance_, n_features_in_, feature_names_in_
        As for the other learners.

    Notes
    -----
    The weights are fitted on the base learners' out-of-fold effects, so a
    base learner that overfits gets no credit for it. The stack's
    ``fit_predict`` is honest twice over: each row's estimate combines the
    base learners' out-of-fold effects with weights fitted on the other
    folds of the stack's nuisance stage (``weights_`` and ``intercept_``,
    used by ``predict``, are fitted on all rows). ``fit`` and
    ``fit_predict`` cost one ``fit_predict`` of each base learner plus the
    stack's nuisance stage.

    References
    ----------
    .. [1] Nie, X. and Wager, S. (2021). Quasi-oracle estimation of
       heterogeneous treatment effects. Biometrika 108(2), 299-319.
    .. [2] Mahajan, D., Tuyishimire, I., Kennedy, E. H., Zhang, J. and Van
       der Laan, M. J. (2024). Empirical analysis of model selection for
       heterogeneous causal effect estimation. ICLR.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    >>> sim = ml.datasets.simulate_nie_wager("C", n=2000, seed=0)
    >>> models = dict(outcome_model=LinearRegression(), propensity_model=LogisticRegression(),
    ...               n_folds=2, random_state=0)
    >>> stack = ml.StackedLearner(
    ...     [("dr", ml.DRLearner(effect_model=Ridge(), **models)),
    ...      ("t", ml.TLearner(outcome_model=LinearRegression(), n_folds=2, random_state=0))],
    ...     outcome_model=LinearRegression(), propensity_model=LogisticRegression(),
    ...     n_folds=2, random_state=0,
    ... ).fit(sim.X, sim.y, sim.w)
    >>> stack.weights_.shape
    (1, 1, 2)
    >>> bool((stack.weights_ >= 0).all())
    True
    >>> stack.predict(sim.X[:3]).shape
    (3,)
    """

    @property
    def _nuisance_for_fit(self) -> frozenset[str]:  # type: ignore[override]
        # The loss's nuisances only: the R-loss reads the pairs' marginal outcomes, the
        # DR-loss the per-variant outcomes (and then ``ate()`` comes from the fit).
        return frozenset({"m", "e"}) if self.loss == "r_loss" else frozenset({"mu", "e"})

    @property
    def _nuisance_for_oof(self) -> frozenset[str]:  # type: ignore[override]
        return self._nuisance_for_fit

    def __init__(
        self,
        learners: Sequence[Any] = (),
        *,
        loss: str = "r_loss",
        outcome_model: Any = None,
        propensity_model: Any = None,
        nuisance: Nuisance | None = None,
        control: Any = None,
        handle_unknown: str = "error",
        n_folds: int = 5,
        propensity_clip: float | tuple[float, float] = 0.01,
        n_jobs: int | None = None,
        random_state: int | None = None,
    ) -> None:
        self.learners = learners
        self.loss = loss
        self.outcome_model = outcome_model
        self.propensity_model = propensity_model
        self.nuisance = nuisance
        self.control = control
        self.handle_unknown = handle_unknown
        self.n_folds = n_folds
        self.propensity_clip = propensity_clip
        self.n_jobs = n_jobs
        self.random_state = random_state

    @classmethod
    def from_search(cls, search: Any, n_learners: int = 3, **params: Any) -> StackedLearner:
        """An unfitted stack of the ``n_learners`` best candidates of a fitted search.

        Parameters
        ----------
        search : fitted MetaLearnerGridSearch, MetaLearnerRandomizedSearch or
            MetaLearnerOptunaSearch
        n_learners : int, default=3
            How many of the best candidates (by rank) to combine.
        **params
            Parameters of the stack (``loss``, ``outcome_model``, ...). By
            default the stack's nuisance stage is the search's scoring
            yardstick when that was a :class:`~metalearn.Nuisance` template.

        Returns
        -------
        StackedLearner
            Named ``rank1``, ``rank2``, ...; fit it on the search's rows.
        """
        top = getattr(search, "top_candidates", None)
        if top is None:
            raise TypeError(
                "`search` must be a fitted MetaLearnerGridSearch, MetaLearnerRandomizedSearch or "
                f"MetaLearnerOptunaSearch; got {type(search).__name__}."
            )
        learners = top(n_learners)
        yardstick = getattr(search, "scoring_nuisance", None)
        if (
            isinstance(yardstick, Nuisance)
            and "nuisance" not in params
            and "outcome_model" not in params
            and "propensity_model" not in params
        ):
            params["nuisance"] = yardstick
        return cls([(f"rank{i + 1}", lrn) for i, lrn in enumerate(learners)], **params)

    # ----------------------------------------------------------------- checks
    def _named_learners(self) -> list[tuple[str, MetaLearner]]:
        items = list(self.learners) if not isinstance(self.learners, str) else None
        if not items:
            raise ValueError(
                "`learners` must be a non-empty list of metalearn learners or (name, learner) "
                f"pairs; got {self.learners!r}."
            )
        named: list[tuple[str, MetaLearner]] = []
        for i, item in enumerate(items):
            name, learner = item if isinstance(item, tuple) and len(item) == 2 else (None, item)
            if not isinstance(learner, MetaLearner) or isinstance(learner, StackedLearner):
                raise TypeError(
                    f"`learners[{i}]` must be a metalearn learner (SLearner, TLearner, ..., "
                    f"DRLearner), not a stack; got {type(learner).__name__}."
                )
            named.append(
                (str(name) if name is not None else f"{type(learner).__name__}_{i}", learner)
            )
        names = [n for n, _ in named]
        if len(set(names)) != len(names):
            raise ValueError(f"`learners` has duplicate names: {names}.")
        mine = bool(self._classification)
        for i, (_, lrn) in enumerate(named):
            if bool(lrn._classification) != mine:
                kind = "classifier" if lrn._classification else "regressor"
                raise ValueError(
                    f"`learners[{i}]` has a {kind} outcome model but the stack's own "
                    f"`outcome_model` is a {'classifier' if mine else 'regressor'}: the stack "
                    "and its learners must estimate effects on one scale (give the stack a "
                    "classifier `outcome_model` for a categorical outcome)."
                )
        for i, (_, lrn) in enumerate(named):
            other = getattr(lrn, "control", None)
            if other is not None and self.control is not None and other != self.control:
                raise ValueError(
                    f"`learners[{i}]` has control={other!r} but the stack has "
                    f"control={self.control!r}; give them one control."
                )
        return named

    def _check_common_params(self) -> None:
        super()._check_common_params()
        if self.loss not in _LOSSES:
            raise ValueError(f"`loss` must be one of {list(_LOSSES)}; got {self.loss!r}.")
        self._named_learners()

    # --------------------------------------------------------------- fitting
    def _fit_final(
        self, data: Data, nuis: Nuisance | None, folds: np.ndarray, honest: bool
    ) -> np.ndarray | None:
        assert nuis is not None
        named = self._named_learners()
        fitted, effects = [], []
        for _, template in named:
            learner = clone(template)
            if self.control is not None:
                learner.set_params(control=self.control)
            tau = learner._fit_data(data, honest=True)
            assert tau is not None
            self.n_model_fits_ += int(getattr(learner, "n_model_fits_", 0))
            fitted.append(learner)
            effects.append(tau)
        self.learners_ = fitted
        self.names_ = [n for n, _ in named]
        taus = np.stack(effects, axis=1)  # (n, J, K-1, D)
        self.oof_effects_ = taus
        K1, D = taus.shape[2], taus.shape[3]
        self.weights_ = np.zeros((K1, D, len(fitted)))
        self.intercept_ = np.zeros((K1, D))
        oof = np.zeros((data.n, K1, D))
        sw = np.ones(data.n) if data.sample_weight is None else data.sample_weight
        Y = data.target_matrix()
        c = self._control_code
        e = self._clip(nuis.oof_["e"])
        phi = (
            aipw_scores(Y, data.w, nuis.oof_["mu"], e, self._treated_codes, c)
            if self.loss == "dr_loss"
            else None
        )
        for j, k in enumerate(self._treated_codes):
            if phi is not None:
                rows = np.arange(data.n)
                target, scale = phi[:, j, :], np.ones(data.n)
            else:
                rows = np.flatnonzero((data.w == k) | (data.w == c))
                p = self._clip(pair_propensity(nuis.oof_["e"], k, c))
                m = nuis.oof_[f"m:{min(c, k)}:{max(c, k)}"]
                target, scale = r_residuals(Y, data.w == k, m, p)
            for d in range(D):
                a, b = _nnls_with_intercept(
                    taus[rows, :, j, d], target[rows, d], scale[rows], sw[rows]
                )
                self.weights_[j, d] = a
                self.intercept_[j, d] = b
                if honest:  # each fold's rows combined by weights fitted on the other folds
                    for f in np.unique(folds):
                        fit_rows = rows[folds[rows] != f]
                        out_rows = np.flatnonzero(folds == f)
                        a_f, b_f = _nnls_with_intercept(
                            taus[fit_rows, :, j, d],
                            target[fit_rows, d],
                            scale[fit_rows],
                            sw[fit_rows],
                        )
                        oof[out_rows, j, d] = b_f + taus[out_rows, :, j, d] @ a_f
        return oof if honest else None

    def _combine(self, taus: np.ndarray) -> np.ndarray:
        """``c + sum_j alpha_j tau_j`` of (n, J, K-1, D) effects."""
        return self.intercept_[None] + np.einsum("njkd,kdj->nkd", taus, self.weights_)

    def _predict_tau(self, Xa: np.ndarray) -> np.ndarray:
        taus = np.stack([lrn._predict_tau(Xa) for lrn in self.learners_], axis=1)
        return self._combine(taus)

    # ------------------------------------------------------------------ hooks
    def _check_predictable(self) -> None:
        for lrn in self.learners_:
            lrn._check_predictable()

    def _outcome_indicators(self) -> bool:
        return any(lrn._outcome_indicators() for lrn in self.learners_)

    def _explanation_plan(self) -> tuple[dict[tuple[int, int], list[PlanTerm]] | None, str]:
        """The weighted plans of the base learners and the intercept (a constant term)."""
        plans: dict[tuple[int, int], list[PlanTerm]] = {}
        for i, lrn in enumerate(self.learners_):
            base, reason = lrn._explanation_plan()
            if base is None:
                return None, f"base learner {self.names_[i]!r}: {reason}"
            for (j, d), terms in base.items():
                a = float(self.weights_[j, d, i])
                if a == 0.0:
                    continue
                plans.setdefault((j, d), []).extend(
                    PlanTerm(a * t.coef, t.model, t.variant, t.indicators, t.column) for t in terms
                )
        for j in range(self.weights_.shape[0]):
            for d in range(self.weights_.shape[1]):
                plans.setdefault((j, d), []).append(PlanTerm(float(self.intercept_[j, d]), None))
        return plans, ""


def _nnls_with_intercept(
    taus: np.ndarray, target: np.ndarray, scale: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, float]:
    r"""``alpha >= 0`` and a free ``c`` minimising ``sum w (target - scale (c + taus alpha))^2``.

    The intercept is split into a positive and a negative part so that one
    non-negative least squares problem (Lawson and Hanson) solves both.
    """
    root = np.sqrt(weight / weight.sum())
    one = (scale * root)[:, None]
    design = np.hstack([one, -one, taus * one])
    # Scale the columns so that the solver's tolerance means the same for every learner.
    norms = np.linalg.norm(design, axis=0)
    norms[norms == 0] = 1.0
    coef, _ = nnls(design / norms, target * root)
    coef = coef / norms
    return coef[2:], float(coef[0] - coef[1])
