"""Tests for metalearn.inference: bootstrap and analytic CATE intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
from joblib import parallel_config
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

import metalearn as ml
from metalearn.inference import (
    CATEIntervals,
    LinearCATEInference,
    bootstrap_cate,
    linear_dr_inference,
)

LIN = {"outcome_model": LinearRegression(), "propensity_model": LogisticRegression()}


def _linear_design(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """y = x0 + w (1 + x1) + noise, randomized w: a T-learner with OLS is well specified."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    w = rng.integers(0, 2, n)
    tau = 1 + X[:, 1]
    y = X[:, 0] + w * tau + rng.normal(size=n)
    return X, y, w, tau


@pytest.fixture(scope="module")
def lin_data():
    return _linear_design(600, 0)


# -------------------------------------------------------------------- bootstrap
def test_bootstrap_intervals_cover_a_well_specified_cate(lin_data):
    X, y, w, tau = lin_data
    t = ml.TLearner(outcome_model=LinearRegression(), random_state=0)
    ci = bootstrap_cate(t, X, y, w, X_new=X[:60], n_boot=60, random_state=0)
    assert isinstance(ci, CATEIntervals)
    assert ci.estimate.shape == ci.ci_low.shape == (60,)
    np.testing.assert_allclose(ci.estimate, t.fit(X, y, w).predict(X[:60]))
    assert np.all(ci.ci_low <= ci.ci_high)
    coverage = np.mean((ci.ci_low <= tau[:60]) & (tau[:60] <= ci.ci_high))
    assert coverage >= 0.85
    assert ci.names == ["tau_1_vs_0"]
    assert "percentile bootstrap (60 replicates)" in repr(ci)


def test_bootstrap_does_not_depend_on_n_jobs(lin_data):
    X, y, w, _ = lin_data
    t = ml.TLearner(outcome_model=LinearRegression())
    a = bootstrap_cate(t, X, y, w, X_new=X[:10], n_boot=8, random_state=3, n_jobs=1)
    # Threads keep the test fast; the seeds do not depend on the backend either.
    with parallel_config(backend="threading"):
        b = bootstrap_cate(t, X, y, w, X_new=X[:10], n_boot=8, random_state=3, n_jobs=2)
    np.testing.assert_array_equal(a.ci_low, b.ci_low)
    np.testing.assert_array_equal(a.std_error, b.std_error)


def test_bootstrap_normal_method_and_frames(lin_data):
    X, y, w, _ = lin_data
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    t = ml.TLearner(outcome_model=LinearRegression(), random_state=0)
    ci = bootstrap_cate(
        t, frame, pd.Series(y), w, X_new=frame.iloc[:5], n_boot=10, method="normal",
        random_state=0,
    )  # fmt: skip
    np.testing.assert_allclose(ci.ci_high - ci.estimate, 1.959964 * ci.std_error, rtol=1e-5)
    out = ci.to_frame()
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["tau_1_vs_0", "tau_1_vs_0_se", "tau_1_vs_0_low", "tau_1_vs_0_high"]
    assert isinstance(bootstrap_cate(t, X, y, w, X_new=X[:3], n_boot=2).to_frame(), pl.DataFrame)


def test_bootstrap_multiarm_and_shared_nuisance():
    sim = ml.datasets.simulate_multiarm(n=900, n_variants=3, seed=0)
    nuis = ml.Nuisance(**LIN, n_folds=2, random_state=0).fit(sim.X, sim.y, sim.w)
    dr = ml.DRLearner(nuisance=nuis, effect_model=LinearRegression(), n_folds=2)
    ci = bootstrap_cate(dr, sim.X, sim.y, sim.w, X_new=sim.X[:4], n_boot=4, random_state=0)
    assert ci.estimate.shape == (4, 2)
    assert ci.names == ["tau_1_vs_0", "tau_2_vs_0"]
    assert ci.to_frame().shape == (4, 8)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_boot": 1}, ValueError, "`n_boot` must be an integer >= 2"),
        ({"level": 1.0}, ValueError, "`level` must be in"),
        ({"method": "bca"}, ValueError, "`method` must be"),
    ],
)
def test_bootstrap_errors(lin_data, kwargs, exc, match):
    X, y, w, _ = lin_data
    t = ml.TLearner(outcome_model=LinearRegression())
    with pytest.raises(exc, match=match):
        bootstrap_cate(t, X, y, w, **kwargs)


def test_bootstrap_needs_a_learner(lin_data):
    X, y, w, _ = lin_data
    with pytest.raises(TypeError, match="`learner` must be a metalearn learner"):
        bootstrap_cate(object(), X, y, w)


# ----------------------------------------------------------------- linear DR
@pytest.fixture(scope="module")
def conf_dr():
    sim = ml.datasets.simulate_confounded(n=3000, seed=5)
    dr = ml.DRLearner(**LIN, effect_model=LinearRegression(), final_stage="full", random_state=0)
    return sim, dr.fit(sim.X, sim.y, sim.w)


def test_linear_dr_matches_the_final_model_and_statsmodels(conf_dr):
    sm = pytest.importorskip("statsmodels.api")
    sim, dr = conf_dr
    inf = linear_dr_inference(dr, sim.X)
    assert isinstance(inf, LinearCATEInference)
    (model,) = dr.effect_models_[(1, 0)]  # final_stage="full": one model on all rows
    np.testing.assert_allclose(inf.coef[0], [model.intercept_, *model.coef_], atol=1e-10)
    phi = dr.pseudo_outcomes_[:, 0, 0]
    for cov_type in ("HC0", "HC1"):
        ols = sm.OLS(phi, sm.add_constant(sim.X)).fit(cov_type=cov_type)
        got = linear_dr_inference(dr, sim.X, cov_type=cov_type)
        np.testing.assert_allclose(got.std_error[0], ols.bse, rtol=1e-8)
    pred = inf.predict_interval(sim.X[:20])
    np.testing.assert_allclose(pred.estimate, dr.predict(sim.X[:20]), atol=1e-10)
    assert np.all(pred.ci_low < pred.estimate) and pred.n_boot == 0


def test_linear_dr_recovers_the_best_linear_approximation(conf_dr):
    # tau(x) = 1 + 0.5 x0 + 1{x3 > 0} with independent U(-sqrt 3, sqrt 3) features: the
    # best linear approximation is 1.5 + 0.5 x0 + (sqrt 3 / 4) x3.
    sim, dr = conf_dr
    inf = linear_dr_inference(dr, sim.X)
    truth = np.array([1.5, 0.5, 0.0, 0.0, np.sqrt(3) / 4, 0.0, 0.0])
    z = (inf.coef[0] - truth) / inf.std_error[0]
    assert np.all(np.abs(z) < 4)
    table = inf.coef_table()
    assert isinstance(table, pl.DataFrame)
    assert table.columns == [
        "effect", "term", "estimate", "std_error", "z", "p_value", "ci_low", "ci_high",
    ]  # fmt: skip
    assert table["term"].to_list() == ["intercept", "x0", "x1", "x2", "x3", "x4", "x5"]
    assert table["ci_low"][1] < 0.5 < table["ci_high"][1]
    assert table["p_value"][1] < 1e-6
    assert "HC1" in repr(inf)


def test_linear_dr_weighted_matches_statsmodels_wls():
    sm = pytest.importorskip("statsmodels.api")
    sim = ml.datasets.simulate_confounded(n=1500, seed=6)
    sw = np.where(np.arange(1500) % 4 == 0, 3.0, 1.0)
    dr = ml.DRLearner(**LIN, effect_model=LinearRegression(), n_folds=3, random_state=0)
    dr.fit(pd.DataFrame(sim.X, columns=sim.feature_names), sim.y, sim.w, sample_weight=sw)
    inf = linear_dr_inference(dr, pd.DataFrame(sim.X, columns=sim.feature_names))
    wls = sm.WLS(dr.pseudo_outcomes_[:, 0, 0], sm.add_constant(sim.X), weights=sw)
    fit = wls.fit(cov_type="HC1")
    np.testing.assert_allclose(inf.coef[0], fit.params, rtol=1e-8)
    np.testing.assert_allclose(inf.std_error[0], fit.bse, rtol=1e-8)
    assert isinstance(inf.coef_table(), pd.DataFrame)


def test_linear_dr_multiarm():
    sim = ml.datasets.simulate_multiarm(n=1500, n_variants=3, seed=1)
    dr = ml.DRLearner(**LIN, effect_model=LinearRegression(), n_folds=3, random_state=0)
    inf = linear_dr_inference(dr.fit(sim.X, sim.y, sim.w), sim.X)
    assert inf.coef.shape == (2, 7)
    assert inf.coef_table().shape[0] == 14
    assert inf.predict_interval(sim.X[:3]).estimate.shape == (3, 2)


@pytest.mark.slow
def test_linear_dr_slope_coverage_slow():
    covered = 0
    for rep in range(200):
        sim = ml.datasets.simulate_confounded(n=2000, seed=7000 + rep)
        dr = ml.DRLearner(**LIN, effect_model=LinearRegression(), random_state=rep)
        table = linear_dr_inference(dr.fit(sim.X, sim.y, sim.w), sim.X).coef_table()
        covered += table["ci_low"][1] <= 0.5 <= table["ci_high"][1]
    assert 0.92 <= covered / 200 <= 0.98


def test_linear_dr_errors(conf_dr):
    sim, dr = conf_dr
    with pytest.raises(ValueError, match="`cov_type` must be"):
        linear_dr_inference(dr, sim.X, cov_type="HC3")
    with pytest.raises(ValueError, match="`level` must be in"):
        linear_dr_inference(dr, sim.X, level=0)
    with pytest.raises(ValueError, match="`X` has 10 rows but the learner was fitted on 3000"):
        linear_dr_inference(dr, sim.X[:10])
    t = ml.TLearner(outcome_model=LinearRegression()).fit(sim.X, sim.y, sim.w)
    with pytest.raises(TypeError, match="`learner` must be a fitted DRLearner"):
        linear_dr_inference(t, sim.X)
    with pytest.raises(NotFittedError):
        linear_dr_inference(ml.DRLearner(), sim.X)
    ridge = ml.DRLearner(**LIN, effect_model=Ridge(), n_folds=2).fit(sim.X, sim.y, sim.w)
    with pytest.raises(TypeError, match="need a linear final stage"):
        linear_dr_inference(ridge, sim.X)
    y3 = np.digitize(sim.X[:, 0], [-0.5, 0.5])
    multi = ml.DRLearner(
        outcome_model=LogisticRegression(),
        propensity_model=LogisticRegression(),
        effect_model=LinearRegression(),
        n_folds=2,
    ).fit(sim.X, y3, sim.w)
    with pytest.raises(ValueError, match="multi-class outcome"):
        linear_dr_inference(multi, sim.X)
