"""The data edge: user input that used to become numpy silently wrong.

Each test pins one case where a frame or treatment vector was converted to
numbers without complaint but with the wrong meaning (numbers read as
categories, columns merged, infinite or mixed-type treatment labels,
declared category order ignored, unseen categories) and checks the fixed
behaviour: the right numbers, or an error that names the argument.
"""

from __future__ import annotations

import re
import warnings
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest
from conftest import make_learner

from metalearn import DRLearner, TLearner
from metalearn._core.frames import encode_features
from metalearn._core.validation import encode_treatment

FRAME_BACKENDS = ("pandas", "polars")


def _object_frame(kind: str, values: list[Any], name: str = "a") -> Any:
    """A one-column frame whose column has the generic object dtype."""
    if kind == "pandas":
        return pd.DataFrame({name: pd.Series(values, dtype=object)})
    return pl.DataFrame({name: pl.Series(name, values, dtype=pl.Object)})


# ------------------------------------------------------------ 1. object columns


@pytest.mark.parametrize("kind", FRAME_BACKENDS)
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.5, 2.0, 10.0], [1.5, 2.0, 10.0]),
        ([1.5, None, 10.0, float("nan")], [1.5, np.nan, 10.0, np.nan]),
        ([3, 20, 100], [3.0, 20.0, 100.0]),
        ([Decimal("0.5"), np.float32(2.0), np.int64(10)], [0.5, 2.0, 10.0]),
    ],
    ids=["floats", "with-missing", "ints", "numeric-scalars"],
)
def test_object_column_of_numbers_is_numeric(
    kind: str, values: list[Any], expected: list[float]
) -> None:
    arr, schema = encode_features(_object_frame(kind, values))
    assert arr.dtype == np.float64
    np.testing.assert_array_equal(arr[:, 0], expected)
    assert schema.categories == {}


@pytest.mark.parametrize("kind", FRAME_BACKENDS)
def test_object_column_of_numbers_at_predict(kind: str) -> None:
    _, schema = encode_features(_object_frame(kind, [1.5, 2.0, 10.0]))
    arr, _ = encode_features(_object_frame(kind, [10.0, None]), schema)
    np.testing.assert_array_equal(arr[:, 0], [10.0, np.nan])


@pytest.mark.parametrize("kind", FRAME_BACKENDS)
def test_object_column_mixing_numbers_and_strings_raises(kind: str) -> None:
    frame = _object_frame(kind, [1.5, "x", 10.0, None], name="income")
    pattern = (
        r"Column 'income' of `X` has the object dtype and mixes numbers and other values "
        r"\(e\.g\. 1\.5, 'x'\).*cast"
    )
    with pytest.raises(ValueError, match=pattern):
        encode_features(frame)


@pytest.mark.parametrize("kind", FRAME_BACKENDS)
def test_object_column_of_strings_stays_categorical(kind: str) -> None:
    arr, schema = encode_features(_object_frame(kind, ["b", None, "a", "b"]))
    np.testing.assert_array_equal(arr[:, 0], [1.0, np.nan, 0.0, 1.0])
    assert schema.categories[0].tolist() == ["a", "b"]


def test_object_column_of_numbers_fits_as_a_number(small_data: Any) -> None:
    X = pd.DataFrame(small_data.X, columns=small_data.feature_names)
    as_object = X.astype({"x0": object})
    numeric = make_learner(TLearner).fit(X, small_data.y, small_data.w)
    learner = make_learner(TLearner).fit(as_object, small_data.y, small_data.w)
    assert learner.schema_.categories == {}
    np.testing.assert_allclose(learner.predict(as_object), numeric.predict(X))


# ------------------------------------------------------------ 2. column names


def test_column_names_colliding_as_strings_raise() -> None:
    frame = pd.DataFrame(np.ones((3, 4)), columns=[1, "1", "b", "c"])
    pattern = r"`X` has column names that are equal as strings: 1 and '1'.*rename"
    with pytest.raises(ValueError, match=pattern):
        encode_features(frame)


def test_column_names_colliding_as_strings_raise_in_fit(small_data: Any) -> None:
    frame = pd.DataFrame(small_data.X[:, :4], columns=[1, "1", "b", "c"])
    with pytest.raises(ValueError, match=r"1 and '1'"):
        make_learner(TLearner).fit(frame, small_data.y, small_data.w)


def test_duplicate_column_names_raise() -> None:
    frame = pd.DataFrame(np.ones((3, 4)), columns=["a", "b", "a", "c"])
    pattern = r"`X` has duplicate column names: 'a' \(2 times\).*rename or drop"
    with pytest.raises(ValueError, match=pattern):
        encode_features(frame)


# ------------------------------------------------------------ 3. treatment labels


def _series(kind: str, values: Any) -> Any:
    if kind == "numpy":
        return np.asarray(values)
    if kind == "object":
        return np.asarray(values, dtype=object)
    if kind == "pandas":
        return pd.Series(values)
    return pl.Series("w", values)


@pytest.mark.parametrize("kind", ["numpy", "object", "pandas", "polars"])
@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_treatment_raises(kind: str, bad: float) -> None:
    w = _series(kind, [0.0, 1.0, bad, 1.0])
    pattern = (
        r"`w` holds 1 infinite values \(inf/-inf\), e\.g\. at row 2; treatment labels must "
        r"be finite"
    )
    with pytest.raises(ValueError, match=pattern):
        encode_treatment(w, 4)


def test_infinite_treatment_raises_in_fit(small_data: Any) -> None:
    w = small_data.w.astype(np.float64)
    w[7] = np.inf
    with pytest.raises(ValueError, match=r"`w` holds 1 infinite values"):
        make_learner(DRLearner).fit(small_data.X, small_data.y, w)


def test_infinite_policy_raises() -> None:
    variants = encode_treatment(np.array([0, 1, 0, 1]), 4).variants
    with pytest.raises(ValueError, match=r"`policy` holds 1 infinite values"):
        encode_treatment(np.array([0.0, np.inf, 1.0, 0.0]), 4, variants, name="policy")


@pytest.mark.parametrize("kind", ["numpy", "pandas"])
def test_treatment_labels_equal_as_strings_raise(kind: str) -> None:
    w = _series(kind, np.array([1, "1", 0, 1], dtype=object))
    pattern = (
        r"`w` mixes label types: int \(e\.g\. 1\) and str \(e\.g\. '1'\)\. Use one type for "
        r"all labels"
    )
    with pytest.raises(TypeError, match=pattern):
        encode_treatment(w, 4)


@pytest.mark.parametrize(
    ("values", "types"),
    [
        ([0, "treated", 0, "treated"], r"int \(e\.g\. 0\) and str \(e\.g\. 'treated'\)"),
        ([False, "b", True, "b"], r"bool \(e\.g\. False\) and str \(e\.g\. 'b'\)"),
        ([0, True, 1, False], r"bool \(e\.g\. True\) and int \(e\.g\. 0\)"),
    ],
    ids=["int-str", "bool-str", "int-bool"],
)
def test_treatment_mixed_label_types_raise(values: list[Any], types: str) -> None:
    with pytest.raises(TypeError, match=rf"`w` mixes label types: {types}"):
        encode_treatment(np.array(values, dtype=object), 4)


def test_treatment_mixed_types_raise_in_fit(small_data: Any) -> None:
    w = small_data.w.astype(object)
    w[w == 1] = "1"
    w[0] = 1
    with pytest.raises(TypeError, match=r"`w` mixes label types: int"):
        make_learner(TLearner).fit(small_data.X, small_data.y, w)


@pytest.mark.parametrize(
    ("w", "variants"),
    [
        (np.array([True, False, True, False]), [False, True]),
        (np.array([2, 0, 1, 0]), [0, 1, 2]),
        (np.array([1.0, 0.0, 2.0, 0.0]), [0, 1, 2]),
        (np.array([1, 0.0, 2, 0], dtype=object), [0, 1, 2]),
        (np.array([0.5, 0.0, 0.5, 0.0]), [0.0, 0.5]),
        (np.array(["b", "a", "b", "a"]), ["a", "b"]),
        (np.array(["b", "a", "b", "a"], dtype=object), ["a", "b"]),
        (pd.Series(["b", "a", "b", "a"], dtype="category"), ["a", "b"]),
        (pd.Series([1, 0, 1, 0], dtype="category"), [0, 1]),
        (pl.Series(["b", "a", "b", "a"], dtype=pl.Enum(["b", "a"])), ["a", "b"]),
        (pl.Series([1, 0, 1, 0]), [0, 1]),
    ],
    ids=[
        "bool",
        "int",
        "integral-float",
        "object-int-float",
        "float",
        "str",
        "object-str",
        "pandas-category",
        "pandas-int-category",
        "polars-enum",
        "polars-int",
    ],
)
def test_treatment_of_one_label_type_is_kept(w: Any, variants: list[Any]) -> None:
    treatment = encode_treatment(w, 4)
    assert treatment.variants.tolist() == variants
    assert [type(v) for v in treatment.variants.tolist()] == [type(v) for v in variants]
    labels = np.asarray(w, dtype=object)
    decoded = treatment.variants[treatment.codes]
    assert [str(v) for v in decoded] == [str(type(variants[0])(v)) for v in labels]


# ------------------------------------------------------------ 4. declared categories


DECLARED = ["west", "north", "south", "east"]  # deliberately not sorted; "east" unobserved
OBSERVED = ["north", "west", "south", "north", None, "west"]


def _declared_frame(kind: str, values: list[Any]) -> Any:
    if kind == "pandas-category":
        return pd.DataFrame({"region": pd.Categorical(values, categories=DECLARED)})
    if kind == "polars-enum":
        return pl.DataFrame({"region": pl.Series(values, dtype=pl.Enum(DECLARED))})
    if kind == "polars-categorical":
        return pl.DataFrame({"region": pl.Series(values, dtype=pl.Categorical)})
    if kind == "pandas-string":
        return pd.DataFrame({"region": pd.Series(values, dtype=object)})
    return pl.DataFrame({"region": pl.Series(values, dtype=pl.String)})


@pytest.mark.parametrize("kind", ["pandas-category", "polars-enum"])
def test_declared_categories_are_the_category_list(kind: str) -> None:
    arr, schema = encode_features(_declared_frame(kind, OBSERVED))
    assert schema.categories[0].tolist() == DECLARED
    np.testing.assert_array_equal(arr[:, 0], [1.0, 0.0, 2.0, 1.0, np.nan, 0.0])
    # a declared category unseen at fit is known at predict
    new, _ = encode_features(_declared_frame(kind, ["east", "west"]), schema)
    np.testing.assert_array_equal(new[:, 0], [3.0, 0.0])


@pytest.mark.parametrize("kind", ["polars-categorical", "pandas-string", "polars-string"])
def test_undeclared_categories_are_sorted_observed_values(kind: str) -> None:
    arr, schema = encode_features(_declared_frame(kind, OBSERVED))
    assert schema.categories[0].tolist() == ["north", "south", "west"]
    np.testing.assert_array_equal(arr[:, 0], [0.0, 2.0, 1.0, 0.0, np.nan, 2.0])


def test_pandas_category_and_polars_enum_give_identical_codes() -> None:
    a, schema_a = encode_features(_declared_frame("pandas-category", OBSERVED))
    b, schema_b = encode_features(_declared_frame("polars-enum", OBSERVED))
    np.testing.assert_array_equal(a, b)
    assert schema_a.categories[0].tolist() == schema_b.categories[0].tolist()
    # either schema reads the other library's frame alike
    c, _ = encode_features(_declared_frame("polars-enum", OBSERVED), schema_a)
    np.testing.assert_array_equal(c, a)


def test_declared_categories_reach_the_learner(small_data: Any) -> None:
    X = pd.DataFrame(small_data.X, columns=small_data.feature_names)
    X["region"] = pd.Categorical(
        np.where(small_data.X[:, 0] > 0, "west", "north"), categories=DECLARED
    )
    learner = make_learner(TLearner).fit(X, small_data.y, small_data.w)
    assert learner.schema_.categories[X.shape[1] - 1].tolist() == DECLARED
    # "east" is declared but never observed: predicting it is no error
    X.loc[0, "region"] = "east"
    assert np.isfinite(learner.predict(X)).all()


def test_declared_numeric_categories_keep_their_order() -> None:
    frame = pd.DataFrame({"size": pd.Categorical([10, 2, 10], categories=[2, 10, 100])})
    arr, schema = encode_features(frame)
    assert schema.categories[0].tolist() == ["2", "10", "100"]
    np.testing.assert_array_equal(arr[:, 0], [1.0, 0.0, 1.0])


# ------------------------------------------------------------ 5. unseen categories


def _region(kind: str, values: list[Any]) -> Any:
    if kind == "pandas":
        return pd.DataFrame({"x": np.arange(len(values), dtype=float), "region": values})
    return pl.DataFrame({"x": np.arange(len(values), dtype=float), "region": values})


@pytest.mark.parametrize("kind", FRAME_BACKENDS)
def test_unseen_category_raises_by_default(kind: str) -> None:
    _, schema = encode_features(_region(kind, ["north", "south", "north"]))
    pattern = r"Column 'region' of `X` holds categories not seen at fit: 'west'"
    with pytest.raises(ValueError, match=pattern):
        encode_features(_region(kind, ["west", "north"]), schema)
    with pytest.raises(ValueError, match=pattern):
        encode_features(_region(kind, ["west", "north"]), schema, handle_unknown="error")


@pytest.mark.parametrize("kind", FRAME_BACKENDS)
def test_unseen_category_as_missing_warns(kind: str) -> None:
    _, schema = encode_features(_region(kind, ["north", "south", "north"]))
    new = _region(kind, ["west", "north", "up", None, "west"])
    pattern = (
        r"Column 'region' of `X` holds 3 values of categories not seen at fit "
        r"\(e\.g\. 'up', 'west'\); they are encoded as missing values"
    )
    with pytest.warns(UserWarning, match=pattern):
        arr, _ = encode_features(new, schema, handle_unknown="missing")
    np.testing.assert_array_equal(arr[:, 1], [np.nan, 0.0, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(arr[:, 0], [0.0, 1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("kind", FRAME_BACKENDS)
def test_known_categories_as_missing_do_not_warn(kind: str) -> None:
    _, schema = encode_features(_region(kind, ["north", "south", "north"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        arr, _ = encode_features(_region(kind, ["south"]), schema, handle_unknown="missing")
    np.testing.assert_array_equal(arr[:, 1], [1.0])


@pytest.mark.parametrize("value", ["ignore", 0, "Missing"])
def test_bad_handle_unknown_raises(value: Any) -> None:
    pattern = re.escape(f"`handle_unknown` must be 'error' or 'missing'; got {value!r}.")
    with pytest.raises(ValueError, match=pattern):
        encode_features(_region("pandas", ["north"]), handle_unknown=value)
    with pytest.raises(ValueError, match=pattern):
        encode_features(np.ones((2, 2)), handle_unknown=value)


def test_handle_unknown_defaults_to_the_schema() -> None:
    from dataclasses import replace

    _, schema = encode_features(_region("pandas", ["north", "south"]))
    with pytest.raises(ValueError, match="not seen at fit"):
        encode_features(_region("pandas", ["east"]), schema)
    lenient = replace(schema, handle_unknown="missing")
    with pytest.warns(UserWarning):
        arr, _ = encode_features(_region("pandas", ["east"]), lenient)
    assert np.isnan(arr[0, 1])


# ------------------------------------------------------------ 6. numeric inf


@pytest.mark.parametrize("kind", FRAME_BACKENDS)
def test_numeric_infinity_is_left_as_is(kind: str) -> None:
    values = [1.0, np.inf, -np.inf]
    frame = pd.DataFrame({"a": values}) if kind == "pandas" else pl.DataFrame({"a": values})
    arr, _ = encode_features(frame)
    np.testing.assert_array_equal(arr[:, 0], values)


# ------------------------------------------------------------ 7. found by test_properties


@pytest.mark.parametrize(
    "column",
    [
        pd.Series([True, None, False, True], dtype="boolean"),
        pd.Series([True, None, False, True], dtype="bool[pyarrow]"),
        pl.Series("a", [True, None, False, True]),
    ],
    ids=["pandas-boolean", "pandas-arrow-bool", "polars-boolean"],
)
def test_boolean_column_with_missing_values_is_numeric(column: Any) -> None:
    # pandas' nullable boolean gave numpy objects with pd.NA, which float() rejected.
    frame = pd.DataFrame({"a": column}) if isinstance(column, pd.Series) else pl.DataFrame(column)
    arr, schema = encode_features(frame)
    np.testing.assert_array_equal(arr[:, 0], [1.0, np.nan, 0.0, 1.0])
    assert schema.categories == {}


def _lgbm_classifier() -> Any:
    from lightgbm import LGBMClassifier

    return LGBMClassifier(n_estimators=3, min_child_samples=2, verbose=-1)


@pytest.mark.parametrize("honest", [False, True], ids=["fit", "fit_predict"])
def test_variant_with_a_single_outcome_class(honest: bool) -> None:
    # The outcome model of variant 0 sees only class "no": LightGBM still returns two
    # predict_proba columns for its one class, which align_proba could not place.
    X = pd.DataFrame({"a": np.arange(12.0)})
    w = [0, 1] * 6
    y = ["no"] * 6 + ["no", "yes"] * 3
    y = [y[i] if w[i] == 1 else "no" for i in range(12)]
    learner = TLearner(outcome_model=_lgbm_classifier(), n_folds=2, random_state=0)
    tau = learner.fit_predict(X, y, w) if honest else learner.fit(X, y, w).predict(X)
    assert tau.shape == (12,)
    # P(yes | control) is 0: the effect is P(yes | treated), in [0, 1].
    assert ((tau >= 0) & (tau <= 1)).all()
    mu = learner.predict_outcomes(X)
    np.testing.assert_array_equal(mu[:, 0], 0.0)


def test_align_proba_of_a_single_class_model() -> None:
    from metalearn._core.data import align_proba

    two_columns = np.array([[0.9, 0.1], [0.8, 0.2]])  # LightGBM's shape for one class
    np.testing.assert_array_equal(
        align_proba(two_columns, np.array([1]), 3), [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    )
    np.testing.assert_array_equal(
        align_proba(np.ones((2, 1)), np.array([0]), 2), [[1.0, 0.0], [1.0, 0.0]]
    )


@pytest.mark.parametrize(
    ("treated", "honest"), [(1, False), (2, True)], ids=["fit-1-row", "fit_predict-n_folds-rows"]
)
def test_variant_with_too_few_rows_for_a_model(treated: int, honest: bool) -> None:
    from lightgbm import LGBMRegressor

    X = pd.DataFrame({"a": np.arange(10.0)})
    w = [0] * (10 - treated) + [1] * treated
    learner = TLearner(
        outcome_model=LGBMRegressor(n_estimators=3, min_child_samples=2, verbose=-1),
        n_folds=2,
        random_state=0,
    )
    fit = learner.fit_predict if honest else learner.fit
    with pytest.raises(ValueError, match=r"`w`|n_folds"):
        fit(X, np.arange(10.0), w)
