"""metalearn.tuning.optuna: staged Optuna tuning, storage, resume, several workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.pruners import BasePruner
from sklearn.base import clone
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

import metalearn as ml
from metalearn.tuning import MetaLearnerOptunaSearch, lightgbm_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sim() -> Any:
    return ml.datasets.simulate_nie_wager("B", n=500, seed=0)


def _dr(**kw: Any) -> ml.DRLearner:
    args: dict[str, Any] = {
        "outcome_model": Ridge(),
        "propensity_model": LogisticRegression(),
        "effect_model": Ridge(),
        "n_folds": 2,
        "random_state": 0,
    }
    args.update(kw)
    return ml.DRLearner(**args)


ALPHA = FloatDistribution(1e-2, 1e4, log=True)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # optuna warns about unstorable choices
    ESTIMATOR_CHOICES = CategoricalDistribution([Ridge()])


def _search(learner: Any, space: Any, yardstick: Any, **kw: Any) -> MetaLearnerOptunaSearch:
    args: dict[str, Any] = {"n_trials": 4, "random_state": 0, "scoring_nuisance": yardstick}
    args.update(kw)
    return MetaLearnerOptunaSearch(learner, space, **args)


# ------------------------------------------------------------------------ stages
def test_staged_tuning_freezes_tuned_nuisances(sim: Any, yardstick: Any) -> None:
    space = {
        "outcome_model__alpha": FloatDistribution(1e-3, 1e3, log=True),
        "propensity_model__C": FloatDistribution(1e-2, 1e2, log=True),
        "effect_model__alpha": ALPHA,
    }
    search = _search(_dr(), space, yardstick, n_trials=5, nuisance_trials=3)
    search.fit(sim.X, sim.y, sim.w)
    assert sorted(search.studies_) == ["final", "outcome", "propensity"]
    out, prop = search.studies_["outcome"], search.studies_["propensity"]
    assert len(out.trials) == len(prop.trials) == 3
    # the defaults are the first trial of every study
    assert out.trials[0].params == {"outcome_model__alpha": 1.0}
    assert prop.trials[0].params == {"propensity_model__C": 1.0}
    assert search.study_.trials[0].params == {"effect_model__alpha": 1.0}
    assert search.nuisance_params_ == {**out.best_params, **prop.best_params}
    assert {k: search.best_params_[k] for k in search.nuisance_params_} == search.nuisance_params_
    final = search.results_.filter(search.results_["stage"] == "final")
    # every final trial reuses one nuisance stage (2 folds x (pooled outcome + propensity))
    assert final["nuisance_fits"].to_list() == [4, 0, 0, 0, 0]
    assert final["final_fits"].to_list() == [2] * 5
    stage1 = search.results_.filter(search.results_["stage"] == "outcome")
    assert np.isfinite(stage1["outcome_rmse"].to_numpy()).all()
    assert search.best_score_ == pytest.approx(search.study_.best_value)
    fresh = clone(_dr()).set_params(**search.best_params_).fit(sim.X, sim.y, sim.w)
    np.testing.assert_allclose(search.predict(sim.X[:20]), fresh.predict(sim.X[:20]))


def test_nuisance_studies_with_same_shaped_spaces_do_not_propose_in_lockstep(
    sim: Any, yardstick: Any
) -> None:
    same = FloatDistribution(1e-2, 1e2, log=True)
    space = {
        "outcome_model__alpha": same,
        "propensity_model__C": same,
        "effect_model__alpha": ALPHA,
    }
    search = _search(
        _dr(), space, yardstick, n_trials=2, nuisance_trials=5, enqueue_defaults=False
    ).fit(sim.X, sim.y, sim.w)
    out = [t.params["outcome_model__alpha"] for t in search.studies_["outcome"].trials]
    prop = [t.params["propensity_model__C"] for t in search.studies_["propensity"].trials]
    assert len(out) == len(prop) == 5
    assert not np.allclose(out, prop)
    # ... and stay reproducible
    again = _search(
        _dr(), space, yardstick, n_trials=2, nuisance_trials=5, enqueue_defaults=False
    ).fit(sim.X, sim.y, sim.w)
    assert [t.params for t in again.studies_["outcome"].trials] == [
        t.params for t in search.studies_["outcome"].trials
    ]


def test_conditional_space_over_learner_types(sim: Any, yardstick: Any) -> None:
    space = {
        "learner": CategoricalDistribution(["TLearner", "RLearner", "DRLearner"]),
        "effect_model__alpha": ALPHA,
    }
    search = _search(_dr(), space, yardstick, n_trials=8, staged="auto")
    search.fit(sim.X, sim.y, sim.w)
    assert list(search.studies_) == ["final"]
    trials = search.study_.trials
    assert trials[0].params["learner"] == "DRLearner"  # the template first
    for t in trials:
        assert ("effect_model__alpha" in t.params) == (t.params["learner"] != "TLearner")
    assert type(search.best_estimator_).__name__ == search.best_params_["learner"]


def test_named_learners_and_lightgbm_preset(sim: Any, yardstick: Any) -> None:
    from lightgbm import LGBMRegressor

    tiny = LGBMRegressor(n_estimators=5, num_leaves=4, verbose=-1, n_jobs=1)
    learners = {
        "r": ml.RLearner(
            outcome_model=LinearRegression(),
            propensity_model=LogisticRegression(),
            effect_model=tiny,
            n_folds=2,
            random_state=0,
        ),
        "dr": _dr(effect_model=tiny),
    }
    space = lightgbm_space(learners, effect_only=True)
    assert "effect_model__num_leaves" in space and "outcome_model__num_leaves" not in space
    search = _search(learners, "lightgbm", yardstick, n_trials=3)
    search.fit(sim.X, sim.y, sim.w)
    assert set(search.results_["learner"].to_list()) <= {"r", "dr"}
    assert search.best_params_["learner"] in ("r", "dr")


def test_callable_space_and_multi_objective(sim: Any, yardstick: Any) -> None:
    def space(trial: Any) -> dict[str, Any]:
        if trial.suggest_categorical("model", ["ridge", "linear"]) == "linear":
            return {"effect_model": LinearRegression()}
        return {"effect_model": Ridge(alpha=trial.suggest_float("alpha", 1e-2, 1e4, log=True))}

    search = _search(_dr(), space, yardstick, n_trials=5, scoring=["r_loss", "dr_loss"])
    search.fit(sim.X, sim.y, sim.w)
    assert [d.name for d in search.study_.directions] == ["MINIMIZE", "MINIMIZE"]
    assert set(search.best_score_) == {"r_loss", "dr_loss"}
    front = {t.number for t in search.study_.best_trials}
    assert search.best_trial_.number in front
    assert isinstance(search.best_params_["effect_model"], Ridge | LinearRegression)
    gain = _search(_dr(), {"effect_model__alpha": ALPHA}, yardstick, scoring="dr_loss_gain")
    gain.fit(sim.X, sim.y, sim.w)
    assert gain.study_.direction.name == "MAXIMIZE"


class PruneAllButFirst(BasePruner):
    """Prunes every trial but trial 0 at its first report."""

    def prune(self, study: Any, trial: Any) -> bool:
        return trial.number > 0


def test_pruning_through_per_fold_reports(sim: Any, yardstick: Any) -> None:
    space = {"outcome_model__alpha": ALPHA, "effect_model__alpha": ALPHA}
    search = _search(_dr(), space, yardstick, n_trials=3, cv=3, pruner=PruneAllButFirst())
    search.fit(sim.X, sim.y, sim.w)
    res = search.results_
    for stage in ("outcome", "final"):
        states = res.filter(res["stage"] == stage)["state"].to_list()
        assert states == ["COMPLETE", "PRUNED", "PRUNED"]
    final = search.study_.trials
    assert final[0].intermediate_values.keys() == {0, 1}  # after folds 1 and 2 of 3
    assert final[1].intermediate_values.keys() == {0}  # stopped after the first fold
    multi = _search(
        _dr(),
        {"effect_model__alpha": ALPHA},
        yardstick,
        n_trials=2,
        cv=2,
        scoring=["r_loss", "dr_loss"],
        pruner=PruneAllButFirst(),
    )
    assert multi.fit(sim.X, sim.y, sim.w).results_["state"].to_list() == ["COMPLETE"] * 2


@pytest.mark.filterwarnings("ignore:'n_jobs' has no effect:FutureWarning")
def test_validation_set_threads_and_pandas(sim: Any, yardstick: Any) -> None:
    val = ml.datasets.simulate_nie_wager("B", n=300, seed=1)
    X = pd.DataFrame(sim.X, columns=sim.feature_names)
    Xv = pd.DataFrame(val.X, columns=sim.feature_names)
    search = _search(_dr(), {"effect_model__alpha": ALPHA}, yardstick, n_jobs=2, n_trials=4)
    search.fit(X, sim.y, sim.w, X_val=Xv, y_val=val.y, w_val=val.w)
    assert isinstance(search.results_, pd.DataFrame)
    assert search.scoring_nuisance_.n == 300
    assert (search.results_["state"] == "COMPLETE").sum() >= 4
    assert search.predict_frame(Xv).shape == (300, 1)


def test_progress_bar(sim: Any, yardstick: Any, capsys: Any) -> None:
    _search(
        _dr(), {"effect_model__alpha": ALPHA}, yardstick, n_trials=2, show_progress_bar=True
    ).fit(sim.X, sim.y, sim.w)
    assert "2/2" in capsys.readouterr().err


# ----------------------------------------------------------------------- storage
@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_resume_counts_finished_trials(kind: str, sim: Any, yardstick: Any, tmp_path: Path) -> None:
    storage = str(tmp_path / "study.log") if kind == "journal" else f"sqlite:///{tmp_path / 's.db'}"
    space = {"effect_model__alpha": ALPHA}
    first = _search(_dr(), space, yardstick, n_trials=3, storage=storage, study_name="s")
    first.fit(sim.X, sim.y, sim.w)
    values = [t.value for t in first.study_.trials]
    again = _search(_dr(), space, yardstick, n_trials=3, storage=storage, study_name="s")
    assert len(again.fit(sim.X, sim.y, sim.w).study_.trials) == 3  # nothing left to run
    more = _search(_dr(), space, yardstick, n_trials=5, storage=storage, study_name="s")
    trials = more.fit(sim.X, sim.y, sim.w).study_.trials
    assert len(trials) == 5
    assert [t.value for t in trials[:3]] == values
    assert trials[0].params == {"effect_model__alpha": 1.0}  # the defaults, enqueued once
    assert len(more.results_) == 5
    with pytest.raises(ValueError, match=r"optimises \['minimize'\] but `scoring` asks for"):
        _search(
            _dr(), space, yardstick, scoring="r_loss_gain", storage=storage, study_name="s"
        ).fit(sim.X, sim.y, sim.w)


WORKER = """
import sys, time
from pathlib import Path
import optuna
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
import metalearn as ml

optuna.logging.set_verbosity(optuna.logging.WARNING)
storage, n_trials, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ready, go = sys.argv[4], sys.argv[5]
Path(ready).touch()
while go != "-" and not Path(go).exists():
    time.sleep(0.05)
sim = ml.datasets.simulate_nie_wager("B", n=300, seed=0)

def space(trial):
    alpha = trial.suggest_float("effect_model__alpha", 1e-2, 1e4, log=True)
    time.sleep(pause)  # a slow trial: the parent kills us mid-trial
    return {"effect_model__alpha": alpha}

if pause < 0:  # a dict space: the template's settings are enqueued as the first trial
    from optuna.distributions import FloatDistribution
    space = {"effect_model__alpha": FloatDistribution(1e-2, 1e4, log=True)}

learner = ml.DRLearner(outcome_model=Ridge(), propensity_model=LogisticRegression(),
                       effect_model=Ridge(), n_folds=2, random_state=0)
yard = ml.Nuisance(outcome_model=LinearRegression(), propensity_model=LogisticRegression(),
                   n_folds=2, random_state=0)
ml.MetaLearnerOptunaSearch(learner, space, n_trials=n_trials, storage=storage,
                           study_name="shared", scoring_nuisance=yard, refit=False,
                           ).fit(sim.X, sim.y, sim.w)
"""


def _worker(tmp_path: Path, storage: str, n_trials: int, pause: float, name: str, go: str) -> Any:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    ready = tmp_path / f"{name}.ready"
    return subprocess.Popen(
        [sys.executable, str(script), storage, str(n_trials), str(pause), str(ready), go],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _complete(storage: Any) -> list[Any]:
    try:
        study = optuna.load_study(study_name="shared", storage=storage)
    except KeyError:
        return []
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def test_killed_search_resumes_with_finished_trials(tmp_path: Path, yardstick: Any) -> None:
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    proc = _worker(tmp_path, url, 1000, 0.3, "a", "-")
    try:
        deadline = time.monotonic() + 120
        while len(_complete(url)) < 3:
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "the worker made no progress"
            time.sleep(0.1)
    finally:
        proc.kill()  # SIGKILL: no cleanup, possibly mid-trial
        proc.wait()
    before = {t.number: t.value for t in _complete(url)}
    assert len(before) >= 3
    sim = ml.datasets.simulate_nie_wager("B", n=300, seed=0)

    def space(trial: Any) -> dict[str, Any]:
        return {
            "effect_model__alpha": trial.suggest_float("effect_model__alpha", 1e-2, 1e4, log=True)
        }

    target = len(before) + 2
    search = MetaLearnerOptunaSearch(
        _dr(),
        space,
        n_trials=target,
        storage=url,
        study_name="shared",
        scoring_nuisance=yardstick,
        heartbeat_interval=1,  # the killed trial counts as killed 2 s after its last heartbeat
        grace_period=2,
    ).fit(sim.X, sim.y, sim.w)
    after = {t.number: t.value for t in _complete(url)}
    assert len(after) == target
    assert {k: after[k] for k in before} == before  # every finished trial kept
    assert search.best_score_ == min(after.values())


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_workers_share_one_study(kind: str, tmp_path: Path) -> None:
    """Two processes released together on a fresh storage (no schema, no study yet)."""
    path = tmp_path / ("shared.log" if kind == "journal" else "shared.db")
    spec = str(path) if kind == "journal" else f"sqlite:///{path}"
    go = tmp_path / "go"
    procs = [_worker(tmp_path, spec, 8, 0.3, name, str(go)) for name in ("a", "b")]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"{n}.ready").exists() for n in ("a", "b")):
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.05)
        go.touch()
        for p in procs:
            out = p.communicate(timeout=180)[0].decode()
            assert p.returncode == 0, out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    storage: Any = spec
    if kind == "journal":
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(spec))
    done = _complete(storage)
    assert len(done) == 8  # exactly n_trials, the two workers together
    workers = {t.user_attrs["worker"] for t in done}
    assert len(workers) == 2
    assert len({t.number for t in done}) == len(done)


def test_two_workers_on_a_fresh_study_enqueue_the_defaults_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    go = tmp_path / "go"
    procs = [_worker(tmp_path, url, 6, -1.0, name, str(go)) for name in ("a", "b")]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"{n}.ready").exists() for n in ("a", "b")):
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.05)
        go.touch()  # both create the study at once
        for p in procs:
            out = p.communicate(timeout=180)[0].decode()
            assert p.returncode == 0, out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    done = _complete(url)
    assert len(done) == 6
    defaults = [t for t in done if t.params == {"effect_model__alpha": 1.0}]  # Ridge()'s alpha
    assert len(defaults) == 1


# ------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("space", "error", "match"),
    [
        (
            {"effect_model__alpha": [0.1, 1.0]},
            TypeError,
            r"`search_space\['effect_model__alpha'\]` must be an optuna distribution.*"
            r"CategoricalDistribution\(\[...\]\)",
        ),
        (
            {"effect_model__alpah": ALPHA},
            ValueError,
            r"Ridge \(effect_model\) has no parameter 'alpah'.*'alpha'",
        ),
        (
            {"learner": CategoricalDistribution(["QLearner"])},
            ValueError,
            r"Unknown learner 'QLearner'",
        ),
        (
            {"learner": FloatDistribution(0, 1)},
            TypeError,
            r"`search_space\['learner'\]` must be a CategoricalDistribution",
        ),
        ({"effect_model": ESTIMATOR_CHOICES}, TypeError, r"choices that Optuna cannot store"),
        ({}, ValueError, r"`search_space` is empty"),
        ("xgboost", ValueError, r'`search_space` must be a dict, a callable or "lightgbm"'),
        (3, TypeError, r"`search_space` must be a dict of parameter names"),
        ("lightgbm", ValueError, r"found no LightGBM sub-model"),
    ],
)
def test_bad_spaces_name_the_parameter(
    space: Any, error: type[Exception], match: str, sim: Any
) -> None:
    with pytest.raises(error, match=match):
        MetaLearnerOptunaSearch(_dr(), space, n_trials=1).fit(sim.X, sim.y, sim.w)


def test_bad_settings(sim: Any, yardstick: Any) -> None:
    space = {"effect_model__alpha": ALPHA}

    def fit(**kw: Any) -> Any:
        return _search(_dr(), kw.pop("space", space), yardstick, **kw).fit(sim.X, sim.y, sim.w)

    with pytest.raises(ValueError, match=r"`n_trials` must be a positive integer; got 0"):
        fit(n_trials=0)
    with pytest.raises(ValueError, match=r"`nuisance_trials` must be a positive integer"):
        fit(nuisance_trials=-1)
    with pytest.raises(ValueError, match=r"`n_jobs` must be an integer"):
        fit(n_jobs=None)
    with pytest.raises(ValueError, match=r'`staged` must be True, False or "auto"'):
        fit(staged="yes")
    with pytest.raises(ValueError, match=r"`scoring` names an unknown score 'auc'"):
        fit(scoring="auc")
    with pytest.raises(ValueError, match=r"`scoring` lists a score twice"):
        fit(scoring=["r_loss", "r_loss"])
    with pytest.raises(ValueError, match=r"`staged=True` needs a dict `search_space`"):
        fit(space=lambda t: {}, staged=True)
    with pytest.raises(TypeError, match=r"must return a dict of parameter names to values"):
        fit(space=lambda t: [1])
    with pytest.raises(ValueError, match=r"Unknown parameter 'effect_model__depth'"):
        fit(space=lambda t: {"effect_model__depth": t.suggest_int("d", 1, 3)})
    s = ml.SLearner(outcome_model=Ridge(), n_folds=2)
    with pytest.raises(ValueError, match=r"\(SLearner\) has no separate nuisance stage"):
        MetaLearnerOptunaSearch(s, {"outcome_model__alpha": ALPHA}, staged=True).fit(
            sim.X, sim.y, sim.w
        )
    with pytest.raises(TypeError, match=r"`learner\['a'\]` must be a metalearn learner"):
        MetaLearnerOptunaSearch({"a": Ridge()}, space).fit(sim.X, sim.y, sim.w)
    with pytest.raises(ValueError, match=r"`learner` is an empty dict"):
        MetaLearnerOptunaSearch({}, space).fit(sim.X, sim.y, sim.w)
    with pytest.raises(ValueError, match=r"`y_val`, `w_val` missing"):
        _search(_dr(), space, yardstick).fit(sim.X, sim.y, sim.w, X_val=sim.X)


def test_all_trials_failed(sim: Any, yardstick: Any) -> None:
    t = ml.TLearner(outcome_model=Ridge(), n_folds=2, random_state=0)
    space = {"outcome_model__alpha": ALPHA}
    with pytest.raises(RuntimeError, match=r"has no complete trial"):
        # final_loss is nan for a T-learner, so every trial fails
        MetaLearnerOptunaSearch(
            t, space, n_trials=2, staged=False, scoring="final_loss", scoring_nuisance=yardstick
        ).fit(sim.X, sim.y, sim.w)


def test_integer_and_step_distributions_enqueue_defaults(sim: Any, yardstick: Any) -> None:
    from lightgbm import LGBMRegressor

    learner = _dr(effect_model=LGBMRegressor(n_estimators=5, num_leaves=4, verbose=-1, n_jobs=1))
    space = {
        "effect_model__num_leaves": IntDistribution(2, 8, step=2),
        "effect_model__learning_rate": FloatDistribution(0.05, 0.3, step=0.05),
        "effect_model__n_estimators": IntDistribution(6, 10),  # 5 not in range: sampled
    }
    search = _search(learner, space, yardstick, n_trials=2).fit(sim.X, sim.y, sim.w)
    first = search.study_.trials[0].params
    assert first["effect_model__num_leaves"] == 4
    assert first["effect_model__learning_rate"] == pytest.approx(0.1)
    assert 6 <= first["effect_model__n_estimators"] <= 10
