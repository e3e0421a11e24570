"""metalearn's overhead over the LightGBM work of its own fits, two code versions in one run.

For each configuration (S and T at n = 1,000,000; X and DR, pooled and per-variant
outcome models, at n = 100,000; Nie-Wager setup A, p = 6, seed 0) it reports the
wall time of metalearn's ``fit`` (or ``fit_predict``) and of ``predict`` on 100,000
new rows (20,000 for X and DR), the time spent inside LightGBM's own ``fit`` and
``predict`` calls during them (the floor: the same fits and predictions with no
library around them, as ``metalearn_job.py`` measures it) and the ratio wall / floor.
For S and T ``fit`` it also times the same fits written by hand with bare LightGBM (one
model per arm, or one model on X plus the indicator), the way a peer library makes them.

Every measurement runs in its own subprocess, and the code versions alternate, so
that both see the same (shared, noisy) machine: compare ratios within one run.

Example (the "before" version a worktree of HEAD, made with
``git worktree add /tmp/ml_base HEAD``)::

    python benchmarks/bench_overhead.py --before /tmp/ml_base --after .

LightGBM: 100 trees, 31 leaves, ``n_jobs=1`` (one thread per fit, learners with
``n_jobs=None``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
N_PREDICT = 100_000

CONFIGS = [
    # (learner, n, mode, outcome_pooling)
    ("S", 1_000_000, "fit", None),
    ("T", 1_000_000, "fit", None),
    ("S", 1_000_000, "fit_predict", None),
    ("T", 1_000_000, "fit_predict", None),
    ("X", 100_000, "fit", "pooled"),
    ("X", 100_000, "fit", "per_variant"),
    ("DR", 100_000, "fit", "pooled"),
    ("DR", 100_000, "fit", "per_variant"),
]


def job(spec: dict) -> dict:
    """One measurement, in this (fresh) process."""
    import numpy as np
    from lightgbm import LGBMRegressor

    sys.path.insert(0, str(HERE))
    from metalearn_job import FLOOR, TimedClassifier, TimedRegressor

    import metalearn as ml

    sim = ml.datasets.simulate_nie_wager("A", n=spec["n"], seed=0)
    X, w, y = sim.X, sim.w, sim.y
    Xp = ml.datasets.simulate_nie_wager("A", n=min(N_PREDICT, spec["n"] // 5), seed=1).X
    params = dict(n_estimators=100, num_leaves=31, verbose=-1, n_jobs=1)
    LGBMRegressor(n_estimators=2, verbose=-1).fit(X[:1000], y[:1000])  # load the library
    out: dict = {}
    if spec["bare"]:
        t0 = time.perf_counter()
        if spec["learner"] == "T":
            models = [LGBMRegressor(**params).fit(X[w == k], y[w == k]) for k in (0, 1)]
            t1 = time.perf_counter()
            [m.predict(Xp) for m in models]
        else:
            model = LGBMRegressor(**params).fit(np.column_stack([X, w.astype(float)]), y)
            t1 = time.perf_counter()
            for k in (0.0, 1.0):
                model.predict(np.column_stack([Xp, np.full(len(Xp), k)]))
        t2 = time.perf_counter()
        return {"fit_s": t1 - t0, "predict_s": t2 - t1}
    cls = {"S": ml.SLearner, "T": ml.TLearner, "X": ml.XLearner, "DR": ml.DRLearner}[
        spec["learner"]
    ]
    kw: dict = {"outcome_model": TimedRegressor(**params), "random_state": 0}
    if spec["learner"] in ("X", "DR"):
        kw.update(
            propensity_model=TimedClassifier(**params),
            effect_model=TimedRegressor(**params),
            outcome_pooling=spec["pooling"],
        )
    learner = cls(**kw)
    t0 = time.perf_counter()
    getattr(learner, spec["mode"])(X, y, w)
    t1 = time.perf_counter()
    floor_fit = FLOOR[0]
    learner.predict(Xp)
    t2 = time.perf_counter()
    out.update(
        fit_s=t1 - t0,
        fit_floor_s=floor_fit,
        predict_s=t2 - t1,
        predict_floor_s=FLOOR[0] - floor_fit,
        fits=learner.n_model_fits_,
    )
    return out


def run(version: str | None, spec: dict) -> dict:
    env = dict(os.environ)
    if version is not None:
        env["PYTHONPATH"] = str(Path(version).resolve())
    cmd = [sys.executable, str(Path(__file__).resolve()), "--job", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/", check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default=None, help="repository root of the 'before' version")
    ap.add_argument("--after", default=".", help="repository root of the 'after' version")
    ap.add_argument("--job", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--only", nargs="*", default=None, help="learners to run (S T X DR)")
    ap.add_argument("--scale", type=int, default=1, help="divide every n by this (smoke runs)")
    args = ap.parse_args()
    if args.job is not None:
        print(json.dumps(job(json.loads(args.job))))
        return
    versions = [("after", args.after)] + ([("before", args.before)] if args.before else [])
    print(
        "| learner | n | call | pooling | version | fits | fit wall s | fit floor s | fit ratio "
        "| predict wall s | predict floor s | predict ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for learner, n, mode, pooling in CONFIGS:
        if args.only and learner not in args.only:
            continue
        n //= args.scale
        spec = {"learner": learner, "n": n, "mode": mode, "pooling": pooling, "bare": False}
        for label, root in versions:
            r = run(root, spec)
            print(
                f"| {learner} | {n:,} | {mode} | {pooling or '-'} | {label} | {r['fits']} "
                f"| {r['fit_s']:.2f} | {r['fit_floor_s']:.2f} | "
                f"{r['fit_s'] / r['fit_floor_s']:.3f} | {r['predict_s']:.2f} | "
                f"{r['predict_floor_s']:.2f} | {r['predict_s'] / r['predict_floor_s']:.3f} |",
                flush=True,
            )
        if mode == "fit" and learner in ("S", "T"):
            r = run(args.after, {**spec, "bare": True})
            print(
                f"| {learner} | {n:,} | {mode} | - | bare LightGBM | {2 if learner == 'T' else 1} "
                f"| {r['fit_s']:.2f} | - | - | {r['predict_s']:.2f} | - | - |",
                flush=True,
            )


if __name__ == "__main__":
    main()
