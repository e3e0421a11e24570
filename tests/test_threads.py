"""The thread rule: one CPU budget (affinity and cgroup aware) shared by every layer."""

from __future__ import annotations

import os
import threading
from typing import Any, ClassVar

import joblib
import numpy as np
import pytest
from conftest import fitted_base_models, make_learner
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_info

import metalearn as ml
from metalearn._core.tasks import (
    Task,
    available_cpus,
    prepare_estimator,
    run_tasks,
    share_threads,
    thread_budget,
)
from metalearn.tuning._params import limit_model_threads, limit_threads

LGBM = {"n_estimators": 5, "num_leaves": 4, "verbose": -1}


@pytest.fixture
def budget(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set the CPUs joblib reports (affinity/cgroup aware) apart from a 64-core host."""

    def set_budget(n: int) -> None:
        monkeypatch.setattr(joblib, "cpu_count", lambda only_physical_cores=False: n)
        monkeypatch.setattr(os, "cpu_count", lambda: 64)

    return set_budget


def _lgbm_dr(**kw: Any) -> ml.DRLearner:
    args: dict[str, Any] = {
        "outcome_model": LGBMRegressor(**LGBM),
        "propensity_model": LGBMClassifier(**LGBM),
        "effect_model": LGBMRegressor(**LGBM),
    }
    args.update(kw)
    return make_learner(ml.DRLearner, **args)


# ------------------------------------------------------------------ the budget
def test_budget_is_joblibs_cpu_count_not_the_hosts(budget: Any) -> None:
    budget(3)  # e.g. a 3-CPU cgroup quota on a 64-core node
    assert available_cpus() == 3
    assert thread_budget() == 3


def test_budget_falls_back_to_cpu_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(only_physical_cores: bool = False) -> int:
        raise RuntimeError("no loky")

    monkeypatch.setattr(joblib, "cpu_count", broken)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert available_cpus() == 3


def test_loky_max_cpu_count_caps_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # The knob joblib documents for a budget below what the process may use.
    monkeypatch.setenv("LOKY_MAX_CPU_COUNT", "1")
    assert available_cpus() == 1


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity API")
def test_a_real_cpu_affinity_limits_the_budget(small_data: Any) -> None:
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("needs at least two CPUs")
    os.sched_setaffinity(0, {min(allowed)})
    try:
        assert available_cpus() == 1 < (os.cpu_count() or 1)
        learner = _lgbm_dr().fit(small_data.X, small_data.y, small_data.w)
    finally:
        os.sched_setaffinity(0, allowed)
    assert {m.get_params()["n_jobs"] for m in fitted_base_models(learner)} == {1}


def test_share_threads_divides_the_budget_and_nests(budget: Any) -> None:
    budget(8)
    with share_threads(2) as inner:
        assert inner == thread_budget() == 4
        with share_threads(3):
            assert thread_budget() == 1
        assert thread_budget() == 4
    assert thread_budget() == 8


def test_share_threads_is_local_to_a_thread(budget: Any) -> None:
    budget(8)
    seen: list[int] = []
    with share_threads(4):
        t = threading.Thread(target=lambda: seen.append(thread_budget()))
        t.start()
        t.join()
    assert seen == [8]


# ----------------------------------------------------- base models' thread counts
def test_one_worker_gives_default_lightgbm_the_whole_budget(budget: Any, small_data: Any) -> None:
    budget(3)
    learner = _lgbm_dr(n_jobs=None).fit(small_data.X, small_data.y, small_data.w)
    models = fitted_base_models(learner)
    assert models
    assert {m.get_params()["n_jobs"] for m in models} == {3}
    assert {m.booster_.params["num_threads"] for m in models} == {3}


def test_two_workers_on_a_budget_of_two_give_one_thread_each(budget: Any, small_data: Any) -> None:
    budget(2)
    learner = _lgbm_dr(n_jobs=2).fit(small_data.X, small_data.y, small_data.w)
    models = fitted_base_models(learner)
    assert models
    assert {m.get_params()["n_jobs"] for m in models} == {1}


def test_incomplete_last_round_shares_the_budget(budget: Any, small_data: Any) -> None:
    budget(4)
    learner = _lgbm_dr(n_jobs=2, n_folds=3).fit(small_data.X, small_data.y, small_data.w)
    threads = [m.get_params()["n_jobs"] for m in learner.effect_models_[(1, 0)]]
    assert threads == [2, 2, 4]


def test_sklearn_n_jobs_none_stays_one_thread(budget: Any, small_data: Any) -> None:
    budget(4)
    learner = make_learner(
        ml.DRLearner,
        outcome_model=RandomForestRegressor(n_estimators=5, random_state=0),
        effect_model=RandomForestRegressor(n_estimators=5, n_jobs=-1, random_state=0),
        n_jobs=2,
    ).fit(small_data.X, small_data.y, small_data.w)
    assert {m.get_params()["n_jobs"] for m in learner.nuisance_.models_["mu"]} == {None}
    # n_jobs=-1 is scikit-learn's "every core": the budget over the busy workers
    assert {m.get_params()["n_jobs"] for m in learner.effect_models_[(1, 0)]} == {2}


def test_user_set_positive_counts_are_kept(budget: Any, small_data: Any) -> None:
    budget(2)
    learner = _lgbm_dr(
        outcome_model=LGBMRegressor(**LGBM, n_jobs=5),
        propensity_model=LGBMClassifier(**LGBM, num_threads=7),
        effect_model=LGBMRegressor(**LGBM, n_jobs=5),
        n_jobs=2,
    ).fit(small_data.X, small_data.y, small_data.w)
    assert {m.get_params()["n_jobs"] for m in learner.nuisance_.models_["mu"]} == {5}
    e_models = learner.nuisance_.models_["e"]
    assert {m.get_params()["num_threads"] for m in e_models} == {7}
    assert {m.get_params()["n_jobs"] for m in learner.effect_models_[(1, 0)]} == {5}


def test_lightgbm_num_threads_alias_is_the_one_set() -> None:
    # LightGBM reads num_threads before n_jobs: num_threads=0 (OpenMP default) is every core.
    est = prepare_estimator(LGBMRegressor(num_threads=0), n_workers=1, seed=None)
    assert est.get_params()["num_threads"] == available_cpus()


def test_models_inside_a_pipeline_get_the_rule(budget: Any) -> None:
    budget(4)
    pipe = make_pipeline(StandardScaler(), LGBMRegressor(**LGBM))
    est = prepare_estimator(pipe, n_workers=2, seed=None)
    assert est.get_params()["lgbmregressor__n_jobs"] == 2


def test_xgboost_and_catboost_semantics(budget: Any) -> None:
    budget(4)

    class FakeXGB(RegressorMixin, BaseEstimator):
        def __init__(self, n_jobs: int | None = None) -> None:
            self.n_jobs = n_jobs

    class FakeCatBoost(RegressorMixin, BaseEstimator):
        """CatBoost lists only the parameters it was given."""

        def __init__(self, **params: Any) -> None:
            self._params = params

        def get_params(self, deep: bool = True) -> dict[str, Any]:
            return dict(self._params)

        def set_params(self, **params: Any) -> FakeCatBoost:
            self._params.update(params)
            return self

    FakeXGB.__module__ = "xgboost.sklearn"
    FakeCatBoost.__module__ = "catboost.core"
    assert prepare_estimator(FakeXGB(), n_workers=2, seed=None).n_jobs == 2
    assert prepare_estimator(FakeXGB(n_jobs=3), n_workers=2, seed=None).n_jobs == 3
    cat = prepare_estimator(FakeCatBoost(), n_workers=4, seed=None)
    assert cat.get_params()["thread_count"] == 1


# --------------------------------------------------------- threadpoolctl limits
class ThreadProbe(RegressorMixin, BaseEstimator):
    """A model without a thread parameter that records OpenMP/BLAS pool sizes in fit."""

    seen: ClassVar[list[dict[str, int]]] = []

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> ThreadProbe:
        pools: dict[str, int] = {}
        for info in threadpool_info():
            api = info["user_api"]
            pools[api] = max(pools.get(api, 0), int(info["num_threads"]))
        type(self).seen.append(pools)
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.full(len(X), self.mean_)


def _probe_tasks(n: int) -> tuple[list[Task], np.ndarray]:
    X = np.random.default_rng(0).normal(size=(40, 3))
    y = X[:, 0]
    rows = np.arange(40)
    tasks = [
        Task(
            estimator=prepare_estimator(ThreadProbe(), n_workers=2, seed=None), train=rows, target=y
        )
        for _ in range(n)
    ]
    return tasks, X


def _pools() -> dict[str, int]:
    pools: dict[str, int] = {}
    for info in threadpool_info():
        pools[info["user_api"]] = max(pools.get(info["user_api"], 0), int(info["num_threads"]))
    return pools


def test_threadpool_limits_apply_to_a_model_without_thread_parameter(budget: Any) -> None:
    before = _pools()
    if max(before.values(), default=1) < 2:
        pytest.skip("the OpenMP/BLAS pools already run one thread")
    budget(2)
    ThreadProbe.seen = []
    tasks, X = _probe_tasks(4)
    run_tasks(tasks, X, n_jobs=2)
    assert len(ThreadProbe.seen) == 4
    assert all(set(p.values()) == {1} for p in ThreadProbe.seen)
    assert _pools() == before  # restored after the batch


def test_no_threadpool_limit_with_one_worker(budget: Any) -> None:
    before = _pools()
    budget(2)
    ThreadProbe.seen = []
    tasks, X = _probe_tasks(2)
    run_tasks(tasks, X, n_jobs=None)
    assert ThreadProbe.seen == [before, before]


def test_threadpool_limit_inside_a_shared_budget(budget: Any) -> None:
    if max(_pools().values(), default=1) < 2:
        pytest.skip("the OpenMP/BLAS pools already run one thread")
    budget(2)
    ThreadProbe.seen = []
    tasks, X = _probe_tasks(1)
    with share_threads(2):  # one of two trials side by side: one worker, half the budget
        run_tasks(tasks, X, n_jobs=None)
    assert set(ThreadProbe.seen[0].values()) == {1}


# ------------------------------------------------------------------ tuning
def test_limit_threads_uses_the_budget(budget: Any) -> None:
    budget(4)
    learner = ml.DRLearner()  # LightGBM defaults, filled in by limit_threads
    limit_threads(learner, 2)
    params = learner.get_params(deep=False)
    for name in ("outcome_model", "propensity_model", "effect_model"):
        assert params[name].get_params()["n_jobs"] == 2
    assert limit_model_threads(LGBMRegressor(n_jobs=3), 2).get_params()["n_jobs"] == 3


def test_search_layer_x_learner_workers_x_threads_fit_the_budget(
    budget: Any, small_data: Any
) -> None:
    budget(8)
    learner = _lgbm_dr(n_jobs=2)
    limit_threads(learner, 2)  # two candidates side by side: 4 threads each ...
    learner.fit(small_data.X, small_data.y, small_data.w)
    # ... divided between the learner's own two workers
    assert {m.get_params()["n_jobs"] for m in fitted_base_models(learner)} == {2}


class RecordingRidge(Ridge):
    """A joblib-style ``n_jobs`` model recording its thread count at each fit."""

    fits: ClassVar[list[Any]] = []

    def __init__(self, alpha: float = 1.0, n_jobs: int | None = -1) -> None:
        super().__init__(alpha=alpha)
        self.n_jobs = n_jobs

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> RecordingRidge:
        type(self).fits.append(self.n_jobs)
        return super().fit(X, y, sample_weight=sample_weight)


def test_optuna_trials_share_the_budget(budget: Any, small_data: Any) -> None:
    optuna = pytest.importorskip("optuna")
    from optuna.distributions import FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget(8)
    RecordingRidge.fits = []
    learner = make_learner(
        ml.DRLearner,
        outcome_model=LinearRegression(),
        propensity_model=LogisticRegression(),
        effect_model=RecordingRidge(),
        n_jobs=2,
    )
    yardstick = ml.Nuisance(
        outcome_model=LinearRegression(),
        propensity_model=LogisticRegression(),
        n_folds=2,
        random_state=0,
    )
    ml.MetaLearnerOptunaSearch(
        learner,
        {"effect_model__alpha": FloatDistribution(1e-2, 1e2, log=True)},
        n_trials=4,
        n_jobs=2,
        refit=False,
        random_state=0,
        scoring_nuisance=yardstick,
    ).fit(small_data.X, small_data.y, small_data.w)
    assert RecordingRidge.fits
    # The selection check refits the best and the runner-up trial after the study, alone:
    # 1 run x 2 learner workers x 4 threads. Its fits are the last ones.
    per_run = len(RecordingRidge.fits) // 6  # 4 trials and 2 refits, the same fits each
    trials, check = RecordingRidge.fits[: 4 * per_run], RecordingRidge.fits[4 * per_run :]
    # 2 trials x 2 learner workers x 2 threads = the budget of 8
    assert set(trials) == {2}
    assert set(check) == {4}


def test_grid_candidates_share_the_budget(budget: Any, small_data: Any) -> None:
    budget(8)
    RecordingRidge.fits = []
    learner = make_learner(
        ml.DRLearner,
        outcome_model=LinearRegression(),
        propensity_model=LogisticRegression(),
        effect_model=RecordingRidge(),
        n_jobs=2,
    )
    yardstick = ml.Nuisance(
        outcome_model=LinearRegression(),
        propensity_model=LogisticRegression(),
        n_folds=2,
        random_state=0,
    )
    with joblib.parallel_config(backend="threading"):  # the recorder sees every fit
        ml.MetaLearnerGridSearch(
            learner,
            {"effect_model__alpha": [0.1, 1.0, 10.0, 100.0]},
            n_jobs=2,
            refit=False,
            scoring_nuisance=yardstick,
        ).fit(small_data.X, small_data.y, small_data.w)
    assert RecordingRidge.fits
    assert set(RecordingRidge.fits) == {2}
