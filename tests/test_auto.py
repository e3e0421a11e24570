"""auto_cate: staged choice of a learner and its settings, a stack, and the report."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import optuna
import pytest

import metalearn as ml
from metalearn.tuning import AutoCATE

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def auto() -> tuple[AutoCATE, Any]:
    sim = ml.datasets.simulate_nie_wager("A", n=600, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ml.auto_cate(
            sim.X,
            sim.y,
            sim.w,
            n_trials=5,
            nuisance_trials=2,
            learners=["T", "DR"],
            stack=2,
            constant_fallback=False,  # these tests are about the stack against the pick
            n_folds=2,
            random_state=0,
        )
    return result, sim


def test_studies_tune_both_nuisances_then_the_learner(auto: Any) -> None:
    result, _ = auto
    search = result.search
    # The propensity model is tuned although the first learner choice (T) has none.
    assert set(search.studies_) == {"outcome", "propensity", "final"}
    final = search.studies_["final"].trials
    assert {t.params["learner"] for t in final} <= {"T", "DR"}
    # A T-learner has nothing left to tune in the final study: its repeats are not refitted.
    t_trials = [t for t in final if t.params["learner"] == "T"]
    assert all("repeat_of" in t.user_attrs for t in t_trials[1:])
    assert len({t.value for t in t_trials}) <= 1


def test_stack_is_kept_unless_the_pick_is_clearly_better(auto: Any) -> None:
    result, sim = auto
    assert result.stack_lead == pytest.approx(result.single_loss - result.stack_loss)
    assert result.stack_lead_std_error > 0
    clearly_better_pick = result.stack_lead < -2 * result.stack_lead_std_error
    if result.choice == "stack":
        assert not clearly_better_pick
        assert result.learner is result.stack
    else:
        assert clearly_better_pick
        assert result.learner is result.search.best_estimator_
    assert result.single_loss == pytest.approx(result.search.best_score_)
    np.testing.assert_array_equal(result.predict(sim.X[:4]), result.learner.predict(sim.X[:4]))
    assert result.selection is result.search.selection_


def test_stack_loss_is_its_cross_fitted_loss_on_the_yardstick(auto: Any) -> None:
    result, _ = auto
    stack = result.stack
    assert isinstance(stack, ml.StackedLearner) and len(stack.learners_) == 2
    oof = stack._shape(stack.oof_tau_)  # its honest estimates of the training rows
    table = ml.scoring.cate_losses(oof, result.search.scoring_nuisance_)
    loss = table.filter(table["loss"] == "r_loss")["value"][0]
    assert result.stack_loss == pytest.approx(loss, rel=1e-10)


def test_report_frame_and_plot(auto: Any) -> None:
    result, _ = auto
    frame = result.summary()
    assert list(frame.columns) == ["candidate", "learner", "r_loss", "chosen"]
    assert frame["chosen"].sum() == 1
    assert frame["candidate"].to_list()[-1] == "stack"
    assert "AutoCATE(choice=" in repr(result) and "<table>" in result._repr_html_()
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    ax = result.plot()
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "stack" in labels and "constant effect" in labels


def test_time_budget_stops_the_studies() -> None:
    sim = ml.datasets.simulate_nie_wager("B", n=400, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ml.auto_cate(
            sim.X, sim.y, sim.w, time_budget=2.0, n_trials=10_000, nuisance_trials=10_000,
            learners=["T"], stack=0, n_folds=2, random_state=0,
        )  # fmt: skip
    finished = len(result.search.studies_["outcome"].trials)
    assert 1 <= finished < 10_000
    assert result.stack is None and np.isnan(result.stack_loss)


def _auto(setup: str, n: int, **kw: Any) -> tuple[AutoCATE, Any]:
    sim = ml.datasets.simulate_nie_wager(setup, n=n, seed=0)
    args = {"n_trials": 4, "nuisance_trials": 2, "learners": ["R", "DR"], "stack": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ml.auto_cate(sim.X, sim.y, sim.w, n_folds=2, random_state=0, **{**args, **kw}), sim


def test_a_constant_effect_is_reported_as_one_average_effect() -> None:
    # Nie-Wager setup C has tau = 1 for everybody: no learner beats the constant on the
    # R-loss, and auto_cate returns the R-learner with a constant final stage.
    result, sim = _auto("C", 800)
    assert result.choice == "constant"
    assert not result.constant_gain - 1.96 * result.constant_gain_std_error > 0
    tau = result.predict(sim.X)
    assert np.ptp(tau) == 0.0  # one effect for everybody
    assert isinstance(result.learner, ml.RLearner) and result.learner is result.constant
    frame = result.summary()
    assert frame.filter(frame["chosen"])["candidate"].to_list() == ["constant"]
    # The same search without the fallback keeps its heterogeneous winner.
    kept, _ = _auto("C", 800, constant_fallback=False)
    assert kept.choice != "constant" and kept.constant is None
    assert kept.constant_gain == pytest.approx(result.constant_gain)


def test_a_clearly_heterogeneous_effect_keeps_the_learner() -> None:
    # Setup B: tau = x1 + log(1 + exp(x2)), far from constant (sd about 1.1): the winner
    # beats the constant by many standard errors and is kept.
    result, _ = _auto("B", 1000)
    assert result.choice != "constant" and result.constant is None
    assert result.constant_gain > 1.96 * result.constant_gain_std_error


def test_the_final_study_runs_min_trials_whatever_the_budget() -> None:
    result, _ = _auto("B", 400, time_budget=1e-3, n_trials=50)
    for stage, study in result.search.studies_.items():
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        # max(len(learners), stack) = 2 trials before the (long spent) budget counts.
        assert 2 <= len(done) <= 3, stage


def test_optuna_search_min_trials_before_the_timeout() -> None:
    sim = ml.datasets.simulate_nie_wager("B", n=300, seed=0)
    search = ml.MetaLearnerOptunaSearch(
        ml.TLearner(n_folds=2, random_state=0), "lightgbm", n_trials=20, timeout=1e-6,
        min_trials=3, random_state=0,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(sim.X, sim.y, sim.w)
    # The outcome model's study: 3 trials although the timeout had passed before the first.
    # (The T-learner leaves nothing to tune in the final study, which runs its one trial.)
    assert len(search.studies_["outcome"].trials) == 3
    with pytest.raises(ValueError, match="`min_trials` must be a positive integer"):
        ml.MetaLearnerOptunaSearch(ml.TLearner(), min_trials=0).fit(sim.X, sim.y, sim.w)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"scoring": "plugin"}, r'`scoring` must be "r_loss" or "dr_loss"'),
        ({"time_budget": 0}, r"`time_budget` must be a positive number"),
        ({"stack": -1}, r"`stack` must be a non-negative integer"),
        ({"learners": []}, r"`learners` must be a non-empty list"),
        ({"learners": ["Q"]}, r"Unknown learner 'Q' in `learners`"),
    ],
)
def test_bad_arguments_name_themselves(kw: dict[str, Any], match: str) -> None:
    sim = ml.datasets.simulate_nie_wager("B", n=200, seed=0)
    with pytest.raises(ValueError, match=match):
        ml.auto_cate(sim.X, sim.y, sim.w, **kw)
