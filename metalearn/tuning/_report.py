"""Tidy result frames of the searches and the choice of the best candidate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from metalearn._core.frames import native_backend, to_native_frame
from metalearn._core.validation import VersionedPickle
from metalearn.tuning._params import short_repr

__all__ = ["best_index", "column", "ranks", "results_frame", "validation_set"]


def column(values: Sequence[Any]) -> list[Any]:
    """Values of one parameter across candidates, made one frame type.

    Numbers stay numbers (ints become floats when floats are mixed in),
    strings stay strings; anything else, and mixtures, become reprs.
    ``None`` marks a candidate without the parameter.
    """
    vals = [short_repr(v) for v in values]
    present = [v for v in vals if v is not None]
    if all(isinstance(v, bool) for v in present):
        return vals
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        if any(isinstance(v, float) for v in present):
            return [None if v is None else float(v) for v in vals]
        return vals
    if all(isinstance(v, str) for v in present):
        return vals
    return [None if v is None else (v if isinstance(v, str) else repr(v)) for v in vals]


def ranks(values: Sequence[float], direction: str) -> np.ndarray:
    """1 for the best value; ties share the smaller rank; ``nan`` ranks last."""
    v = np.asarray(values, dtype=np.float64)
    key = -v if direction == "maximize" else v.copy()
    key[~np.isfinite(key)] = np.inf
    order = np.sort(key)
    return (np.searchsorted(order, key, side="left") + 1).astype(np.int64)


def best_index(values: Sequence[float], direction: str) -> int:
    """Position of the best finite value (the first among ties)."""
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).any():
        raise ValueError(
            "Every candidate scored nan on the `scoring` score, so none can be picked; "
            "choose another `scoring` (e.g. 'r_loss' or 'dr_loss')."
        )
    key = -v if direction == "maximize" else v.copy()
    key[~np.isfinite(key)] = np.inf
    return int(np.argmin(key))


def results_frame(
    records: Sequence[dict[str, Any]], param_names: Sequence[str], X: Any = None
) -> Any:
    """One row per record: leading columns, one column per parameter, then the rest.

    Each record holds ``"params"`` (a dict) and flat scalar fields. The frame
    has the type of ``X`` when it is a pandas frame, else Polars.
    """
    if not records:
        return to_native_frame({}, None)
    fields = [k for k in records[0] if k != "params"]
    lead = [k for k in ("stage", "candidate", "trial", "state", "learner") if k in fields]
    rest = [k for k in fields if k not in lead]
    cols: dict[str, Any] = {k: [r.get(k) for r in records] for k in lead}
    for name in param_names:
        cols[name] = column([r["params"].get(name) for r in records])
    cols["params"] = [repr({k: short_repr(v) for k, v in r["params"].items()}) for r in records]
    for k in rest:
        cols[k] = [r.get(k) for r in records]
    backend = native_backend(X) if X is not None else None
    if backend is not None and not backend.is_pandas():
        backend = None
    return to_native_frame(cols, backend)


def validation_set(X_val: Any, y_val: Any, w_val: Any) -> bool:
    """Whether a validation set is given; all three or none of its parts."""
    given = {"X_val": X_val, "y_val": y_val, "w_val": w_val}
    present = [k for k, v in given.items() if v is not None]
    if present and len(present) < 3:
        missing = [k for k in given if k not in present]
        raise ValueError(
            "A validation set needs `X_val`, `y_val` and `w_val`; "
            f"{', '.join(f'`{k}`' for k in present)} given but "
            f"{', '.join(f'`{k}`' for k in missing)} missing. Pass all three, or none to score by "
            "cross-fitting on the training rows."
        )
    return bool(present)


class BestEstimatorPredictions(VersionedPickle):
    """``predict`` and ``predict_frame`` of a search, delegated to ``best_estimator_``.

    A pickled search records the metalearn version; loading it under another
    version gives an :class:`~metalearn.InconsistentVersionWarning`.
    """

    best_estimator_: Any

    def predict(self, X: Any, **kwargs: Any) -> Any:
        """CATE of the refitted best learner: ``best_estimator_.predict(X)``."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict(X, **kwargs)

    def predict_frame(self, X: Any) -> Any:
        """``best_estimator_.predict_frame(X)``: labelled columns in the frame type of X."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_.predict_frame(X)
