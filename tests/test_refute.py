"""Tests for metalearn.refute: placebo, random common cause and subset checks."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

import metalearn as ml
from metalearn.refute import Refutation, placebo, random_common_cause, subset

AIPW = partial(
    ml.ate.aipw,
    outcome_model=LinearRegression(),
    propensity_model=LogisticRegression(),
    n_folds=3,
    random_state=0,
)


@pytest.fixture(scope="module")
def conf() -> ml.datasets.Simulation:
    return ml.datasets.simulate_confounded(n=1500, seed=1)


def test_checks_pass_on_a_correct_simulator(conf):
    p = placebo(AIPW, conf.X, conf.y, conf.w, random_state=1)
    assert isinstance(p, Refutation)
    assert p.passed and p.expected == 0.0 and p.check == "placebo"
    r = random_common_cause(AIPW, conf.X, conf.y, conf.w, random_state=1)
    assert r.passed and r.expected == r.estimate
    assert r.tolerance == pytest.approx(0.5 * r.std_error)
    s = subset(AIPW, conf.X, conf.y, conf.w, random_state=1)
    assert s.passed and s.n_repeats == 5
    assert s.tolerance == pytest.approx(1.959964 * s.std_error * np.sqrt(1 / 5), rel=1e-5)
    assert "passed" in repr(p) and "Rule:" in repr(s)


def test_placebo_rule_uses_the_placebo_standard_errors(conf):
    p = placebo(AIPW, conf.X, conf.y, conf.w, n_repeats=3, random_state=0)
    rng = np.random.RandomState(0)
    ses = []
    for _ in range(3):
        eff = AIPW(conf.X, conf.y, conf.w[rng.permutation(len(conf.w))])
        ses.append(eff.std_error)
    expected = 1.959964 * np.sqrt(np.sum(np.square(ses))) / 3
    assert p.tolerance == pytest.approx(expected, rel=1e-5)
    assert p.n_repeats == 3


def test_placebo_fails_when_the_real_assignment_leaks_into_the_estimator(conf):
    # Propensities of the real treatment reused for the placebo: the estimator still
    # "knows" who was treated, and the placebo effect does not vanish.
    leaky = partial(ml.ate.ipw, propensity=conf.propensity)
    p = placebo(leaky, conf.X, conf.y, conf.w, random_state=0)
    assert not p.passed
    assert abs(p.statistic) > 5 * p.tolerance


def test_random_common_cause_fails_for_an_unstable_adjustment(conf):
    # A k-nearest-neighbour propensity cannot ignore an irrelevant feature: its estimate
    # moves (towards the confounded difference in means) when noise is added.
    knn = partial(ml.ate.ipw, propensity_model=KNeighborsClassifier(n_neighbors=50), random_state=0)
    r = random_common_cause(knn, conf.X, conf.y, conf.w, n_repeats=2, random_state=0)
    assert not r.passed
    assert np.all(r.statistics > r.estimate + r.tolerance)


def test_subset_fails_for_an_estimator_that_drifts_with_sample_size(conf):
    # The same k-NN propensity on half the rows has neighbourhoods twice as wide and a
    # larger confounding bias: the estimate drifts.
    knn = partial(
        ml.ate.ipw, propensity_model=KNeighborsClassifier(n_neighbors=150), random_state=0
    )
    s = subset(knn, conf.X, conf.y, conf.w, random_state=0)
    assert not s.passed


def test_reverse_causation_is_invisible_to_these_checks(conf):
    # The treatment column is computed from the outcome. The estimate is spurious, but a
    # permuted treatment is independent of everything and noise is irrelevant whatever
    # the data, so both checks pass: documented in the module docstring.
    w_leak = conf.y + np.random.default_rng(0).normal(size=len(conf.y)) > np.median(conf.y)
    w_leak = w_leak.astype(int)
    p = placebo(AIPW, conf.X, conf.y, w_leak, random_state=0)
    r = random_common_cause(AIPW, conf.X, conf.y, w_leak, random_state=0)
    assert p.estimate > 10 * p.std_error  # a large, spurious "effect"
    assert p.passed and r.passed


def test_learner_estimator_and_shared_nuisance(conf):
    nuis = ml.Nuisance(
        outcome_model=LinearRegression(), propensity_model=LogisticRegression(), n_folds=3
    ).fit(conf.X, conf.y, conf.w)
    dr = ml.DRLearner(nuisance=nuis, effect_model=LinearRegression(), random_state=0)
    p = placebo(dr, conf.X, conf.y, conf.w, random_state=0)
    assert p.passed
    assert np.isfinite(p.std_error)
    # Every learner with a nuisance stage gives an AIPW standard error ...
    tl = ml.TLearner(outcome_model=LinearRegression(), n_folds=3, random_state=0)
    assert np.isfinite(placebo(tl, conf.X, conf.y, conf.w, random_state=0).std_error)
    # ... the S-learner (a plug-in mean, no standard error) needs several placebo draws.
    t = ml.SLearner(outcome_model=LinearRegression(), n_folds=3, random_state=0)
    with pytest.raises(ValueError, match="pass `n_repeats >= 2`"):
        placebo(t, conf.X, conf.y, conf.w, random_state=0)
    pt = placebo(t, conf.X, conf.y, conf.w, n_repeats=4, random_state=0)
    assert pt.passed and np.isnan(pt.std_error)
    with pytest.raises(ValueError, match="pass `abs_tolerance=`"):
        random_common_cause(t, conf.X, conf.y, conf.w)
    r = random_common_cause(t, conf.X, conf.y, conf.w, abs_tolerance=0.1, random_state=0)
    assert r.tolerance == 0.1
    with pytest.raises(ValueError, match="subset check needs the spread"):
        subset(t, conf.X, conf.y, conf.w, n_repeats=1)
    st = subset(t, conf.X, conf.y, conf.w, n_repeats=3, random_state=0)
    assert st.n_repeats == 3


@pytest.mark.parametrize("kind", ["pandas", "polars"])
def test_frames_keep_their_type(conf, kind):
    seen = []

    def spy(X, y, w):
        seen.append((type(X), X.shape))
        return AIPW(X, y, w)

    X = (
        pd.DataFrame(conf.X, columns=conf.feature_names)
        if kind == "pandas"
        else pl.DataFrame(conf.X, schema=conf.feature_names)
    )
    random_common_cause(spy, X, conf.y, conf.w, random_state=0)
    subset(spy, X, conf.y, conf.w, n_repeats=2, random_state=0)
    assert {t for t, _ in seen} == {type(X)}
    assert seen[1][1] == (1500, 7) and seen[3][1][0] == 750


def test_multiarm_and_plain_number_estimators():
    sim = ml.datasets.simulate_multiarm(n=1500, n_variants=3, seed=0)
    res = placebo(AIPW, sim.X, sim.y, sim.w, random_state=0)
    assert len(res) == 2 and [r.variant for r in res] == [1, 2]

    def numbers(X, y, w):
        y, w = np.asarray(y), np.asarray(w)
        return (y[w == 1].mean() - y[w == 0].mean(), y[w == 2].mean() - y[w == 0].mean())

    res = placebo(numbers, sim.X, sim.y, sim.w, n_repeats=5, random_state=0, control=0)
    assert [r.variant for r in res] == [1, 2]
    assert all(np.isnan(r.std_error) for r in res)


def test_shared_random_state_stream_is_reproducible(conf):
    a = placebo(AIPW, conf.X, conf.y, conf.w, random_state=np.random.RandomState(42))
    b = placebo(AIPW, conf.X, conf.y, conf.w, random_state=42)
    assert a.statistic == b.statistic


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda d: placebo("aipw", *d), TypeError, "`estimator` must be a metalearn learner"),
        (lambda d: placebo(AIPW, *d, n_repeats=0), ValueError, "`n_repeats` must be"),
        (lambda d: placebo(AIPW, *d, level=1.5), ValueError, "`level` must be in"),
        (lambda d: random_common_cause(AIPW, *d, tolerance=0), ValueError, "`tolerance`"),
        (
            lambda d: random_common_cause(AIPW, *d, abs_tolerance=-1.0),
            ValueError,
            "`abs_tolerance` must be positive",
        ),
        (lambda d: random_common_cause(AIPW, None, *d[1:]), ValueError, "`X` is required"),
        (lambda d: subset(AIPW, *d, fraction=1.0), ValueError, "`fraction` must be in"),
        (
            lambda d: placebo(lambda X, y, w: (), *d),
            ValueError,
            "returned no estimate",
        ),
        (
            lambda d: placebo(lambda X, y, w: np.zeros(3), *d),
            ValueError,
            "one number per treated variant",
        ),
    ],
)
def test_errors(conf, call, exc, match):
    with pytest.raises(exc, match=match):
        call((conf.X, conf.y, conf.w))
