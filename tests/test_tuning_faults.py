"""Faults in a search: a candidate whose fit raises, a storage that cannot be opened."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from lightgbm import LGBMRegressor
from optuna.distributions import CategoricalDistribution, FloatDistribution
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression, Ridge

import metalearn as ml
from metalearn.tuning import MetaLearnerGridSearch, MetaLearnerOptunaSearch

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def sim() -> Any:
    return ml.datasets.simulate_nie_wager("B", n=400, seed=0)


def _dr() -> ml.DRLearner:
    return ml.DRLearner(
        outcome_model=Ridge(),
        propensity_model=LogisticRegression(),
        effect_model=LGBMRegressor(n_estimators=10, verbose=-1),
        n_folds=2,
        random_state=0,
    )


# ------------------------------------------------------------ a failing candidate
def test_grid_search_scores_a_failing_candidate_and_goes_on(sim: Any, yardstick: Any) -> None:
    grid = {"effect_model__num_leaves": [7, -3, 15]}
    search = MetaLearnerGridSearch(_dr(), grid, scoring_nuisance=yardstick, n_jobs=1)
    with pytest.warns(FitFailedWarning, match=r"Candidate 1 .*num_leaves.*-3.*failed to fit"):
        search.fit(sim.X, sim.y, sim.w)
    res = search.results_
    errors = list(res["error"])
    assert errors[0] is None and errors[2] is None
    assert "num_leaves" in errors[1]
    assert np.isnan(res["r_loss"][1])
    assert search.best_index_ in (0, 2)
    assert search.best_params_["effect_model__num_leaves"] in (7, 15)
    # The survivors score as in a search without the failing candidate.
    clean = MetaLearnerGridSearch(
        _dr(), {"effect_model__num_leaves": [7, 15]}, scoring_nuisance=yardstick, n_jobs=1
    ).fit(sim.X, sim.y, sim.w)
    np.testing.assert_allclose(
        [res["r_loss"][0], res["r_loss"][2]], list(clean.results_["r_loss"]), rtol=1e-12
    )


def test_grid_search_error_score_raise_and_all_failed(sim: Any, yardstick: Any) -> None:
    bad = {"effect_model__num_leaves": [-3]}
    with pytest.raises(Exception, match=r"num_leaves"):
        MetaLearnerGridSearch(
            _dr(), bad, scoring_nuisance=yardstick, error_score="raise", n_jobs=1
        ).fit(sim.X, sim.y, sim.w)
    with pytest.raises(ValueError, match=r"All 2 candidates .* failed to fit"):
        MetaLearnerGridSearch(
            _dr(), {"effect_model__num_leaves": [-3, -4]}, scoring_nuisance=yardstick, n_jobs=1
        ).fit(sim.X, sim.y, sim.w)
    with pytest.raises(ValueError, match=r"`error_score` must be \"raise\" or a number"):
        MetaLearnerGridSearch(_dr(), bad, scoring_nuisance=yardstick, error_score="ignore").fit(
            sim.X, sim.y, sim.w
        )


def test_optuna_search_records_a_failing_trial_and_meets_n_trials(sim: Any, yardstick: Any) -> None:
    space = {
        "effect_model__num_leaves": CategoricalDistribution([-3, 7]),
        "effect_model__learning_rate": FloatDistribution(0.05, 0.3),
    }
    search = MetaLearnerOptunaSearch(
        _dr(),
        space,
        n_trials=4,
        staged=False,
        enqueue_defaults=False,
        scoring_nuisance=yardstick,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's own warning for each failed trial
        search.fit(sim.X, sim.y, sim.w)
    study = search.studies_["final"]
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(complete) == 4  # failed trials do not count towards n_trials
    assert all(t.params["effect_model__num_leaves"] == 7 for t in complete)
    assert all(t.params["effect_model__num_leaves"] == -3 for t in failed)
    assert all("num_leaves" in t.user_attrs["error"] for t in failed)
    assert search.best_params_["effect_model__num_leaves"] == 7


# ----------------------------------------------------------------------- storage
def test_storage_that_cannot_be_opened_names_the_argument(
    tmp_path: Path, sim: Any, yardstick: Any
) -> None:
    space = {"effect_model__learning_rate": FloatDistribution(0.05, 0.3)}

    def fit(storage: Any) -> Any:
        return MetaLearnerOptunaSearch(
            _dr(), space, n_trials=1, storage=storage, scoring_nuisance=yardstick
        ).fit(sim.X, sim.y, sim.w)

    with pytest.raises(ValueError, match=r"`storage`: .* is a directory"):
        fit(str(tmp_path))
    with pytest.raises(ValueError, match=r"`storage`: .*names a directory, not an SQLite"):
        fit(f"sqlite:///{tmp_path}")
    missing = tmp_path / "no" / "such"
    with pytest.raises(ValueError, match=r"`storage`: .*directory .* does not exist"):
        fit(str(missing / "tune.log"))
    with pytest.raises(ValueError, match=r"`storage`: .*directory .* does not exist"):
        fit(f"sqlite:///{missing / 'tune.db'}")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(ValueError, match=r"`storage`: .*not writable"):
                fit(str(locked / "tune.log"))
        finally:
            locked.chmod(0o700)


def test_a_running_trial_without_any_heartbeat_is_failed_and_replaced(
    tmp_path: Path, sim: Any, yardstick: Any
) -> None:
    """A worker killed between the start of a trial and its first heartbeat: on a database,
    the storage has no heartbeat of that trial, so only its start time can tell."""
    url = f"sqlite:///{tmp_path / 'orphan.db'}"
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="metalearn", storage=storage)
    orphan = study.ask()  # RUNNING, and no heartbeat was ever recorded for it
    space = {"effect_model__learning_rate": FloatDistribution(0.05, 0.3)}
    search = MetaLearnerOptunaSearch(
        _dr(),
        space,
        n_trials=2,
        staged=False,
        storage=url,
        heartbeat_interval=1,
        grace_period=2,
        timeout=60,  # with the orphan counted as alive, the study would wait this long
        scoring_nuisance=yardstick,
        random_state=0,
    ).fit(sim.X, sim.y, sim.w)
    trials = optuna.load_study(study_name="metalearn", storage=url).get_trials()
    states = {t.number: t.state for t in trials}
    assert states[orphan.number] == optuna.trial.TrialState.FAIL
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2
    assert search.best_trial_.number != orphan.number
