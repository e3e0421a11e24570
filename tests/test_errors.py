"""Bad input: every path raises (or warns) with a message that names the problem."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import ALL_LEARNERS, make_learner, to_frame
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsRegressor

from metalearn import DRLearner, Nuisance, RLearner, SLearner, TLearner, XLearner

NUISANCE_LEARNERS = (TLearner, XLearner, RLearner, DRLearner)
EFFECT_LEARNERS = (XLearner, RLearner, DRLearner)
FRAME_BACKENDS = ("pandas", "polars")


def _lgbm_learner(cls: type) -> Any:
    # One thread per model: these tests are about input checks, not speed.
    small = {"n_estimators": 20, "verbose": -1, "n_jobs": 1}
    models = {
        "outcome_model": LGBMRegressor(**small),
        "propensity_model": LGBMClassifier(**small),
        "effect_model": LGBMRegressor(**small),
    }
    params = cls().get_params(deep=False)
    return make_learner(cls, **{k: v for k, v in models.items() if k in params})


# ------------------------------------------------------------------ treatment


@pytest.mark.parametrize("missing", [np.nan, None], ids=["nan", "none"])
@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_missing_treatment(cls: type, missing: Any, small_data: Any) -> None:
    w = small_data.w.astype(object if missing is None else np.float64)
    w[5] = missing
    with pytest.raises(ValueError, match=r"`w` holds 1 missing values \(NaN/None\), e.g. at row 5"):
        make_learner(cls).fit(small_data.X, small_data.y, w)


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_single_variant(cls: type, small_data: Any) -> None:
    w = np.zeros(len(small_data.y), dtype=int)
    with pytest.raises(ValueError, match=r"`w` holds a single variant \(0\)"):
        make_learner(cls).fit(small_data.X, small_data.y, w)


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_variant_with_fewer_rows_than_folds(cls: type, small_data: Any) -> None:
    w = np.zeros(len(small_data.y), dtype=int)
    w[:2] = 1
    learner = make_learner(cls, n_folds=3)
    # The S- and T-learner's fit needs no folds (one model on every row, or one per
    # variant on all its rows); their fit_predict cross-fits.
    full_fit = cls in (SLearner, TLearner)
    method = learner.fit_predict if full_fit else learner.fit
    with pytest.raises(ValueError, match=r"needs at least n_folds=3 rows .* the smallest has 2"):
        method(small_data.X, small_data.y, w)
    if full_fit:
        assert make_learner(cls, n_folds=3).fit(small_data.X, small_data.y, w).folds_ is None


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_unknown_control(cls: type, small_data: Any) -> None:
    with pytest.raises(ValueError, match=r"`control`='placebo' is not one of the variants"):
        make_learner(cls, control="placebo").fit(small_data.X, small_data.y, small_data.w)


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_treatment_length_mismatch(cls: type, small_data: Any) -> None:
    with pytest.raises(ValueError, match="`w` has 599 entries but `X` has 600 rows"):
        make_learner(cls).fit(small_data.X, small_data.y, small_data.w[:-1])


# -------------------------------------------------------------------- outcome


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_outcome_length_mismatch(cls: type, small_data: Any) -> None:
    with pytest.raises(ValueError, match="`y` has 601 entries but `X` has 600 rows"):
        make_learner(cls).fit(small_data.X, np.append(small_data.y, 0.0), small_data.w)


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_non_numeric_outcome_with_regressor(cls: type, small_data: Any) -> None:
    y = np.where(small_data.y > 0, "high", "low")
    message = "`y` must be numeric when the outcome model is a regressor"
    with pytest.raises(ValueError, match=message):
        make_learner(cls).fit(small_data.X, y, small_data.w)


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_single_class_outcome_with_classifier(cls: type, small_data: Any) -> None:
    y = np.ones(len(small_data.w), dtype=int)
    learner = make_learner(cls, outcome_model=LogisticRegression())
    with pytest.raises(ValueError, match=r"`y` holds a single class \(1\)"):
        learner.fit(small_data.X, y, small_data.w)


# ------------------------------------------------------------- model choices


@pytest.mark.parametrize("cls", EFFECT_LEARNERS)
def test_regressor_as_propensity_model(cls: type, small_data: Any) -> None:
    learner = make_learner(cls, propensity_model=LinearRegression())
    with pytest.raises(TypeError, match="`propensity_model` must be a classifier"):
        learner.fit(small_data.X, small_data.y, small_data.w)


@pytest.mark.parametrize("cls", EFFECT_LEARNERS)
def test_classifier_as_effect_model(cls: type, small_data: Any) -> None:
    learner = make_learner(cls, effect_model=LogisticRegression())
    with pytest.raises(TypeError, match="`effect_model` must be a regressor"):
        learner.fit(small_data.X, small_data.y, small_data.w)


def test_r_learner_effect_model_without_sample_weight(small_data: Any) -> None:
    learner = make_learner(RLearner, effect_model=KNeighborsRegressor())
    with pytest.raises(TypeError, match=r"`effect_model` \(KNeighborsRegressor\) must accept"):
        learner.fit(small_data.X, small_data.y, small_data.w)


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_one_fold(cls: type, small_data: Any) -> None:
    with pytest.raises(ValueError, match="`n_folds` must be an integer >= 2; got 1"):
        make_learner(cls, n_folds=1).fit(small_data.X, small_data.y, small_data.w)


# ------------------------------------------------------------------ features


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_nan_features_rejected_by_linear_models(cls: type, small_data: Any) -> None:
    X = small_data.X.copy()
    X[::7, 1] = np.nan
    with pytest.raises(ValueError, match=r"`X` holds NaN values but `outcome_model`.* cannot"):
        make_learner(cls).fit(X, small_data.y, small_data.w)


@pytest.mark.parametrize("cls", EFFECT_LEARNERS)
def test_nan_features_rejected_by_effect_model_before_any_fit(cls: type, small_data: Any) -> None:
    X = small_data.X.copy()
    X[::7, 1] = np.nan
    learner = make_learner(
        cls,
        outcome_model=LGBMRegressor(n_estimators=20, verbose=-1),
        propensity_model=LGBMClassifier(n_estimators=20, verbose=-1),
        effect_model=LinearRegression(),
    )
    with pytest.raises(ValueError, match="`X` holds NaN values but `effect_model` cannot"):
        learner.fit(X, small_data.y, small_data.w)
    assert not hasattr(learner, "nuisance_")


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_nan_features_accepted_by_lightgbm(cls: type, frame: Any, small_data: Any) -> None:
    X = small_data.X.copy()
    X[::7, 1] = np.nan
    Xf = frame(X)
    tau = _lgbm_learner(cls).fit(Xf, small_data.y, small_data.w).predict(Xf)
    assert tau.shape == (len(X),)
    assert np.isfinite(tau).all()


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_infinite_features(cls: type, frame: Any, small_data: Any) -> None:
    X = small_data.X.copy()
    X[3, 0] = np.inf
    with pytest.raises(ValueError, match=r"`X` holds \d+ infinite value"):
        _lgbm_learner(cls).fit(frame(X), small_data.y, small_data.w)


def test_lazy_frame_is_collected_with_a_warning(small_data: Any) -> None:
    pl = pytest.importorskip("polars")
    eager = pl.DataFrame(small_data.X, schema=list(small_data.feature_names), orient="row")
    with pytest.warns(UserWarning, match="lazy frame; metalearn collects it"):
        lazy_fit = make_learner(DRLearner).fit(eager.lazy(), small_data.y, small_data.w)
    eager_fit = make_learner(DRLearner).fit(eager, small_data.y, small_data.w)
    np.testing.assert_array_equal(lazy_fit.predict(eager), eager_fit.predict(eager))


# --------------------------------------------------------------- prediction


@pytest.mark.parametrize("method", ["predict", "predict_frame", "predict_outcomes", "ate"])
@pytest.mark.parametrize("cls", [SLearner, TLearner, DRLearner])
def test_methods_before_fit(cls: type, method: str, small_data: Any) -> None:
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        getattr(make_learner(cls), method)(small_data.X)


def _frame_with_category(kind: str, data: Any) -> Any:
    df = to_frame(data.X, kind, data.feature_names)
    group = np.where(data.X[:, 0] > 0, "north", "south")
    if kind == "pandas":
        return df.assign(region=group)
    import polars as pl

    return df.with_columns(pl.Series("region", group))


def _replace_region(kind: str, df: Any, value: str) -> Any:
    if kind == "pandas":
        out = df.copy()
        out.loc[0, "region"] = value
        return out
    import polars as pl

    return df.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit(value))
        .otherwise(pl.col("region"))
        .alias("region")
    )


@pytest.mark.parametrize("kind", FRAME_BACKENDS)
def test_unseen_category_at_predict(kind: str, small_data: Any) -> None:
    df = _frame_with_category(kind, small_data)
    learner = make_learner(DRLearner).fit(df, small_data.y, small_data.w)
    with pytest.raises(ValueError, match="Column 'region' of `X` holds categories not seen"):
        learner.predict(_replace_region(kind, df, "west"))


def _drop(kind: str, df: Any, column: str) -> Any:
    return df.drop(columns=column) if kind == "pandas" else df.drop(column)


def _add(kind: str, df: Any, column: str) -> Any:
    if kind == "pandas":
        return df.assign(**{column: 1.0})
    import polars as pl

    return df.with_columns(pl.lit(1.0).alias(column))


def _reorder(kind: str, df: Any) -> Any:
    columns = list(df.columns)[::-1]
    return df[columns] if kind == "pandas" else df.select(columns)


@pytest.mark.parametrize("kind", FRAME_BACKENDS)
def test_missing_column_at_predict(kind: str, small_data: Any) -> None:
    df = to_frame(small_data.X, kind, small_data.feature_names)
    learner = make_learner(TLearner).fit(df, small_data.y, small_data.w)
    with pytest.raises(ValueError, match=r"`X` lacks columns seen at fit: \['x2'\]"):
        learner.predict(_drop(kind, df, "x2"))


@pytest.mark.parametrize("kind", FRAME_BACKENDS)
def test_extra_column_at_predict(kind: str, small_data: Any) -> None:
    df = to_frame(small_data.X, kind, small_data.feature_names)
    learner = make_learner(TLearner).fit(df, small_data.y, small_data.w)
    with pytest.raises(ValueError, match=r"`X` has columns not seen at fit: \['bonus'\]"):
        learner.predict(_add(kind, df, "bonus"))


@pytest.mark.parametrize("kind", FRAME_BACKENDS)
@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_reordered_columns_at_predict(cls: type, kind: str, small_data: Any) -> None:
    df = _frame_with_category(kind, small_data)
    learner = make_learner(cls).fit(df, small_data.y, small_data.w)
    np.testing.assert_array_equal(learner.predict(_reorder(kind, df)), learner.predict(df))


# ------------------------------------------------------------------ nuisance


@pytest.mark.parametrize("cls", NUISANCE_LEARNERS)
def test_nuisance_and_outcome_model_together(cls: type, small_data: Any) -> None:
    learner = cls(nuisance=Nuisance(), outcome_model=LinearRegression())
    with pytest.raises(ValueError, match="Pass either `nuisance` or `outcome_model`, not both"):
        learner.fit(small_data.X, small_data.y, small_data.w)


@pytest.mark.parametrize("cls", NUISANCE_LEARNERS)
def test_fitted_nuisance_on_different_data(cls: type, small_data: Any) -> None:
    X, y, w = small_data.X, small_data.y, small_data.w
    nuisance = Nuisance(
        outcome_model=LinearRegression(), propensity_model=LogisticRegression(), n_folds=2
    ).fit(X, y, w)
    learner = make_learner(cls, nuisance=nuisance)
    with pytest.raises(ValueError, match="fitted `nuisance` was fitted on different data"):
        learner.fit(X[:500], y[:500], w[:500])


# ------------------------------------------------------ weights, propensities


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_sample_weight_length_mismatch(cls: type, small_data: Any) -> None:
    with pytest.raises(ValueError, match="`sample_weight` has 10 entries but `X` has 600 rows"):
        make_learner(cls).fit(small_data.X, small_data.y, small_data.w, sample_weight=np.ones(10))


@pytest.mark.parametrize(
    "propensity",
    [np.full((600, 3), 1 / 3), np.full(7, 0.5), np.full((600, 2, 1), 0.5)],
    ids=["three-columns", "wrong-length", "3-d"],
)
@pytest.mark.parametrize("cls", [XLearner, DRLearner])
def test_known_propensity_of_wrong_shape(cls: type, propensity: Any, small_data: Any) -> None:
    with pytest.raises(ValueError, match=r"`propensity` must be a scalar, a vector of 2"):
        make_learner(cls).fit(small_data.X, small_data.y, small_data.w, propensity=propensity)


@pytest.mark.parametrize(
    "propensity",
    [0.0, 1.0, 1.2, -0.1, np.where(np.arange(600) == 4, 1.0, 0.5)],
    ids=["zero", "one", "above-one", "negative", "row-at-one"],
)
@pytest.mark.parametrize("cls", [RLearner, DRLearner])
def test_known_propensity_outside_unit_interval(
    cls: type, propensity: Any, small_data: Any
) -> None:
    with pytest.raises(ValueError, match="`propensity` values must lie strictly between 0 and 1"):
        make_learner(cls).fit(small_data.X, small_data.y, small_data.w, propensity=propensity)
