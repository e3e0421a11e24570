"""Property-based tests of the frame edge (hypothesis).

Random small frames (8-60 rows, 1-5 columns) of every backend, with numeric
(int/float, with missing values: the base models are LightGBM, which takes
them), boolean, string and categorical (pandas ``category``, Polars
``Categorical`` and ``Enum``) columns, random treatment labels (ints or
strings, 2-4 variants) and controls, and a numeric or binary outcome. The
properties:

1. ``fit`` / ``fit_predict`` / ``predict`` raise nothing but metalearn's own
   errors (a ``ValueError``/``TypeError`` raised in a metalearn module whose
   message names an argument), whatever the input;
2. the documented shapes: ``predict`` gives ``(n,)`` for two variants and
   ``(n, K-1)`` for more, ``predict_frame`` has the columns
   ``tau_<variant>_vs_<control>`` in the backend of ``X``, ``variants_`` is
   sorted and ``control_`` is the one given;
3. the same data as pandas, Polars (and numpy when every column is numeric)
   gives identical predictions with a fixed ``random_state``, a model fitted
   on one backend predicts identically on another, and predicting permuted
   rows permutes the predictions;
4. new rows with an unseen category, a missing, an extra or reordered columns
   behave as documented in :func:`metalearn._core.frames.encode_features`.

Examples are derandomized (the same on every run) and the models tiny, so
that the file runs in well under a minute on one core.
"""

from __future__ import annotations

import os
import re
import traceback
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from lightgbm import LGBMClassifier, LGBMRegressor

from metalearn import DRLearner, RALearner, RLearner, SLearner, TLearner, XLearner

LEARNERS = (SLearner, TLearner, XLearner, RLearner, DRLearner, RALearner)
KINDS = ("float", "int", "bool", "str", "cat", "enum")
NUMERIC = frozenset({"float", "int", "bool"})
# Category labels, including ones a careless conversion would take for missing values
# or numbers ("", "nan", "None", "1").
POOL = ("a", "b", "c", "dd", "", "nan", "None", "1", "Zé")
UNSEEN = "zz-unseen"


#: METALEARN_PROPERTY_SCALE=10 runs ten times the examples (a longer hunt for bugs).
SCALE = float(os.environ.get("METALEARN_PROPERTY_SCALE", "1"))


def examples(n: int) -> settings:
    """``n`` derandomized examples (the same on every run), no deadline, no database."""
    return settings(
        max_examples=max(1, round(n * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ------------------------------------------------------------------ the data


@dataclass(frozen=True)
class Column:
    """One feature column as Python values (``None`` = missing) and how to render it."""

    name: str
    kind: str
    values: tuple[Any, ...]
    declared: tuple[str, ...] | None = None  # "enum": the declared categories
    pandas_string: bool = False  # "str": pandas' "string" dtype instead of object
    polars_nan: bool = False  # "float": missing as NaN (not null) in Polars


@dataclass(frozen=True)
class Case:
    columns: tuple[Column, ...]
    w: tuple[Any, ...]
    labels: tuple[Any, ...]  # the K labels the treatment was drawn from
    y: tuple[Any, ...]
    binary: bool
    control: Any

    @property
    def n(self) -> int:
        return len(self.w)

    @property
    def numeric(self) -> bool:
        return all(c.kind in NUMERIC for c in self.columns)

    @property
    def backends(self) -> tuple[str, ...]:
        return ("pandas", "polars", "numpy") if self.numeric else ("pandas", "polars")


@st.composite
def columns(draw: st.DrawFn, n: int, name: str) -> Column:
    kind = draw(st.sampled_from(KINDS))
    nulls = draw(st.booleans())
    elem: st.SearchStrategy[Any]
    declared = None
    if kind == "float":
        elem = st.floats(-100, 100, allow_nan=False, allow_infinity=False)
    elif kind == "int":
        elem = st.integers(-50, 50)
    elif kind == "bool":
        elem = st.booleans()
    else:
        observed = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=4, unique=True))
        elem = st.sampled_from(observed)
        if kind == "enum":
            extra = draw(st.lists(st.sampled_from(POOL), max_size=2, unique=True))
            declared = tuple(draw(st.permutations(sorted(set(observed) | set(extra)))))
    if nulls:
        elem = st.one_of(st.none(), elem)
    values = tuple(draw(st.lists(elem, min_size=n, max_size=n)))
    return Column(
        name=name,
        kind=kind,
        values=values,
        declared=declared,
        pandas_string=kind == "str" and draw(st.booleans()),
        polars_nan=kind == "float" and draw(st.booleans()),
    )


def column_names() -> st.SearchStrategy[list[str]]:
    name = st.one_of(
        st.sampled_from(["x", "age", "region", "x 1", "1", "é", "tau"]),
        st.text("abc_", min_size=1, max_size=3),
    )
    return st.lists(name, min_size=1, max_size=5, unique=True)


LABEL_SETS = st.one_of(
    st.lists(st.integers(-3, 10), min_size=2, max_size=4, unique=True),
    st.lists(
        st.sampled_from(["control", "a", "b", "B", "t 1", "0"]), min_size=2, max_size=4, unique=True
    ),
)


@st.composite
def cases(draw: st.DrawFn, *, valid: bool) -> Case:
    """A random data set; ``valid`` ones have enough rows per variant (and class) to fit.

    Invalid ones may hold a single variant, variants or classes with one row, a
    control that is not a variant, a single outcome class.
    """
    labels = tuple(draw(LABEL_SETS))
    binary = draw(st.booleans())
    k = len(labels)
    # Valid: four rows or more per variant, so that with two folds every model is
    # trained on two rows or more (LightGBM needs two; see test_edge's fold tests).
    n = draw(st.integers(max(8, 4 * k) if valid else 8, 60))
    names = draw(column_names())
    cols = tuple(draw(columns(n, name)) for name in names)
    if valid:
        # Every variant has n // k >= 4 rows.
        order = draw(st.permutations(range(n)))
        w = [labels[order[i] % k] for i in range(n)]
        control = draw(st.one_of(st.none(), st.sampled_from(labels)))
    else:
        w = draw(st.lists(st.sampled_from(labels), min_size=n, max_size=n))
        control = draw(st.one_of(st.none(), st.sampled_from(labels), st.just("not-a-variant")))
    if binary:
        classes = draw(st.sampled_from([(0, 1), ("no", "yes"), (False, True)]))
        if valid:
            # Both classes in each variant, twice or more (folds stratify by pair).
            y: list[Any] = [None] * n
            for lab in labels:
                rows = [i for i in range(n) if w[i] == lab]
                for j, i in enumerate(rows):
                    y[i] = classes[int(j >= len(rows) // 2)]
        else:
            y = draw(st.lists(st.sampled_from(classes), min_size=n, max_size=n))
    else:
        y = draw(st.lists(st.floats(-10, 10, allow_nan=False), min_size=n, max_size=n))
    return Case(cols, tuple(w), labels, tuple(y), binary, control)


# ---------------------------------------------------------------- rendering


def _pandas_column(c: Column) -> Any:
    v = list(c.values)
    has_null = any(x is None for x in v)
    if c.kind == "float":
        return pd.Series([np.nan if x is None else x for x in v], dtype="float64")
    if c.kind == "int":
        return pd.Series(v, dtype="Int64" if has_null else "int64")
    if c.kind == "bool":
        return pd.Series(v, dtype="boolean" if has_null else "bool")
    if c.kind == "str":
        return pd.Series(v, dtype="string" if c.pandas_string else object)
    categories = sorted({x for x in v if x is not None}) if c.kind == "cat" else c.declared
    return pd.Series(pd.Categorical(v, categories=categories))


def _polars_column(c: Column) -> Any:
    v = list(c.values)
    if c.kind == "float":
        missing = float("nan") if c.polars_nan else None
        return pl.Series(c.name, [missing if x is None else x for x in v], dtype=pl.Float64)
    dtype = {
        "int": pl.Int64,
        "bool": pl.Boolean,
        "str": pl.String,
        "cat": pl.Categorical,
    }.get(c.kind)
    if dtype is None:
        assert c.declared is not None
        dtype = pl.Enum(list(c.declared))
    return pl.Series(c.name, v, dtype=dtype)


def render(cols: tuple[Column, ...], backend: str) -> Any:
    """The columns as a pandas or Polars frame, or a numpy array (numeric columns only)."""
    if backend == "pandas":
        return pd.DataFrame({c.name: _pandas_column(c) for c in cols})
    if backend == "polars":
        return pl.DataFrame([_polars_column(c) for c in cols])
    assert all(c.kind in NUMERIC for c in cols)
    return np.column_stack(
        [np.array([np.nan if x is None else float(x) for x in c.values]) for c in cols]
    )


def render_w(case: Case, how: int) -> Any:
    """The treatment as a list, numpy array, pandas or Polars series (``how`` 0-5)."""
    w = list(case.w)
    strings = isinstance(w[0], str)
    if how == 0:
        return w
    if how == 1:
        return np.asarray(w)
    if how == 2:
        return pd.Series(w, dtype="category" if strings else None)
    if how == 3:
        return pd.Series(w, dtype="string" if strings else "Int64")
    if how == 4:
        return pl.Series("w", w, dtype=pl.Categorical if strings else None)
    return pl.Series("w", w)


def render_y(case: Case, how: int) -> Any:
    """The outcome as a list, numpy array, pandas or Polars series (``how`` 0-3)."""
    y = list(case.y)
    if how == 0:
        return y
    if how == 1:
        return np.asarray(y)
    if how == 2:
        return pd.Series(y)
    return pl.Series("y", y)


def tiny_learner(cls: type, binary: bool, **kw: Any) -> Any:
    """``cls`` with 3-tree LightGBM base models, two folds and a fixed seed."""

    def lgbm(kind: type) -> Any:
        return kind(n_estimators=3, min_child_samples=2, verbose=-1, n_jobs=1)

    args: dict[str, Any] = {
        "outcome_model": lgbm(LGBMClassifier if binary else LGBMRegressor),
        "propensity_model": lgbm(LGBMClassifier),
        "effect_model": lgbm(LGBMRegressor),
        "n_folds": 2,
        "random_state": 0,
    }
    params = cls().get_params(deep=False)
    args = {k: v for k, v in args.items() if k in params}
    args.update(kw)
    return cls(**args)


def quiet(fn: Any, *args: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


# ------------------------------------------------------- 1. metalearn errors

#: Words by which a message names the argument it is about.
ARGUMENTS = re.compile(
    r"`\w+`|\b(X|y|w|n_folds|control|outcome_model|propensity_model|effect_model)\b"
)


def is_metalearn_error(exc: BaseException) -> bool:
    """A ValueError/TypeError raised in a metalearn module, with a message naming an argument."""
    if not isinstance(exc, ValueError | TypeError):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    innermost = exc.__traceback__
    while innermost is not None and innermost.tb_next is not None:
        innermost = innermost.tb_next
    assert innermost is not None
    module = innermost.tb_frame.f_globals.get("__name__", "")
    return module.startswith("metalearn") and ARGUMENTS.search(str(exc)) is not None


def _one_column_case(w: tuple[Any, ...]) -> Case:
    n = len(w)
    column = Column("a", "float", tuple(float(i) for i in range(n)))
    return Case((column,), w, (0, 1), tuple(float(i) for i in range(n)), False, None)


#: A variant whose rows leave one training row for a per-variant model (one row in all,
#: or exactly ``n_folds`` rows when cross-fitting): a metalearn error naming `w`.
@examples(70)
@example(
    case=_one_column_case((0,) * 9 + (1,)),
    cls=TLearner,
    backend="pandas",
    how_w=0,
    how_y=0,
    honest=False,
)
@example(
    case=_one_column_case((0,) * 8 + (1,) * 2),
    cls=TLearner,
    backend="pandas",
    how_w=0,
    how_y=0,
    honest=True,
)
@given(
    case=cases(valid=False),
    cls=st.sampled_from(LEARNERS),
    backend=st.sampled_from(("pandas", "polars", "numpy")),
    how_w=st.integers(0, 5),
    how_y=st.integers(0, 3),
    honest=st.booleans(),
)
def test_only_metalearn_errors(
    case: Case, cls: type, backend: str, how_w: int, how_y: int, honest: bool
) -> None:
    if backend not in case.backends:
        backend = "pandas"
    X = render(case.columns, backend)
    y, w = render_y(case, how_y), render_w(case, how_w)
    learner = tiny_learner(cls, case.binary, control=case.control)
    try:
        if honest:
            quiet(learner.fit_predict, X, y, w)
        else:
            quiet(learner.fit, X, y, w)
        quiet(learner.predict, X)
    except Exception as exc:
        detail = "".join(traceback.format_exception(exc))
        assert is_metalearn_error(exc), f"not a metalearn error:\n{detail}"
        event(f"metalearn error: {str(exc)[:40]}")
    else:
        event("fitted and predicted")


def test_too_few_rows_for_the_folds_is_a_metalearn_error() -> None:
    X = pd.DataFrame({"a": np.arange(10.0)})
    w = ["t"] + ["c"] * 9
    with pytest.raises(ValueError, match=r"n_folds=2") as info:
        tiny_learner(DRLearner, False).fit(X, np.arange(10.0), w)
    assert is_metalearn_error(info.value)


# ------------------------------------------------------------- 2. the shapes


def _default_control(labels: list[Any]) -> Any:
    for candidate in (0, "0", "control", False):
        if any(type(v) is type(candidate) and v == candidate for v in labels):
            return candidate
    return labels[0]


@examples(25)
@given(
    case=cases(valid=True),
    cls=st.sampled_from(LEARNERS),
    backend=st.sampled_from(("pandas", "polars", "numpy")),
    how_w=st.integers(0, 5),
    how_y=st.integers(0, 3),
    index=st.integers(-5, 100),
)
def test_documented_shapes(
    case: Case, cls: type, backend: str, how_w: int, how_y: int, index: int
) -> None:
    if backend not in case.backends:
        backend = "polars"
    X = render(case.columns, backend)
    if backend == "pandas":
        X.index = pd.RangeIndex(index, index + 3 * case.n, 3)[::-1]  # not 0..n-1
    learner = tiny_learner(cls, case.binary, control=case.control)
    oof = quiet(learner.fit_predict, X, render_y(case, how_y), render_w(case, how_w))
    variants = sorted(set(case.w))
    assert learner.variants_.tolist() == variants
    control = _default_control(variants) if case.control is None else case.control
    assert learner.control_ == control
    assert type(
        learner.control_.item() if hasattr(learner.control_, "item") else learner.control_
    ) is type(control)
    K, n = len(variants), case.n
    shape = (n,) if K == 2 else (n, K - 1)
    tau = quiet(learner.predict, X)
    assert tau.shape == shape
    assert oof.shape == shape
    assert np.isfinite(tau).all()
    frame = quiet(learner.predict_frame, X)
    assert isinstance(frame, pd.DataFrame if backend == "pandas" else pl.DataFrame)
    assert list(frame.columns) == [f"tau_{v}_vs_{control}" for v in variants if v != control]
    np.testing.assert_array_equal(frame.to_numpy(), tau.reshape(n, -1))
    if backend == "pandas":
        assert frame.index.equals(X.index)  # joins back onto X


# ------------------------------------------------- 3. identical across backends


@examples(25)
@given(
    case=cases(valid=True),
    cls=st.sampled_from(LEARNERS),
    honest=st.booleans(),
    data=st.data(),
)
def test_identical_across_backends(case: Case, cls: type, honest: bool, data: Any) -> None:
    frames = {b: render(case.columns, b) for b in case.backends}
    preds, fitted = {}, {}
    for backend, X in frames.items():
        learner = tiny_learner(cls, case.binary, control=case.control)
        if honest:
            preds[backend] = quiet(learner.fit_predict, X, list(case.y), list(case.w))
        else:
            quiet(learner.fit, X, list(case.y), list(case.w))
            preds[backend] = quiet(learner.predict, X)
        fitted[backend] = learner
    first = preds["pandas"]
    for backend, p in preds.items():
        np.testing.assert_allclose(p, first, rtol=1e-12, atol=0, err_msg=backend)
    # A model fitted on one backend predicts rows of another identically.
    tau = quiet(fitted["pandas"].predict, frames["pandas"])
    for backend, X in frames.items():
        if backend != "numpy":  # numpy rows: matched by position, with a warning
            np.testing.assert_allclose(
                quiet(fitted["pandas"].predict, X), tau, rtol=1e-12, atol=0, err_msg=backend
            )
            np.testing.assert_allclose(
                quiet(fitted[backend].predict, frames["pandas"]), tau, rtol=1e-12, atol=0
            )
    # Predicting permuted rows permutes the predictions.
    perm = np.asarray(data.draw(st.permutations(range(case.n))))
    backend = data.draw(st.sampled_from(sorted(frames)))
    X = frames[backend]
    shuffled = X.iloc[perm] if backend == "pandas" else X[perm]
    np.testing.assert_allclose(
        quiet(fitted[backend].predict, shuffled),
        quiet(fitted[backend].predict, X)[perm],
        rtol=1e-12,
        atol=0,
    )


# ------------------------------------------------------------- 4. new rows


@examples(20)
@given(
    case=cases(valid=True),
    backend=st.sampled_from(("pandas", "polars")),
    data=st.data(),
)
def test_new_rows(case: Case, backend: str, data: Any) -> None:
    X = render(case.columns, backend)
    names = [c.name for c in case.columns]
    learner = quiet(tiny_learner(TLearner, case.binary).fit, X, list(case.y), list(case.w))
    tau = quiet(learner.predict, X)

    # Reordered columns are read by name.
    order = data.draw(st.permutations(names))
    np.testing.assert_array_equal(quiet(learner.predict, X[order]), tau)

    # A missing column raises, naming it.
    gone = data.draw(st.sampled_from(names))
    kept = [c for c in names if c != gone]
    with pytest.raises(ValueError, match=re.escape(f"`X` lacks columns seen at fit: {[gone]!r}")):
        learner.predict(X[kept] if backend == "pandas" else X.select(kept))

    # An extra column raises, naming it.
    extra = "extra-" + "".join(names)
    wider = (
        X.assign(**{extra: 1.0})
        if backend == "pandas"
        else X.with_columns(pl.lit(1.0).alias(extra))
    )
    with pytest.raises(
        ValueError, match=re.escape(f"`X` has columns not seen at fit: {[extra]!r}")
    ):
        learner.predict(wider)

    # An unseen category: an error naming the column, or with handle_unknown="missing"
    # a warning and the prediction of a missing value.
    categorical = [j for j, c in enumerate(case.columns) if c.kind in ("str", "cat", "enum")]
    if not categorical:
        return
    j = data.draw(st.sampled_from(categorical))
    row = data.draw(st.integers(0, case.n - 1))
    col = case.columns[j]

    def with_value(value: Any) -> Any:
        values = list(col.values)
        values[row] = value
        plain = Column(col.name, "str", tuple(values))  # an Enum cannot hold UNSEEN
        return render((*case.columns[:j], plain, *case.columns[j + 1 :]), backend)

    unseen, null = with_value(UNSEEN), with_value(None)
    pattern = re.escape(f"Column {col.name!r} of `X` holds categories not seen at fit: {UNSEEN!r}")
    with pytest.raises(ValueError, match=pattern):
        learner.predict(unseen)
    lenient = tiny_learner(TLearner, case.binary, handle_unknown="missing")
    quiet(lenient.fit, X, list(case.y), list(case.w))
    with pytest.warns(UserWarning, match=rf"Column {re.escape(repr(col.name))} of `X` holds 1 "):
        got = lenient.predict(unseen)
    np.testing.assert_array_equal(got, quiet(lenient.predict, null))
    if col.kind == "enum":
        # Categories declared but not observed at fit are known at predict.
        assert col.declared is not None
        declared = [c for c in col.declared if c not in col.values]
        if declared:
            values = list(col.values)
            values[row] = declared[0]
            same = Column(col.name, col.kind, tuple(values), col.declared)
            new = render((*case.columns[:j], same, *case.columns[j + 1 :]), backend)
            assert np.isfinite(quiet(learner.predict, new)).all()
