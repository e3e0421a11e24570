"""The DR-learner: regression of doubly robust (AIPW) pseudo-outcomes (Kennedy 2023)."""

from __future__ import annotations

from typing import Any

import numpy as np

from metalearn._core.data import Data
from metalearn._core.defaults import default_effect_regressor
from metalearn._core.formulas import aipw_scores
from metalearn.learners.base import PseudoOutcomeLearner
from metalearn.learners.nuisance import Nuisance

__all__ = ["DRLearner"]


class DRLearner(PseudoOutcomeLearner):
    r"""DR-learner of Kennedy (2023), for any number of variants.

    For a treated variant ``k`` against the control ``c``, the doubly robust
    pseudo-outcome of row ``i`` is

    .. math::
        \varphi_{k,i} = \hat\mu_k(X_i) - \hat\mu_c(X_i)
        + \frac{1\{W_i = k\}(Y_i - \hat\mu_k(X_i))}{\hat e_k(X_i)}
        - \frac{1\{W_i = c\}(Y_i - \hat\mu_c(X_i))}{\hat e_c(X_i)}

    with out-of-fold (cross-fitted) outcome and propensity predictions; the
    effect model regresses :math:`\varphi_k` on :math:`X` over all rows. Its
    mean is the AIPW estimate of the average effect, returned with its
    influence-function standard error by :meth:`ate`.

    Parameters
    ----------
    outcome_model : estimator, default=None
        Regressor, or classifier for a categorical outcome.
        ``None`` means ``LGBMRegressor(verbose=-1)``.
    propensity_model : classifier, default=None
        ``None`` means ``LGBMClassifier(verbose=-1)``.
    effect_model : regressor, default=None
        Final-stage model. ``None`` means a strongly regularised
        LightGBM sized by the number of training rows ``n``
        (:func:`metalearn._core.defaults.default_effect_regressor`: 200 trees of
        4 leaves of at least ``max(20, round(6 * sqrt(n)))`` rows, learning
        rate ``min(0.1, n / 100_000)``). LightGBM's own defaults fit the
        noise of the final-stage targets at small ``n`` (at n = 1,000 on the
        Nie and Wager setups, 5-100x the test MSE; see ``benchmarks/RESULTS.md``,
        "Small n"); pass ``LGBMRegressor(verbose=-1)`` for the former default.
        With ``LinearRegression()`` (with intercept), :meth:`predict_interval`
        gives analytic (sandwich) intervals without the training data.
    nuisance : Nuisance, default=None
        A fitted :class:`~metalearn.Nuisance` to reuse.
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
    propensity_clip : float or (float, float), default=0.05
        Propensities are clipped to ``[clip, 1 - clip]`` (or the given pair)
        in the pseudo-outcomes. The default caps an inverse-propensity weight
        at 20 (the other learners' 0.01 allows 100): the final stage regresses
        on the pseudo-outcomes row by row, and a few extreme weights dominate
        its error (in the Nie and Wager setups with uneven propensities, 0.05
        lowers the PEHE by 12-36% against 0.01; see ``benchmarks/RESULTS.md``).
        Where true propensities lie below the clip, the correction term is
        damped and estimates lean towards the outcome models' difference;
        check overlap with :func:`metalearn.diagnostics.overlap` and pass
        ``0.01`` or smaller when propensities are well estimated near 0 or 1.
        Each arm's propensity is clipped on its own, without renormalising
        (the rule of :mod:`metalearn._core.formulas`, the same for every learner and
        for :mod:`metalearn.ate`). :meth:`ate` and
        ``metalearn.ate.aipw(X, y, w, learner=dr)`` use this clip too; for an
        average effect with a smaller clip (less bias where overlap is poor)
        pass ``clip=`` to :func:`metalearn.ate.aipw`.
    final_stage : {"crossfit", "full", "auto"}, default="crossfit"
        ``"crossfit"``: each final-stage model is fitted once per fold (on the
        rows outside it) and new rows get the mean of the fold models, which
        averages away part of the pseudo-outcomes' noise. ``"full"``: one
        final-stage model per effect, fitted on all rows (cheaper).
        ``fit_predict`` always cross-fits, to give out-of-fold estimates.
        ``"auto"``: ``"full"`` below 1,000 training rows, else ``"crossfit"``
        (the X-learner's default rule).
    outcome_pooling : {"per_variant", "pooled"}, default="pooled"
        One pooled outcome model with treatment indicators as features
        (default: it shares the outcome surface between arms, which lowers
        the variance of the imputed effects / pseudo-outcomes), or one
        outcome model per variant (see :class:`~metalearn.Nuisance`).
        Ignored when ``nuisance`` is given (the Nuisance's own setting applies).
    n_jobs : int, default=None
        Joblib workers.
    random_state : int, default=None
        Seeds folds and base models.

    Attributes
    ----------
    variants_, control_, classes_, nuisance_, n_features_in_, feature_names_in_
        As for :class:`TLearner`.
    pseudo_outcomes_ : ndarray of shape (n_samples, n_variants - 1, D)
        The pseudo-outcomes of the training rows.
    effect_models_ : dict
        ``(variant_code, dim) -> list of fitted models``.

    References
    ----------
    .. [1] Kennedy, E. H. (2023). Towards optimal doubly robust estimation of
       heterogeneous causal effects. Electronic Journal of Statistics 17(2),
       3008-3049.
    .. [2] Robins, J. M., Rotnitzky, A. and Zhao, L. P. (1994). Estimation of
       regression coefficients when some regressors are not always observed.
       JASA 89(427), 846-866.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression
    >>> X, w, y, tau, *_ = ml.datasets.simulate_nie_wager("C", n=2000, seed=0)
    >>> dr = ml.DRLearner(outcome_model=LinearRegression(), propensity_model=LogisticRegression(),
    ...                   effect_model=LinearRegression(), random_state=0).fit(X, y, w)
    >>> effect = dr.ate()
    >>> effect.ci_low < 1.0 < effect.ci_high
    True
    """

    short_name = "DR"
    _registry_rank = 4
    _nuisance_for_fit = frozenset({"mu", "e"})
    _nuisance_for_oof = frozenset({"mu", "e"})

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
        propensity_clip: float | tuple[float, float] = 0.05,
        final_stage: str = "crossfit",
        outcome_pooling: str = "pooled",
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
        self.outcome_pooling = outcome_pooling
        self.n_jobs = n_jobs
        self.random_state = random_state

    def pseudo_outcomes(self, data: Data, nuis: Nuisance) -> np.ndarray:
        """AIPW pseudo-outcomes (n, K-1, D) from out-of-fold nuisances.

        :func:`metalearn._core.formulas.aipw_scores` with the propensities clipped
        by :func:`metalearn._core.formulas.clip_propensity` at ``propensity_clip``.
        """
        e = self._clip(nuis.oof_["e"])
        return aipw_scores(
            data.target_matrix(),
            data.w,
            nuis.oof_["mu"],
            e,
            self._treated_codes,
            self._control_code,
        )

    def _fit_final(
        self, data: Data, nuis: Nuisance | None, folds: np.ndarray, honest: bool
    ) -> np.ndarray | None:
        assert nuis is not None
        phi = self.pseudo_outcomes(data, nuis)
        self.pseudo_outcomes_ = phi
        self._train_weight = data.sample_weight
        self._linear_stage = self._fit_linear_stage(data, phi)
        rows = np.arange(data.n)
        specs, keys = [], []
        for j, k in enumerate(self._treated_codes):
            for d in range(data.out_dim):
                specs.append((rows, np.ascontiguousarray(phi[:, j, d]), data.sample_weight))
                keys.append((k, d))
        return self._fit_pseudo_outcomes(data, specs, keys, folds, honest)

    def _fit_linear_stage(self, data: Data, phi: np.ndarray) -> Any:
        """The sandwich inference of a linear final stage (``None`` for other final stages).

        :func:`metalearn.inference.linear_dr_inference` on the training rows, HC1,
        kept so that :meth:`predict_interval` needs no training data; the cost
        is one p x p matrix per effect.
        """
        from metalearn._core.intervals import _linear_stage_inference, _linear_stage_problem

        if _linear_stage_problem(self._effect_template(data.n), data.out_dim) is not None:
            return None
        return _linear_stage_inference(
            data.X,
            phi,
            data.sample_weight,
            terms=["intercept", *self.schema_.output_names()],
            effects=self._effect_names(),
            cov_type="HC1",
            level=0.95,
            schema=self.schema_,
            backend=None,
        )

    # Hooks -------------------------------------------------------------------
    def _final_loss(
        self,
        Y: np.ndarray,
        w: np.ndarray,
        own: Any,
        tau3: np.ndarray,
        sample_weight: np.ndarray | None,
    ) -> float | None:
        """DR-loss: mean squared distance of the effects to the AIPW pseudo-outcomes."""
        if own.e is None or own.mu is None:
            return None
        phi = aipw_scores(Y, w, own.mu, self._clip(own.e), self._treated_codes, self._control_code)
        losses = [
            np.average(np.sum((phi[:, j, :] - tau3[:, j, :]) ** 2, axis=1), weights=sample_weight)
            for j in range(len(self._treated_codes))
        ]
        return float(np.mean(losses))

    def _default_effect_model(self, n: int | None) -> Any:
        # Pseudo-outcomes are noisy: a regularised model whose capacity grows with n.
        return default_effect_regressor(n)
