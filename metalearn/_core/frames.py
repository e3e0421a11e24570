"""The dataframe boundary: pandas, Polars or numpy in; numpy inside; native out.

Every difference between dataframe libraries is handled here, through
narwhals, so that the rest of metalearn only ever sees numpy arrays.

Categorical columns (pandas ``category``, Polars ``Categorical``/``Enum``,
string columns of either) are encoded to integer codes stored as floats (a
missing value becomes ``NaN``). The category list of each column is fixed at
``fit``, and code ``k`` stands for its ``k``-th entry:

* a pandas ``category`` column or a Polars ``Enum`` column declares its
  categories: they are the list, in their declared order, including
  categories that do not occur in the data (which may then occur at predict);
* any other categorical column (Polars ``Categorical``, whose category list
  can be shared with other columns, and string columns) gets the sorted list
  of the distinct non-missing values seen at fit.

Either way, a pandas and a Polars frame holding the same values with the same
declared categories get identical codes. Categories are compared as strings.
A value at predict time that is not in the list raises a :class:`ValueError`
naming the column and the values, or, with ``handle_unknown="missing"``, is
encoded as a missing value with a :class:`UserWarning`. Base models that know
about categorical features (LightGBM) are told which columns are categorical;
other models receive the codes as ordinary numbers.

A column of the generic object dtype holding numbers (and missing values) is
numeric; one holding strings is categorical; one mixing numbers and other
values is rejected. Column names are handled as strings, so names that are
equal as strings (pandas ``1`` and ``"1"``) or duplicated are rejected.
"""

from __future__ import annotations

import numbers
import warnings
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import narwhals.stable.v2 as nw
import numpy as np
from narwhals.exceptions import DuplicateError

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
        Column position -> array of the category labels (as strings) of that
        column; code ``k`` stands for ``categories[k]``. The declared categories
        in their order for a pandas ``category`` or Polars ``Enum`` column, else
        the sorted distinct values seen at fit.
    backend : object or None
        The narwhals implementation of the input frame (``None`` for numpy).
    owner : str or None
        Name of the estimator that holds the schema, used in error messages.
    handle_unknown : {"error", "missing"}
        What :func:`encode_features` does with a category not seen at fit
        when this schema is applied and no ``handle_unknown`` is passed.
    """

    n_features: int
    feature_names: tuple[str, ...] | None
    categories: dict[int, np.ndarray] = field(default_factory=dict)
    backend: Any = None
    owner: str | None = None
    handle_unknown: str = "error"

    @property
    def categorical_indices(self) -> list[int]:
        return sorted(self.categories)

    def output_names(self) -> list[str]:
        if self.feature_names is not None:
            return list(self.feature_names)
        return [f"x{i}" for i in range(self.n_features)]


def _is_sparse(X: Any) -> bool:
    return hasattr(X, "tocsr") or type(X).__module__.startswith("scipy.sparse")


HANDLE_UNKNOWN = ("error", "missing")


def _from_native(X: Any, name: str) -> Any:
    """``nw.from_native`` (pass-through) with a clear error for duplicate column names."""
    if isinstance(X, np.ndarray | list | tuple):
        return X  # not a frame (and narwhals' first call would look up its plugins)
    try:
        return nw.from_native(X, pass_through=True)
    except DuplicateError as exc:
        counts = Counter(list(getattr(X, "columns", ())))
        shown = ", ".join(f"{c!r} ({k} times)" for c, k in counts.items() if k > 1)
        raise ValueError(
            f"`{name}` has duplicate column names: {shown or exc}. Each column needs its "
            "own name: rename or drop the duplicates (for pandas, e.g. "
            f"`{name}.loc[:, ~{name}.columns.duplicated()]` keeps the first of each)."
        ) from exc


def as_narwhals(X: Any, *, name: str = "X") -> Any:
    """Return a narwhals eager DataFrame for a frame input, or ``None`` for arrays.

    Lazy frames are collected, with a :class:`UserWarning` saying so.
    """
    obj = _from_native(X, name)
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


def _check_column_names(columns: list[Any], name: str) -> None:
    """Reject column labels that are equal once turned into strings (``1`` and ``"1"``)."""
    groups: dict[str, list[Any]] = {}
    for c in columns:
        groups.setdefault(str(c), []).append(c)
    clashes = [labels for labels in groups.values() if len(labels) > 1]
    if clashes:
        shown = "; ".join(" and ".join(repr(c) for c in labels) for labels in clashes[:5])
        raise ValueError(
            f"`{name}` has column names that are equal as strings: {shown}"
            f"{' ...' if len(clashes) > 5 else ''}. metalearn refers to columns by their "
            "names as strings, so these would be taken for one column; rename them so that "
            f"their strings differ (e.g. `{name}.columns = [...]`)."
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real | Decimal | np.bool_)


def _object_numbers(series: Any, column: str, name: str) -> np.ndarray | None:
    """Float values of an object column holding numbers, ``None`` if it holds none.

    Missing values become ``NaN``; a column with no non-missing value counts as
    numbers. A column mixing numbers and other values raises.
    """
    values = np.asarray(series.to_numpy(), dtype=object)
    null = np.asarray(series.is_null().to_numpy(), dtype=bool)
    present = values[~null]
    is_num = np.fromiter((_is_number(v) for v in present), dtype=bool, count=len(present))
    if present.size and not is_num.any():
        return None
    if not is_num.all():
        number, other = present[is_num][0], present[~is_num][0]
        raise ValueError(
            f"Column {column!r} of `{name}` has the object dtype and mixes numbers and other "
            f"values (e.g. {number!r}, {other!r}); {int((~is_num).sum())} of {present.size} "
            "non-missing values are not numbers. Give the column one type: cast it to "
            "numbers (e.g. `pd.to_numeric(col, errors='coerce')`) or to strings for a "
            "categorical column (e.g. `col.astype(str)`)."
        )
    out = np.full(len(values), np.nan)
    out[~null] = [float(v) for v in present]
    return out


def _category_keys(series: Any) -> tuple[np.ndarray, np.ndarray]:
    """String keys of a categorical/string column and its missing-value mask."""
    null = np.asarray(series.is_null().to_numpy(), dtype=bool)
    if series.dtype == nw.Object:
        # Object columns (of strings, or other Python objects) cannot be cast by
        # every backend; str() is what a cast to string gives for them.
        values = np.asarray(series.to_numpy(), dtype=object)[~null]
        return np.array([str(v) for v in values], dtype=str), null
    as_str = series.cast(nw.String).to_numpy()
    keys = np.asarray(as_str[~null], dtype=str)
    return keys, null


def _declared_categories(series: Any, dtype: Any, column: str, name: str) -> np.ndarray | None:
    """Categories a column declares (pandas ``category``, ``Enum``), in order; else ``None``.

    A Polars ``Categorical`` declares none: its category list is shared by the
    whole process and holds values of other columns.
    """
    declares = isinstance(dtype, nw.Enum) or (
        dtype == nw.Categorical and series.implementation.is_pandas_like()
    )
    if not declares:
        return None
    cats = series.cat.get_categories()
    cats = cats.filter(~cats.is_null()).cast(nw.String).to_numpy()
    cats = np.asarray(cats, dtype=str)
    if np.unique(cats).size != cats.size:
        repeated = sorted(c for c, k in Counter(cats.tolist()).items() if k > 1)
        raise ValueError(
            f"Column {column!r} of `{name}` declares categories that are equal as strings: "
            f"{repeated[:5]}. metalearn compares categories as strings; rename or merge "
            "those categories."
        )
    return cats


def _encode_column(
    series: Any,
    categories: np.ndarray,
    column: str,
    *,
    name: str = "X",
    handle_unknown: str = "error",
) -> np.ndarray:
    """Map category values to float codes (positions in ``categories``); missing -> NaN.

    Values not in ``categories`` raise (``handle_unknown="error"``) or become
    ``NaN`` with a warning (``"missing"``).
    """
    keys, null = _category_keys(series)
    out = np.full(len(null), np.nan)
    if keys.size:
        if len(categories) == 0:
            found = np.zeros(keys.shape, dtype=bool)
            codes = np.zeros(keys.shape, dtype=np.intp)
        else:
            # ``categories`` may be in declared (unsorted) order: look up in a sorted view.
            order = np.argsort(categories, kind="stable")
            ordered = categories[order]
            pos = np.minimum(np.searchsorted(ordered, keys), len(categories) - 1)
            found = ordered[pos] == keys
            codes = order[pos]
        codes = codes.astype(np.float64)
        if not np.all(found):
            unseen = sorted(set(keys[~found].tolist()))
            shown = ", ".join(repr(u) for u in unseen[:5])
            more = " ..." if len(unseen) > 5 else ""
            if handle_unknown == "error":
                raise ValueError(
                    f"Column {column!r} of `{name}` holds categories not seen at fit: "
                    f"{shown}{more}. Known categories: "
                    f"{categories[:10].tolist()}{' ...' if len(categories) > 10 else ''}. "
                    "Map them to a known category or to a missing value before predicting."
                )
            warnings.warn(
                f"Column {column!r} of `{name}` holds {int((~found).sum())} values of "
                f"categories not seen at fit (e.g. {shown}{more}); they are encoded as "
                "missing values. Map them to a known category to silence this warning, or "
                "pass handle_unknown='error' to raise instead.",
                UserWarning,
                stacklevel=4,
            )
            codes[~found] = np.nan
        out[~null] = codes
    return out


def encode_features(
    X: Any,
    schema: FrameSchema | None = None,
    *,
    name: str = "X",
    handle_unknown: str | None = None,
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
    handle_unknown : {"error", "missing"}, optional
        Default: the schema's own ``handle_unknown`` (``"error"`` without a
        schema). What to do, when ``schema`` is given, with a value of a categorical
        column that is not among the categories of the schema: ``"error"``
        raises a :class:`ValueError`; ``"missing"`` encodes it as a missing
        value (``NaN``) and warns, naming the column, how many values and
        examples.

    Returns
    -------
    array : ndarray of shape (n_samples, n_features)
    schema : FrameSchema
    """
    if handle_unknown is None:
        handle_unknown = "error" if schema is None else schema.handle_unknown
    if not isinstance(handle_unknown, str) or handle_unknown not in HANDLE_UNKNOWN:
        raise ValueError(
            f"`handle_unknown` must be 'error' or 'missing'; got {handle_unknown!r}. Use "
            "'error' to reject categories not seen at fit, 'missing' to encode them as "
            "missing values."
        )
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
    _check_column_names(list(df.columns), name)
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
        if schema is not None and j in schema.categories:
            cats = schema.categories[j]
            out[:, j] = _encode_column(series, cats, col, name=name, handle_unknown=handle_unknown)
            continue
        as_numbers = None
        if dtype == nw.Object:
            # Python objects: numbers (and missing values) are a numeric column,
            # strings a categorical one; a mix raises.
            as_numbers = _object_numbers(series, col, name)
            is_cat = as_numbers is None
        else:
            is_cat = dtype == nw.Categorical or isinstance(dtype, nw.Enum) or dtype == nw.String
        if is_cat:
            if schema is not None:
                raise ValueError(
                    f"Column {col!r} of `{name}` is categorical but was numeric at fit. "
                    "Pass the same column types as at fit."
                )
            declared = _declared_categories(series, dtype, col, name)
            cats = np.unique(_category_keys(series)[0]) if declared is None else declared
            categories[j] = cats
            out[:, j] = _encode_column(series, cats, col, name=name)
        elif as_numbers is not None:
            out[:, j] = as_numbers
        elif dtype.is_numeric() or dtype == nw.Boolean:
            values = series.to_numpy()
            out[:, j] = values.astype(np.float64) if values.dtype != object else _obj_float(series)
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


def _obj_float(series: Any) -> np.ndarray:
    """Floats of a numeric or boolean column that numpy gives as objects (it has nulls).

    The null mask decides what is missing: ``None`` (Polars), ``pd.NA`` (pandas'
    nullable ``boolean``) or anything else the backend uses for a null.
    """
    values = np.asarray(series.to_numpy(), dtype=object)
    null = np.asarray(series.is_null().to_numpy(), dtype=bool)
    out = np.full(len(values), np.nan)
    out[~null] = [float(v) for v in values[~null]]
    return out


def _check_width(width: int, schema: FrameSchema, name: str) -> None:
    if width != schema.n_features:
        owner = schema.owner or "the fitted model"
        raise ValueError(
            f"{name} has {width} features, but {owner} is expecting {schema.n_features} "
            "features as input."
        )


def to_1d_array(values: Any, *, name: str) -> np.ndarray:
    """Convert a Series, single-column frame, list or array to a 1-D numpy array."""
    obj = (
        values
        if isinstance(values, np.ndarray | list | tuple)
        else nw.from_native(values, pass_through=True, allow_series=True)
    )
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
    obj = _from_native(X, "X")
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
