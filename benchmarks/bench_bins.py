"""The LightGBM fast path (``ml.shared_lightgbm_bins``) against the default path.

For each size and learner, two jobs in their own subprocess (so that peak memory is the
job's own): the default fit and the fit under ``ml.shared_lightgbm_bins()``, same data
(Nie-Wager setup A, p = 20, seed 0), same LightGBM base models (the learners' defaults),
both cores. Each job prints one JSON line: fit + predict seconds, PEHE on 10,000 test
rows, and in MiB the RSS once the data are built and the peak RSS of the fit (Linux
``VmHWM``, reset after the simulation so that its temporaries do not count).

Usage::

    python benchmarks/bench_bins.py --n 100000 1000000 --learners T DR \\
        --out benchmarks/out/bins.jsonl
    python benchmarks/bench_bins.py --report benchmarks/out/bins.jsonl
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> None:
    """Reset this process's peak RSS (Linux: VmHWM) to its current RSS."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _peak_mib() -> float:
    """Peak RSS since the last reset (VmHWM), in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def job(n: int, learner: str, shared: bool) -> dict[str, Any]:
    import contextlib
    import gc
    import time
    import warnings

    import numpy as np

    import metalearn as ml

    warnings.simplefilter("ignore")
    train = ml.datasets.simulate_nie_wager("A", n=n, p=20, seed=0)
    test = ml.datasets.simulate_nie_wager("A", n=10_000, p=20, seed=10_000)
    X, y, w = np.ascontiguousarray(train.X), train.y, train.w
    del train
    gc.collect()
    before = _rss_mib()
    _reset_peak()  # the peak of the fit, not of the simulation before it
    cls = {"T": ml.TLearner, "X": ml.XLearner, "R": ml.RLearner, "DR": ml.DRLearner}[learner]
    block = ml.shared_lightgbm_bins() if shared else contextlib.nullcontext()
    start = time.perf_counter()
    with block:
        tau = cls(random_state=0).fit(X, y, w).predict(test.X)
    seconds = time.perf_counter() - start
    return {
        "n": n,
        "learner": learner,
        "path": "shared bins" if shared else "default",
        "seconds": seconds,
        "pehe": float(np.sqrt(np.mean((tau - test.tau) ** 2))),
        "peak_rss_mib": _peak_mib(),
        "rss_before_fit_mib": before,
        "X_mib": X.nbytes / 2**20,
    }


def report(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = [
        "| n | learner | path | fit + predict s | PEHE | peak RSS MiB | peak - data MiB | "
        "time vs default | peak - data vs default |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = {(r["n"], r["learner"]): r for r in rows if r["path"] == "default"}
    for r in sorted(rows, key=lambda r: (r["n"], r["learner"], r["path"] != "default")):
        d = base.get((r["n"], r["learner"]))
        extra = r["peak_rss_mib"] - r["rss_before_fit_mib"]
        ratio_t = r["seconds"] / d["seconds"] if d else float("nan")
        ratio_m = extra / (d["peak_rss_mib"] - d["rss_before_fit_mib"]) if d else float("nan")
        out.append(
            f"| {r['n']:,} | {r['learner']} | {r['path']} | {r['seconds']:.1f} | "
            f"{r['pehe']:.4f} | {r['peak_rss_mib']:.0f} | {extra:.0f} | {ratio_t:.2f} | "
            f"{ratio_m:.2f} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000])
    ap.add_argument("--learners", nargs="+", default=["T", "DR"])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/bins.jsonl"))
    ap.add_argument(
        "--paths", nargs="+", choices=["default", "shared"], default=["default", "shared"]
    )
    ap.add_argument("--report", type=Path)
    ap.add_argument("--job", type=json.loads, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        print(json.dumps(job(**args.job)))
        return
    if args.report:
        print(report(args.report))
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as sink:
        for n in args.n:
            for learner in args.learners:
                for shared in [p == "shared" for p in args.paths]:
                    spec = json.dumps({"n": n, "learner": learner, "shared": shared})
                    proc = subprocess.run(
                        [sys.executable, __file__, "--job", spec], capture_output=True, text=True
                    )
                    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                    if not lines:
                        print(proc.stderr[-500:], file=sys.stderr)
                        continue
                    sink.write(lines[-1] + "\n")
                    sink.flush()
                    print(lines[-1], flush=True)
    print(report(args.out))


if __name__ == "__main__":
    main()
