"""Positivity: errors for impossible propensities and weights, OverlapWarning for poor
overlap, and one meaning of ``ate()`` on every learner."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression

import metalearn as ml
from metalearn._core.positivity import overlap_problems

LGB = {"n_estimators": 20, "verbose": -1, "n_jobs": 1}


def _data(n: int = 2000, seed: int = 0, w=None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    if w is None:
        w = rng.integers(0, 2, n)
    y = X[:, 0] + w * 1.0 + rng.normal(size=n)
    return X, y, np.asarray(w)


def _overlap_messages(record) -> list[str]:
    return [str(r.message) for r in record if issubclass(r.category, ml.OverlapWarning)]


def _dr(**kw):
    return ml.DRLearner(
        outcome_model=LGBMRegressor(**LGB),
        propensity_model=LGBMClassifier(**LGB),
        n_folds=3,
        random_state=0,
        n_jobs=1,
        **kw,
    )


def test_randomized_experiment_gives_no_overlap_warning():
    X, y, w = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ml.OverlapWarning)
        dr = _dr().fit(X, y, w)
        dr.ate()
        ml.ate.aipw(X, y, w, learner=dr)
        ml.ate.ipw(X, y, w, propensity=0.5)


def test_treatment_decided_by_one_feature_warns_everywhere():
    X, y, _ = _data()
    w = (X[:, 0] > 0).astype(int)
    with pytest.warns(ml.OverlapWarning, match="separates 1 from 0") as rec:
        dr = _dr().fit(X, y, w)
    assert "DRLearner.fit" in _overlap_messages(rec)[0]
    assert "trim='crump'" in _overlap_messages(rec)[0]  # says what to do
    with pytest.warns(ml.OverlapWarning, match="DRLearner.ate"):
        dr.ate()
    with pytest.warns(ml.OverlapWarning, match="ate.aipw"):
        ml.ate.aipw(X, y, w, outcome_model=LinearRegression(), random_state=0)
    with pytest.warns(ml.OverlapWarning, match="ate.ipw"):
        ml.ate.ipw(X, y, w, random_state=0)


def test_tiny_arm_warns_with_counts():
    X, y, _ = _data(n=4000)
    w = np.zeros(4000, dtype=int)
    w[:20] = 1  # 0.5% treated
    with pytest.warns(ml.OverlapWarning, match=r"variant 1 has only 20 row\(s\) \(0.50% of 4000\)"):
        ml.TLearner(outcome_model=LinearRegression(), n_folds=2).fit(X, y, w)


def test_pile_up_at_the_clip_bound_names_bound_and_count():
    rng = np.random.default_rng(0)
    n = 1000
    w = rng.integers(0, 2, n)
    e = np.column_stack([np.full(n, 0.5), np.full(n, 0.5)])
    e[:100] = [0.995, 0.005]  # 10% of rows below the 0.05 bound
    problems = overlap_problems(w, int, 0, [1], e, bounds=(0.05, 0.95))
    assert len(problems) == 1
    assert "100 of 1000 rows (10.0%)" in problems[0] and "at or below 0.05" in problems[0]
    # Below the share threshold: no problem.
    e[20:100] = 0.5
    assert overlap_problems(w, int, 0, [1], e, bounds=(0.05, 0.95)) == []


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.2, np.nan])
def test_impossible_given_propensities_are_rejected_everywhere(bad):
    X, y, w = _data(n=200)
    p = np.full(200, 0.5)
    p[3] = bad
    msg = "`propensity` values must lie strictly between 0 and 1"
    with pytest.raises(ValueError, match=msg):
        ml.ate.ipw(X, y, w, propensity=p)
    with pytest.raises(ValueError, match=msg):
        ml.ate.aipw(X, y, w, propensity=p, outcome_model=LinearRegression())
    with pytest.raises(ValueError, match=msg):
        ml.DRLearner(outcome_model=LinearRegression(), n_folds=2).fit(X, y, w, propensity=p)
    with pytest.raises(ValueError, match=msg):
        ml.evaluation.policy_value(np.ones(200), y, w, propensity=p)


def test_zero_weight_on_an_arm_or_everywhere_is_an_error():
    X, y, w = _data(n=400)
    sw = np.where(w == 0, 0.0, 1.0)
    with pytest.raises(ValueError, match="`sample_weight` is zero on every row of variant 0"):
        _dr().fit(X, y, w, sample_weight=sw)
    with pytest.raises(ValueError, match="`sample_weight` is zero on every row: "):
        _dr().fit(X, y, w, sample_weight=np.zeros(400))
    with pytest.raises(ValueError, match="zero on every row of variant 0"):
        ml.evaluation.policy_value(np.ones(400), y, w, propensity=0.5, sample_weight=sw)


# ----------------------------------------------------------- one meaning of ate()
LIN = {"outcome_model": LinearRegression(), "n_folds": 3, "random_state": 0}


@pytest.fixture(scope="module")
def conf():
    return ml.datasets.simulate_confounded(n=3000, seed=1)


@pytest.mark.parametrize("name", ["T", "X", "R", "DR", "RA"])
def test_ate_on_training_rows_is_aipw_of_the_learner(conf, name):
    from metalearn.learners.base import learner_registry

    cls = learner_registry()[name]
    kw = dict(LIN)
    if name in ("X", "R", "DR"):
        kw["propensity_model"] = LogisticRegression()
    learner = cls(**kw).fit(conf.X, conf.y, conf.w)
    eff = learner.ate(conf.X, conf.y, conf.w)
    ref = ml.ate.aipw(conf.X, conf.y, conf.w, learner=learner)
    assert eff.method == "AIPW (ATE)"
    assert eff.estimate == pytest.approx(ref.estimate, abs=1e-10)
    assert eff.std_error == pytest.approx(ref.std_error, abs=1e-10)
    assert np.isfinite(eff.std_error) and eff.std_error > 0
    # Within 4 standard errors of the truth (AIPW is consistent with linear nuisances here).
    assert abs(eff.estimate - conf.tau.mean()) < 4 * eff.std_error + 0.05
    if name in ("X", "DR"):  # their fit cross-fitted every nuisance AIPW reads
        assert learner.ate().estimate == pytest.approx(eff.estimate, abs=1e-10)
    else:
        with pytest.raises(ValueError, match=r"Call `learner.ate\(X, y, w\)`"):
            learner.ate()
        # After ate(X, y, w), the missing nuisances are kept: a second call refits nothing.
        fits = learner.nuisance_.n_model_fits_
        learner.ate(conf.X, conf.y, conf.w)
        assert learner.nuisance_.n_model_fits_ == fits


def test_ate_trim_matches_metalearn_ate(conf):
    dr = ml.DRLearner(**LIN, propensity_model=LogisticRegression()).fit(conf.X, conf.y, conf.w)
    trimmed = dr.ate(trim="crump")
    ref = ml.ate.aipw(conf.X, conf.y, conf.w, learner=dr, trim="crump")
    assert trimmed.n == ref.n < conf.X.shape[0]
    assert trimmed.estimate == pytest.approx(ref.estimate, abs=1e-10)


def test_plug_in_ate_says_it_has_no_interval(conf):
    s = ml.SLearner(**LIN).fit(conf.X, conf.y, conf.w)
    eff = s.ate(conf.X)
    assert eff.method == "plug-in" and np.isnan(eff.std_error)
    assert "no interval" in repr(eff)
    with pytest.raises(ValueError, match="has no nuisance stage"):
        s.ate(conf.X, conf.y, conf.w)
    with pytest.raises(ValueError, match="needs `X`, `y` and `w` together"):
        ml.TLearner(**LIN).fit(conf.X, conf.y, conf.w).ate(y=conf.y, w=conf.w)
    with pytest.raises(ValueError, match="`trim` applies to the AIPW estimate"):
        s.ate(conf.X, trim="crump")
