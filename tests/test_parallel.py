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


def test_dask_backend_matches_serial(small_data: Any) -> None:
    pytest.importorskip("dask")
    distributed = pytest.importorskip("dask.distributed")
    X, y, w = small_data.X, small_data.y, small_data.w
    serial = _lgbm(DRLearner, n_jobs=1).fit_predict(X, y, w)
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as client:
        with joblib.parallel_config(backend="dask"):
            on_dask = _lgbm(DRLearner, n_jobs=-1).fit_predict(X, y, w)
        ran = sum(client.run_on_scheduler(_n_finished_tasks).values())  # type: ignore[arg-type]
    np.testing.assert_array_equal(on_dask, serial)
    assert ran > 0


def _n_finished_tasks(dask_scheduler: Any) -> dict[str, int]:
    return {
        prefix: sum(tp.states.get(s, 0) for s in ("memory", "released", "forgotten"))
        for prefix, tp in dask_scheduler.task_prefixes.items()
    }


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
