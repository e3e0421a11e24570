"""The n-dependent default effect model of the DR- and R-learner (small-n accuracy)."""

from __future__ import annotations

import numpy as np
import pytest
from lightgbm import LGBMRegressor

import metalearn as ml
from metalearn._core.defaults import (
    EFFECT_LARGE_N,
    default_effect_regressor,
    effect_learning_rate,
    effect_min_child_samples,
)


def test_rule_min_child_samples_grows_like_sqrt_n():
    assert effect_min_child_samples(1) == 20
    assert effect_min_child_samples(10) == 20
    assert effect_min_child_samples(1_000) == 190
    assert effect_min_child_samples(10_000) == 600
    assert effect_min_child_samples(100_000) == 1897
    sizes = [effect_min_child_samples(n) for n in (100, 1_000, 10_000, 100_000, 10**6)]
    assert sizes == sorted(sizes)
    # Leaves grow slower than n: the number of leaves the data can fill grows too.
    assert 10**6 / effect_min_child_samples(10**6) > 1_000 / effect_min_child_samples(1_000)
    with pytest.raises(ValueError, match="n_samples"):
        effect_min_child_samples(0)


def test_rule_learning_rate_linear_in_n_up_to_lightgbm_default():
    assert effect_learning_rate(1_000) == 0.01
    assert effect_learning_rate(3_000) == pytest.approx(0.03)
    assert effect_learning_rate(10_000) == 0.1
    assert effect_learning_rate(10**7) == 0.1
    assert 0 < effect_learning_rate(1) < 1e-4
    with pytest.raises(ValueError, match="n_samples"):
        effect_learning_rate(-5)


def test_rule_model_settings():
    model = default_effect_regressor(1_000)
    assert isinstance(model, LGBMRegressor)
    p = model.get_params()
    assert (p["num_leaves"], p["learning_rate"], p["n_estimators"]) == (4, 0.01, 200)
    assert p["min_child_samples"] == 190 and p["verbose"] == -1
    p = default_effect_regressor(10_000).get_params()
    assert (p["learning_rate"], p["min_child_samples"]) == (0.1, 600)
    assert default_effect_regressor(1_000) is not model  # a new model per call
    large = default_effect_regressor().get_params()["min_child_samples"]
    assert large == effect_min_child_samples(EFFECT_LARGE_N)


def test_learners_use_the_rule_only_where_effect_model_is_none():
    sim = ml.datasets.simulate_nie_wager("A", n=400, seed=0)
    for cls in (ml.DRLearner, ml.RLearner):
        fitted = cls(n_jobs=1, random_state=0).fit(sim.X, sim.y, sim.w)
        for models in fitted.effect_models_.values():
            for m in models:
                p = m.get_params()
                assert p["min_child_samples"] == effect_min_child_samples(400)
                assert (p["num_leaves"], p["learning_rate"]) == (4, effect_learning_rate(400))
        # Before a fit (no data): the large-n model of the rule.
        assert cls()._effect_template().get_params()["min_child_samples"] == (
            effect_min_child_samples(EFFECT_LARGE_N)
        )
        assert cls()._effect_template(n=1_000).get_params()["min_child_samples"] == 190
        explicit = LGBMRegressor(num_leaves=7, verbose=-1)
        assert cls(effect_model=explicit)._effect_template(n=1_000) is explicit
    # The X-learner keeps LightGBM's defaults.
    x = ml.XLearner()._effect_template(n=1_000).get_params()
    assert (x["num_leaves"], x["min_child_samples"]) == (31, 20)


@pytest.mark.parametrize(
    ("cls", "bound"),
    [(ml.DRLearner, 0.6), (ml.RLearner, 0.15)],
    ids=["DR", "R"],
)
def test_default_final_stage_at_n_1000_setup_A(cls, bound):
    # benchmarks/bench_small_n.py, setup A, seed 0 (same draws): var(tau) = 0.042;
    # the former default LGBMRegressor(verbose=-1) gives a test MSE of 6.4 (DR) and
    # 0.84 (R), the rule 0.29 (DR, whose AIPW pseudo-outcomes carry the noise of
    # overconfident default propensities) and 0.069 (R). Bounds: about twice the rule.
    train = ml.datasets.simulate_nie_wager("A", n=1_000, seed=0)
    test = ml.datasets.simulate_nie_wager("A", n=2_000, seed=1_000_000)
    learner = cls(n_jobs=1, random_state=0).fit(train.X, train.y, train.w)
    mse = float(np.mean((learner.predict(test.X) - test.tau) ** 2))
    assert mse < bound


@pytest.mark.parametrize(("n", "n_models"), [(600, 1), (1_500, 3)])
def test_x_learner_final_stage_auto_is_full_below_the_threshold(n: int, n_models: int) -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from metalearn._core.defaults import FINAL_STAGE_CROSSFIT_MIN_N

    assert 600 < FINAL_STAGE_CROSSFIT_MIN_N <= 1_500
    sim = ml.datasets.simulate_nie_wager("A", n=n, seed=0)
    x = ml.XLearner(
        outcome_model=LinearRegression(),
        propensity_model=LogisticRegression(),
        effect_model=LinearRegression(),
        n_folds=3,
        random_state=0,
    )
    assert x.final_stage == "auto"
    x.fit(sim.X, sim.y, sim.w)
    assert {len(models) for models in x.effect_models_.values()} == {n_models}
    same = ml.XLearner(
        **{**x.get_params(deep=False), "final_stage": "full" if n_models == 1 else "crossfit"}
    )
    np.testing.assert_array_equal(same.fit(sim.X, sim.y, sim.w).predict(sim.X), x.predict(sim.X))
    # fit_predict always cross-fits, whatever the rule says for fit.
    oof = ml.XLearner(**x.get_params(deep=False)).fit_predict(sim.X, sim.y, sim.w)
    honest = ml.XLearner(**{**x.get_params(deep=False), "final_stage": "crossfit"})
    np.testing.assert_array_equal(oof, honest.fit_predict(sim.X, sim.y, sim.w))
