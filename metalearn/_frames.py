"""The dataframe boundary: pandas, Polars or numpy in; numpy inside; native out.

Every difference between dataframe libraries is handled here, through
narwhals, so that the rest of metalearn only ever sees numpy arrays.

Categorical columns (pandas ``category``, Polars ``Categorical``/``Enum``,
string columns of either) are encoded to integer codes stored as floats (a
missing value becomes ``NaN``). The category list of each column is fixed at
``fit``: it is the sorted list of the distinct non-missing values seen there,
so that pandas and Polars inputs give identical codes. A value at predict
time that was not seen at fit raises a :class:`ValueError` naming the column
and the values. Base models that know about categorical features (LightGBM)
are told which columns are categorical; other models receive the codes as
ordinary numbers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import narwhals.stable.v2 as nw
import numpy as np

__all__ = ["FrameSchema", "encode_features", "to_native_frame", "to_1d_array"]


@dataclass(frozen=True)
class FrameSchema:
    """What ``fit`` learned about the columns of ``X``.

    Attributes
    ----------
    n_features : int
        Number of columns.
    feature_names : tuple of str or None
        Column names when ``X`` was a dataframe, else ``None``.
    categories : dict
        Column position -> sorted array of the categories seen at fit.
    backend : object or None
        The narwhals implementation of the input frame (``None`` for numpy).
    owner : str or None
        Name of the estimator that holds the schema, used in error messages.
    """

    n_features: int
    feature_names: tuple[str, ...] | None
    categories: dict[int, np.ndarray] = field(default_factory=dict)
    backend: Any = None
    owner: str | None = None

    @property
    def categorical_indices(self) -> list[int]:
        return sorted(self.categories)

    def output_names(self) -> list[str]:
        if self.feature_names is not None:
            return list(self.feature_names)
        return [f"x{i}" for i in range(self.n_features)]


def _is_sparse(X: Any) -> bool:
    return hasattr(X, "tocsr") or type(X).__module__.startswith("scipy.sparse")


def as_narwhals(X: Any, *, name: str = "X") -> Any:
    """Return a narwhals eager DataFrame for a frame input, or ``None`` for arrays.

    Lazy frames are collected, with a :class:`UserWarning` saying so.
    """
    obj = nw.from_native(X, pass_through=True)
    if isinstance(obj, nw.LazyFrame):
        warnings.warn(
            f"`{name}` is a lazy frame; metalearn collects it into memory before fitting. "
            "Call `.collect()` yourself to silence this warning.",
            UserWarning,
            stacklevel=3,
        )
        return obj.collect()
    if isinstance(obj, nw.DataFrame):
        return obj
    return None


def _category_keys(series: Any) -> tuple[np.ndarray, np.ndarray]:
    """String keys of a categorical/string column and its missing-value mask."""
    null = np.asarray(series.is_null().to_numpy(), dtype=bool)
    as_str = series.cast(nw.String).to_numpy()
    keys = np.asarray(as_str[~null], dtype=str)
    return keys, null


def _encode_column(series: Any, categories: np.ndarray, column: str) -> np.ndarray:
    """Map category values to float codes; missing -> NaN; unseen -> error."""
    keys, null = _category_keys(series)
    out = np.full(len(null), np.nan)
    if keys.size:
        if len(categories) == 0:
            found = np.zeros(keys.shape, dtype=bool)
            pos = np.zeros(keys.shape, dtype=np.intp)
        else:
            pos = np.minimum(np.searchsorted(categories, keys), len(categories) - 1)
            found = categories[pos] == keys
        if not np.all(found):
            unseen = sorted(set(keys[~found].tolist()))
            shown = ", ".join(repr(u) for u in unseen[:5])
            raise ValueError(
                f"Column {column!r} of `X` holds categories not seen at fit: {shown}"
                f"{' ...' if len(unseen) > 5 else ''}. Known categories: "
                f"{categories[:10].tolist()}{' ...' if len(categories) > 10 else ''}. "
                "Map them to a known category or to a missing value before predicting."
            )
        out[~null] = pos.astype(np.float64)
    return out


def encode_features(
    X: Any, schema: FrameSchema | None = None, *, name: str = "X"
) -> tuple[np.ndarray, FrameSchema]:
    """Convert ``X`` to a 2-D float64 array, learning (``schema=None``) or applying a schema.

    Parameters
    ----------
    X : pandas/Polars DataFrame, narwhals-compatible frame, or array-like
        The features.
    schema : FrameSchema, optional
        The schema learned at fit. When given, column names, their order and
        the category lists are checked against it.
    name : str
        Argument name used in error messages.

    Returns
    -------
    array : ndarray of shape (n_samples, n_features)
    schema : FrameSchema
    """
    if _is_sparse(X):
        raise TypeError(
            f"`{name}` is a sparse matrix; metalearn needs dense features. "
            "Convert it with `.toarray()` first."
        )
    df = as_narwhals(X, name=name)
    if df is None:
        arr = np.asarray(X)
        if arr.dtype == object:
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError) as exc:
                # Keep the exception type numpy raised (TypeError for e.g. dicts), as
                # scikit-learn's own validation does.
                raise type(exc)(
                    f"`{name}` must be numeric or a dataframe with categorical columns; "
                    f"got a numpy array of dtype object that cannot be cast to float ({exc})."
                ) from exc
        if arr.ndim != 2:
            raise ValueError(
                f"`{name}` must be 2-dimensional (n_samples, n_features); got an array of "
                f"shape {arr.shape}. Reshape your data with `X.reshape(-1, 1)` for a single "
                "feature or `X.reshape(1, -1)` for a single sample."
            )
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"`{name}` must be numeric; got an array of dtype {arr.dtype}.")
        if np.iscomplexobj(arr):
            raise ValueError(f"`{name}` must be real-valued: Complex data not supported.")
        arr = np.ascontiguousarray(arr, dtype=np.float64)
        if schema is None:
            schema = FrameSchema(n_features=arr.shape[1], feature_names=None)
        else:
            _check_width(arr.shape[1], schema, name)
            if schema.feature_names is not None:
                warnings.warn(
                    f"`{name}` has no column names but the learner was fitted on a frame "
                    f"with columns {list(schema.feature_names)[:5]}...; columns are matched "
                    "by position.",
                    UserWarning,
                    stacklevel=3,
                )
        return arr, schema

    # Column names are handled as strings; ``original`` maps them back to the
    # frame's own labels (pandas allows ints and other objects as labels).
    original = {str(c): c for c in df.columns}
    columns = list(original)
    if schema is not None and schema.feature_names is not None:
        missing = [c for c in schema.feature_names if c not in columns]
        if missing:
            raise ValueError(
                f"`{name}` lacks columns seen at fit: {missing}. Pass a frame with all of "
                f"{list(schema.feature_names)}."
            )
        extra = [c for c in columns if c not in schema.feature_names]
        if extra:
            raise ValueError(f"`{name}` has columns not seen at fit: {extra}. Drop them or refit.")
        if columns != list(schema.feature_names):
            # Reordered columns: read them in the fitted order.
            columns = list(schema.feature_names)
    elif schema is not None:
        _check_width(len(columns), schema, name)

    n = df.shape[0]
    out = np.empty((n, len(columns)), dtype=np.float64)
    categories: dict[int, np.ndarray] = {}
    dtypes = df.schema
    for j, col in enumerate(columns):
        dtype = dtypes[original[col]]
        series = df.get_column(original[col])
        is_cat = (
            dtype == nw.Categorical
            or isinstance(dtype, nw.Enum)
            or dtype == nw.String
            or dtype == nw.Object
        )
        if schema is not None and j in schema.categories:
            cats = schema.categories[j]
            out[:, j] = _encode_column(series, cats, col)
        elif is_cat:
            if schema is not None:
                raise ValueError(
                    f"Column {col!r} of `{name}` is categorical but was numeric at fit. "
                    "Pass the same column types as at fit."
                )
            keys, _ = _category_keys(series)
            cats = np.unique(keys)
            categories[j] = cats
            out[:, j] = _encode_column(series, cats, col)
        elif dtype.is_numeric() or dtype == nw.Boolean:
            values = series.to_numpy()
            out[:, j] = values.astype(np.float64) if values.dtype != object else _obj_float(values)
        else:
            raise TypeError(
                f"Column {col!r} of `{name}` has dtype {dtype}, which metalearn cannot use as "
                "a feature. Convert it to numbers or categories (e.g. extract the year "
                "from a date) first."
            )
    if schema is None:
        schema = FrameSchema(
            n_features=len(columns),
            feature_names=tuple(columns),
            categories=categories,
            backend=df.implementation,
        )
    return out, schema


def _obj_float(values: np.ndarray) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _check_width(width: int, schema: FrameSchema, name: str) -> None:
    if width != schema.n_features:
        owner = schema.owner or "the fitted model"
        raise ValueError(
            f"{name} has {width} features, but {owner} is expecting {schema.n_features} "
            "features as input."
        )


def to_1d_array(values: Any, *, name: str) -> np.ndarray:
    """Convert a Series, single-column frame, list or array to a 1-D numpy array."""
    obj = nw.from_native(values, pass_through=True, allow_series=True)
    if isinstance(obj, nw.LazyFrame):
        obj = obj.collect()
    if isinstance(obj, nw.DataFrame):
        if obj.shape[1] != 1:
            raise ValueError(
                f"`{name}` must be one column; got a frame with {obj.shape[1]} columns."
            )
        obj = obj.get_column(obj.columns[0])
    arr = obj.to_numpy() if isinstance(obj, nw.Series) else np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.ravel()
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-dimensional; got shape {np.shape(arr)}.")
    return arr


def native_backend(X: Any) -> Any:
    """The narwhals implementation of a frame input, or ``None`` for arrays."""
    obj = nw.from_native(X, pass_through=True)
    if isinstance(obj, nw.DataFrame | nw.LazyFrame):
        return obj.implementation
    return None


def to_native_frame(columns: dict[str, np.ndarray], backend: Any = None) -> Any:
    """Build a frame from named 1-D arrays in the given backend (default: Polars)."""
    if backend is None or backend == nw.Implementation.UNKNOWN:
        backend = nw.Implementation.POLARS
    if hasattr(backend, "is_polars") and not (backend.is_polars() or backend.is_pandas()):
        # Other backends (e.g. pyarrow, modin) go through Polars for simplicity.
        try:
            return nw.from_dict(columns, backend=backend).to_native()
        except Exception:  # pragma: no cover - exotic backends
            backend = nw.Implementation.POLARS
    return nw.from_dict(columns, backend=backend).to_native()
