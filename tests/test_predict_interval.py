"""Tests for MetaLearner.predict_interval: analytic (linear DR and R stages) and bootstrap paths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

import metalearn as ml
from metalearn.inference import CATEIntervals, bootstrap_cate, linear_dr_inference

LIN = {"outcome_model": LinearRegression(), "propensity_model": LogisticRegression()}


@pytest.fixture(scope="module")
def conf():
    return ml.datasets.simulate_confounded(n=1500, seed=3)


@pytest.fixture(scope="module")
def conf_dr(conf):
    return _dr().fit(conf.X, conf.y, conf.w)


@pytest.fixture(scope="module")
def multi():
    return ml.datasets.simulate_multiarm(n=900, n_variants=3, seed=0)


def _dr(**kw):
    return ml.DRLearner(**LIN, effect_model=LinearRegression(), n_folds=3, random_state=0, **kw)


# ------------------------------------------------------------------- analytic
@pytest.mark.parametrize("final_stage", ["full", "crossfit"])
@pytest.mark.parametrize("weighted", [False, True])
def test_analytic_equals_linear_dr_inference(conf, final_stage, weighted):
    sw = np.where(np.arange(len(conf.y)) % 3 == 0, 2.5, 1.0) if weighted else None
    frame = pd.DataFrame(conf.X, columns=conf.feature_names)
    dr = _dr(final_stage=final_stage).fit(frame, conf.y, conf.w, sample_weight=sw)
    new = frame.iloc[:40]
    got = dr.predict_interval(new, alpha=0.1)  # no training data needed
    want = linear_dr_inference(dr, frame, level=0.9).predict_interval(new)
    assert isinstance(got, CATEIntervals)
    for field in ("estimate", "std_error", "ci_low", "ci_high"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=0, atol=1e-10)
    assert got.level == pytest.approx(0.9) and got.n_boot == 0 and got.names == want.names
    assert got.method == "linear final stage, HC1"
    assert isinstance(got.to_frame(), pd.DataFrame)
    if final_stage == "full":  # one least-squares fit on all rows: the learner's own prediction
        np.testing.assert_allclose(got.estimate, dr.predict(new), atol=1e-10)
    # "auto" picks the analytic intervals even when training data are given.
    auto = dr.predict_interval(new, alpha=0.1, X_train=frame, y_train=conf.y, w_train=conf.w)
    np.testing.assert_array_equal(auto.ci_low, got.ci_low)


@pytest.mark.parametrize("cls", [ml.DRLearner, ml.RLearner])
def test_analytic_interval_covers_a_linear_cate(cls):
    # Arm 1 of simulate_multiarm has tau_1(x) = 0.5 + x0, linear; with the known (randomized)
    # propensities the DR pseudo-outcomes are unbiased for tau whatever the outcome model, and
    # the R-learner's linear stage is correctly specified for that arm, so the only error left
    # is sampling error and pointwise 95% intervals should cover ~95% of test rows. One fit
    # moves all rows together (one draw of beta-hat): over 200 seeds the per-fit coverage of
    # 500 test rows had mean 0.950 and sd 0.066 (DR) and 0.950 and 0.069 (R), so one seed is a
    # weak test. The mean over 20 fits has sd ~0.015: we check [0.90, 0.99], ~3 sd below and
    # ~2.6 sd above the nominal level (seeds 0-19 give 0.93 for R). Standard errors 0.7x too
    # small (coverage ~0.83) or 1.5x too large (~0.996) fail.
    test = ml.datasets.simulate_multiarm(n=500, n_variants=3, seed=12345)
    covered = []
    for rep in range(20):
        sim = ml.datasets.simulate_multiarm(n=1000, n_variants=3, seed=rep)
        learner = cls(
            outcome_model=LinearRegression(), effect_model=LinearRegression(), n_folds=2,
            random_state=rep,
        ).fit(sim.X, sim.y, sim.w, propensity=sim.propensity)  # fmt: skip
        ci = learner.predict_interval(test.X, method="analytic")
        assert ci.estimate.shape == (500, 2)
        lo, hi = ci.ci_low[:, 0], ci.ci_high[:, 0]
        covered.append(np.mean((lo <= test.tau[:, 0]) & (test.tau[:, 0] <= hi)))
    assert 0.90 <= np.mean(covered) <= 0.99


@pytest.mark.parametrize("weighted", [False, True])
def test_r_learner_analytic_equals_weighted_least_squares_hc1(conf, weighted):
    # The R-learner's linear final stage is weighted least squares of (Y - m)/(T - p) on
    # (1, X) with weights (T - p)^2 (times sample_weight); its intervals must be those of
    # statsmodels' WLS with HC1 errors on the learner's own out-of-fold residuals.
    sm = pytest.importorskip("statsmodels.api")
    sw = np.where(np.arange(len(conf.y)) % 3 == 0, 2.5, 1.0) if weighted else None
    r = ml.RLearner(
        outcome_model=LinearRegression(), effect_model=LinearRegression(), n_folds=3,
        final_stage="full", random_state=0,
    ).fit(conf.X, conf.y, conf.w, propensity=conf.propensity, sample_weight=sw)  # fmt: skip
    m = r.nuisance_.oof_["m:0:1"][:, 0]
    p = np.clip(r.nuisance_.oof_["e"][:, 1], 0.01, 0.99)
    t_res, y_res = (conf.w == 1) - p, conf.y - m
    weight = t_res**2 * (1.0 if sw is None else sw)
    Z = sm.add_constant(conf.X)
    wls = sm.WLS(y_res / t_res, Z, weights=weight).fit(cov_type="HC1")
    new = conf.X[:30]
    got = r.predict_interval(new, alpha=0.1)
    Zn = sm.add_constant(new, has_constant="add")
    np.testing.assert_allclose(got.estimate, Zn @ wls.params, rtol=0, atol=1e-8)
    se = np.sqrt(np.einsum("ip,pq,iq->i", Zn, wls.cov_params(), Zn))
    np.testing.assert_allclose(got.std_error, se, rtol=1e-8)
    np.testing.assert_allclose(got.estimate, r.predict(new), atol=1e-10)  # its own fit
    assert got.method == "linear final stage, HC1" and got.level == pytest.approx(0.9)


def test_r_learner_with_a_nonlinear_final_stage_has_no_analytic_intervals(conf):
    r = ml.RLearner(**LIN, effect_model=Ridge(), n_folds=2, random_state=0)
    r.fit(conf.X, conf.y, conf.w)
    with pytest.raises(ValueError, match="fit the RLearner with `effect_model=LinearRegression"):
        r.predict_interval(conf.X[:5], method="analytic")


# ------------------------------------------------------------------ bootstrap
def test_bootstrap_equals_bootstrap_cate(conf):
    t = ml.TLearner(outcome_model=LinearRegression(), random_state=0).fit(conf.X, conf.y, conf.w)
    train = {"X_train": conf.X, "y_train": conf.y, "w_train": conf.w}
    got = t.predict_interval(conf.X[:30], method="bootstrap", n_boot=20, random_state=4, **train)
    want = bootstrap_cate(t, conf.X, conf.y, conf.w, X_new=conf.X[:30], n_boot=20, random_state=4)
    for field in ("estimate", "std_error", "ci_low", "ci_high"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=0, atol=1e-12)
    assert got.n_boot == 20 and got.level == pytest.approx(0.95)
    np.testing.assert_allclose(got.estimate, t.predict(conf.X[:30]), atol=1e-10)
    # "auto" on a learner without analytic intervals falls back to the bootstrap.
    auto = t.predict_interval(conf.X[:30], n_boot=20, random_state=4, **train)
    np.testing.assert_array_equal(auto.ci_high, got.ci_high)
    # alpha sets the quantiles.
    wide = t.predict_interval(conf.X[:30], alpha=0.02, n_boot=20, random_state=4, **train)
    assert wide.level == pytest.approx(0.98)
    assert np.all(wide.ci_high - wide.ci_low > got.ci_high - got.ci_low)
    # A DR-learner whose final stage is not linear falls back to the bootstrap too.
    ridge = ml.DRLearner(**LIN, effect_model=Ridge(), n_folds=2, random_state=0)
    ridge = ridge.fit(conf.X, conf.y, conf.w)
    assert ridge.predict_interval(conf.X[:5], n_boot=3, random_state=0, **train).n_boot == 3


def test_three_variants_one_interval_per_column(multi):
    X, y, w = multi.X, multi.y, multi.w
    dr = _dr().fit(X, y, w)
    ci = dr.predict_interval(X[:7])
    assert ci.ci_low.shape == ci.ci_high.shape == dr.predict(X[:7]).shape == (7, 2)
    assert ci.names == ["tau_1_vs_0", "tau_2_vs_0"]
    x = ml.XLearner(**LIN, effect_model=LinearRegression(), n_folds=2, random_state=0)
    x = x.fit(X, y, w)
    boot = x.predict_interval(X[:7], X_train=X, y_train=y, w_train=w, n_boot=3, random_state=0)
    assert boot.estimate.shape == boot.ci_low.shape == x.predict(X[:7]).shape == (7, 2)
    assert np.all(boot.ci_low <= boot.ci_high)
    assert boot.to_frame().shape == (7, 8)


# --------------------------------------------------------------------- errors
@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, True, "0.05", None])
def test_bad_alpha(conf, conf_dr, alpha):
    with pytest.raises(ValueError, match=r"`alpha` must be in \(0, 1\)"):
        conf_dr.predict_interval(conf.X[:3], alpha=alpha)


def test_errors(conf, conf_dr):
    X, y, w = conf.X, conf.y, conf.w
    with pytest.raises(NotFittedError):
        _dr().predict_interval(X[:3])
    dr = conf_dr
    with pytest.raises(ValueError, match="`method` must be 'auto', 'analytic' or 'bootstrap'"):
        dr.predict_interval(X[:3], method="bca")
    with pytest.raises(ValueError, match=r"`method='bootstrap'`.*`X_train`, `y_train` and"):
        dr.predict_interval(X[:3], method="bootstrap")
    with pytest.raises(ValueError, match="`y_train`, `w_train` missing"):
        dr.predict_interval(X[:3], method="bootstrap", X_train=X)
    t = ml.TLearner(outcome_model=LinearRegression()).fit(X, y, w)
    with pytest.raises(ValueError, match="`method='analytic'` is not available: the TLearner"):
        t.predict_interval(X[:3], method="analytic")
    with pytest.raises(
        ValueError, match=r"no analytic intervals.*pass the training data `X_train`"
    ):
        t.predict_interval(X[:3])
    ridge = ml.DRLearner(**LIN, effect_model=Ridge(), n_folds=2).fit(X, y, w)
    with pytest.raises(ValueError, match=r"need a linear final stage.*got Ridge"):
        ridge.predict_interval(X[:3], method="analytic")
    y3 = np.digitize(X[:, 0], [-0.5, 0.5])
    mc = ml.DRLearner(
        outcome_model=LogisticRegression(), propensity_model=LogisticRegression(),
        effect_model=LinearRegression(), n_folds=2,
    ).fit(X, y3, w)  # fmt: skip
    with pytest.raises(ValueError, match=r"multi-class outcome \(3 classes\)"):
        mc.predict_interval(X[:3])
