"""Speed of ``learner.explainer()(X)`` against SHAP's own TreeExplainer.

A DR-learner with a LightGBM final model (``LGBMRegressor(verbose=-1)``: 100
trees of up to 31 leaves) is fitted on the simulated retention experiment
with ``final_stage="full"``, so that the CATE is one final-stage model; then
the rows are explained, repeatedly and interleaved, by

* metalearn: ``learner.explainer()(X)`` on the Polars frame the learner was
  fitted on (frame encoding, LightGBM's ``pred_contrib``, the additivity
  check on 64 rows and the ``shap.Explanation``);
* SHAP: ``shap.TreeExplainer(model)(X)`` on the numpy array the model saw,
  the explainer built inside the timed call, as a user would.

Both timings also run with the explainers built beforehand. The script
prints the median times, the ratios metalearn / SHAP (target: <= 1.10) and
the largest difference between the two sets of values. With ``--crossfit``
it also times ``final_stage="crossfit"`` (the learner's default: one model
per fold, the CATE their mean), where metalearn explains every fold model,
against SHAP on each fold model in turn.

Run from the repository root::

    python benchmarks/bench_explain.py                       # 10,000 rows
    python benchmarks/bench_explain.py --threads 1           # steadier on a busy machine
    python benchmarks/bench_explain.py --crossfit --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any


def _median_times(candidates: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    for fn in candidates.values():  # warm-up: imports, caches, thread pools
        fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():  # interleaved, so drift hits all alike
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description="Explainer speed against SHAP.")
    parser.add_argument("--rows", type=int, default=10_000, help="rows fitted and explained")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats of each")
    parser.add_argument(
        "--threads", type=int, default=None, help="LightGBM threads (default: LightGBM's)"
    )
    parser.add_argument("--crossfit", action="store_true", help="also time 5 fold models")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numpy as np
    import shap
    from lightgbm import LGBMClassifier, LGBMRegressor

    import metalearn as ml
    from metalearn._core.frames import encode_features

    threads = {} if args.threads is None else {"n_jobs": args.threads}
    sim = ml.datasets.simulate_retention(n=args.rows, seed=args.seed)
    frame = sim.to_frame()
    print(
        f"DR-learner, LightGBM final model, {args.rows} rows x {frame.shape[1]} features, "
        f"{args.repeats} repeats, {os.cpu_count()} CPUs, LightGBM threads: "
        f"{args.threads or 'default'}, shap {shap.__version__}"
    )
    for final_stage in ("full", "crossfit") if args.crossfit else ("full",):
        learner = ml.DRLearner(
            outcome_model=LGBMRegressor(verbose=-1, **threads),
            propensity_model=LGBMClassifier(verbose=-1, **threads),
            effect_model=LGBMRegressor(verbose=-1, **threads),
            final_stage=final_stage,
            random_state=args.seed,
        ).fit(frame, sim.y, sim.w)
        models = learner.effect_models_[(1, 0)]
        Xa, _ = encode_features(frame, learner.schema_)
        ours_pre = learner.explainer()
        theirs_pre = [shap.TreeExplainer(m) for m in models]
        med = _median_times(
            {
                "metalearn": lambda lrn=learner: lrn.explainer()(frame),
                "shap": lambda ms=models, xa=Xa: [shap.TreeExplainer(m)(xa) for m in ms],
                "metalearn pre-built": lambda ex=ours_pre: ex(frame),
                "shap pre-built": lambda exs=theirs_pre, xa=Xa: [ex(xa) for ex in exs],
            },
            args.repeats,
        )
        print(f"final_stage={final_stage!r}: {len(models)} final model(s) per effect")
        for name, m in med.items():
            print(f"  {name:22s} median {m * 1e3:9.1f} ms")
        print(
            f"  ratio metalearn / shap: {med['metalearn'] / med['shap']:.3f} "
            f"(pre-built explainers: {med['metalearn pre-built'] / med['shap pre-built']:.3f})"
        )
        ours = ours_pre(frame)
        if len(models) == 1:
            theirs = theirs_pre[0](Xa)
            diff = float(np.max(np.abs(ours.values - theirs.values)))
            base = float(np.max(np.abs(ours.base_values - theirs.base_values)))
            print(f"  max |metalearn - shap|: SHAP values {diff:.3g}, base values {base:.3g}")
        additivity = np.abs(ours.base_values + ours.values.sum(axis=1) - learner.predict(frame))
        print(f"  max additivity error vs learner.predict: {float(additivity.max()):.3g}")


if __name__ == "__main__":
    main()
