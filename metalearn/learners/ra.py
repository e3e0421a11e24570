"""The RA-learner: regression of regression-adjusted pseudo-outcomes (Curth, van der Schaar 2021).

This module is the whole learner: the registry, the searches, the CLI's
``--learner RA``, ``explainer()`` and ``evaluate`` reach it through the hooks
of :class:`~metalearn.learners.base.MetaLearner`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from metalearn._core.data import Data
from metalearn.learners.base import PseudoOutcomeLearner
from metalearn.learners.nuisance import Nuisance

__all__ = ["RALearner"]


class RALearner(PseudoOutcomeLearner):
    r"""RA-learner (regression adjustment) of Curth and van der Schaar (2021).

    Each row's observed outcome is set against the imputed outcome of the other
    arm of the pair: for a treated variant ``k``, the control ``c`` and the
    rows of those two variants,

    .. math:: \tilde Y_i = 1\{W_i = k\}\,\big(Y_i - \hat\mu_c(X_i)\big)
              + 1\{W_i = c\}\,\big(\hat\mu_k(X_i) - Y_i\big),

    whose conditional mean is :math:`\tau_k(x)` when the outcome models are
    right, and the effect model regresses :math:`\tilde Y` on :math:`X` over
    all rows of the pair. Unlike the X-learner there is one effect model per
    variant (no propensity blend), and unlike the DR-learner no inverse
    propensity weights enter, so the pseudo-outcomes stay bounded where
    propensities are extreme (at the price of a bias wherever the outcome
    models are). The outcome models are cross-fitted: :math:`\hat\mu` of each
    row comes from models that never saw it.

    Parameters
    ----------
    outcome_model : estimator, default=None
        Model of ``mu_k(x) = E[Y | X=x, W=k]`` (regressor, or classifier for a
        categorical outcome). ``None`` means ``LGBMRegressor(verbose=-1)``.
    effect_model : regressor, default=None
        Final-stage model. ``None`` means ``LGBMRegressor(verbose=-1)``.
    nuisance : Nuisance, default=None
        A fitted :class:`~metalearn.Nuisance` to reuse (its outcome models).
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
    final_stage : {"crossfit", "full"}, default="crossfit"
        ``"crossfit"``: each effect model is fitted once per fold (on the rows
        outside it) and new rows get the mean of the fold models. ``"full"``:
        one effect model per effect, fitted on all rows of the pair.
        ``fit_predict`` always cross-fits, to give out-of-fold estimates.
    outcome_pooling : {"per_variant", "pooled"}, default="pooled"
        One pooled outcome model with treatment indicators, or one outcome
        model per variant (see :class:`~metalearn.Nuisance`). Ignored when
        ``nuisance`` is given.
    n_jobs : int, default=None
        Joblib workers.
    random_state : int, default=None
        Seeds folds and base models.

    Attributes
    ----------
    variants_, control_, classes_, nuisance_, n_features_in_, feature_names_in_
        As for :class:`~metalearn.TLearner`.
    pseudo_outcomes_ : ndarray of shape (n_samples, n_variants - 1, D)
        The pseudo-outcomes of the training rows (NaN for rows outside a
        variant's pair).
    effect_models_ : dict
        ``(variant_code, dim) -> list of fitted models``.

    See Also
    --------
    metalearn.XLearner : imputed effects blended by a propensity weight.
    metalearn.DRLearner : pseudo-outcomes with an inverse-propensity correction.

    References
    ----------
    .. [1] Curth, A. and van der Schaar, M. (2021). Nonparametric estimation of
       heterogeneous treatment effects: from theory to learning algorithms.
       AISTATS 2021, PMLR 130, 1810-1818.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> ra = ml.RALearner(outcome_model=LinearRegression(), effect_model=LinearRegression(),
    ...                   random_state=0).fit(sim.X, sim.y, sim.w)
    >>> ra.predict(sim.X[:3]).shape
    (3,)
    """

    short_name = "RA"
    _registry_rank = 5
    _nuisance_for_fit = frozenset({"mu"})
    _nuisance_for_oof = frozenset({"mu"})

    def __init__(
        self,
        *,
        outcome_model: Any = None,
        effect_model: Any = None,
        nuisance: Nuisance | None = None,
        control: Any = None,
        handle_unknown: str = "error",
        n_folds: int = 5,
        final_stage: str = "crossfit",
        outcome_pooling: str = "pooled",
        n_jobs: int | None = None,
        random_state: int | None = None,
    ) -> None:
        self.outcome_model = outcome_model
        self.effect_model = effect_model
        self.nuisance = nuisance
        self.control = control
        self.handle_unknown = handle_unknown
        self.n_folds = n_folds
        self.final_stage = final_stage
        self.outcome_pooling = outcome_pooling
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _pseudo_outcomes(self, Y: np.ndarray, w: np.ndarray, mu: np.ndarray) -> np.ndarray:
        """(n, K-1, D) RA pseudo-outcomes; NaN outside each variant's pair."""
        c = self._control_code
        out = np.full((len(w), len(self._treated_codes), Y.shape[1]), np.nan)
        is_c = w == c
        for j, k in enumerate(self._treated_codes):
            is_k = w == k
            out[is_k, j, :] = Y[is_k] - mu[is_k, c, :]
            out[is_c, j, :] = mu[is_c, k, :] - Y[is_c]
        return out

    def _fit_final(
        self, data: Data, nuis: Nuisance | None, folds: np.ndarray, honest: bool
    ) -> np.ndarray | None:
        assert nuis is not None
        phi = self._pseudo_outcomes(data.target_matrix(), data.w, nuis.oof_["mu"])
        self.pseudo_outcomes_ = phi
        specs, keys = [], []
        for j, k in enumerate(self._treated_codes):
            rows = np.flatnonzero((data.w == k) | (data.w == self._control_code))
            for d in range(data.out_dim):
                target = np.nan_to_num(phi[:, j, d])  # read at `rows` only
                specs.append((rows, target, data.sample_weight))
                keys.append((k, d))
        return self._fit_pseudo_outcomes(data, specs, keys, folds, honest)

    # Hooks -------------------------------------------------------------------
    def _final_loss(
        self,
        Y: np.ndarray,
        w: np.ndarray,
        own: Any,
        tau3: np.ndarray,
        sample_weight: np.ndarray | None,
    ) -> float | None:
        """Mean squared distance of the effects to the RA pseudo-outcomes, over the pairs."""
        if own.mu is None:
            return None
        phi = self._pseudo_outcomes(Y, w, own.mu)
        losses = []
        for j in range(len(self._treated_codes)):
            rows = ~np.isnan(phi[:, j, 0])
            sq = np.sum((phi[rows, j, :] - tau3[rows, j, :]) ** 2, axis=1)
            weights = None if sample_weight is None else sample_weight[rows]
            losses.append(float(np.average(sq, weights=weights)))
        return float(np.mean(losses))
