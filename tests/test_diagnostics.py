"""Tests for metalearn.diagnostics: overlap and covariate balance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

import metalearn as ml
from metalearn._core.design import crump_alpha
from metalearn.diagnostics import Overlap, balance_table, overlap

LOGIT = LogisticRegression()
EXACT_LOGIT = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000)


@pytest.fixture(scope="module")
def conf() -> ml.datasets.Simulation:
    return ml.datasets.simulate_confounded(n=2000, seed=3)


def _native_type(frame_kind: str) -> type:
    return pd.DataFrame if frame_kind == "pandas" else pl.DataFrame


# --------------------------------------------------------------------- overlap
def test_overlap_auc_and_frame_type(conf, frame):
    X = frame(conf.X)
    ov = overlap(X, conf.w, propensity_model=LOGIT, random_state=0)
    assert isinstance(ov, Overlap)
    assert ov.propensity.shape == (2000, 2)
    np.testing.assert_allclose(ov.propensity.sum(axis=1), 1.0)
    # The cross-fitted AUC is close to the AUC of the true propensity.
    true_auc = roc_auc_score(conf.w, conf.propensity)
    assert abs(ov.auc - true_auc) < 0.02
    assert ov.method == "cross-fitted (5 folds)"
    assert isinstance(ov.summary, _native_type(frame.kind))
    assert list(ov.summary.columns) == [
        "variant", "control", "group", "n", "mean", "min",
        "p01", "p05", "p50", "p95", "p99", "max",
    ]  # fmt: skip
    assert "AUC" in repr(ov)


def test_overlap_given_propensity_matches_sklearn_auc(conf):
    ov = overlap(None, conf.w, propensity=conf.propensity)
    assert ov.auc == roc_auc_score(conf.w, conf.propensity)
    assert ov.method == "given"
    outside = np.mean((conf.propensity < 0.1) | (conf.propensity > 0.9))
    assert ov.share_outside == pytest.approx(outside)
    summary = ov.summary
    treated = summary.filter(pl.col("group") == 1)
    assert treated["n"][0] == int(conf.w.sum())
    assert treated["max"][0] == pytest.approx(conf.propensity[conf.w == 1].max())


def test_overlap_randomized_design_needs_no_trimming():
    w = np.tile([0, 1], 200)
    ov = overlap(None, w, propensity=np.full(400, 0.5))
    assert ov.auc == 0.5
    assert ov.share_outside == 0.0
    assert ov.suggested_bounds == (0.0, 1.0)


def test_overlap_in_sample_mode(conf):
    ov = overlap(conf.X, conf.w, propensity_model=LOGIT, n_folds=None)
    fitted = LogisticRegression().fit(conf.X, conf.w).predict_proba(conf.X)[:, 1]
    np.testing.assert_allclose(ov.propensity[:, 1], fitted)
    assert ov.method == "in-sample"


def test_overlap_multiarm_tuples_and_control():
    sim = ml.datasets.simulate_multiarm(n=1500, n_variants=3, seed=0)
    ov = overlap(sim.X, sim.w, propensity_model=LOGIT, random_state=0)
    assert len(ov.auc) == 2 and len(ov.suggested_bounds) == 2
    assert ov.summary.shape[0] == 4
    ov2 = overlap(sim.X, sim.w, propensity_model=LOGIT, random_state=0, control=2)
    assert ov2.control == 2
    assert ov2.summary["variant"].to_list() == [0, 0, 1, 1]


def test_overlap_string_variants_pandas():
    sim = ml.datasets.simulate_confounded(n=600, seed=1)
    w = pd.Series(np.where(sim.w == 1, "treated", "control"))
    ov = overlap(
        pd.DataFrame(sim.X, columns=sim.feature_names),
        w,
        propensity_model=LOGIT,
        control="control",
        random_state=0,
    )
    assert ov.variants == ("control", "treated")
    assert isinstance(ov.summary, pd.DataFrame)
    assert ov.summary["group"].tolist() == ["control", "treated"]


def test_overlap_warns_on_extreme_and_exact_propensities():
    w = np.tile([0, 1], 100)
    p = np.where(w == 1, 0.6, 0.4)
    p[:3] = [0.001, 0.995, 0.999]
    with pytest.warns(UserWarning, match=r"3 row\(s\).*\(0 exactly 0 or 1\)"):
        overlap(None, w, propensity=p)
    p[0] = 0.0  # given propensities of exactly 0 or 1 violate positivity: an error
    with pytest.raises(ValueError, match="values must lie strictly between 0 and 1"):
        overlap(None, w, propensity=p)


def test_overlap_warning_suggests_bounds_that_drop_the_flagged_rows():
    # Most rows extreme: Crump's rule trims (almost) nothing, so the suggestion falls back
    # to the `extreme` bounds instead of an inert trim=[0, 1].
    rng = np.random.default_rng(0)
    p = np.where(rng.uniform(size=400) < 0.5, 1e-4, 1 - 1e-4)
    p[:40] = 0.5
    w = (rng.uniform(size=400) < p).astype(int)
    w[:2], w[2:4] = 0, 1
    assert crump_alpha(np.clip(p, 1e-12, 1 - 1e-12)) < 0.01
    with pytest.warns(UserWarning, match=r"trim=\(0\.01, 0\.99\)|trim=\[0\.01, 0\.99\]"):
        overlap(None, w, propensity=p)


def test_crump_alpha_rule():
    rng = np.random.default_rng(0)
    assert crump_alpha(rng.uniform(0.3, 0.7, size=1000)) == 0.0
    q = 1 / (1 + np.exp(-2 * rng.normal(size=100_000)))
    a = crump_alpha(q)
    assert 0.05 < a < 0.15  # Crump et al. (2009): about 0.1 for many designs
    # The defining equation 1/(a(1-a)) = 2 E[g | g <= 1/(a(1-a))] holds.
    g = 1 / (q * (1 - q))
    gamma = 1 / (a * (1 - a))
    assert gamma == pytest.approx(2 * g[g <= gamma].mean(), rel=1e-3)
    assert crump_alpha(np.array([0.0, 1.0])) == 0.5


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"bounds": 0.7}, ValueError, "`bounds` must be"),
        ({"bounds": (0.9, 0.1)}, ValueError, "`bounds` must be"),
        ({"extreme": 0.5}, ValueError, "`extreme` must be"),
        ({"n_folds": 1}, ValueError, "`n_folds` must be an integer >= 2"),
        ({"propensity_model": LOGIT, "propensity": 0.5}, ValueError, "not both"),
        ({"propensity_model": "logit"}, TypeError, "must be a scikit-learn estimator"),
    ],
)
def test_overlap_argument_errors(conf, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        overlap(conf.X, conf.w, **kwargs)


@pytest.mark.parametrize(
    ("propensity", "match"),
    [
        (np.full(5, 0.5), "has 5 entries but there are 2000 rows"),
        (np.full((2000, 3), 1 / 3), r"must have shape \(2000,\) or \(2000, 2\)"),
        (np.full(2000, 1.5), r"values must lie strictly between 0 and 1"),
        (np.full((2000, 2), 0.6), "must sum to 1"),
        ("high", "must be numeric"),
    ],
)
def test_overlap_bad_propensity(conf, propensity, match):
    exc = TypeError if isinstance(propensity, str) else ValueError
    with pytest.raises(exc, match=match):
        overlap(None, conf.w, propensity=propensity)


def test_overlap_missing_inputs(conf):
    with pytest.raises(ValueError, match=r"`X` .* is required"):
        overlap(None, conf.w)
    with pytest.raises(ValueError, match=r"`w` .* is required"):
        overlap(conf.X, None)
    w3 = np.arange(300) % 3
    with pytest.raises(ValueError, match="A propensity vector needs two variants"):
        overlap(None, w3, propensity=np.full(300, 0.3))
    with pytest.raises(ValueError, match="has no columns"):
        overlap(np.empty((10, 0)), np.arange(10) % 2)


# --------------------------------------------------------------------- balance
def _smd(x, t, wt=None):
    if wt is None:
        a, b = x[t == 1], x[t == 0]
        return (a.mean() - b.mean()) / np.sqrt(0.5 * (a.var(ddof=1) + b.var(ddof=1)))
    ma = np.average(x[t == 1], weights=wt[t == 1])
    mb = np.average(x[t == 0], weights=wt[t == 0])
    va = np.average((x[t == 1] - ma) ** 2, weights=wt[t == 1])
    vb = np.average((x[t == 0] - mb) ** 2, weights=wt[t == 0])
    return (ma - mb) / np.sqrt(0.5 * (va + vb))


def test_balance_table_formulas_and_frame_type(conf, frame):
    table = balance_table(
        frame(conf.X), conf.w, propensity=conf.propensity, threshold=0.1, clip=None
    )
    assert isinstance(table, _native_type(frame.kind))

    def get(column: str) -> np.ndarray:
        return np.asarray(table[column])

    assert list(table.columns) == [
        "covariate", "variant", "control", "mean_variant", "mean_control",
        "smd_raw", "smd_ipw", "smd_overlap",
        "balanced_raw", "balanced_ipw", "balanced_overlap",
    ]  # fmt: skip
    e = conf.propensity
    ipw_w = np.where(conf.w == 1, 1 / e, 1 / (1 - e))
    ov_w = np.where(conf.w == 1, 1 - e, e)
    for j in range(6):
        x = conf.X[:, j]
        assert get("smd_raw")[j] == pytest.approx(_smd(x, conf.w))
        assert get("smd_ipw")[j] == pytest.approx(_smd(x, conf.w, ipw_w))
        assert get("smd_overlap")[j] == pytest.approx(_smd(x, conf.w, ov_w))
    np.testing.assert_array_equal(get("balanced_raw"), np.abs(get("smd_raw")) < 0.1)
    # The confounders x0, x1, x2 are imbalanced before weighting, much less after.
    assert np.all(np.abs(get("smd_raw")[:3]) > 0.1)
    assert np.all(np.abs(get("smd_ipw")[:3]) < 0.25 * np.abs(get("smd_raw")[:3]))


def test_overlap_weights_balance_exactly_with_logistic_mle(conf):
    table = balance_table(conf.X, conf.w, propensity_model=EXACT_LOGIT, n_folds=None)
    # Li, Morgan and Zaslavsky (2018): exact mean balance of the covariates in the model.
    np.testing.assert_allclose(table["smd_overlap"].to_numpy(), 0.0, atol=1e-6)


def test_balance_raw_denominator_and_att_weights(conf):
    e = conf.propensity
    table = balance_table(
        conf.X,
        conf.w,
        propensity=e,
        weighting=("ipw",),
        estimand="ATT",
        denominator="raw",
        clip=None,
    )
    att_w = np.where(conf.w == 1, 1.0, e / (1 - e))
    x = conf.X[:, 0]
    a, b = x[conf.w == 1], x[conf.w == 0]
    diff = np.average(a) - np.average(b, weights=att_w[conf.w == 0])
    expected = diff / np.sqrt(0.5 * (a.var(ddof=1) + b.var(ddof=1)))
    assert table["smd_ipw"][0] == pytest.approx(expected)
    assert "smd_overlap" not in table.columns


def test_balance_raw_only_fits_nothing_and_user_weights(conf):
    table = balance_table(conf.X, conf.w, weighting=(), weights=np.ones(2000))
    assert table.columns == [
        "covariate", "variant", "control", "mean_variant", "mean_control",
        "smd_raw", "smd_weighted", "balanced_raw", "balanced_weighted",
    ]  # fmt: skip
    np.testing.assert_allclose(table["smd_weighted"], table["smd_raw"], rtol=2e-3)


def test_balance_categorical_columns_become_indicators():
    rng = np.random.default_rng(0)
    n = 400
    w = rng.integers(0, 2, n)
    cat = np.where(w == 1, rng.choice(["a", "b"], n, p=[0.8, 0.2]), rng.choice(["a", "b"], n))
    X = pd.DataFrame({"num": rng.normal(size=n), "cat": pd.Categorical(cat)})
    table = balance_table(X, w, weighting=())
    assert table["covariate"].tolist() == ["num", "cat=a", "cat=b"]
    ind = (cat == "a").astype(float)
    assert table["smd_raw"][1] == pytest.approx(_smd(ind, w))
    assert table["smd_raw"][2] == pytest.approx(-table["smd_raw"][1])


def test_balance_multiarm_rows_per_variant():
    sim = ml.datasets.simulate_multiarm(n=900, n_variants=3, seed=0)
    table = balance_table(sim.X, sim.w, propensity=sim.propensity)
    assert table.shape[0] == 2 * sim.X.shape[1]
    assert table["variant"].unique().sort().to_list() == [1, 2]


def test_balance_constant_and_separating_columns():
    w = np.array([0, 0, 0, 1, 1, 1])
    X = np.column_stack([np.ones(6), w.astype(float)])
    table = balance_table(X, w, weighting=())
    assert table["smd_raw"][0] == 0.0
    assert table["smd_raw"][1] == np.inf


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weighting": ("ipw", "entropy")}, "`weighting` entries must be"),
        ({"estimand": "ATC"}, "`estimand` must be"),
        ({"denominator": "pooled"}, "`denominator` must be"),
        ({"threshold": 0}, "`threshold` must be a positive number"),
        ({"weights": np.ones(3)}, "`weights` has 3 entries"),
        ({"weights": -np.ones(2000)}, "`weights` must be finite and non-negative"),
        ({"clip": 0.6}, "`clip` must be None"),
    ],
)
def test_balance_errors(conf, kwargs, match):
    with pytest.raises(ValueError, match=match):
        balance_table(conf.X, conf.w, propensity=conf.propensity, **kwargs)
