"""The T-learner: one outcome model per variant; the CATE is their difference."""

from __future__ import annotations

from typing import Any

import numpy as np

from metalearn._core.data import Data
from metalearn.learners.base import MetaLearner, PlanTerm, indicator_plan, positive_column
from metalearn.learners.nuisance import Nuisance

__all__ = ["TLearner"]


class TLearner(MetaLearner):
    r"""T-learner ("two models"): :math:`\hat\tau_k(x) = \hat\mu_k(x) - \hat\mu_c(x)`.

    One outcome model :math:`\hat\mu_k(x) = E[Y \mid X=x, W=k]` is fitted per
    variant on that variant's rows; the effect of variant ``k`` against the
    control ``c`` is the difference of their predictions. ``fit`` fits one
    model per variant on all of its rows (no cross-fitting is needed for
    out-of-sample prediction); ``fit_predict`` cross-fits them so that every
    training row is predicted by models that never saw it, and later
    predictions average the fold models.

    Parameters
    ----------
    outcome_model : estimator, default=None
        Regressor, or classifier for a categorical outcome (the effect is
        then on class probabilities). Cloned per variant (and fold).
        ``None`` means ``LGBMRegressor(verbose=-1)``.
    nuisance : Nuisance, default=None
        A fitted :class:`~metalearn.Nuisance` to reuse instead of fitting
        outcome models (then ``outcome_model`` must be ``None``).
    control : object, default=None
        The reference variant. ``None``: ``0`` if present, else the first
        variant in sorted order.
    handle_unknown : {"error", "missing"}, default="error"
        A category at predict time that was not seen at fit: ``"error"``
        raises, naming the column and the values; ``"missing"`` encodes it as
        a missing value (NaN) with a warning, for base models that take
        missing values (LightGBM sends them down its learned missing-value
        branch). A model that cannot take NaN then raises a clear error.
    n_folds : int, default=5
        Cross-fitting folds, stratified by variant (and outcome class).
    n_jobs : int, default=None
        Joblib workers for the base-model fits (``-1``: one per CPU this process may
        use; see the user guide's page on parallelism for the thread rule).
    random_state : int, default=None
        Seeds the folds and every base model whose ``random_state`` is unset.

    Attributes
    ----------
    variants_ : ndarray
        Sorted treatment variants.
    control_ : object
        The control variant.
    classes_ : ndarray or None
        Outcome classes when the outcome model is a classifier.
    nuisance_ : Nuisance
        The fitted outcome models.
    n_features_in_ : int
        Number of features.
    feature_names_in_ : ndarray of str
        Feature names, when ``X`` was a frame.
    n_model_fits_ : int
        Base-model fits performed by the last ``fit``/``fit_predict``.

    See Also
    --------
    SLearner : One model with the treatment as a feature.
    XLearner : Imputed effects blended by the propensity.

    References
    ----------
    .. [1] Künzel, S. R., Sekhon, J. S., Bickel, P. J. and Yu, B. (2019).
       Metalearners for estimating heterogeneous treatment effects using
       machine learning. PNAS 116(10), 4156-4165.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> X, w, y, tau, *_ = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> learner = ml.TLearner(outcome_model=LinearRegression()).fit(X, y, w)
    >>> learner.predict(X[:3]).shape
    (3,)
    """

    short_name = "T"
    _registry_rank = 1
    _nuisance_for_fit = frozenset({"mu_full"})
    _nuisance_for_oof = frozenset({"mu"})

    def __init__(
        self,
        *,
        outcome_model: Any = None,
        nuisance: Nuisance | None = None,
        control: Any = None,
        handle_unknown: str = "error",
        n_folds: int = 5,
        n_jobs: int | None = None,
        random_state: int | None = None,
    ) -> None:
        self.outcome_model = outcome_model
        self.nuisance = nuisance
        self.control = control
        self.handle_unknown = handle_unknown
        self.n_folds = n_folds
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _contrast(self, mu: np.ndarray) -> np.ndarray:
        return mu[:, self._treated_codes, :] - mu[:, [self._control_code], :]

    def _fit_final(
        self, data: Data, nuis: Nuisance | None, folds: np.ndarray, honest: bool
    ) -> np.ndarray | None:
        assert nuis is not None
        return self._contrast(nuis.oof_["mu"]) if honest else None

    def _predict_tau(self, Xa: np.ndarray) -> np.ndarray:
        return self._contrast(self.nuisance_.mu_predict(Xa))

    # Hooks -------------------------------------------------------------------
    def _outcome_indicators(self) -> bool:
        return getattr(self.nuisance_, "outcome_pooling", "per_variant") == "pooled"

    def _explanation_plan(self) -> tuple[dict[tuple[int, int], list[PlanTerm]] | None, str]:
        models_ = self.nuisance_.models_
        if self._outcome_indicators():
            models = models_["mu"] if "mu" in models_ else models_["mu_full"]
            return indicator_plan(self, models, self.nuisance_._indicators)
        classes = self.classes_
        if classes is not None and len(classes) > 2:
            return None, "multi-class probabilities (a softmax) have no exact per-model explainer"
        per_variant = models_["mu"] if "mu" in models_ else [[m] for m in models_["mu_full"]]
        plans = {}
        for j, k in enumerate(self._treated_codes):
            terms = []
            for sign, v in ((1.0, k), (-1.0, self._control_code)):
                for m in per_variant[v]:
                    col = positive_column(m, classes)
                    if col == -1:
                        return None, "an outcome model never saw one of the outcome classes"
                    terms.append(PlanTerm(sign / len(per_variant[v]), m, column=col))
            plans[(j, 0)] = terms
        return plans, ""
