"""The X-learner: imputed individual effects, two effect models, a propensity blend."""

from __future__ import annotations

from typing import Any

import numpy as np

from metalearn._core.data import Data
from metalearn._core.formulas import pair_propensity
from metalearn._core.validation import check_propensity
from metalearn.learners.base import MetaLearner, PlanTerm
from metalearn.learners.nuisance import Nuisance

__all__ = ["XLearner"]


class XLearner(MetaLearner):
    r"""X-learner of Künzel et al. (2019), for any number of variants.

    For each treated variant ``k`` against the control ``c``:

    1. outcome models give :math:`\hat\mu_c, \hat\mu_k` on rows they were not
       trained on: out of fold (cross-fitted), or, with one outcome model per
       variant (``outcome_pooling="per_variant"``) in ``fit``, the other arm's model
       fitted on all of that arm's rows (it never saw the rows it imputes);
    2. imputed effects :math:`D^1_i = Y_i - \hat\mu_c(X_i)` on the rows of
       ``k`` and :math:`D^0_i = \hat\mu_k(X_i) - Y_i` on the rows of ``c``;
    3. effect models :math:`\hat\tau^1_k` (fitted on :math:`D^1`) and
       :math:`\hat\tau^0_k` (fitted on :math:`D^0`);
    4. :math:`\hat\tau_k(x) = g(x)\,\hat\tau^0_k(x) + (1 - g(x))\,\hat\tau^1_k(x)`
       with :math:`g(x) = e_k(x) / (e_k(x) + e_c(x))`, the propensity of ``k``
       within the pair.

    The imputed effects use out-of-fold outcome predictions, so no outcome
    model predicts a row it was trained on. ``fit_predict`` also cross-fits
    the effect models.

    Parameters
    ----------
    outcome_model : estimator, default=None
        Regressor, or classifier for a categorical outcome (effects on class
        probabilities). ``None`` means ``LGBMRegressor(verbose=-1)``.
    propensity_model : classifier, default=None
        ``None`` means ``LGBMClassifier(verbose=-1)``; unused when known
        propensities are passed to ``fit``.
    effect_model : regressor, default=None
        Final-stage model, cloned twice per treated variant (and per class
        for a multi-class outcome). ``None`` means ``LGBMRegressor(verbose=-1)``.
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
    propensity_clip : float or (float, float), default=0.01
        Propensities are clipped to ``[clip, 1 - clip]`` (or the given pair),
        each arm's on its own (the rule of :mod:`metalearn._core.formulas`), before
        the blend weight ``g`` is formed; where both are 0, ``g = 1/2``.
    final_stage : {"auto", "crossfit", "full"}, default="auto"
        ``"crossfit"``: each final-stage model is fitted once per fold (on the
        rows outside it) and new rows get the mean of the fold models, which
        averages away part of the pseudo-outcomes' noise. ``"full"``: one
        final-stage model per effect, fitted on all rows (cheaper). ``"auto"``:
        ``"full"`` below 1,000 training rows, ``"crossfit"`` from there on
        (:data:`metalearn._core.defaults.FINAL_STAGE_CROSSFIT_MIN_N`: on small
        samples with strong heterogeneity the fold models, each fitted on
        fewer rows, lose more than their mean averages away; see
        ``benchmarks/RESULTS.md``, "Real covariates"). ``fit_predict`` always
        cross-fits, to give out-of-fold estimates.
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
    effect_models_ : dict
        ``(variant_code, side, dim) -> list of fitted models`` (side 0: fitted
        on controls, side 1: on treated rows).

    References
    ----------
    .. [1] Künzel, S. R., Sekhon, J. S., Bickel, P. J. and Yu, B. (2019).
       Metalearners for estimating heterogeneous treatment effects using
       machine learning. PNAS 116(10), 4156-4165.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression
    >>> X, w, y, tau, *_ = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> x = ml.XLearner(outcome_model=LinearRegression(), propensity_model=LogisticRegression(),
    ...                 effect_model=LinearRegression(), random_state=0).fit(X, y, w)
    >>> x.predict(X[:2]).shape
    (2,)
    """

    short_name = "X"
    _registry_rank = 2
    _nuisance_for_oof = frozenset({"mu", "e"})

    @property
    def _nuisance_for_fit(self) -> frozenset[str]:  # type: ignore[override]
        # With one outcome model per variant, the imputed effects read only the *other*
        # arm's model, which never saw the row: `fit` needs no cross-fitted outcome models,
        # one per variant on all its rows serves (a shared Nuisance that already holds
        # fold models serves them instead, fitting nothing).
        nuis = self.nuisance
        pooling = self.outcome_pooling if nuis is None else nuis.outcome_pooling
        return frozenset({"mu_full", "e"}) if pooling == "per_variant" else frozenset({"mu", "e"})

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
        final_stage: str = "auto",
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

    def _blend_weight(self, e: np.ndarray) -> np.ndarray:
        """g = e_k / (e_k + e_c) per treated variant: (n, K-1)."""
        e = self._clip(e)
        c = self._control_code
        return np.column_stack([pair_propensity(e, k, c) for k in self._treated_codes])

    def _fit_final(
        self, data: Data, nuis: Nuisance | None, folds: np.ndarray, honest: bool
    ) -> np.ndarray | None:
        assert nuis is not None
        mu = nuis.oof_["mu"] if "mu" in nuis.oof_ else self._other_arm_outcomes(data, nuis)
        Y = data.target_matrix()
        c = self._control_code
        rows_c = np.flatnonzero(data.w == c)
        specs, keys = [], []
        for k in self._treated_codes:
            rows_k = np.flatnonzero(data.w == k)
            for d in range(data.out_dim):
                d1 = Y[:, d] - mu[:, c, d]  # read on rows of k
                d0 = mu[:, k, d] - Y[:, d]  # read on rows of c
                specs.append((rows_c, d0, data.sample_weight))
                keys.append((k, 0, d))
                specs.append((rows_k, d1, data.sample_weight))
                keys.append((k, 1, d))
        names = [
            f"{self._effect_label(k, d)}, imputed on the "
            + ("control" if arm == 0 else "treated")
            + " rows"
            for k, arm, d in keys
        ]
        models, oofs = self._fit_effects(data, specs, folds, honest, names=names)
        self.effect_models_ = dict(zip(keys, models, strict=True))
        if not honest:
            return None
        assert oofs is not None
        preds = dict(zip(keys, oofs, strict=True))
        return self._combine(preds, self._blend_weight(nuis.oof_["e"]), data.n)

    def _other_arm_outcomes(self, data: Data, nuis: Nuisance) -> np.ndarray:
        """(n, K, D) outcomes from the full-data per-variant models, where the X-learner reads them.

        ``mu_c`` on the rows of every treated variant and ``mu_k`` on the control rows:
        each from a model fitted on another variant's rows only, so no model predicts
        a row it was trained on. The other entries are NaN (never read).
        """
        n, K, D = data.n, data.n_variants, data.out_dim
        c = self._control_code
        mu = np.full((n, K, D), np.nan)
        rows_c = np.flatnonzero(data.w == c)
        rows_t = np.flatnonzero(data.w != c)
        mu[rows_t, c, :] = nuis.mu_model_predictions(data.X[rows_t], c)[0]
        X_c = data.X[rows_c]
        for k in self._treated_codes:
            mu[rows_c, k, :] = nuis.mu_model_predictions(X_c, k)[0]
        return mu

    def _combine(self, preds: dict[Any, np.ndarray], g: np.ndarray, n: int) -> np.ndarray:
        tau = np.empty((n, len(self._treated_codes), self._out_dim))
        for j, k in enumerate(self._treated_codes):
            for d in range(self._out_dim):
                tau[:, j, d] = g[:, j] * preds[(k, 0, d)] + (1 - g[:, j]) * preds[(k, 1, d)]
        return tau

    def predict(self, X: Any, *, propensity: Any = None) -> np.ndarray:
        """Estimate the CATE for new rows.

        Parameters
        ----------
        X : frame or array-like of shape (n_samples, n_features)
        propensity : float or array-like, optional
            Known propensities of the new rows (as in ``fit``). Needed only
            when per-row propensities were given at fit instead of a
            propensity model; otherwise the fitted propensity models are used.

        Returns
        -------
        tau : ndarray of shape (n_samples,) or (n_samples, n_variants - 1)
        """
        Xa = self._encode_rows(X)
        return self._shape(self._predict_tau(Xa, propensity=propensity))

    def _predict_tau(self, Xa: np.ndarray, propensity: Any = None) -> np.ndarray:
        keys = list(self.effect_models_)
        out = self._predict_effects([self.effect_models_[k] for k in keys], Xa)
        given = propensity
        if given is not None:
            e = check_propensity(given, Xa.shape[0], len(self.variants_))
        else:
            e = self.nuisance_.e_predict(Xa)
        g = self._blend_weight(e)
        return self._combine(dict(zip(keys, out, strict=True)), g, Xa.shape[0])

    # Hooks -------------------------------------------------------------------
    def _constant_blend(self) -> np.ndarray | None:
        """The blend weights g when propensities are known and constant, else ``None``."""
        nuis = self.nuisance_
        if nuis.models_.get("e") is not None:
            return None
        known = nuis.oof_["e"]
        if not np.allclose(known, known[0]):
            return None
        return self._blend_weight(known[:1])[0]

    def _explanation_plan(self) -> tuple[dict[tuple[int, int], list[PlanTerm]] | None, str]:
        g = self._constant_blend()
        if g is None:
            return None, (
                "the blend weight g(x) comes from a propensity model, so the CATE "
                "g(x) tau0(x) + (1 - g(x)) tau1(x) is not a linear combination of models"
            )
        plans = {}
        for j, k in enumerate(self._treated_codes):
            for d in range(self._out_dim):
                m0, m1 = self.effect_models_[(k, 0, d)], self.effect_models_[(k, 1, d)]
                plans[(j, d)] = [PlanTerm(g[j] / len(m0), m) for m in m0] + [
                    PlanTerm((1.0 - g[j]) / len(m1), m) for m in m1
                ]
        return plans, ""

    def _check_predictable(self) -> None:
        nuis = self.nuisance_
        if nuis.models_.get("e") is None and not np.allclose(nuis.oof_["e"], nuis.oof_["e"][0]):
            raise ValueError(
                "This XLearner was fitted with per-row known propensities, so its CATE on other "
                "rows depends on propensities that are not features and cannot be explained "
                "as a function of X. Use method='surrogate' with "
                "tau=learner.predict(X, propensity=...)."
            )
