"""The S-learner: one outcome model with the treatment variant as a feature."""

from __future__ import annotations

from typing import Any

import numpy as np

from metalearn._core.data import Data, outcome_columns
from metalearn._core.tasks import TaskBuilder, predict_models
from metalearn.learners.base import MetaLearner, PlanTerm, indicator_plan
from metalearn.learners.nuisance import Nuisance

__all__ = ["SLearner"]


class SLearner(MetaLearner):
    r"""S-learner ("single model"): :math:`\hat\tau_k(x) = \hat f(x, k) - \hat f(x, c)`.

    One outcome model is fitted on the features plus one indicator column per
    treated variant; the effect of variant ``k`` is the difference between
    its predictions with the indicators set to ``k`` and to the control.
    With tree models the treatment may be ignored by the splits when its
    effect is small, which shrinks the estimated effects towards zero (a
    known bias of the S-learner, [1]_).

    ``fit`` fits the model once on all rows; ``fit_predict`` cross-fits it
    (``n_folds`` models) for honest estimates of the training rows, and
    later predictions average the fold models.

    Parameters
    ----------
    outcome_model : estimator, default=None
        Regressor, or classifier for a categorical outcome.
        ``None`` means ``LGBMRegressor(verbose=-1)``.
    control : object, default=None
        The reference variant (``None``: ``0`` if present, else the first).
    handle_unknown : {"error", "missing"}, default="error"
        A category at predict time that was not seen at fit: ``"error"``
        raises, naming the column and the values; ``"missing"`` encodes it as
        a missing value (NaN) with a warning, for base models that take
        missing values (LightGBM sends them down its learned missing-value
        branch). A model that cannot take NaN then raises a clear error.
    n_folds : int, default=5
        Folds of ``fit_predict``, stratified by variant (and class).
    n_jobs : int, default=None
        Joblib workers for the fold fits.
    random_state : int, default=None
        Seeds the folds and the base model when its ``random_state`` is unset.

    Attributes
    ----------
    variants_ : ndarray
        Sorted treatment variants.
    control_ : object
        The control variant.
    classes_ : ndarray or None
        Outcome classes for a classifier outcome model.
    models_ : list of estimators
        The fitted outcome model(s).
    n_features_in_ : int
        Number of features (without the treatment indicators).
    feature_names_in_ : ndarray of str
        Feature names, when ``X`` was a frame.

    See Also
    --------
    TLearner : One model per variant.

    References
    ----------
    .. [1] Künzel, S. R., Sekhon, J. S., Bickel, P. J. and Yu, B. (2019).
       Metalearners for estimating heterogeneous treatment effects using
       machine learning. PNAS 116(10), 4156-4165.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> X, w, y, tau, *_ = ml.datasets.simulate_nie_wager("C", n=1000, seed=0)
    >>> s = ml.SLearner(outcome_model=LinearRegression()).fit(X, y, w)
    >>> round(float(s.predict(X).mean()), 1)
    1.0
    """

    short_name = "S"
    _registry_rank = 0
    _uses_nuisance = False

    def __init__(
        self,
        *,
        outcome_model: Any = None,
        control: Any = None,
        handle_unknown: str = "error",
        n_folds: int = 5,
        n_jobs: int | None = None,
        random_state: int | None = None,
    ) -> None:
        self.outcome_model = outcome_model
        self.control = control
        self.handle_unknown = handle_unknown
        self.n_folds = n_folds
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _indicators(self, codes: np.ndarray) -> np.ndarray:
        return (codes[:, None] == np.asarray(self._treated_codes)[None, :]).astype(np.float64)

    def _variant_columns(self, n: int) -> list[np.ndarray]:
        """Indicator blocks with every row set to each variant, in code order."""
        K = len(self.variants_)
        return [self._indicators(np.full(n, k)) for k in range(K)]

    def _fit_final(
        self, data: Data, nuis: Nuisance | None, folds: np.ndarray, honest: bool
    ) -> np.ndarray | None:
        template = self._outcome_template()
        method = "predict_proba" if data.classes is not None else "predict"
        self._method = method
        extra = self._indicators(data.w)
        builder = TaskBuilder(
            data.X,
            data.schema.categorical_indices,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )
        blocks = self._variant_columns(data.n) if honest else []  # shared by the fold tasks
        fold_ids: list[int | None] = list(range(int(folds.max()) + 1)) if honest else [None]
        for f in fold_ids:
            train = np.arange(data.n) if f is None else np.flatnonzero(folds != f)
            rows = None if f is None else np.flatnonzero(folds == f)
            builder.add(
                template,
                train,
                data.y[train],
                key=(400, 0 if f is None else f + 1),
                role="outcome_model",
                where="S-learner's outcome model, " + ("all rows" if f is None else f"fold {f}"),
                sample_weight=None if data.sample_weight is None else data.sample_weight[train],
                predict_rows=rows,
                method=method,
                extra_columns=extra,
                predict_extra=[] if rows is None else blocks,
            )
        tasks = builder.tasks
        results = builder.run("outcome models")
        self.n_model_fits_ += len(tasks)
        self.models_ = [r[0] for r in results]
        if not honest:
            return None
        mu = np.empty((data.n, data.n_variants, data.out_dim))
        for t, (model, preds) in zip(tasks, results, strict=True):
            assert preds is not None and t.predict_rows is not None
            for k, p in enumerate(preds):
                mu[t.predict_rows, k, :] = outcome_columns(p, model, data.classes)
        return mu[:, self._treated_codes, :] - mu[:, [self._control_code], :]

    def _has_outcome_models(self) -> bool:
        return hasattr(self, "models_")

    def _outcomes(self, Xa: np.ndarray) -> np.ndarray:
        n = Xa.shape[0]
        blocks = self._variant_columns(n)
        jobs = [(m, self._method, b) for m in self.models_ for b in blocks]
        preds = predict_models(jobs, Xa, n_jobs=self.n_jobs)
        K = len(blocks)
        mu = np.zeros((n, K, self._out_dim))
        for i, p in enumerate(preds):
            model = self.models_[i // K]
            mu[:, i % K, :] += outcome_columns(p, model, self.classes_)
        return mu / len(self.models_)

    def _predict_tau(self, Xa: np.ndarray) -> np.ndarray:
        mu = self._outcomes(Xa)
        return mu[:, self._treated_codes, :] - mu[:, [self._control_code], :]

    # Hooks -------------------------------------------------------------------
    def _outcome_indicators(self) -> bool:
        return True

    def _explanation_plan(self) -> tuple[dict[tuple[int, int], list[PlanTerm]] | None, str]:
        return indicator_plan(self, self.models_, self._indicators)
