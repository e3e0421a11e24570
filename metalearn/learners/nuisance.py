"""The cross-fitted nuisance stage, a first-class object shared between learners.

Notation: variants ``0..K-1`` (codes into ``variants_``), outcome dimension
``D`` (1 for regression and binary outcomes, the number of classes for
multi-class outcomes). The nuisance functions are

* ``mu_k(x) = E[Y | X=x, W=k]``, one outcome model per variant;
* ``e_k(x) = P(W=k | X=x)``, one multi-class propensity model (or known
  propensities from a randomized design);
* ``m_{ck}(x) = E[Y | X=x, W in {c, k}]``, the R-learner's marginal outcome
  model on the rows of a control/treatment pair.

Each is cross-fitted on the same folds: the model of fold ``f`` is trained on
the rows outside fold ``f`` and predicts the rows inside it, so that every
training row gets an out-of-fold prediction from a model that never saw it.
New rows are predicted by the mean of the fold models.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, is_classifier
from sklearn.utils.validation import check_is_fitted

from metalearn._core.data import Data, align_proba, outcome_columns, prepare_data
from metalearn._core.defaults import default_classifier, default_regressor
from metalearn._core.frames import encode_features
from metalearn._core.tasks import Task, TaskBuilder, make_folds, predict_models
from metalearn._core.validation import (
    VersionedPickle,
    check_classifier,
    check_estimator,
    check_finite_X,
    check_has_rows,
    check_n_jobs,
    check_random_state,
)

__all__ = ["Nuisance"]


class Nuisance(VersionedPickle, BaseEstimator):
    """Cross-fitted outcome and propensity models, shareable between learners.

    Fit it once and pass it as ``nuisance=`` to :class:`TLearner`,
    :class:`XLearner`, :class:`RLearner` or :class:`DRLearner`: they reuse its
    fitted models and out-of-fold predictions and fit no nuisance model again
    (models a learner needs that are not fitted yet, such as the R-learner's
    marginal outcome models, are fitted once and kept here for the next one).

    A fitted ``Nuisance`` is not copied by :func:`sklearn.base.clone`: cloning a
    learner that holds one keeps sharing it. An unfitted one clones normally.
    A pickled one records the metalearn version; loading it under another
    version gives an :class:`~metalearn.InconsistentVersionWarning`.

    Parameters
    ----------
    outcome_model : estimator, default=None
        Regressor (continuous outcome) or classifier (categorical outcome),
        cloned for each variant and fold. ``None`` means
        ``LGBMRegressor(verbose=-1)``.
    propensity_model : classifier, default=None
        Classifier of the variant given the features (``predict_proba``).
        ``None`` means ``LGBMClassifier(verbose=-1)``. Not used when known
        propensities are passed to ``fit``.
    n_folds : int, default=5
        Number of cross-fitting folds, stratified by variant (and class).
    outcome_pooling : {"per_variant", "pooled"}, default="per_variant"
        How ``mu_k`` is modelled. ``"per_variant"``: one outcome model per
        variant, fitted on that variant's rows. ``"pooled"``: one outcome
        model per fold on the rows of every variant, with one indicator
        column per non-first variant appended to the features;
        ``mu_k(x)`` is its prediction with the indicators set to ``k``. Pooling
        shares the outcome surface between arms, which helps when effects
        are small next to the outcome's variation or an arm is small.
    n_jobs : int, default=None
        Joblib workers for the flat batch of fits (``-1``: one per CPU this process
        may use; see the user guide's page on parallelism for the thread rule).
    random_state : int, default=None
        Seeds the folds and every base model whose ``random_state`` is unset.

    Attributes
    ----------
    variants_ : ndarray
        Sorted treatment variants seen at fit.
    classes_ : ndarray or None
        Outcome classes for a classifier outcome model.
    folds_ : ndarray of shape (n_samples,)
        Fold of each training row.
    oof_outcomes_ : ndarray of shape (n_samples, n_variants, D)
        Out-of-fold ``mu_k(x)`` for every training row and variant.
    oof_propensity_ : ndarray of shape (n_samples, n_variants)
        Out-of-fold propensities (or the known ones).
    n_model_fits_ : int
        Number of base-model fits performed so far.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression
    >>> X, w, y, tau, e, *_ = ml.datasets.simulate_nie_wager("B", n=500, seed=0)
    >>> nuis = ml.Nuisance(outcome_model=LinearRegression(),
    ...                    propensity_model=LogisticRegression(), n_folds=3,
    ...                    random_state=0).fit(X, y, w)
    >>> fits = nuis.n_model_fits_
    >>> dr = ml.DRLearner(nuisance=nuis, effect_model=LinearRegression()).fit(X, y, w)
    >>> nuis.n_model_fits_ == fits
    True
    """

    def __init__(
        self,
        *,
        outcome_model: Any = None,
        propensity_model: Any = None,
        n_folds: int = 5,
        outcome_pooling: str = "per_variant",
        n_jobs: int | None = None,
        random_state: int | None = None,
    ) -> None:
        self.outcome_model = outcome_model
        self.propensity_model = propensity_model
        self.n_folds = n_folds
        self.outcome_pooling = outcome_pooling
        self.n_jobs = n_jobs
        self.random_state = random_state

    def __sklearn_clone__(self) -> Any:
        if hasattr(self, "fingerprint_"):
            return self
        return super().__sklearn_clone__()

    # ------------------------------------------------------------------ public
    def fit(
        self,
        X: Any,
        y: Any,
        w: Any,
        *,
        sample_weight: Any = None,
        propensity: Any = None,
        groups: Any = None,
    ) -> Nuisance:
        """Cross-fit the outcome model per variant and the propensity model.

        Parameters
        ----------
        X : frame or array of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        w : array-like of shape (n_samples,)
            Treatment variant of each row (ints, strings or categories).
        sample_weight : array-like of shape (n_samples,), optional
        propensity : float or array-like, optional
            Known propensities (randomized designs) instead of a propensity
            model: a scalar P(treated) for two variants, one probability per
            variant, or an array of shape (n_samples, n_variants).
        groups : array-like of shape (n_samples,), optional
            Group labels (a school, a customer with several rows): each group
            is kept in one cross-fitting fold.

        Returns
        -------
        self : Nuisance
        """
        if hasattr(self, "fingerprint_"):
            raise RuntimeError(
                "This Nuisance is already fitted, and learners fitted with it read its "
                "models and out-of-fold predictions: refitting it in place would change "
                "them silently. Fit a new one instead: `sklearn.base.clone(nuisance)` "
                "does not copy a fitted Nuisance, so use "
                "`Nuisance(**nuisance.get_params(deep=False)).fit(X, y, w)`."
            )
        data = prepare_data(
            X,
            y,
            w,
            classification=self.is_classification,
            sample_weight=sample_weight,
            propensity=propensity,
            groups=groups,
        )
        self.ensure(data, {"mu", "e"})
        return self

    def fit_data(self, data: Data, kinds: set[str] | None = None) -> Nuisance:
        """Fit on already prepared :class:`Data` (a subset of converted rows).

        The entry point of the package's own subsets (outer folds of a search,
        bootstrap replicates): nothing is converted again. Refitting a fitted
        Nuisance raises, as in :meth:`fit`.
        """
        if hasattr(self, "fingerprint_"):
            raise RuntimeError("This Nuisance is already fitted; fit a new one.")
        self.ensure(data, {"mu", "e"} if kinds is None else kinds)
        return self

    @property
    def is_classification(self) -> bool:
        check_estimator(self.outcome_model, "outcome_model")
        return is_classifier(self._outcome_template())

    @property
    def oof_outcomes_(self) -> np.ndarray:
        check_is_fitted(self, "fingerprint_")
        return self._oof_mu()

    @property
    def oof_propensity_(self) -> np.ndarray:
        check_is_fitted(self, "fingerprint_")
        return self.oof_["e"]

    def predict_outcomes(self, X: Any) -> np.ndarray:
        """Mean over folds of ``mu_k(x)``: array (n, n_variants[, n_classes]).

        ``X`` needs at least one row, no infinite values, and NaN only if the
        outcome model takes it (as in ``fit``); :meth:`predict_propensity`
        checks its rows the same way for the propensity model.
        """
        check_is_fitted(self, "fingerprint_")
        Xa, _ = encode_features(X, self.schema_)
        self._check_predict_rows(Xa, {"outcome_model": self._outcome_template()})
        mu = self.mu_predict(Xa)
        return mu[..., 0] if mu.shape[2] == 1 else mu

    def predict_propensity(self, X: Any) -> np.ndarray:
        """Mean over folds of ``P(W=k | x)``: array (n, n_variants)."""
        check_is_fitted(self, "fingerprint_")
        Xa, _ = encode_features(X, self.schema_)
        self._check_predict_rows(Xa, {"propensity_model": self._propensity_template()})
        return self.e_predict(Xa)

    def _check_predict_rows(self, Xa: np.ndarray, models: dict[str, Any]) -> None:
        """New rows: at least one, no infinities, NaN only where ``models`` take it."""
        check_has_rows(Xa)
        check_finite_X(Xa, models, when="predicting")

    # ---------------------------------------------------------------- internal
    def _outcome_template(self) -> Any:
        return default_regressor() if self.outcome_model is None else self.outcome_model

    def _propensity_template(self) -> Any:
        return default_classifier() if self.propensity_model is None else self.propensity_model

    def has(self, kind: str) -> bool:
        return hasattr(self, "models_") and kind in self.models_

    def ensure(self, data: Data, kinds: set[str], *, finite_checked: bool = False) -> None:
        """Fit the nuisance kinds in ``kinds`` not fitted yet, in one flat batch.

        Kinds: ``"mu"`` (cross-fitted outcome models per variant),
        ``"mu_full"`` (one outcome model per variant on all its rows, used only
        for out-of-sample prediction), ``"e"`` (propensity), ``"m:c:k"`` (the
        marginal outcome model on variants ``c`` and ``k``).
        """
        if hasattr(self, "fingerprint_"):
            if data.fingerprint != self.fingerprint_:
                raise ValueError(
                    "This fitted `nuisance` was fitted on different data (X, y, w, "
                    "sample_weight, propensity or groups differ). A shared Nuisance must be fitted "
                    "on exactly the data the learner is fitted on; pass an unfitted one to "
                    "refit."
                )
        else:
            self._start(data, finite_checked=finite_checked)
        todo = sorted(k for k in kinds if k not in self.models_)
        if "mu_full" in todo and "mu" in self.models_:
            todo.remove("mu_full")  # fold models serve out-of-sample prediction
        if not todo:
            return
        if "e" in todo and data.propensity is not None:
            self.models_["e"] = None
            self.oof_["e"] = data.propensity
            todo.remove("e")
        builder = TaskBuilder(
            data.X,
            data.schema.categorical_indices,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )
        spans: list[tuple[str, int, int]] = []
        for kind in todo:
            start = len(builder.tasks)
            self._add_tasks(builder, kind, data)
            spans.append((kind, start, len(builder.tasks)))
        results = builder.run("nuisance models")
        tasks = builder.tasks
        self.n_model_fits_ += len(tasks)
        for kind, a, b in spans:
            self._collect(kind, data, tasks[a:b], results[a:b])

    def _start(self, data: Data, *, finite_checked: bool = False) -> None:
        if self.is_classification:
            check_classifier(self._outcome_template(), "outcome_model")
        check_classifier(self._propensity_template(), "propensity_model")
        if not isinstance(self.n_folds, int | np.integer) or self.n_folds < 2:
            raise ValueError(f"`n_folds` must be an integer >= 2; got {self.n_folds!r}.")
        check_n_jobs(self.n_jobs)
        check_random_state(self.random_state)
        if self.outcome_pooling not in ("per_variant", "pooled"):
            raise ValueError(
                '`outcome_pooling` must be "per_variant" or "pooled"; got '
                f"{self.outcome_pooling!r}."
            )
        if not finite_checked:
            check_finite_X(
                data.X,
                {
                    "outcome_model": self._outcome_template(),
                    "propensity_model": None
                    if data.propensity is not None
                    else self._propensity_template(),
                },
            )
        if data.classes is None:
            strata, what = data.w, "treatment variant"
        else:
            strata, what = data.w * len(data.classes) + data.y, "(variant, outcome class) pair"
        # The folds are made when a cross-fitted kind first needs them (a T-learner's fit
        # reads only full-data outcome models, which need none).
        self._fold_spec = (strata, what, data.groups)
        self.__dict__.pop("_folds", None)
        self.fingerprint_ = data.fingerprint
        self.variants_ = data.variants
        self.classes_ = data.classes
        self.schema_ = data.schema
        self.n_features_in_ = data.X.shape[1]
        self.out_dim_ = data.out_dim
        self.models_: dict[str, Any] = {}
        self.oof_: dict[str, np.ndarray] = {}
        self.n_model_fits_ = 0

    @property
    def folds_(self) -> np.ndarray:
        """Fold of each training row (made on first use)."""
        folds = self.__dict__.get("_folds")
        if folds is None:
            spec = self.__dict__.get("_fold_spec")
            if spec is None:
                raise AttributeError("folds_: this Nuisance is not fitted yet.")
            strata, what, groups = spec
            folds = make_folds(
                strata, int(self.n_folds), self.random_state, what=what, groups=groups
            )
            self.__dict__["_folds"] = folds
        return folds

    def _made_folds(self) -> np.ndarray | None:
        """The folds if a cross-fitted kind has made them, else ``None``."""
        return self.__dict__.get("_folds")

    def _add_tasks(self, builder: TaskBuilder, kind: str, data: Data) -> None:
        """The fits of nuisance ``kind``, added to the stage's one batch."""
        sw = data.sample_weight
        folds = self.folds_ if kind != "mu_full" else None
        if kind in ("mu", "mu_full") or kind.startswith("m:"):
            template = self._outcome_template()
            method = "predict_proba" if data.classes is not None else "predict"
            pooled = kind in ("mu", "mu_full") and self.outcome_pooling == "pooled"
            if kind.startswith("m:"):
                _, c, k = kind.split(":")
                groups = [np.isin(data.w, [int(c), int(k)])]
            elif pooled:
                groups = [np.ones(data.n, dtype=bool)]
            else:
                groups = [data.w == k for k in range(data.n_variants)]
            # Treatment columns of the pooled model, shared by all its tasks.
            indicators = self._indicators(data.w) if pooled else None
            blocks = self._variant_blocks(data.n) if pooled else []
            for gi, mask in enumerate(groups):
                fold_range = [None] if kind == "mu_full" else range(int(self.n_folds))
                for f in fold_range:
                    train_mask = mask if f is None else mask & (folds != f)
                    pred = (
                        None
                        if f is None
                        else np.flatnonzero(
                            (folds == f) & (mask if kind.startswith("m:") else True)
                        )
                    )
                    builder.add(
                        template,
                        np.flatnonzero(train_mask),
                        data.y,  # indexed by `train` when the task runs
                        key=_task_key(kind, gi, -1 if f is None else f),
                        role="outcome_model",
                        where=self._where(kind, gi, f, data),
                        sample_weight=sw,
                        predict_rows=pred,
                        method=method,
                        extra_columns=indicators,
                        predict_extra=blocks if pred is not None else [],
                    )
        elif kind == "e":
            template = self._propensity_template()
            for f in range(int(self.n_folds)):
                builder.add(
                    template,
                    np.flatnonzero(folds != f),
                    data.w,  # indexed by `train` when the task runs
                    key=_task_key(kind, 0, f),
                    role="propensity_model",
                    where=f"nuisance stage, fold {f}",
                    sample_weight=sw,
                    predict_rows=np.flatnonzero(folds == f),
                    method="predict_proba",
                )
        else:  # pragma: no cover - internal misuse
            raise ValueError(f"unknown nuisance kind {kind!r}")

    def _where(self, kind: str, group: int, fold: int | None, data: Data) -> str:
        """Which outcome fit of the nuisance stage a task is, for error notes."""
        v = data.variants.tolist()  # Python scalars: readable in messages
        if kind.startswith("m:"):
            _, c, k = kind.split(":")
            what = f"marginal outcome of variants {v[int(c)]!r} and {v[int(k)]!r}"
        elif kind in ("mu", "mu_full") and self.outcome_pooling == "pooled":
            what = "pooled outcome model of every variant"
        else:
            what = f"outcome of variant {v[group]!r}"
        return f"nuisance stage, {what}, " + ("all rows" if fold is None else f"fold {fold}")

    def _indicators(self, codes: np.ndarray) -> np.ndarray:
        """Pooled outcome model's treatment columns: one per variant code 1..K-1."""
        K = len(self.variants_)
        return (codes[:, None] == np.arange(1, K)[None, :]).astype(np.float64)

    def _variant_blocks(self, n: int) -> list[np.ndarray]:
        return [self._indicators(np.full(n, k)) for k in range(len(self.variants_))]

    def _to_outcome(self, pred: np.ndarray, model: Any) -> np.ndarray:
        return outcome_columns(pred, model, self.classes_)

    def _collect(self, kind: str, data: Data, tasks: list[Task], results: list[Any]) -> None:
        n, K, D = data.n, data.n_variants, data.out_dim
        models = [r[0] for r in results]
        if kind == "mu_full":
            self.models_[kind] = models
            return
        nf = int(self.n_folds)
        if kind == "e":
            oof = np.empty((n, K))
            for t, (m, preds) in zip(tasks, results, strict=True):
                oof[t.predict_rows] = align_proba(preds[0], m.classes_, K)  # type: ignore[index]
            self.models_[kind] = models
            self.oof_[kind] = oof
            return
        if kind == "mu" and self.outcome_pooling == "pooled":
            oof = np.empty((n, K, D))
            for t, (m, preds) in zip(tasks, results, strict=True):
                for k, p in enumerate(preds):  # type: ignore[arg-type]
                    oof[t.predict_rows, k, :] = self._to_outcome(p, m)
            self.models_[kind] = models
            self.oof_[kind] = oof
            return
        if kind == "mu":
            oof = np.empty((n, K, D))
            for i, (t, (m, preds)) in enumerate(zip(tasks, results, strict=True)):
                oof[t.predict_rows, i // nf, :] = self._to_outcome(preds[0], m)  # type: ignore[index]
            self.models_[kind] = [models[k * nf : (k + 1) * nf] for k in range(K)]
            self.oof_[kind] = oof
            return
        oof = np.full((n, D), np.nan)
        for t, (m, preds) in zip(tasks, results, strict=True):
            oof[t.predict_rows] = self._to_outcome(preds[0], m)  # type: ignore[index]
        self.models_[kind] = models
        self.oof_[kind] = oof

    def _oof_mu(self) -> np.ndarray:
        if "mu" not in self.oof_:
            raise AttributeError("Out-of-fold outcomes need the cross-fitted outcome models.")
        return self.oof_["mu"]

    def _mean_predict(self, models: list[Any], Xa: np.ndarray, method: str) -> np.ndarray:
        preds = predict_models([(m, method, None) for m in models], Xa, n_jobs=self.n_jobs)
        return np.mean([self._to_outcome(p, m) for p, m in zip(preds, models, strict=True)], 0)

    def mu_predict(self, Xa: np.ndarray) -> np.ndarray:
        """(n, K, D) outcome predictions on new rows (fold mean, or full-data models)."""
        method = "predict_proba" if self.classes_ is not None else "predict"
        if self.outcome_pooling == "pooled":
            models = self.models_["mu"] if "mu" in self.models_ else self.models_["mu_full"]
            blocks = self._variant_blocks(Xa.shape[0])
            jobs = [(m, method, b) for m in models for b in blocks]
            preds = predict_models(jobs, Xa, n_jobs=self.n_jobs)
            K = len(blocks)
            mu = np.zeros((Xa.shape[0], K, self.out_dim_))
            for i, p in enumerate(preds):
                mu[:, i % K, :] += self._to_outcome(p, models[i // K])
            return mu / len(models)
        if "mu" in self.models_:
            per_variant = self.models_["mu"]
        else:
            per_variant = [[m] for m in self.models_["mu_full"]]
        flat = [m for ms in per_variant for m in ms]
        preds = predict_models([(m, method, None) for m in flat], Xa, n_jobs=self.n_jobs)
        out = []
        i = 0
        for ms in per_variant:
            chunk = [self._to_outcome(preds[i + j], ms[j]) for j in range(len(ms))]
            out.append(np.mean(chunk, axis=0))
            i += len(ms)
        return np.stack(out, axis=1)

    def mu_model_predictions(self, Xa: np.ndarray, k: int) -> list[np.ndarray]:
        """``mu_k`` on ``Xa`` from each fitted outcome model separately: (n, D) arrays.

        One array per fold model when the outcome models are cross-fitted,
        else one from the full-data model; pooled or per-variant alike.
        """
        method = "predict_proba" if self.classes_ is not None else "predict"
        kind = "mu" if "mu" in self.models_ else "mu_full"
        if self.outcome_pooling == "pooled":
            models = self.models_[kind]
            block: np.ndarray | None = self._indicators(np.full(Xa.shape[0], k))
        else:
            models = self.models_[kind][k] if kind == "mu" else [self.models_[kind][k]]
            block = None
        if Xa.shape[0] == 0:
            return [np.zeros((0, self.out_dim_)) for _ in models]
        preds = predict_models([(m, method, block) for m in models], Xa, n_jobs=self.n_jobs)
        return [self._to_outcome(p, m) for p, m in zip(preds, models, strict=True)]

    def e_predict(self, Xa: np.ndarray) -> np.ndarray:
        """(n, K) propensities on new rows (fold mean, or the known constant)."""
        models = self.models_.get("e")
        if models is None:
            known = self.oof_["e"]
            if np.allclose(known, known[0]):
                return np.broadcast_to(known[0], (Xa.shape[0], known.shape[1])).copy()
            raise ValueError(
                "Propensities were given per row at fit, so they are unknown for new rows: "
                "pass `propensity=` for the new rows to `predict` too."
            )
        K = len(self.variants_)
        preds = predict_models([(m, "predict_proba", None) for m in models], Xa, n_jobs=self.n_jobs)
        return np.mean(
            [align_proba(p, m.classes_, K) for p, m in zip(preds, models, strict=True)], axis=0
        )


_KIND_IDS = {"mu": 1, "mu_full": 2, "e": 3}


def _task_key(kind: str, group: int, fold: int) -> tuple[int, int, int]:
    """A fit's identity within the nuisance stage: its seed depends on nothing else."""
    kind_id = _KIND_IDS.get(kind)
    if kind_id is None:  # "m:c:k"
        _, c, k = kind.split(":")
        kind_id = 100 + 37 * int(c) + int(k)
    return kind_id, group, fold + 1
