"""Speed of ``learner.explainer()(X)`` against SHAP's own TreeExplainer.

A DR-learner with a LightGBM final model (``LGBMRegressor(verbose=-1)``: 100
trees of 31 leaves) is fitted on the simulated retention experiment; then
10,000 rows are explained, repeatedly and interleaved, by

* metalearn: ``learner.explainer()(X)`` on the Polars frame (frame encoding,
  LightGBM's ``pred_contrib``, an additivity check on 64 rows and the
  ``shap.Explanation``), and on the numpy array;
* SHAP: ``shap.TreeExplainer(model)(X)`` on the numpy array the model saw,
  constructed in the timed call (as a user would) and pre-constructed.

It prints the median times, the ratios metalearn / SHAP (target: <= 1.10)
and the largest difference between the two sets of values.

Run from the repository root::

    python benchmarks/bench_explain.py            # 10,000 rows, 15 repeats
    python benchmarks/bench_explain.py --rows 100000 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000, help="rows fitted and explained")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats of each")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numpy as np
    import shap
    from lightgbm import LGBMClassifier, LGBMRegressor

    import metalearn as ml
    from metalearn._frames import encode_features

    sim = ml.datasets.simulate_retention(n=args.rows, seed=args.seed)
    frame = sim.to_frame()
    learner = ml.DRLearner(
        outcome_model=LGBMRegressor(verbose=-1),
        propensity_model=LGBMClassifier(verbose=-1),
        effect_model=LGBMRegressor(verbose=-1),
        random_state=args.seed,
    ).fit(frame, sim.y, sim.w)
    model = learner.effect_models_[(1, 0)][0]
    Xa, _ = encode_features(frame, learner.schema_)

    explainer = learner.explainer()
    shap_explainer = shap.TreeExplainer(model)
    candidates: dict[str, Callable[[], Any]] = {
        "metalearn learner.explainer()(polars frame)": lambda: learner.explainer()(frame),
        "metalearn learner.explainer()(numpy)": lambda: learner.explainer()(Xa),
        "metalearn pre-built explainer(polars frame)": lambda: explainer(frame),
        "shap.TreeExplainer(model)(numpy)": lambda: shap.TreeExplainer(model)(Xa),
        "shap pre-built TreeExplainer(numpy)": lambda: shap_explainer(Xa),
    }
    for fn in candidates.values():  # warm-up: imports, caches, thread pools
        fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(args.repeats):
        for name, fn in candidates.items():  # interleaved, so drift hits all alike
            times[name].append(_time(fn))
    med = {name: statistics.median(ts) for name, ts in times.items()}

    ours = explainer(frame)
    theirs = shap_explainer(Xa)
    diff = float(np.max(np.abs(ours.values - theirs.values)))
    base_diff = float(np.max(np.abs(ours.base_values - theirs.base_values)))
    additivity = float(
        np.max(np.abs(ours.base_values + ours.values.sum(axis=1) - learner.predict(frame)))
    )

    print(
        f"DR-learner, LightGBM final model ({model.n_estimators} trees), {args.rows} rows x "
        f"{Xa.shape[1]} features, {args.repeats} repeats, {os.cpu_count()} CPUs"
    )
    print(f"shap {shap.__version__}")
    for name, m in med.items():
        print(f"  {name:46s} median {m * 1e3:8.1f} ms")
    ratio_user = (
        med["metalearn learner.explainer()(polars frame)"] / med["shap.TreeExplainer(model)(numpy)"]
    )
    ratio_call = (
        med["metalearn pre-built explainer(polars frame)"]
        / med["shap pre-built TreeExplainer(numpy)"]
    )
    print(f"ratio, construct + explain (metalearn on the frame / shap):  {ratio_user:.3f}")
    print(f"ratio, explain only with pre-built explainers:                {ratio_call:.3f}")
    print(f"max |metalearn - shap| SHAP values {diff:.3g}, base values {base_diff:.3g}")
    print(f"max additivity error vs learner.predict: {additivity:.3g}")


if __name__ == "__main__":
    main()
