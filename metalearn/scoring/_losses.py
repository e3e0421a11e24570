"""Losses of the base models of a fitted learner and of the scoring nuisances.

Each outcome, marginal-outcome and propensity model is scored on the rows it
can be judged on (the rows of its variant, of its pair of variants, or all
rows) with a regression metric (outcome of a regressor) or a probabilistic
classification metric (outcome classes, propensities). A fold's model is
scored on its own rows; ``"mean"`` is the fold-averaged prediction that
``predict`` uses on new rows; ``"all"`` a model fitted on all training rows;
``"oof"`` (scoring nuisances) is the out-of-fold prediction of every row.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from sklearn import metrics

from metalearn._core.data import Data, align_proba, outcome_columns
from metalearn._core.tasks import predict_models

__all__ = ["resolve_metrics", "learner_rows", "scoring_rows", "METRIC_NAMES"]

_REGRESSION = {
    "rmse": metrics.root_mean_squared_error,
    "mse": metrics.mean_squared_error,
    "mae": metrics.mean_absolute_error,
    "r2": metrics.r2_score,
}
_CLASSIFICATION = {"log_loss", "roc_auc", "accuracy"}
_ALIASES = {
    "root_mean_squared_error": "rmse",
    "neg_root_mean_squared_error": "rmse",
    "mean_squared_error": "mse",
    "neg_mean_squared_error": "mse",
    "mean_absolute_error": "mae",
    "neg_mean_absolute_error": "mae",
    "r2_score": "r2",
    "neg_log_loss": "log_loss",
    "roc_auc_ovr": "roc_auc",
    "accuracy_score": "accuracy",
}
METRIC_NAMES = sorted([*_REGRESSION, *_CLASSIFICATION])

Metric = tuple[str, Any]  # (name, name-or-callable)


def _resolve(metric: Any, *, classification: bool, what: str) -> Metric:
    if callable(metric):
        return getattr(metric, "__name__", "custom"), metric
    if not isinstance(metric, str):
        raise TypeError(
            f"The {what} metric must be a name or a callable `f(y_true, y_pred)`; got "
            f"{type(metric).__name__}."
        )
    name = _ALIASES.get(metric, metric)
    if name not in _REGRESSION and name not in _CLASSIFICATION:
        raise ValueError(
            f"Unknown {what} metric {metric!r}; use one of {METRIC_NAMES} (or their "
            "scikit-learn names such as 'neg_root_mean_squared_error'), or a callable."
        )
    if classification and name in _REGRESSION:
        raise ValueError(
            f"The {what} metric {metric!r} is for numeric outcomes, but the {what} models "
            f"predict class probabilities; use one of {sorted(_CLASSIFICATION)}."
        )
    if not classification and name in _CLASSIFICATION:
        raise ValueError(
            f"The {what} metric {metric!r} is for class probabilities, but the {what} "
            f"models predict a numeric outcome; use one of {sorted(_REGRESSION)}."
        )
    return name, name


def resolve_metrics(metric: Any, *, classification: bool) -> dict[str, Metric]:
    """``metric`` (None, name, callable, or dict by model kind) -> metric per kind."""
    spec: dict[str, Any] = {}
    if isinstance(metric, dict):
        unknown = [k for k in metric if k not in ("outcome", "propensity")]
        if unknown:
            raise ValueError(f"`metric` keys must be 'outcome' and/or 'propensity'; got {unknown}.")
        spec = dict(metric)
    elif metric is not None:
        spec = {"outcome": metric}
    outcome = spec.get("outcome", "log_loss" if classification else "rmse")
    propensity = spec.get("propensity", "log_loss")
    return {
        "outcome": _resolve(outcome, classification=classification, what="outcome"),
        "propensity": _resolve(propensity, classification=True, what="propensity"),
    }


def _score(metric: Metric, y: np.ndarray, pred: np.ndarray, sw: np.ndarray | None) -> float:
    """``pred``: (n,) numeric predictions or (n, C) class probabilities; ``y``: values/codes."""
    fn = metric[1]
    if len(y) == 0:
        return float("nan")
    if callable(fn):
        kw = {}
        if sw is not None and "sample_weight" in inspect.signature(fn).parameters:
            kw["sample_weight"] = sw
        return float(fn(y, pred, **kw))
    if fn in _REGRESSION:
        return float(_REGRESSION[fn](y, pred, sample_weight=sw))
    labels = np.arange(pred.shape[1])
    if fn == "log_loss":
        p = np.clip(pred, 1e-15, 1.0)
        return float(
            metrics.log_loss(y, p / p.sum(axis=1, keepdims=True), labels=labels, sample_weight=sw)
        )
    if fn == "accuracy":
        return float(metrics.accuracy_score(y, pred.argmax(axis=1), sample_weight=sw))
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")
    if pred.shape[1] == 2:
        return float(metrics.roc_auc_score(y, pred[:, 1], sample_weight=sw))
    return float(
        metrics.roc_auc_score(
            y, pred, multi_class="ovr", labels=labels, average="macro", sample_weight=sw
        )
    )


def _proba(cols: np.ndarray) -> np.ndarray:
    """(n, D) outcome columns -> (n, C) class probabilities (binary: D=1)."""
    return np.column_stack([1 - cols[:, 0], cols[:, 0]]) if cols.shape[1] == 1 else cols


def _outcome_eval(metric: Metric, data: Data, rows: np.ndarray, cols: np.ndarray) -> float:
    sw = None if data.sample_weight is None else data.sample_weight[rows]
    if data.classes is None:
        return _score(metric, data.y[rows], cols[:, 0], sw)
    return _score(metric, data.y[rows], _proba(cols), sw)


Row = dict[str, Any]


def _row(
    source: str, model: str, variant: str, fold: str, metric: Metric, value: float, n: int
) -> Row:
    return {
        "source": source,
        "model": model,
        "variant": variant,
        "fold": fold,
        "metric": metric[0],
        "value": value,
        "n": n,
    }


def _fold_rows(
    source: str,
    model: str,
    variant: str,
    metric: Metric,
    fold_cols: list[np.ndarray],
    scorer: Callable[[np.ndarray], float],
    n: int,
) -> list[Row]:
    out = [
        _row(source, model, variant, str(f), metric, scorer(c), n) for f, c in enumerate(fold_cols)
    ]
    out.append(_row(source, model, variant, "mean", metric, scorer(np.mean(fold_cols, 0)), n))
    return out


def learner_rows(
    est: Any,
    X: Any,
    Xa: np.ndarray,
    data: Data,
    control: int,
    metric: dict[str, Metric],
) -> list[Row]:
    """Losses of a fitted learner's own base models on the evaluation rows."""
    labels = [str(v) for v in data.variants]
    out: list[Row] = []
    nuis = getattr(est, "nuisance_", None)
    models = getattr(nuis, "models_", {}) if nuis is not None else {}
    method = "predict" if data.classes is None else "predict_proba"
    classes = data.classes

    def predict(ms: list[Any], rows: np.ndarray) -> list[np.ndarray]:
        if len(rows) == 0:
            return [np.zeros((0, data.out_dim)) for _ in ms]
        preds = predict_models([(m, method, None) for m in ms], Xa[rows], n_jobs=est.n_jobs)
        return [outcome_columns(p, m, classes) for p, m in zip(preds, ms, strict=True)]

    m_out = metric["outcome"]
    if nuis is not None and "mu" in models:
        for k in range(data.n_variants):
            rows = np.flatnonzero(data.w == k)
            out.extend(
                _fold_rows(
                    "learner",
                    "outcome",
                    labels[k],
                    m_out,
                    nuis.mu_model_predictions(Xa[rows], k),
                    partial(_outcome_eval, m_out, data, rows),
                    len(rows),
                )
            )
    elif nuis is not None and "mu_full" in models:  # one model per variant fitted on all its rows
        for k in range(data.n_variants):
            rows = np.flatnonzero(data.w == k)
            (cols,) = nuis.mu_model_predictions(Xa[rows], k)
            value = _outcome_eval(m_out, data, rows, cols)
            out.append(_row("learner", "outcome", labels[k], "all", m_out, value, len(rows)))
    elif est._has_outcome_models():
        mu = np.asarray(est.predict_outcomes(X), dtype=np.float64)
        mu = mu.reshape(mu.shape[0], mu.shape[1], -1)
        for k in range(data.n_variants):
            rows = np.flatnonzero(data.w == k)
            out.append(
                _row(
                    "learner",
                    "outcome",
                    labels[k],
                    "mean",
                    m_out,
                    _outcome_eval(m_out, data, rows, mu[rows, k, :]),
                    len(rows),
                )
            )
    for kind in sorted(k for k in models if k.startswith("m:")):
        _, a, b = kind.split(":")
        if control not in (int(a), int(b)):
            continue
        rows = np.flatnonzero(np.isin(data.w, [int(a), int(b)]))
        other = int(b) if int(a) == control else int(a)
        out.extend(
            _fold_rows(
                "learner",
                "marginal",
                labels[other],
                m_out,
                predict(models[kind], rows),
                partial(_outcome_eval, m_out, data, rows),
                len(rows),
            )
        )
    if models.get("e") is not None:
        m_e = metric["propensity"]
        K = data.n_variants
        preds = predict_models(
            [(m, "predict_proba", None) for m in models["e"]], Xa, n_jobs=est.n_jobs
        )
        fold_p = [align_proba(p, m.classes_, K) for p, m in zip(preds, models["e"], strict=True)]
        out.extend(
            _fold_rows(
                "learner",
                "propensity",
                "all",
                m_e,
                fold_p,
                lambda p: _score(m_e, data.w, p, data.sample_weight),
                data.n,
            )
        )
    return out


def scoring_rows(sn: Any, data: Data, metric: dict[str, Metric]) -> list[Row]:
    """Out-of-fold losses of the scoring nuisances, per fold and overall."""
    labels = [str(v) for v in data.variants]
    folds = sn.folds
    n_folds = int(folds.max()) + 1
    out: list[Row] = []
    m_out, m_e = metric["outcome"], metric["propensity"]

    def per_fold(model: str, variant: str, rows: np.ndarray, score: Any) -> None:
        for f in range(n_folds):
            r = rows[folds[rows] == f]
            out.append(_row("scoring", model, variant, str(f), score[1], score[0](r), len(r)))
        out.append(_row("scoring", model, variant, "oof", score[1], score[0](rows), len(rows)))

    for k in range(data.n_variants):
        rows = np.flatnonzero(data.w == k)
        per_fold(
            "outcome",
            labels[k],
            rows,
            (lambda r, k=k: _outcome_eval(m_out, data, r, sn.outcomes[r, k, :]), m_out),
        )
    for k, marg in sn.marginal.items():
        rows = np.flatnonzero((data.w == k) | (data.w == sn.control))
        per_fold(
            "marginal",
            labels[k],
            rows,
            (lambda r, m=marg: _outcome_eval(m_out, data, r, m[r]), m_out),
        )
    if not sn.known_propensity:
        sw = data.sample_weight

        def prop(r: np.ndarray) -> float:
            return _score(m_e, data.w[r], sn.propensity[r], None if sw is None else sw[r])

        per_fold("propensity", "all", np.arange(data.n), (prop, m_e))
    return out
