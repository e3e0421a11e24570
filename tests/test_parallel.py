"""Parallel fitting: results independent of n_jobs and backend; the thread rule."""

from __future__ import annotations

from typing import Any

import joblib
import numpy as np
import pytest
from conftest import ALL_LEARNERS, fitted_base_models, make_learner
from lightgbm import LGBMClassifier, LGBMRegressor

from metalearn import DRLearner, SLearner
from metalearn._core.tasks import available_cpus

# LightGBM's own histogram sums depend on its thread count (n_jobs=1 leaves it
# at all cores, n_jobs=2 gives each clone half of them); `deterministic=True`
# removes that source of last-bit differences, so that what is compared is
# metalearn's seeding, folds and result ordering.
LGBM = {"n_estimators": 20, "verbose": -1, "deterministic": True, "force_col_wise": True}


def _lgbm(cls: type, **kw: Any) -> Any:
    """``cls`` with small, deterministic LightGBM base models."""
    models = {
        "outcome_model": LGBMRegressor(**LGBM),
        "propensity_model": LGBMClassifier(**LGBM),
        "effect_model": LGBMRegressor(**LGBM),
    }
    params = cls().get_params(deep=False)
    models = {k: v for k, v in models.items() if k in params}
    models.update(kw)
    return make_learner(cls, **models)


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_fit_then_predict_is_independent_of_n_jobs(cls: type, small_data: Any) -> None:
    X, y, w = small_data.X, small_data.y, small_data.w
    serial = _lgbm(cls, n_jobs=1).fit(X, y, w).predict(X)
    parallel = _lgbm(cls, n_jobs=2).fit(X, y, w).predict(X)
    np.testing.assert_array_equal(parallel, serial)


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_fit_predict_is_independent_of_n_jobs(cls: type, small_data: Any) -> None:
    X, y, w = small_data.X, small_data.y, small_data.w
    serial = _lgbm(cls, n_jobs=1).fit_predict(X, y, w)
    parallel = _lgbm(cls, n_jobs=2).fit_predict(X, y, w)
    np.testing.assert_array_equal(parallel, serial)


@pytest.fixture(scope="module")
def dask_client() -> Any:
    """A local cluster of 2 worker processes (1 thread each), shared by the Dask tests."""
    pytest.importorskip("dask")
    distributed = pytest.importorskip("dask.distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as client:
        yield client


class _Sent:
    """What the client sends to the cluster: calls submitted, objects scattered."""

    def __init__(self, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.submitted = 0
        self.scattered: list[Any] = []
        submit, scatter = client.submit, client.scatter

        def counting_submit(*args: Any, **kwargs: Any) -> Any:
            self.submitted += 1
            return submit(*args, **kwargs)

        def counting_scatter(data: Any, *args: Any, **kwargs: Any) -> Any:
            self.scattered.append(data)
            return scatter(data, *args, **kwargs)

        monkeypatch.setattr(client, "submit", counting_submit)
        monkeypatch.setattr(client, "scatter", counting_scatter)


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_dask_cluster_of_processes_matches_the_local_run(
    cls: type, small_data: Any, dask_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    X, y, w = small_data.X, small_data.y, small_data.w
    local = _lgbm(cls, n_jobs=1).fit(X, y, w)
    sent = _Sent(dask_client, monkeypatch)
    with joblib.parallel_config(backend="dask"):
        on_dask = _lgbm(cls, n_jobs=-1).fit(X, y, w)
        oof = _lgbm(cls, n_jobs=-1).fit_predict(X, y, w)
    assert sent.submitted > 0  # the fits ran on the cluster, not locally
    np.testing.assert_array_equal(on_dask.predict(X), local.predict(X))
    np.testing.assert_array_equal(oof, _lgbm(cls, n_jobs=1).fit_predict(X, y, w))


def test_dask_sends_each_shared_array_once_per_batch(
    small_data: Any, dask_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 5 folds x (2 outcome models + 1 propensity model) nuisance fits, then 5 effect-model
    # fits, all reading the same X (and the stage's targets): each array goes to the cluster
    # once per batch, not once per fit.
    X, y, w = small_data.X, small_data.y, small_data.w
    n = X.shape[0]
    learner = _lgbm(DRLearner, n_jobs=-1, n_folds=5, outcome_pooling="per_variant")
    sent = _Sent(dask_client, monkeypatch)
    with joblib.parallel_config(backend="dask"):
        learner.fit(X, y, w)
    n_fits = len(fitted_base_models(learner))
    assert n_fits >= 20
    full = [a for a in sent.scattered if isinstance(a, np.ndarray) and a.shape[0] == n]
    features = [a for a in full if a.ndim == 2 and a.shape[1] == X.shape[1]]
    # X once per stage (nuisance, final: an incomplete last round of 5 fits on 2 workers
    # runs as a batch of its own), the stage's targets and weights once per batch as well.
    assert 1 <= len(features) <= 4
    # The nuisance stage's outcome `y` and treatment `w`, read by every fit of the stage,
    # are sent apart too (not pickled into each of the 15 fits).
    assert any(a.ndim == 1 and np.array_equal(a, np.asarray(y, dtype=a.dtype)) for a in full)
    assert len(full) <= 8 < n_fits


def test_the_shared_arrays_travel_beside_the_task(small_data: Any) -> None:
    from metalearn._core.tasks import Task, _delayed_task

    X = np.asarray(small_data.X, dtype=np.float64)
    target = np.arange(X.shape[0], dtype=np.float64)
    tasks = [
        Task(estimator=LGBMRegressor(**LGBM), train=np.arange(k, X.shape[0], 3), target=target)
        for k in range(3)
    ]
    calls = [_delayed_task(t, X, None, True) for t in tasks]
    for (_, args, _), task in zip(calls, tasks, strict=True):
        stub, _, X_arg, target_arg, *_ = args
        assert X_arg is X and target_arg is target  # one object for every call
        assert stub.target is None and stub.train is not None
        assert stub.estimator is task.estimator
    # Run where they are, the rebuilt tasks fit as the originals would.
    func, args, kwargs = calls[0]
    model, _ = func(*args, **kwargs)
    direct = LGBMRegressor(**LGBM).fit(X[tasks[0].train], target[tasks[0].train])
    np.testing.assert_array_equal(model.predict(X), direct.predict(X))


def test_grid_search_on_dask_matches_the_local_search(
    small_data: Any, dask_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metalearn import MetaLearnerGridSearch
    from metalearn.tuning._evaluate import Evaluator

    X, y, w = small_data.X, small_data.y, small_data.w
    grid = {"effect_model__num_leaves": [4, 8, 16, 32]}
    local = MetaLearnerGridSearch(_lgbm(DRLearner), grid, n_jobs=1).fit(X, y, w)
    sent = _Sent(dask_client, monkeypatch)
    with joblib.parallel_config(backend="dask"):
        remote = MetaLearnerGridSearch(_lgbm(DRLearner), grid, n_jobs=-1).fit(X, y, w)
    # The search's evaluator (it holds the training data) goes to the cluster once.
    assert sum(isinstance(o, Evaluator) for o in sent.scattered) == 1
    assert remote.best_params_ == local.best_params_
    np.testing.assert_array_equal(
        np.asarray(remote.results_["r_loss"]), np.asarray(local.results_["r_loss"])
    )


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_default_thread_count_is_shared_between_workers(cls: type, small_data: Any) -> None:
    learner = _lgbm(cls, n_jobs=2)
    learner.fit_predict(small_data.X, small_data.y, small_data.w)  # every stage has >= 2 fits
    models = fitted_base_models(learner)
    assert models
    expected = max(1, available_cpus() // 2)
    assert {m.get_params()["n_jobs"] for m in models} == {expected}


def test_an_incomplete_last_round_shares_the_cores_among_its_own_fits(small_data: Any) -> None:
    # 3 effect-model fits on 2 workers: two side by side on half the cores each, then the
    # third alone on all of them (not one worker idling beside it).
    learner = _lgbm(DRLearner, n_jobs=2, n_folds=3).fit(small_data.X, small_data.y, small_data.w)
    cpus = available_cpus()
    threads = [m.get_params()["n_jobs"] for m in learner.effect_models_[(1, 0)]]
    assert threads == [max(1, cpus // 2), max(1, cpus // 2), cpus]
    # nuisance: 3 pooled outcome + 3 propensity fits = 3 full rounds, no tail
    nuis = learner.nuisance_.models_
    assert {m.get_params()["n_jobs"] for m in [*nuis["mu"], *nuis["e"]]} == {max(1, cpus // 2)}


def test_a_stage_of_one_fit_keeps_every_core(small_data: Any) -> None:
    # The S-learner's fit is one base-model fit: no other worker shares the cores.
    learner = _lgbm(SLearner, n_jobs=2).fit(small_data.X, small_data.y, small_data.w)
    (model,) = learner.models_
    assert model.get_params()["n_jobs"] == available_cpus()


def test_explicit_thread_count_is_kept(small_data: Any) -> None:
    learner = _lgbm(
        DRLearner,
        outcome_model=LGBMRegressor(**LGBM, n_jobs=3),
        propensity_model=LGBMClassifier(**LGBM, n_jobs=3),
        effect_model=LGBMRegressor(**LGBM, n_jobs=3),
        n_jobs=2,
    ).fit(small_data.X, small_data.y, small_data.w)
    models = fitted_base_models(learner)
    assert models
    assert {m.get_params()["n_jobs"] for m in models} == {3}
