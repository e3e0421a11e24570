"""R-loss and DR-loss rank learners on one shared scoring nuisance.

On Nie-Wager setup B (a randomized trial with a strongly heterogeneous
effect) a reasonable learner must beat the constant-effect baseline and two
deliberately bad predictions (its own predictions shuffled across rows, and
a constant effect that is wrong by 1.5); on setup C (confounded, constant
effect tau = 1) it must not beat the constant baseline by more than the
reported standard error of the gain allows.

Tolerances come from the reported standard errors: the gain of one
prediction over the baseline has ``gain_std_error``; the difference between
two predictions' losses is the difference of their gains, whose standard
error is at most the sum of the two (the standard deviation of a difference
is at most the sum of the standard deviations).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

import metalearn as ml
from metalearn.scoring import cate_losses, evaluate, fit_scoring_nuisance

Z = 3.0  # multiples of the standard error
LOSSES = ("r_loss", "dr_loss")


def _nuisance() -> ml.Nuisance:
    return ml.Nuisance(
        outcome_model=LinearRegression(),
        propensity_model=LogisticRegression(),
        n_folds=3,
        random_state=0,
    )


def _setup(name: str, seed: int) -> dict[str, Any]:
    train = ml.datasets.simulate_nie_wager(name, n=2000, seed=seed)
    test = ml.datasets.simulate_nie_wager(name, n=2000, seed=seed + 1)
    known = {"propensity": 0.5} if name == "B" else {}
    good = ml.DRLearner(
        outcome_model=LinearRegression(),
        propensity_model=LogisticRegression(),
        effect_model=LinearRegression(),
        n_folds=3,
        random_state=0,
    ).fit(train.X, train.y, train.w, **known)
    # one yardstick for every prediction: scoring nuisances of the test rows
    sn = fit_scoring_nuisance(test.X, test.y, test.w, nuisance=_nuisance(), **known)
    tau = np.asarray(good.predict(test.X), dtype=np.float64)
    bad = {
        "shuffled": np.random.default_rng(seed).permutation(tau),
        "wrong_constant": np.full_like(tau, float(tau.mean()) + 1.5),
    }
    return {"test": test, "sn": sn, "good": good, "tau": tau, "bad": bad, "known": known}


def _gains(tau: np.ndarray, sn: Any) -> dict[str, tuple[float, float]]:
    table = cate_losses(tau, sn)
    return {
        row["loss"]: (row["gain"], row["gain_std_error"])
        for row in table.iter_rows(named=True)
        if row["loss"] in LOSSES
    }


@pytest.fixture(scope="module")
def setup_b() -> dict[str, Any]:
    return _setup("B", seed=0)


@pytest.fixture(scope="module")
def setup_c() -> dict[str, Any]:
    return _setup("C", seed=0)


@pytest.mark.parametrize("loss", LOSSES)
def test_good_learner_beats_the_constant_baseline(setup_b: dict[str, Any], loss: str) -> None:
    gain, se = _gains(setup_b["tau"], setup_b["sn"])[loss]
    assert se > 0
    assert gain > Z * se


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("bad", ["shuffled", "wrong_constant"])
def test_good_learner_beats_a_bad_one(setup_b: dict[str, Any], loss: str, bad: str) -> None:
    good_gain, good_se = _gains(setup_b["tau"], setup_b["sn"])[loss]
    bad_gain, bad_se = _gains(setup_b["bad"][bad], setup_b["sn"])[loss]
    # a lower loss is a larger gain over the same baseline
    assert good_gain - bad_gain > Z * (good_se + bad_se)
    # and the bad predictions are worse than the constant effect itself
    assert bad_gain < 0


def test_evaluate_ranks_like_cate_losses(setup_b: dict[str, Any]) -> None:
    test, sn = setup_b["test"], setup_b["sn"]
    ev = evaluate(setup_b["good"], test.X, test.y, test.w, nuisance=sn, **setup_b["known"])
    for loss in LOSSES:
        gain, _ = _gains(setup_b["tau"], sn)[loss]
        assert ev.scores[f"{loss}_gain"] == pytest.approx(gain)
        assert ev.scores[loss] < ev.scores[f"{loss}_baseline"]


@pytest.mark.parametrize("loss", LOSSES)
def test_no_gain_over_the_constant_when_the_effect_is_constant(
    setup_c: dict[str, Any], loss: str
) -> None:
    gain, se = _gains(setup_c["tau"], setup_c["sn"])[loss]
    assert gain < Z * se
    # the true (constant) effect does no better than the baseline either
    true_gain, true_se = _gains(setup_c["test"].tau, setup_c["sn"])[loss]
    assert abs(true_gain) <= Z * true_se + 1e-12


def test_constant_baseline_effect_is_near_the_true_effect(setup_c: dict[str, Any]) -> None:
    table = cate_losses(setup_c["tau"], setup_c["sn"])
    effects = dict(zip(table["loss"].to_list(), table["baseline_effect"].to_list(), strict=True))
    assert effects["dr_loss"] == pytest.approx(1.0, abs=0.3)
    assert effects["r_loss"] == pytest.approx(1.0, abs=0.3)


@pytest.mark.parametrize("loss", LOSSES)
def test_a_wrong_constant_still_loses_when_the_effect_is_constant(
    setup_c: dict[str, Any], loss: str
) -> None:
    bad_gain, bad_se = _gains(setup_c["bad"]["wrong_constant"], setup_c["sn"])[loss]
    assert bad_gain < -Z * bad_se
