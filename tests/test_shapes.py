"""Output shapes, labels and frame types of every learner.

Variants (two, or three with string labels), outcome kinds (regression,
binary, three classes) and input frames (numpy, pandas, Polars, with and
without a categorical column).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression

import metalearn as ml
from metalearn.datasets import simulate_multiarm, simulate_nie_wager

LEARNERS = ("S", "T", "X", "R", "DR")
LABELS = np.array(["A", "B", "C"])
N = 600
N_NEW = 37
N_FOLDS = 2


def make(name: str, outcome: Any, *, effect: Any = None, propensity: Any = None, **kw: Any) -> Any:
    """Learner ``name`` with the given base models, 2 folds, a fixed seed."""
    common: dict[str, Any] = {"n_folds": N_FOLDS, "random_state": 0, "n_jobs": 1, **kw}
    if name == "S":
        return ml.SLearner(outcome_model=outcome, **common)
    if name == "T":
        return ml.TLearner(outcome_model=outcome, **common)
    cls = {"X": ml.XLearner, "R": ml.RLearner, "DR": ml.DRLearner}[name]
    return cls(
        outcome_model=outcome,
        propensity_model=LogisticRegression() if propensity is None else propensity,
        effect_model=LinearRegression() if effect is None else effect,
        **common,
    )


def regression_outcome() -> LinearRegression:
    return LinearRegression()


def classifier_outcome() -> LogisticRegression:
    return LogisticRegression(max_iter=500)


def three_variant_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X, string labels A/B/C (A is the largest arm), continuous y."""
    sim = simulate_multiarm(n=N, seed=seed)
    return sim.X, LABELS[sim.w], sim.y


def two_variant_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sim = simulate_nie_wager("B", n=N, seed=seed)
    return sim.X, sim.w, sim.y


def as_classes(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Cut a continuous outcome into classes with string labels."""
    cuts = np.quantile(y, np.linspace(0, 1, n_classes + 1)[1:-1])
    names = np.array(["lo", "mid", "hi"])[:n_classes] if n_classes == 3 else np.array(["no", "yes"])
    return names[np.digitize(y, cuts)]


# ------------------------------------------------------- three string variants
@pytest.mark.parametrize("name", LEARNERS)
def test_three_string_variants(name: str) -> None:
    X, w, y = three_variant_data()
    learner = make(name, regression_outcome(), control="A")
    oof = learner.fit_predict(X, y, w)
    assert oof.shape == (N, 2)
    assert list(learner.variants_) == ["A", "B", "C"]
    assert learner.control_ == "A"
    Xn = X[:N_NEW]
    tau = learner.predict(Xn)
    assert tau.shape == (N_NEW, 2)
    assert np.all(np.isfinite(tau))
    frame = learner.predict_frame(Xn)
    assert isinstance(frame, pl.DataFrame)  # numpy in -> Polars out
    assert frame.columns == ["tau_B_vs_A", "tau_C_vs_A"]
    np.testing.assert_array_equal(frame.to_numpy(), tau)
    learner.fit(X, y, w)
    assert learner.predict(Xn).shape == (N_NEW, 2)
    if name != "R":
        assert learner.predict_outcomes(Xn).shape == (N_NEW, 3)
    effects = learner.ate(Xn)
    assert [(e.variant, e.control) for e in effects] == [("B", "A"), ("C", "A")]


@pytest.mark.parametrize("name", LEARNERS)
def test_other_control_reorders_contrasts(name: str) -> None:
    X, w, y = three_variant_data()
    a = make(name, regression_outcome(), control="A").fit(X, y, w)
    b = make(name, regression_outcome(), control="B").fit(X, y, w)
    assert b.control_ == "B"
    assert b.predict_frame(X[:5]).columns == ["tau_A_vs_B", "tau_C_vs_B"]
    if name in ("S", "T"):
        # differences of the same outcome predictions: C-B = (C-A) - (B-A)
        ta, tb = a.predict(X[:50]), b.predict(X[:50])
        np.testing.assert_allclose(tb[:, 0], -ta[:, 0], atol=1e-9)
        np.testing.assert_allclose(tb[:, 1], ta[:, 1] - ta[:, 0], atol=1e-9)


# ------------------------------------------------------------ binary outcome
@pytest.mark.parametrize("name", LEARNERS)
@pytest.mark.parametrize("K", [2, 3])
def test_binary_outcome_effects_on_probabilities(name: str, K: int) -> None:
    X, w, y = two_variant_data() if K == 2 else three_variant_data()
    yb = as_classes(y, 2)  # "no" / "yes"
    learner = make(
        name,
        classifier_outcome(),
        effect=LGBMRegressor(n_estimators=30, min_child_samples=40, verbose=-1, n_jobs=1),
        control=None if K == 2 else "A",
    )
    oof = learner.fit_predict(X, yb, w)
    Xn = X[:N_NEW]
    tau = learner.predict(Xn)
    shape = (N_NEW,) if K == 2 else (N_NEW, K - 1)
    assert tau.shape == shape
    assert oof.shape == ((N,) if K == 2 else (N, K - 1))
    assert list(learner.classes_) == ["no", "yes"]
    if name in ("S", "T", "X"):
        # differences of probabilities (S, T), or a convex blend of regressions
        # on imputed effects that lie in [-1, 1] (X)
        assert np.all(np.abs(tau) <= 1.0)
        assert np.all(np.abs(oof) <= 1.0)
    if name != "R":
        mu = learner.predict_outcomes(Xn)
        assert mu.shape == (N_NEW, K)  # P(y = "yes") under each variant
        assert np.all((mu >= 0) & (mu <= 1))
    names = learner.predict_frame(Xn).columns
    variants = ["1"] if K == 2 else ["B", "C"]
    control = "0" if K == 2 else "A"
    assert names == [f"tau_{v}_vs_{control}" for v in variants]


# -------------------------------------------------------- multi-class outcome
@pytest.mark.parametrize("name", LEARNERS)
@pytest.mark.parametrize("K", [2, 3])
def test_multiclass_outcome_has_trailing_class_axis(name: str, K: int) -> None:
    X, w, y = two_variant_data() if K == 2 else three_variant_data()
    yc = as_classes(y, 3)
    learner = make(name, classifier_outcome(), control=None if K == 2 else "A")
    oof = learner.fit_predict(X, yc, w)
    classes = ["hi", "lo", "mid"]  # sorted labels
    assert list(learner.classes_) == classes
    Xn = X[:N_NEW]
    tau = learner.predict(Xn)
    expected = (N_NEW, 3) if K == 2 else (N_NEW, K - 1, 3)
    assert tau.shape == expected
    assert oof.shape == ((N, 3) if K == 2 else (N, K - 1, 3))
    # Class probabilities sum to one in every arm, so the per-class effects
    # sum to zero: exactly for S and T (differences of predict_proba); for X,
    # R and DR with a linear effect model too, because their per-class
    # targets (Y_c - mu_c, AIPW terms, residuals) sum to zero over classes
    # and least squares is linear in the target.
    np.testing.assert_allclose(tau.sum(axis=-1), 0.0, atol=1e-8)
    np.testing.assert_allclose(oof.sum(axis=-1), 0.0, atol=1e-8)
    if name in ("S", "T"):
        assert np.all(np.abs(tau) <= 1.0)
    if name != "R":
        mu = learner.predict_outcomes(Xn)
        assert mu.shape == (N_NEW, K, 3)
        np.testing.assert_allclose(mu.sum(axis=-1), 1.0, atol=1e-8)
    frame = learner.predict_frame(Xn)
    variants = ["1"] if K == 2 else ["B", "C"]
    control = "0" if K == 2 else "A"
    assert frame.columns == [f"tau_{v}_vs_{control}_{c}" for v in variants for c in classes]
    np.testing.assert_array_equal(frame.to_numpy(), tau.reshape(N_NEW, -1))


@pytest.mark.parametrize("name", ["S", "T"])
def test_multiclass_sums_to_zero_with_lightgbm(name: str) -> None:
    X, w, y = three_variant_data(1)
    learner = make(
        name,
        LGBMClassifier(n_estimators=30, min_child_samples=30, verbose=-1, n_jobs=1),
        control="A",
    ).fit(X, as_classes(y, 3), w)
    tau = learner.predict(X[:100])
    assert tau.shape == (100, 2, 3)
    np.testing.assert_allclose(tau.sum(axis=-1), 0.0, atol=1e-10)


# ------------------------------------------------------------ predict_outcomes
@pytest.mark.parametrize("name", ["S", "T", "X", "DR"])
def test_predict_outcomes_regression(name: str) -> None:
    X, w, y = two_variant_data()
    learner = make(name, regression_outcome()).fit(X, y, w)
    mu = learner.predict_outcomes(X[:N_NEW])
    assert mu.shape == (N_NEW, 2)
    if name in ("S", "T"):
        np.testing.assert_allclose(mu[:, 1] - mu[:, 0], learner.predict(X[:N_NEW]), atol=1e-9)


# --------------------------------------------------------------- frame parity
FRAME_KINDS = ("numpy", "pandas", "polars")


def to_frame(X: np.ndarray, kind: str) -> Any:
    names = [f"x{j}" for j in range(X.shape[1])]
    if kind == "numpy":
        return X
    if kind == "pandas":
        return pd.DataFrame(X, columns=names)
    return pl.DataFrame({n: X[:, j] for j, n in enumerate(names)})


def make_lgbm(name: str, **kw: Any) -> Any:
    """Learner ``name`` with small LightGBM base models that record their fits."""
    small: dict[str, Any] = {
        "n_estimators": 25,
        "min_child_samples": 20,
        "verbose": -1,
        "n_jobs": 1,
    }
    return make(
        name,
        RecordingRegressor(**small),
        effect=RecordingRegressor(**small),
        propensity=RecordingClassifier(**small),
        **kw,
    )


@pytest.mark.parametrize("name", LEARNERS)
def test_numeric_frames_give_identical_predictions(name: str) -> None:
    X, w, y = three_variant_data(2)
    Xn = X[:N_NEW]
    results = {}
    for kind in FRAME_KINDS:
        learner = make_lgbm(name, control="A")
        oof = learner.fit_predict(to_frame(X, kind), y, w)
        results[kind] = (oof, learner.predict(to_frame(Xn, kind)))
        frame = learner.predict_frame(to_frame(Xn, kind))
        assert isinstance(frame, pd.DataFrame if kind == "pandas" else pl.DataFrame)
        assert list(frame.columns) == ["tau_B_vs_A", "tau_C_vs_A"]
        np.testing.assert_array_equal(np.asarray(frame), results[kind][1])
    for kind in ("pandas", "polars"):
        np.testing.assert_array_equal(results[kind][0], results["numpy"][0], kind)
        np.testing.assert_array_equal(results[kind][1], results["numpy"][1], kind)


# A LightGBM that records the `categorical_feature` argument of each fit.
CATEGORICAL_LOG: list[Any] = []


class RecordingRegressor(LGBMRegressor):
    def fit(  # type: ignore[override]
        self,
        X: Any,
        y: Any,
        sample_weight: Any = None,
        categorical_feature: Any = "auto",
        **kwargs: Any,
    ) -> Any:
        CATEGORICAL_LOG.append(categorical_feature)
        return super().fit(
            X, y, sample_weight=sample_weight, categorical_feature=categorical_feature, **kwargs
        )


class RecordingClassifier(LGBMClassifier):
    def fit(  # type: ignore[override]
        self,
        X: Any,
        y: Any,
        sample_weight: Any = None,
        categorical_feature: Any = "auto",
        **kwargs: Any,
    ) -> Any:
        CATEGORICAL_LOG.append(categorical_feature)
        return super().fit(
            X, y, sample_weight=sample_weight, categorical_feature=categorical_feature, **kwargs
        )


SEGMENTS = ["west", "north", "south", "east"]  # deliberately not sorted


def categorical_data(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Numeric X, a segment column, a binary w, y whose effect depends on the segment."""
    rng = np.random.default_rng(seed)
    n = N
    X = rng.normal(size=(n, 3))
    seg = rng.choice(SEGMENTS, size=n)
    w = rng.integers(0, 2, size=n)
    # a non-monotonic effect in any ordering of the codes
    lift = np.select([seg == "west", seg == "north", seg == "south"], [2.0, -1.0, 1.5], -0.5)
    y = X[:, 0] + lift + w * (1 + lift) + rng.normal(size=n)
    return X, seg, w, y


def categorical_frame(X: np.ndarray, seg: np.ndarray, kind: str) -> Any:
    cols = {f"x{j}": X[:, j] for j in range(X.shape[1])}
    if kind == "pandas-category":
        return pd.DataFrame({**cols, "segment": pd.Categorical(seg, categories=SEGMENTS)})
    if kind == "pandas-object":
        return pd.DataFrame({**cols, "segment": pd.Series(seg, dtype=object)})
    if kind == "polars-categorical":
        return pl.DataFrame({**cols, "segment": pl.Series(seg.tolist(), dtype=pl.Categorical)})
    if kind == "polars-enum":
        return pl.DataFrame({**cols, "segment": pl.Series(seg.tolist(), dtype=pl.Enum(SEGMENTS))})
    if kind == "polars-string":
        return pl.DataFrame({**cols, "segment": pl.Series(seg.tolist(), dtype=pl.String)})
    raise ValueError(kind)


CATEGORICAL_KINDS = (
    "pandas-category",
    "pandas-object",
    "polars-categorical",
    "polars-enum",
    "polars-string",
)


@pytest.mark.parametrize("name", LEARNERS)
def test_categorical_frames_give_identical_predictions(name: str) -> None:
    X, seg, w, y = categorical_data()
    new = slice(0, N_NEW)
    results = {}
    for kind in CATEGORICAL_KINDS:
        CATEGORICAL_LOG.clear()
        learner = make_lgbm(name)
        frame = categorical_frame(X, seg, kind)
        oof = learner.fit_predict(frame, y, w)
        # every LightGBM fit was told that column 3 ("segment") is categorical
        assert CATEGORICAL_LOG, "no LightGBM fit was recorded"
        assert all(list(c) == [3] for c in CATEGORICAL_LOG), CATEGORICAL_LOG
        tau = learner.predict(categorical_frame(X[new], seg[new], kind))
        results[kind] = (oof, tau)
        out = learner.predict_frame(categorical_frame(X[new], seg[new], kind))
        assert isinstance(out, pd.DataFrame if kind.startswith("pandas") else pl.DataFrame)
        assert list(out.columns) == ["tau_1_vs_0"]
    # Declared categories (pandas category, Polars Enum) are coded in declared order,
    # observed ones (object, Categorical, String) in sorted order: identical codes
    # give identical numbers; the two codings give the same trees, equal to rounding.
    declared = {"pandas-category", "polars-enum"}
    for group in (
        [k for k in CATEGORICAL_KINDS if k in declared],
        [k for k in CATEGORICAL_KINDS if k not in declared],
    ):
        for kind in group[1:]:
            np.testing.assert_array_equal(results[kind][0], results[group[0]][0], kind)
            np.testing.assert_array_equal(results[kind][1], results[group[0]][1], kind)
    first = results[CATEGORICAL_KINDS[0]]
    for kind in CATEGORICAL_KINDS[1:]:
        np.testing.assert_allclose(results[kind][0], first[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(results[kind][1], first[1], rtol=0, atol=1e-12)
    # a learner fitted on one frame library predicts another's frame alike
    learner = make_lgbm(name).fit(categorical_frame(X, seg, "pandas-category"), y, w)
    np.testing.assert_array_equal(
        learner.predict(categorical_frame(X[new], seg[new], "polars-string")),
        learner.predict(categorical_frame(X[new], seg[new], "pandas-category")),
    )


def test_categorical_column_changes_lightgbm_splits() -> None:
    # The categorical treatment is not a no-op: integer codes fed as numbers
    # give other predictions than the same column declared categorical.
    X, seg, w, y = categorical_data()
    codes = np.searchsorted(np.sort(SEGMENTS), seg).astype(float)
    as_numbers = make_lgbm("T").fit(np.column_stack([X, codes]), y, w)
    as_category = make_lgbm("T").fit(categorical_frame(X, seg, "polars-string"), y, w)
    a = as_numbers.predict(np.column_stack([X, codes])[:200])
    b = as_category.predict(categorical_frame(X[:200], seg[:200], "polars-string"))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", LEARNERS)
@pytest.mark.parametrize(
    ("kind", "expected"),
    [("numpy", pl.DataFrame), ("pandas", pd.DataFrame), ("polars", pl.DataFrame)],
)
def test_predict_frame_type_follows_input(name: str, kind: str, expected: type[Any]) -> None:
    X, w, y = two_variant_data(4)
    learner = make(name, regression_outcome()).fit(to_frame(X, kind), y, w)
    out: Any = learner.predict_frame(to_frame(X[:N_NEW], kind))
    assert isinstance(out, expected)
    assert list(out.columns) == ["tau_1_vs_0"]
    assert len(out) == N_NEW
    np.testing.assert_array_equal(np.asarray(out)[:, 0], learner.predict(to_frame(X[:N_NEW], kind)))


def test_predict_frame_keeps_pandas_index() -> None:
    X, w, y = two_variant_data(5)
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])], index=np.arange(N) + 1000)
    learner = make("T", regression_outcome()).fit(df, y, w)
    part = df.iloc[[5, 3, 400]]
    out = learner.predict_frame(part)
    pd.testing.assert_index_equal(out.index, part.index)
    joined = part.join(out)
    np.testing.assert_array_equal(joined["tau_1_vs_0"].to_numpy(), learner.predict(part))
