"""Small-n accuracy benchmark: the learners' defaults on the Nie & Wager setups.

For every setup, training size and seed, each learner (S, T, X, R, DR) is fitted
with metalearn's defaults on ``simulate_nie_wager(setup, n, seed)`` and scored by
the mean squared error of its CATE estimate against the true CATE on 2,000 fresh
rows of the same setup (``seed + 1_000_000``). For the learners with a final
stage (X, R, DR) a second effect model is compared with ``default``
(``effect_model=None``, whatever the library's default is now):

* R, DR: ``legacy``, ``LGBMRegressor(verbose=-1)`` (100 trees of 31 leaves),
  their default before :func:`metalearn._core.defaults.default_effect_regressor`;
* X (whose default is still ``legacy``): ``rule``, the DR/R rule
  ``default_effect_regressor(n)`` passed explicitly.

The second fit reuses the fitted nuisance of the ``default`` fit (same seed,
so the same folds and nuisance models as a fit from scratch; only the final
stage differs). The reference row ``var(tau)`` is the test MSE of the
best constant effect. Everything runs on one thread (``n_jobs=1`` and
``OMP_NUM_THREADS=1``).

Nie & Wager (2021), Table 2 (boosting, n = 1,000, d = 6, sigma = 1), for
comparison: A: S .09 T .15 X .05 R .05; B: S .21 T .33 X .17 R .22;
C: S .31 T .67 X .14 R .11; D: S .39 T .36 X .40 R .46.

Run from the repository root::

    python benchmarks/bench_small_n.py --setups A B C D --n 1000 --seeds 0-9 \\
        --out benchmarks/out/small_n_1k.jsonl
    python benchmarks/bench_small_n.py --n 10000 --seeds 0 1 --learners R DR
    python benchmarks/bench_small_n.py --report benchmarks/out/small_n_1k.jsonl
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before LightGBM is loaded

import argparse
import json
import time
from collections import defaultdict
from typing import Any

LEARNERS = ("S", "T", "X", "R", "DR")
SECOND_VARIANT = {"X": "rule", "R": "legacy", "DR": "legacy"}
PAPER = {
    "S": {"A": 0.09, "B": 0.21, "C": 0.31, "D": 0.39},
    "T": {"A": 0.15, "B": 0.33, "C": 0.67, "D": 0.36},
    "X": {"A": 0.05, "B": 0.17, "C": 0.14, "D": 0.40},
    "R": {"A": 0.05, "B": 0.22, "C": 0.11, "D": 0.46},
}
TEST_SEED_OFFSET = 1_000_000


def parse_seeds(tokens: list[str]) -> list[int]:
    """``["0-2", "7"]`` -> ``[0, 1, 2, 7]``."""
    seeds: list[int] = []
    for tok in tokens:
        if "-" in tok:
            lo, hi = (int(v) for v in tok.split("-", 1))
            seeds.extend(range(lo, hi + 1))
        else:
            seeds.append(int(tok))
    return seeds


def legacy_effect_model() -> Any:
    """The effect-model default before the n-dependent rule."""
    from lightgbm import LGBMRegressor

    return LGBMRegressor(verbose=-1)


def run_one(setup: str, n: int, seed: int, learners: list[str], test_n: int) -> list[dict]:
    import numpy as np

    import metalearn as ml

    train = ml.datasets.simulate_nie_wager(setup, n=n, seed=seed)
    test = ml.datasets.simulate_nie_wager(setup, n=test_n, seed=seed + TEST_SEED_OFFSET)
    classes = {
        "S": ml.SLearner,
        "T": ml.TLearner,
        "X": ml.XLearner,
        "R": ml.RLearner,
        "DR": ml.DRLearner,
    }
    base = {"setup": setup, "n": n, "seed": seed}
    rows = [{**base, "learner": "var(tau)", "variant": "-", "mse": float(np.var(test.tau))}]
    for name in learners:
        variants = ["default"] + ([SECOND_VARIANT[name]] if name in SECOND_VARIANT else [])
        nuisance = None
        for variant in variants:
            kw: dict[str, Any] = {"n_jobs": 1, "random_state": seed}
            if variant != "default":
                kw["nuisance"] = nuisance
            if variant == "legacy":
                kw["effect_model"] = legacy_effect_model()
            elif variant == "rule":
                from metalearn._core.defaults import default_effect_regressor

                kw["effect_model"] = default_effect_regressor(n)
            t0 = time.perf_counter()
            learner = classes[name](**kw).fit(train.X, train.y, train.w)
            seconds = time.perf_counter() - t0
            nuisance = getattr(learner, "nuisance_", None)
            mse = float(np.mean((learner.predict(test.X) - test.tau) ** 2))
            rows.append(
                {**base, "learner": name, "variant": variant, "mse": mse, "seconds": seconds}
            )
    return rows


def report(rows: list[dict]) -> str:
    """Markdown table of the mean test MSE per learner (variant) x setup."""
    cells: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in rows:
        cells[(r["learner"], r["variant"], r["setup"])].append(r["mse"])
    setups = sorted({r["setup"] for r in rows})
    ns = sorted({r["n"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    keys = list(dict.fromkeys((r["learner"], r["variant"]) for r in rows))
    order = {name: i for i, name in enumerate(("var(tau)", *LEARNERS))}
    keys.sort(key=lambda k: (order.get(k[0], 99), k[1] != "default"))
    per_setup = [len({r["seed"] for r in rows if r["setup"] == s}) for s in setups]
    lines = [
        f"n = {', '.join(f'{v:,}' for v in ns)}; seeds {min(seeds)}-{max(seeds)}; "
        "mean test MSE of tau-hat",
        "",
        "| learner | effect model | " + " | ".join(setups) + " |",
        "|---|---|" + "---|" * len(setups),
        "| (seeds) | | " + " | ".join(str(k) for k in per_setup) + " |",
    ]
    for learner, variant in keys:
        vals = []
        for s in setups:
            v = cells.get((learner, variant, s), [])
            vals.append(f"{sum(v) / len(v):.3f}" if v else "")
        lines.append(f"| {learner} | {variant} | " + " | ".join(vals) + " |")
    if ns == [1000]:
        for learner, ref in PAPER.items():
            vals = [f"{ref[s]:.2f}" if s in ref else "" for s in setups]
            lines.append(f"| {learner} | Nie & Wager | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setups", nargs="+", default=["A", "B", "C", "D"])
    p.add_argument("--n", type=int, default=1000, help="training rows")
    p.add_argument("--seeds", nargs="+", default=["0-9"], help="ints or ranges like 0-9")
    p.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=LEARNERS)
    p.add_argument("--test-n", type=int, default=2000, help="fresh test rows")
    p.add_argument("--out", default=None, help="append one JSON line per fit here")
    p.add_argument("--report", nargs="+", default=None, help="only print the table of JSONLs")
    args = p.parse_args(argv)
    if args.report:
        rows = []
        for path in args.report:
            with open(path) as fh:
                rows.extend(json.loads(line) for line in fh if line.strip())
        print(report(rows))
        return
    rows: list[dict] = []
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for setup in args.setups:
        for seed in parse_seeds(args.seeds):
            t0 = time.perf_counter()
            new = run_one(setup, args.n, seed, args.learners, args.test_n)
            rows.extend(new)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.writelines(json.dumps(r) + "\n" for r in new)
            print(f"setup {setup} seed {seed}: {time.perf_counter() - t0:.0f}s", flush=True)
    print(report(rows))


if __name__ == "__main__":
    main()
