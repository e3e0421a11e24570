"""The searches' selection check: the pick against the constant effect and the runner-up."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import optuna
import pytest
from lightgbm import LGBMRegressor
from optuna.distributions import FloatDistribution
from sklearn.base import clone
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

import metalearn as ml
from metalearn.scoring import fit_scoring_nuisance
from metalearn.tuning import (
    MetaLearnerGridSearch,
    MetaLearnerOptunaSearch,
    SelectionCheck,
    SelectionWarning,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _linear_effect(n: int, seed: int, slope: float, k: int = 2) -> Any:
    """Randomized design, outcome linear in x, effect ``1 + slope * x0`` per treated variant."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    w = rng.integers(0, k, size=n)
    tau = 1.0 + slope * X[:, 0]
    y = X[:, 1] + np.where(w > 0, w * tau, 0.0) + rng.normal(size=n)
    return X, y, w


def _dr(effect_model: Any) -> ml.DRLearner:
    return ml.DRLearner(
        outcome_model=LinearRegression(),
        propensity_model=LogisticRegression(),
        effect_model=effect_model,
        n_folds=2,
        random_state=0,
    )


def test_constant_gain_and_its_error_are_those_of_the_loss_table(yardstick: Any) -> None:
    X, y, w = _linear_effect(1500, 0, slope=1.0)
    template = _dr(Ridge())
    grid = {"effect_model__alpha": [0.1, 1e6]}
    search = MetaLearnerGridSearch(template, grid, scoring_nuisance=yardstick, n_jobs=1)
    search.fit(X, y, w)
    check = search.selection_
    assert isinstance(check, SelectionCheck)
    assert check.loss == "r_loss" and check.winner == search.best_index_ == 0
    # The pick's honest out-of-fold effects, scored by the scoring module.
    tau = clone(template).set_params(**search.best_params_).fit_predict(X, y, w)
    sn = fit_scoring_nuisance(X, y, w, nuisance=yardstick)
    table = ml.scoring.cate_losses(tau, sn).to_pandas().set_index("loss")
    assert check.winner_loss == pytest.approx(table.loc["r_loss", "value"], rel=1e-10)
    assert check.constant_gain == pytest.approx(table.loc["r_loss", "gain"], rel=1e-10)
    assert check.constant_gain_std_error == pytest.approx(
        table.loc["r_loss", "gain_std_error"], rel=1e-10
    )
    # A strong linear effect: the linear pick beats the constant and the almost constant
    # runner-up (alpha = 1e6 shrinks the slope to nothing) by many standard errors.
    assert check.runner_up == 1
    margin = search.results_["r_loss"][1] - search.results_["r_loss"][0]
    assert check.runner_up_margin == pytest.approx(margin, rel=1e-10)
    assert check.beats_constant and check.beats_runner_up
    frame = check.summary()
    assert frame["rival"].to_list() == ["constant effect", "runner-up (1)"]
    assert frame["verdict"].to_list() == ["pick is better", "pick is better"]


def test_no_heterogeneity_warns_that_the_pick_is_no_better_than_a_constant(
    yardstick: Any,
) -> None:
    X, y, w = _linear_effect(1000, 1, slope=0.0)  # the same effect, 1, for everybody
    grid = {"effect_model__num_leaves": [7, 31]}
    search = MetaLearnerGridSearch(
        _dr(LGBMRegressor(n_estimators=50, verbose=-1)), grid, scoring_nuisance=yardstick
    )
    with pytest.warns(SelectionWarning, match=r"not clearly better than a constant effect"):
        search.fit(X, y, w)
    check = search.selection_
    assert not check.beats_constant
    # Trees fitted to noisy pseudo-outcomes do worse than the constant here.
    assert check.constant_gain < 0


def test_identical_runner_up_is_within_noise_and_no_warning_on_a_clear_win(
    yardstick: Any,
) -> None:
    X, y, w = _linear_effect(1500, 2, slope=1.0)
    grid = {"effect_model__alpha": [1.0, 1.0]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", SelectionWarning)
        search = MetaLearnerGridSearch(
            _dr(Ridge()), grid, scoring_nuisance=yardstick, n_jobs=1
        ).fit(X, y, w)
    check = search.selection_
    assert check.runner_up_margin == 0.0 and check.runner_up_margin_std_error == 0.0
    assert not check.beats_runner_up
    assert check.summary()["verdict"].to_list()[1] == "within noise"


def test_several_treated_variants(yardstick: Any) -> None:
    X, y, w = _linear_effect(1800, 3, slope=1.0, k=3)
    grid = {"effect_model__alpha": [0.1, 1e6]}
    search = MetaLearnerGridSearch(_dr(Ridge()), grid, scoring_nuisance=yardstick, n_jobs=1)
    search.fit(X, y, w)
    check = search.selection_
    best = search.results_.row(search.best_index_, named=True)
    assert check.constant_gain == pytest.approx(best["r_loss_gain"], rel=1e-10)
    assert np.isfinite(check.constant_gain_std_error) and check.constant_gain_std_error > 0
    assert check.beats_constant and check.beats_runner_up


def test_not_a_cate_loss_has_no_check(yardstick: Any) -> None:
    X, y, w = _linear_effect(600, 4, slope=1.0)
    search = MetaLearnerGridSearch(
        _dr(Ridge()),
        {"effect_model__alpha": [0.1, 10.0]},
        scoring="final_loss",
        scoring_nuisance=yardstick,
        n_jobs=1,
    ).fit(X, y, w)
    assert search.selection_ is None


def test_optuna_search_checks_its_best_trial(yardstick: Any) -> None:
    X, y, w = _linear_effect(1200, 5, slope=1.0)
    search = MetaLearnerOptunaSearch(
        _dr(Ridge()),
        {"effect_model__alpha": FloatDistribution(1e-2, 1e6, log=True)},
        n_trials=4,
        scoring="dr_loss",
        staged=False,
        scoring_nuisance=yardstick,
        random_state=0,
    ).fit(X, y, w)
    check = search.selection_
    assert check.loss == "dr_loss" and check.winner == search.best_trial_.number
    assert check.winner_loss == pytest.approx(search.best_score_, rel=1e-10)
    scores = search.best_trial_.user_attrs["scores"]
    assert check.constant_gain == pytest.approx(scores["dr_loss_gain"], rel=1e-10)
    others = sorted(
        t.value for t in search.study_.trials if t.number != check.winner and t.value is not None
    )
    assert check.runner_up_loss == pytest.approx(others[0], rel=1e-10)


def test_paired_lead_of_the_pick_against_itself_is_zero(yardstick: Any) -> None:
    from metalearn.tuning._selection import paired_lead

    X, y, w = _linear_effect(800, 6, slope=1.0)
    search = MetaLearnerGridSearch(
        _dr(Ridge()), {"effect_model__alpha": [0.1, 1e6]}, scoring_nuisance=yardstick, n_jobs=1
    ).fit(X, y, w)
    rows = search.selection_._winner_rows
    assert paired_lead("r_loss", rows, rows, len(y)) == (0.0, 0.0)
