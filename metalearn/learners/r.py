"""The R-learner: residual-on-residual weighted regression (Nie and Wager 2021)."""

from __future__ import annotations

from typing import Any

import numpy as np

from metalearn._core.data import Data
from metalearn._core.defaults import default_effect_regressor
from metalearn._core.formulas import pair_propensity, r_loss_terms, r_pseudo_outcome, r_residuals
from metalearn.learners.base import PseudoOutcomeLearner
from metalearn.learners.nuisance import Nuisance

__all__ = ["RLearner"]


class RLearner(PseudoOutcomeLearner):
    r"""R-learner of Nie and Wager (2021), pairwise for several variants.

    For a treated variant ``k`` against the control ``c`` and the rows of
    those two variants, with :math:`T = 1\{W = k\}`, the marginal outcome
    :math:`m(x) = E[Y \mid X=x, W \in \{c,k\}]` and the pair propensity
    :math:`p(x) = e_k(x) / (e_k(x) + e_c(x))`, the R-loss

    .. math:: \sum_i \big[(Y_i - \hat m(X_i)) - \tau(X_i)(T_i - \hat p(X_i))\big]^2

    is minimised by regressing the pseudo-outcome
    :math:`(Y - \hat m)/(T - \hat p)` on :math:`X` with weights
    :math:`(T - \hat p)^2`. :math:`\hat m` and :math:`\hat p` are
    out-of-fold (cross-fitted) predictions.

    Parameters
    ----------
    outcome_model : estimator, default=None
        Model of the marginal outcome ``m`` (regressor, or classifier for a
        categorical outcome). ``None`` means ``LGBMRegressor(verbose=-1)``.
    propensity_model : classifier, default=None
        ``None`` means ``LGBMClassifier(verbose=-1)``.
    effect_model : regressor, default=None
        Final-stage model; must accept ``sample_weight``. ``None`` means a
        strongly regularised LightGBM sized by the number of training rows ``n``
        (:func:`metalearn._core.defaults.default_effect_regressor`: 200 trees of
        4 leaves of at least ``max(20, round(6 * sqrt(n)))`` rows, learning
        rate ``min(0.1, n / 100_000)``). LightGBM's own defaults fit the
        noise of the final-stage targets at small ``n`` (at n = 1,000 on the
        Nie and Wager setups, 5-100x the test MSE; see ``benchmarks/RESULTS.md``,
        "Small n"); pass ``LGBMRegressor(verbose=-1)`` for the former default.
    nuisance : Nuisance, default=None
        A fitted :class:`~metalearn.Nuisance` to reuse (its propensity models
        are reused; the marginal outcome models are fitted once and kept in it).
    control : object, default=None
        The reference variant.
    handle_unknown : {"error", "missing"}, default="error"
        A category at predict time that was not seen at fit: ``"error"``
        raises, naming the column and the values; ``"missing"`` encodes it as
        a missing value (NaN) with a warning, for base models that take
        missing values (LightGBM sends them down its learned missing-value
        branch). A model that cannot take NaN then raises a clear error.
    n_folds : int, default=5
        Cross-fitting folds.
    propensity_clip : float or (float, float), default=0.01
        The pair propensity :math:`\hat p` is clipped to ``[clip, 1 - clip]``
        (or the given pair), the rule of :mod:`metalearn._core.formulas`; with two
        variants it is the treated propensity itself. Where both
        propensities of a pair are 0, :math:`\hat p = 1/2` (before clipping).
    final_stage : {"crossfit", "full", "auto"}, default="crossfit"
        ``"crossfit"``: each final-stage model is fitted once per fold (on the
        rows outside it) and new rows get the mean of the fold models, which
        averages away part of the pseudo-outcomes' noise. ``"full"``: one
        final-stage model per effect, fitted on all rows (cheaper).
        ``fit_predict`` always cross-fits, to give out-of-fold estimates.
        ``"auto"``: ``"full"`` below 1,000 training rows, else ``"crossfit"``
        (the X-learner's default rule).
    n_jobs : int, default=None
        Joblib workers.
    random_state : int, default=None
        Seeds folds and base models.

    Attributes
    ----------
    variants_, control_, classes_, nuisance_, n_features_in_, feature_names_in_
        As for :class:`TLearner`.
    effect_models_ : dict
        ``(variant_code, dim) -> list of fitted models``.

    References
    ----------
    .. [1] Nie, X. and Wager, S. (2021). Quasi-oracle estimation of
       heterogeneous treatment effects. Biometrika 108(2), 299-319.
    .. [2] Robinson, P. M. (1988). Root-N-consistent semiparametric
       regression. Econometrica 56(4), 931-954.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression
    >>> X, w, y, tau, *_ = ml.datasets.simulate_nie_wager("C", n=2000, seed=0)
    >>> r = ml.RLearner(outcome_model=LinearRegression(), propensity_model=LogisticRegression(),
    ...                 effect_model=LinearRegression(), random_state=0).fit(X, y, w)
    >>> r.predict(X[:2]).shape
    (2,)
    """

    short_name = "R"
    _registry_rank = 3
    _nuisance_for_fit = frozenset({"m", "e"})
    _nuisance_for_oof = frozenset({"m", "e"})

    def __init__(
        self,
        *,
        outcome_model: Any = None,
        propensity_model: Any = None,
        effect_model: Any = None,
        nuisance: Nuisance | None = None,
        control: Any = None,
        handle_unknown: str = "error",
        n_folds: int = 5,
        propensity_clip: float | tuple[float, float] = 0.01,
        final_stage: str = "crossfit",
        n_jobs: int | None = None,
        random_state: int | None = None,
    ) -> None:
        self.outcome_model = outcome_model
        self.propensity_model = propensity_model
        self.effect_model = effect_model
        self.nuisance = nuisance
        self.control = control
        self.handle_unknown = handle_unknown
        self.n_folds = n_folds
        self.propensity_clip = propensity_clip
        self.final_stage = final_stage
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _pair_kind(self, k: int) -> str:
        c = self._control_code
        return f"m:{min(c, k)}:{max(c, k)}"

    def residuals(self, data: Data, nuis: Nuisance, k: int) -> tuple[np.ndarray, ...]:
        """Rows of the pair, outcome residuals (n, D) and treatment residuals (n,)."""
        c = self._control_code
        rows = np.flatnonzero((data.w == c) | (data.w == k))
        p = self._clip(pair_propensity(nuis.oof_["e"], k, c))
        y_res, t_res = r_residuals(
            data.target_matrix(), data.w == k, nuis.oof_[self._pair_kind(k)], p
        )
        return rows, y_res, t_res

    def _fit_final(
        self, data: Data, nuis: Nuisance | None, folds: np.ndarray, honest: bool
    ) -> np.ndarray | None:
        assert nuis is not None
        specs, keys = [], []
        for k in self._treated_codes:
            rows, y_res, t_res = self.residuals(data, nuis, k)
            pseudo_rows, weight_rows = r_pseudo_outcome(y_res[rows], t_res[rows])
            weight = np.zeros(data.n)
            weight[rows] = weight_rows
            if data.sample_weight is not None:
                weight = weight * data.sample_weight
            for d in range(data.out_dim):
                pseudo = np.zeros(data.n)
                pseudo[rows] = pseudo_rows[:, d]
                specs.append((rows, pseudo, weight))
                keys.append((k, d))
        self._linear_stage = self._fit_linear_stage(data, specs)
        return self._fit_pseudo_outcomes(data, specs, keys, folds, honest, require_weight=True)

    def _fit_linear_stage(
        self, data: Data, specs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    ) -> Any:
        r"""The sandwich inference of a linear final stage (``None`` for other final stages).

        For each treated variant, the weighted least squares of the R
        pseudo-outcome on ``(1, X)`` over the rows of its pair, with weights
        :math:`(T - \hat p)^2` (times ``sample_weight``): the coefficients of
        the ``LinearRegression`` final stage fitted on all rows, and their HC1
        sandwich covariance (Nie and Wager's partially linear model, a
        working model: the intervals cover the best linear approximation of
        the CATE). Kept so that :meth:`predict_interval` needs no training data.
        """
        from metalearn._core.intervals import (
            _linear_stage_inference,
            _linear_stage_problem,
            stack_linear_stages,
        )

        if _linear_stage_problem(self._effect_template(data.n), data.out_dim) is not None:
            return None
        effects = self._effect_names()
        terms = ["intercept", *self.schema_.output_names()]
        stages = [
            _linear_stage_inference(
                data.X[rows],
                target[rows][:, None, None],
                weight[rows],
                terms=terms,
                effects=[effect],
                cov_type="HC1",
                level=0.95,
                schema=self.schema_,
                backend=None,
            )
            for (rows, target, weight), effect in zip(specs, effects, strict=True)
        ]
        return stack_linear_stages(stages, n=data.n)

    # Hooks -------------------------------------------------------------------
    def _final_loss(
        self,
        Y: np.ndarray,
        w: np.ndarray,
        own: Any,
        tau3: np.ndarray,
        sample_weight: np.ndarray | None,
    ) -> float | None:
        """R-loss of the effects on the rows of each (control, treated) pair."""
        if own.e is None:
            return None
        c = self._control_code
        losses = []
        for j, k in enumerate(self._treated_codes):
            rows = np.flatnonzero((w == k) | (w == c))
            p = self._clip(pair_propensity(own.e[rows], k, c))
            ry, rt = r_residuals(Y[rows], w[rows] == k, own.marginal[k][rows], p)
            weights = None if sample_weight is None else sample_weight[rows]
            losses.append(np.average(r_loss_terms(ry, rt, tau3[rows, j, :]), weights=weights))
        return float(np.mean(losses))

    def _default_effect_model(self, n: int | None) -> Any:
        # Pseudo-outcomes are noisy: a regularised model whose capacity grows with n.
        return default_effect_regressor(n)
