"""A tuning run on a Dask cluster against the same run in one process.

Runs one ``MetaLearnerGridSearch`` (a DR-learner, ``--candidates`` settings
of its effect model) twice on the same data:

* ``local``: one process, ``n_jobs=1`` (each base-model fit uses every core
  of the thread budget);
* ``dask``: ``joblib.parallel_config(backend="dask")`` over a
  ``LocalCluster`` of ``--workers`` worker processes with one thread each,
  ``n_jobs=-1`` (candidates and fits spread over the workers).

It prints both wall times, their ratio and whether the two searches agree
(same losses, same pick), as one JSON line. On a real cluster, replace the
``LocalCluster`` by the scheduler's address (see docs/user_guide/parallelism.md).

Usage::

    python benchmarks/bench_dask.py --n 20000 --candidates 8 --workers 2
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from typing import Any

import numpy as np


def _search(n_candidates: int, n_jobs: int) -> Any:
    from lightgbm import LGBMClassifier, LGBMRegressor

    import metalearn as ml

    lgbm = {"n_estimators": 100, "verbose": -1, "deterministic": True, "force_col_wise": True}
    learner = ml.DRLearner(
        outcome_model=LGBMRegressor(**lgbm),
        propensity_model=LGBMClassifier(**lgbm),
        effect_model=LGBMRegressor(**lgbm),
        random_state=0,
        n_jobs=n_jobs,
    )
    leaves = [4, 8, 16, 31, 48, 64, 96, 128, 192, 256][:n_candidates]
    return ml.MetaLearnerGridSearch(learner, {"effect_model__num_leaves": leaves}, n_jobs=n_jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import joblib
    from dask.distributed import Client, LocalCluster

    import metalearn as ml

    data = ml.datasets.simulate_nie_wager("A", n=args.n, seed=0)
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    local = _search(args.candidates, n_jobs=1).fit(data.X, data.y, data.w)
    local_s = time.perf_counter() - start

    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        start = time.perf_counter()
        with joblib.parallel_config(backend="dask"):
            remote = _search(args.candidates, n_jobs=-1).fit(data.X, data.y, data.w)
        dask_s = time.perf_counter() - start
    same = bool(
        np.array_equal(np.asarray(local.results_["r_loss"]), np.asarray(remote.results_["r_loss"]))
    )
    print(
        json.dumps(
            {
                "n": args.n,
                "candidates": args.candidates,
                "workers": args.workers,
                "local_s": round(local_s, 2),
                "dask_s": round(dask_s, 2),
                "speedup": round(local_s / dask_s, 2),
                "same_losses": same,
                "same_pick": local.best_params_ == remote.best_params_,
            }
        )
    )


if __name__ == "__main__":
    main()
