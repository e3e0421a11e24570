"""auto_cate against the published Nie & Wager (2021) table, and the stack against its pick.

For each Nie & Wager setup (A-D) and seed: draw n = 1,000 training rows and
10,000 test rows, time one default ``DRLearner`` fit, run
``metalearn.auto_cate`` with ``time_budget`` = ``--budget-factor`` x that
time, and record the test MSE of tau-hat (the paper's measure) of the
choice, of the best single learner of the search and of the stack, with the
search's wall time.

Published anchor (Nie & Wager 2021, boosting, n = 1,000, d = 6, sigma = 1,
mean test MSE over 200 runs): A: S .09, T .15, X .05, R .05; B: S .21, T .33,
X .17, R .22; C: S .31, T .67, X .14, R .11; D: S .39, T .36, X .40, R .46.

Usage::

    python benchmarks/bench_auto.py --seeds 0 1 2 --out benchmarks/out/auto.jsonl
    python benchmarks/bench_auto.py --report benchmarks/out/auto.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

PAPER = {
    "A": {"S": 0.09, "T": 0.15, "X": 0.05, "R": 0.05},
    "B": {"S": 0.21, "T": 0.33, "X": 0.17, "R": 0.22},
    "C": {"S": 0.31, "T": 0.67, "X": 0.14, "R": 0.11},
    "D": {"S": 0.39, "T": 0.36, "X": 0.40, "R": 0.46},
}


def run_one(setup: str, seed: int, n: int, factor: float, n_folds: int) -> dict[str, Any]:
    import optuna

    import metalearn as ml

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    train = ml.datasets.simulate_nie_wager(setup, n=n, seed=seed)
    test = ml.datasets.simulate_nie_wager(setup, n=10_000, seed=10_000 + seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ml.DRLearner(random_state=seed, n_jobs=1).fit(train.X, train.y, train.w)  # warm-up
        start = time.perf_counter()
        dr = ml.DRLearner(random_state=seed, n_jobs=1).fit(train.X, train.y, train.w)
        dr_time = time.perf_counter() - start
        start = time.perf_counter()
        auto = ml.auto_cate(
            train.X,
            train.y,
            train.w,
            time_budget=factor * dr_time,
            n_trials=40,
            nuisance_trials=15,
            n_folds=n_folds,
            n_jobs=1,
            random_state=seed,
        )
        auto_time = time.perf_counter() - start

    def mse(learner: Any) -> float:
        return float(np.mean((np.asarray(learner.predict(test.X)) - test.tau) ** 2))

    return {
        "setup": setup,
        "seed": seed,
        "n": n,
        "dr_default_mse": mse(dr),
        "dr_default_time": dr_time,
        "auto_time": auto_time,
        "auto_time_ratio": auto_time / dr_time,
        "choice": auto.choice,
        "auto_mse": mse(auto.learner),
        "single_mse": mse(auto.search.best_estimator_),
        "single_learner": type(auto.search.best_estimator_).__name__,
        "stack_mse": mse(auto.stack) if auto.stack is not None else None,
        "final_trials": len(auto.search.studies_["final"].trials),
        "beats_constant": bool(auto.selection.beats_constant) if auto.selection else None,
        "constant_gain": getattr(auto, "constant_gain", None),
        "constant_gain_se": getattr(auto, "constant_gain_std_error", None),
    }


def report(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = [
        "| setup | runs | auto_cate MSE | best single of the search | stack | default DR | "
        "paper best non-oracle | auto time / one DR fit | stack chosen | constant chosen |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for setup in sorted({r["setup"] for r in rows}):
        sel = [r for r in rows if r["setup"] == setup]
        stacks = [r["stack_mse"] for r in sel if r["stack_mse"] is not None]
        auto = np.array([r["auto_mse"] for r in sel])
        se = auto.std(ddof=1) / np.sqrt(len(auto)) if len(auto) > 1 else float("nan")
        out.append(
            f"| {setup} | {len(sel)} | {auto.mean():.3f} ± {se:.3f} | "
            f"{np.mean([r['single_mse'] for r in sel]):.3f} | "
            f"{np.mean(stacks) if stacks else float('nan'):.3f} | "
            f"{np.mean([r['dr_default_mse'] for r in sel]):.3f} | "
            f"{min(PAPER[setup].values()):.2f} | "
            f"{np.median([r['auto_time_ratio'] for r in sel]):.1f} | "
            f"{sum(r['choice'] == 'stack' for r in sel)}/{len(sel)} | "
            f"{sum(r['choice'] == 'constant' for r in sel)}/{len(sel)} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setups", nargs="+", default=list("ABCD"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--budget-factor", type=float, default=20.0)
    parser.add_argument("--n-folds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/auto.jsonl"))
    parser.add_argument("--report", type=Path, help="print the table of a results file")
    args = parser.parse_args()
    if args.report:
        print(report(args.report))
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as fh:
        for seed in args.seeds:
            for setup in args.setups:
                row = run_one(setup, seed, args.n, args.budget_factor, args.n_folds)
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                print(json.dumps(row), flush=True)
    print(report(args.out))


if __name__ == "__main__":
    main()
