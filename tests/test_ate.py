"""Tests for metalearn.ate: difference in means, IPW, AIPW and matching."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy import stats
from sklearn.linear_model import LinearRegression, LogisticRegression

import metalearn as ml
from metalearn import AverageEffect
from metalearn.ate import (
    MatchingEffect,
    WeightedEffect,
    aipw,
    difference_in_means,
    ipw,
    matching,
)

LIN = {"outcome_model": LinearRegression(), "propensity_model": LogisticRegression()}
TRUE_ATE = 1.5  # population ATE of simulate_confounded


@pytest.fixture(scope="module")
def conf() -> ml.datasets.Simulation:
    return ml.datasets.simulate_confounded(n=3000, seed=11)


@pytest.fixture(scope="module")
def multi() -> ml.datasets.Simulation:
    return ml.datasets.simulate_multiarm(n=3000, n_variants=3, seed=2)


# ---------------------------------------------------------- difference in means
def test_difference_in_means_equals_hc2_regression():
    sm = pytest.importorskip("statsmodels.api")
    sim = ml.datasets.simulate_nie_wager("B", n=800, seed=0)
    effect = difference_in_means(None, sim.y, sim.w)
    assert isinstance(effect, AverageEffect)
    fit = sm.OLS(sim.y, sm.add_constant(sim.w.astype(float))).fit(cov_type="HC2")
    assert effect.estimate == pytest.approx(fit.params[1])
    assert effect.std_error == pytest.approx(fit.bse[1])
    assert effect.ci_low == pytest.approx(effect.estimate - 1.959964 * effect.std_error)
    assert effect.n == 800


def test_difference_in_means_multiarm_strings_and_control(frame):
    rng = np.random.default_rng(0)
    w = rng.choice(["a", "b", "c"], size=600)
    y = (w == "b") * 1.0 + (w == "c") * 2.0 + rng.normal(size=600)
    effects = difference_in_means(frame(np.zeros((600, 1))), pd.Series(y), pl.Series(w))
    assert [e.variant for e in effects] == ["b", "c"]
    assert effects[0].control == "a"
    back = difference_in_means(None, y, w, control="c")
    assert [e.variant for e in back] == ["a", "b"]
    assert back[0].estimate == pytest.approx(-effects[1].estimate)


def test_difference_in_means_errors():
    with pytest.raises(ValueError, match="at least two rows each"):
        difference_in_means(None, [1.0, 2.0, 3.0], [0, 0, 1])
    with pytest.raises(ValueError, match="`level` must be in"):
        difference_in_means(None, [1.0, 2.0, 3.0, 4.0], [0, 0, 1, 1], level=95)
    with pytest.raises(ValueError, match=r"`y` .* is required"):
        difference_in_means(None, None, [0, 1])
    with pytest.raises(ValueError, match="`y` must be numeric"):
        difference_in_means(None, ["a", "b"], [0, 1])
    with pytest.raises(ValueError, match="NaN or infinite"):
        difference_in_means(None, [np.nan, 1.0], [0, 1])
    with pytest.raises(ValueError, match="`y` has 3 entries"):
        difference_in_means(None, [1.0, 2.0, 3.0], [0, 1])
    with pytest.raises(ValueError, match="`control`='z' is not one of the variants"):
        difference_in_means(None, [1.0, 2.0], [0, 1], control="z")


# --------------------------------------------------------------------------- IPW
def _hajek(y, w, e):
    m1 = np.sum(w * y / e) / np.sum(w / e)
    m0 = np.sum((1 - w) * y / (1 - e)) / np.sum((1 - w) / (1 - e))
    return m1 - m0


def test_ipw_formulas_with_given_propensity(conf):
    y, w, e = conf.y, conf.w, conf.propensity
    stab = ipw(None, y, w, propensity=e, clip=None)
    assert isinstance(stab, WeightedEffect)
    assert stab.estimate == pytest.approx(_hajek(y, w, e))
    ht = ipw(None, y, w, propensity=e, clip=None, stabilized=False)
    assert ht.estimate == pytest.approx(np.mean(w * y / e - (1 - w) * y / (1 - e)))
    # Stabilised weights: share of the variant over the propensity of the received one.
    p1 = w.mean()
    np.testing.assert_allclose(stab.weights, np.where(w == 1, p1 / e, (1 - p1) / (1 - e)))
    att = ipw(None, y, w, propensity=e, clip=None, estimand="ATT")
    odds = e / (1 - e)
    expected = y[w == 1].mean() - np.average(y[w == 0], weights=odds[w == 0])
    assert att.estimate == pytest.approx(expected)
    assert att.estimand == "ATT"
    att_ht = ipw(None, y, w, propensity=e, clip=None, estimand="ATT", stabilized=False)
    assert att_ht.estimate == pytest.approx((np.sum(w * y) - np.sum((1 - w) * odds * y)) / w.sum())


def test_ipw_recovers_truth_and_clips(conf):
    effect = ipw(conf.X, conf.y, conf.w, propensity_model=LogisticRegression(), random_state=0)
    assert abs(effect.estimate - TRUE_ATE) < 3 * effect.std_error
    assert effect.method == "IPW (stabilised, ATE; propensity cross-fitted (5 folds))"
    clipped = ipw(None, conf.y, conf.w, propensity=conf.propensity, clip=(0.2, 0.8))
    e = np.clip(conf.propensity, 0.2, 0.8)
    assert clipped.estimate == pytest.approx(_hajek(conf.y, conf.w, e))


def test_ipw_standard_error_is_calibrated_with_known_propensity():
    # The influence-function SE treats the propensity as known: with the true one it is
    # the right SE. 60 replications, binomial tolerance (P(<= 51 | p = .95) < 0.3 %).
    covered = 0
    for rep in range(60):
        sim = ml.datasets.simulate_confounded(n=1500, seed=1000 + rep)
        e = ipw(None, sim.y, sim.w, propensity=sim.propensity, clip=None)
        covered += e.ci_low <= TRUE_ATE <= e.ci_high
    assert covered >= 52


def test_ipw_trimming(conf):
    kept = (conf.propensity >= 0.1) & (conf.propensity <= 0.9)
    trimmed = ipw(None, conf.y, conf.w, propensity=conf.propensity, trim=(0.1, 0.9), clip=None)
    assert trimmed.n == int(kept.sum())
    assert trimmed.estimate == pytest.approx(
        _hajek(conf.y[kept], conf.w[kept], conf.propensity[kept])
    )
    assert np.all(trimmed.weights[~kept] == 0)
    crump = ipw(None, conf.y, conf.w, propensity=conf.propensity, trim="crump")
    ov = ml.diagnostics.overlap(None, conf.w, propensity=conf.propensity)
    lo, hi = ov.suggested_bounds
    assert crump.n == int(np.sum((conf.propensity >= lo) & (conf.propensity <= hi)))


def test_ipw_multiarm(multi):
    effects = ipw(multi.X, multi.y, multi.w, propensity=multi.propensity)
    assert len(effects) == 2
    for j, eff in enumerate(effects):
        assert eff.variant == j + 1
        assert abs(eff.estimate - multi.tau[:, j].mean()) < 4 * eff.std_error


def test_ipw_errors(conf):
    w = np.repeat([0, 1], 50)
    y = np.arange(100.0)
    p = np.where(w == 1, 0.95, 0.5)
    with pytest.raises(ValueError, match="No row of variant 1 is left after trimming"):
        ipw(None, y, w, propensity=p, trim=(0.1, 0.9))
    p0 = np.where(w == 1, 0.5, 0.5)
    p0[0] = 1.0  # a control row that could not have been a control
    with pytest.raises(ValueError, match="`propensity` values must lie strictly between 0 and 1"):
        ipw(None, y, w, propensity=p0, clip=None)
    with pytest.raises(ValueError, match="values must lie strictly between 0 and 1"):
        ipw(None, y, w, propensity=p0)  # given propensities are never clipped into range
    with pytest.raises(ValueError, match="`trim` must be None, 'crump' or a pair"):
        ipw(None, y, w, propensity=p, trim="auto")
    with pytest.raises(ValueError, match="`trim` must be None"):
        ipw(None, y, w, propensity=p, trim=(0.5, 0.2))
    with pytest.raises(ValueError, match="`estimand` must be one of"):
        ipw(None, y, w, propensity=p, estimand="ATC")
    with pytest.raises(ValueError, match="`clip` must be None"):
        ipw(None, y, w, propensity=p, clip=(0.3, "x"))
    with pytest.raises(ValueError, match=r"`X` .* is required here to estimate the propensities"):
        ipw(None, y, w)


# -------------------------------------------------------------------------- AIPW
def test_aipw_recovers_ate_and_att(conf, frame):
    X = frame(conf.X)
    ate = aipw(X, conf.y, conf.w, **LIN, random_state=0)
    assert abs(ate.estimate - TRUE_ATE) < 3 * ate.std_error
    assert ate.method == "AIPW (ATE)"
    att = aipw(X, conf.y, conf.w, **LIN, estimand="ATT", random_state=0)
    true_att = conf.tau[conf.w == 1].mean()
    assert abs(att.estimate - true_att) < 3 * att.std_error


def test_aipw_reuses_a_drlearner_and_matches_its_ate(conf):
    dr = ml.DRLearner(**LIN, effect_model=LinearRegression(), random_state=0)
    dr.fit(conf.X, conf.y, conf.w)
    fits = dr.nuisance_.n_model_fits_
    effect = aipw(conf.X, conf.y, conf.w, learner=dr)
    assert dr.nuisance_.n_model_fits_ == fits  # nothing refitted
    reference = dr.ate()
    assert effect.estimate == pytest.approx(reference.estimate, rel=1e-12)
    assert effect.std_error == pytest.approx(reference.std_error, rel=1e-12)
    # The same stage passed as `nuisance=` gives the same numbers.
    same = aipw(conf.X, conf.y, conf.w, nuisance=dr.nuisance_)
    assert same.estimate == effect.estimate


def test_aipw_fits_missing_kinds_once_on_a_shared_nuisance(conf):
    nuis = ml.Nuisance(**LIN, n_folds=3, random_state=0)
    t = ml.TLearner(nuisance=nuis).fit(conf.X, conf.y, conf.w)
    shared = t.nuisance_
    first = aipw(conf.X, conf.y, conf.w, learner=t)
    fits = shared.n_model_fits_
    second = aipw(conf.X, conf.y, conf.w, learner=t)
    assert shared.n_model_fits_ == fits
    assert first.estimate == second.estimate


def test_aipw_unfitted_nuisance_is_a_template(conf):
    nuis = ml.Nuisance(**LIN, random_state=0)
    effect = aipw(conf.X, conf.y, conf.w, nuisance=nuis)
    assert not hasattr(nuis, "fingerprint_")
    assert effect.estimate == aipw(conf.X, conf.y, conf.w, **LIN, random_state=0).estimate


def test_aipw_sample_weight_matches_weighted_drlearner(conf):
    sw = np.where(np.arange(3000) % 3 == 0, 2.0, 1.0)
    dr = ml.DRLearner(**LIN, effect_model=LinearRegression(), random_state=0)
    dr.fit(conf.X, conf.y, conf.w, sample_weight=sw)
    effect = aipw(conf.X, conf.y, conf.w, learner=dr, sample_weight=sw)
    assert effect.estimate == pytest.approx(dr.ate().estimate)
    assert effect.std_error == pytest.approx(dr.ate().std_error)


def test_aipw_multiarm_and_binary_and_multiclass_outcomes(multi):
    effects = aipw(multi.X, multi.y, multi.w, **LIN, random_state=0)
    for j, eff in enumerate(effects):
        assert abs(eff.estimate - multi.tau[:, j].mean()) < 4 * eff.std_error
    binary = ml.datasets.simulate_binary_outcome(n=3000, seed=0)
    eff = aipw(
        binary.X,
        binary.y,
        binary.w,
        outcome_model=LogisticRegression(),
        propensity_model=LogisticRegression(),
        random_state=0,
    )
    assert abs(eff.estimate - binary.tau.mean()) < 4 * eff.std_error
    y3 = np.digitize(binary.X[:, 0] + 0.5 * binary.w, [-0.5, 0.5])
    eff3 = aipw(
        binary.X,
        y3,
        binary.w,
        outcome_model=LogisticRegression(),
        propensity_model=LogisticRegression(),
        random_state=0,
    )
    assert eff3.estimate.shape == (3,)
    assert eff3.estimate.sum() == pytest.approx(0.0, abs=1e-9)


def test_aipw_trim(conf):
    full = aipw(conf.X, conf.y, conf.w, **LIN, random_state=0)
    trimmed = aipw(conf.X, conf.y, conf.w, **LIN, random_state=0, trim=(0.1, 0.9))
    assert trimmed.n < full.n


def test_aipw_errors(conf):
    dr = ml.DRLearner(**LIN, effect_model=LinearRegression(), random_state=0)
    with pytest.raises(ValueError, match=r"`learner` .* is not fitted"):
        aipw(conf.X, conf.y, conf.w, learner=dr)
    dr.fit(conf.X, conf.y, conf.w)
    with pytest.raises(ValueError, match="either `learner` or `nuisance`"):
        aipw(conf.X, conf.y, conf.w, learner=dr, nuisance=dr.nuisance_)
    with pytest.raises(ValueError, match="are not used when a fitted `learner`"):
        aipw(conf.X, conf.y, conf.w, learner=dr, outcome_model=LinearRegression())
    s = ml.SLearner(outcome_model=LinearRegression()).fit(conf.X, conf.y, conf.w)
    with pytest.raises(TypeError, match="has no nuisance stage to reuse"):
        aipw(conf.X, conf.y, conf.w, learner=s)
    with pytest.raises(TypeError, match=r"`nuisance` must be a metalearn.Nuisance"):
        aipw(conf.X, conf.y, conf.w, nuisance=dr)
    with pytest.raises(ValueError, match="fitted on different data"):
        aipw(conf.X[:2000], conf.y[:2000], conf.w[:2000], learner=dr)
    with pytest.raises(ValueError, match="`estimand` must be one of"):
        aipw(conf.X, conf.y, conf.w, learner=dr, estimand="ATU")


# ----------------------------------------------------------------------- coverage
def _aipw_coverage(reps: int, n: int, seed0: int) -> int:
    covered = 0
    for rep in range(reps):
        sim = ml.datasets.simulate_confounded(n=n, seed=seed0 + rep)
        eff = aipw(sim.X, sim.y, sim.w, **LIN, random_state=rep)
        covered += eff.ci_low <= TRUE_ATE <= eff.ci_high
    return covered


def test_aipw_coverage_fast():
    # 40 replications: under exact 95 % coverage P(covered <= 33) = 0.34 %.
    assert stats.binom.cdf(33, 40, 0.95) < 0.005
    assert _aipw_coverage(40, 1000, 5000) >= 34


@pytest.mark.slow
def test_aipw_coverage_slow():
    # 500 replications; the 93-97 % band (P(outside | p = .95) is about 4 %).
    covered = _aipw_coverage(500, 2000, 9000)
    assert 0.93 <= covered / 500 <= 0.97


# ---------------------------------------------------------------------- matching
def test_matching_ties_all_by_hand():
    # Treated scores 0.3 and 0.5; controls 0.3, 0.3 (tie at distance 0) and 0.45, 0.55
    # (tie at distance 0.05): every tied control is used with equal weight.
    score = np.array([0.3, 0.5, 0.3, 0.3, 0.45, 0.55, 0.9])
    w = np.array([1, 1, 0, 0, 0, 0, 0])
    y = np.array([10.0, 20.0, 1.0, 3.0, 5.0, 7.0, 100.0])
    att = matching(None, y, w, propensity=score, variance_neighbors=1)
    assert isinstance(att, MatchingEffect)
    assert att.estimate == pytest.approx(((10 - 2) + (20 - 6)) / 2)
    np.testing.assert_allclose(att.weights, [1, 1, 0.5, 0.5, 0.5, 0.5, 0])
    assert att.max_distance == pytest.approx(0.05)
    # Row order does not matter.
    perm = np.array([6, 3, 1, 5, 0, 4, 2])
    again = matching(None, y[perm], w[perm], propensity=score[perm], variance_neighbors=1)
    assert again.estimate == att.estimate
    # The ATE also matches each control to the treated rows.
    ate = matching(None, y, w, propensity=score, estimand="ATE", variance_neighbors=1)
    effects = [8, 14, 10 - 1, 10 - 3, 20 - 5, 20 - 7, 20 - 100]
    assert ate.estimate == pytest.approx(np.mean(effects))


def test_matching_standard_error_formula_by_hand():
    # ATT with M = 1, J = 1 and no ties, against the Abadie-Imbens formula written out.
    score = np.array([0.2, 0.6, 0.21, 0.25, 0.58, 0.9])
    w = np.array([1, 1, 0, 0, 0, 0])
    y = np.array([5.0, 9.0, 1.0, 2.0, 4.0, 8.0])
    eff = matching(None, y, w, propensity=score, variance_neighbors=1)
    tau = ((5 - 1) + (9 - 4)) / 2
    resid = np.array([5 - 1 - tau, 9 - 4 - tau])
    # K_j = 1 for the two used controls, S_j = 1: K^2 - S = 0, so only the first sum stays.
    assert eff.std_error == pytest.approx(np.sqrt(np.sum(resid**2) / 4))
    # Two treated rows sharing one control: K = 2, S = 2, so 2 sigma^2 is added.
    score2 = np.array([0.2, 0.21, 0.22, 0.9])
    w2 = np.array([1, 1, 0, 0])
    y2 = np.array([5.0, 6.0, 1.0, 3.0])
    eff2 = matching(None, y2, w2, propensity=score2, variance_neighbors=1)
    tau2 = ((5 - 1) + (6 - 1)) / 2
    sigma2 = 0.5 * (1.0 - 3.0) ** 2  # J/(J+1) (Y - Y_neighbour)^2 within the controls
    first = (5 - 1 - tau2) ** 2 + (6 - 1 - tau2) ** 2
    assert eff2.std_error == pytest.approx(np.sqrt((first + 2 * sigma2) / 4))


@pytest.mark.parametrize("estimand", ["ATT", "ATE"])
def test_matching_standard_error_is_calibrated(estimand):
    # Matching on the true propensity score; 80 replications, P(<= 70 | p = .95) < 1 %.
    covered = 0
    for rep in range(80):
        sim = ml.datasets.simulate_confounded(n=800, seed=2000 + rep)
        eff = matching(None, sim.y, sim.w, propensity=sim.propensity, estimand=estimand)
        truth = sim.tau[sim.w == 1].mean() if estimand == "ATT" else sim.tau.mean()
        covered += eff.ci_low <= truth <= eff.ci_high
    assert covered >= 71


def test_matching_without_replacement_uses_each_control_once():
    sim = ml.datasets.simulate_confounded(n=4000, seed=4)
    # Few treated rows (a random tenth), so that unused close controls remain.
    keep = (sim.w == 0) | (np.random.default_rng(0).uniform(size=4000) < 0.1)
    y, w, e = sim.y[keep], sim.w[keep], sim.propensity[keep]
    eff = matching(None, y, w, propensity=e, replace=False, n_neighbors=2)
    controls = eff.weights[w == 0]
    assert controls.max() == pytest.approx(0.5)
    assert controls.sum() == pytest.approx((w == 1).sum())
    assert eff.n_unmatched == 0
    truth = sim.tau[keep][w == 1].mean()
    assert abs(eff.estimate - truth) < 4 * eff.std_error


def test_matching_caliper_warns_and_errors(conf):
    with pytest.warns(UserWarning, match=r"have no match .* are left out"):
        eff = matching(None, conf.y, conf.w, propensity=conf.propensity, caliper=0.0005)
    assert eff.n_unmatched > 0 and eff.n == (conf.w == 1).sum() - eff.n_unmatched
    w = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="has a match within the caliper"):
        matching(None, np.arange(4.0), w, propensity=[0.1, 0.2, 0.8, 0.9], caliper=0.01)


def test_matching_logit_scale_multiarm_and_frames(multi, frame):
    effects = matching(
        frame(multi.X), multi.y, multi.w, propensity=multi.propensity, distance="logit"
    )
    assert len(effects) == 2
    for j, eff in enumerate(effects):
        truth = multi.tau[multi.w == j + 1, j].mean()
        assert abs(eff.estimate - truth) < 4 * eff.std_error
    balanced = ml.diagnostics.balance_table(
        multi.X, multi.w, weighting=(), weights=effects[0].weights
    )
    assert balanced.shape[0] == 2 * multi.X.shape[1]


def test_matching_with_estimated_propensity(conf):
    eff = matching(conf.X, conf.y, conf.w, propensity_model=LogisticRegression(), n_folds=None)
    truth = conf.tau[conf.w == 1].mean()
    assert abs(eff.estimate - truth) < 4 * eff.std_error
    assert "in-sample" in eff.method


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_neighbors": 0}, "`n_neighbors` must be a positive integer"),
        ({"variance_neighbors": 1.5}, "`variance_neighbors` must be a positive integer"),
        ({"caliper": -1.0}, "`caliper` must be a positive number"),
        ({"distance": "mahalanobis"}, "`distance` must be"),
        ({"estimand": "ATC"}, "`estimand` must be one of"),
        ({"level": 0.0}, "`level` must be in"),
    ],
)
def test_matching_argument_errors(conf, kwargs, match):
    with pytest.raises(ValueError, match=match):
        matching(None, conf.y, conf.w, propensity=conf.propensity, **kwargs)


def test_matching_logit_needs_interior_propensities():
    with pytest.raises(ValueError, match="`propensity` values must lie strictly between 0 and 1"):
        matching(None, np.arange(4.0), [0, 0, 1, 1], propensity=[0.0, 0.2, 0.8, 0.9],
                 distance="logit")  # fmt: skip
