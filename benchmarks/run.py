"""Benchmark metalearn against econml, causalml and QuantCo metalearners.

Every (simulator, n, seed, learner, library) runs in its own subprocess, so
wall time and peak memory (``ru_maxrss``) belong to that job alone. metalearn
runs in this environment (``metalearn_job.py``), the peers in the venv made by
``make_peer_venv.sh`` (``peers.py``). Base models are the same everywhere:
LightGBM with n_estimators=100, learning_rate=0.1, num_leaves=31.

Examples
--------
Accuracy at n=10,000, one thread per job, three seeds::

    python benchmarks/run.py --n 10000 --seeds 0 1 2 --threads 1 --out benchmarks/out/acc.jsonl

A metalearn configuration beside the defaults (its own column in the report)::

    python benchmarks/run.py --n 100000 --sims A --threads 2 --libraries metalearn \
        --learners DR --metalearn-params '{"n_folds": 3}' --metalearn-label "metalearn 3 folds"

Speed at n=100,000 with all cores::

    python benchmarks/run.py --n 100000 --sims A --seeds 0 --threads 2 \
        --out benchmarks/out/speed.jsonl
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PEER_PY = HERE / ".venv-peers" / "bin" / "python"
LIBRARIES = ["metalearn", "econml", "causalml", "metalearners"]
LEARNERS = ["S", "T", "X", "R", "DR"]


def simulate(sim: str, n: int, seed: int, p: int):
    import metalearn as ml

    if sim in {"A", "B", "C", "D"}:
        return ml.datasets.simulate_nie_wager(sim, n=n, p=p, seed=seed)
    if sim == "retention":
        return ml.datasets.simulate_retention(n=n, seed=seed)
    if sim == "confounded":
        return ml.datasets.simulate_confounded(n=n, seed=seed)
    raise SystemExit(f"unknown simulator {sim!r}")


def run_job(library: str, job: dict, timeout: float) -> dict:
    if library == "metalearn":
        cmd = [sys.executable, str(HERE / "metalearn_job.py"), json.dumps(job)]
    else:
        if not PEER_PY.exists():
            return {"ok": False, "error": "peer venv missing: run benchmarks/make_peer_venv.sh"}
        cmd = [str(PEER_PY), str(HERE / "peers.py"), json.dumps({**job, "library": library})]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timeout after {timeout:.0f}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"ok": False, "error": (proc.stderr or proc.stdout)[-400:]}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sims", nargs="+", default=["A", "B", "C", "D"])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000])
    ap.add_argument("--n-test", type=int, default=10_000)
    ap.add_argument("--p", type=int, default=6, help="features of the Nie-Wager setups")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--learners", nargs="+", default=LEARNERS)
    ap.add_argument("--libraries", nargs="+", default=LIBRARIES)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "results.jsonl")
    ap.add_argument(
        "--metalearn-params",
        type=json.loads,
        default={},
        help="extra learner parameters for metalearn, as JSON (e.g. '{\"n_folds\": 3}')",
    )
    ap.add_argument(
        "--metalearn-label",
        default="metalearn",
        help="library name recorded for the metalearn jobs (to tell configurations apart)",
    )
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, args.out.open("a") as sink:
        for sim in args.sims:
            for n in args.n:
                for seed in args.seeds:
                    train = simulate(sim, n, seed, args.p)
                    test = simulate(sim, args.n_test, 10_000 + seed, args.p)
                    tr, te = Path(tmp) / "train.npz", Path(tmp) / "test.npz"
                    np.savez(tr, X=train.X, w=train.w, y=train.y)
                    np.savez(te, X=test.X, tau=test.tau)
                    for learner in args.learners:
                        for lib in args.libraries:
                            job = {
                                "learner": learner,
                                "train": str(tr),
                                "test": str(te),
                                "threads": args.threads,
                                "seed": seed,
                            }
                            if lib == "metalearn":
                                job["params"] = args.metalearn_params
                            res = run_job(lib, job, args.timeout)
                            name = args.metalearn_label if lib == "metalearn" else lib
                            rec = {
                                "sim": sim,
                                "n": n,
                                "p": train.X.shape[1],
                                "seed": seed,
                                "threads": args.threads,
                                "learner": learner,
                                **res,
                                "library": name,
                            }
                            sink.write(json.dumps(rec) + "\n")
                            sink.flush()
                            status = (
                                f"pehe={res.get('pehe', float('nan')):.3f} "
                                f"t={res.get('fit_predict_s', float('nan')):.1f}s"
                                if res.get("ok")
                                else f"FAILED {res.get('error', '')[:80]}"
                            )
                            print(
                                f"{sim} n={n} seed={seed} {learner:>2} {name:<12} {status}",
                                flush=True,
                            )


if __name__ == "__main__":
    main()
