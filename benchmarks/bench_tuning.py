"""Tuning benchmark: nuisance reuse, selection quality, and the gain of tuning.

Three measurements on simulators with a known CATE (Nie & Wager setups):

1. **Nuisance reuse.** A DR-learner with LightGBM nuisances and a grid of 12
   final-stage settings (``effect_model`` leaves x minimum leaf size), scored
   out of fold against one pre-fitted scoring nuisance: ``MetaLearnerGridSearch``
   (one nuisance stage shared by all candidates) against a plain loop that
   refits every candidate from scratch (``clone(learner).set_params(**p)
   .fit_predict`` then the same losses). Prints base-model fits and seconds.
2. **Does the selection score track the truth?** A grid over learner type
   (T, X, R, DR) and final-stage settings, scored by the search; each
   candidate is refitted (sharing one fitted ``Nuisance`` per pooling) and
   its true PEHE measured on fresh test rows. Prints the Spearman
   correlation of each score with the true PEHE and the PEHE of the pick
   relative to the best candidate, per setup (median over seeds).
3. **Does tuning pay?** The DR-learner with LightGBM defaults everywhere
   against ``MetaLearnerOptunaSearch`` (LightGBM preset, staged: nuisance
   models on their own cross-validated losses, then the final stage on the
   R-loss) with a modest budget, and against the grid pick of (2). Prints the
   true test PEHE, median over seeds.

Run from the repository root::

    python benchmarks/bench_tuning.py                     # the defaults below
    python benchmarks/bench_tuning.py --seeds 5 --jobs 4  # more seeds, 4 processes
    python benchmarks/bench_tuning.py --only reuse --n 20000
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def _lgbm(threads: int, **kw: Any) -> Any:
    from lightgbm import LGBMClassifier, LGBMRegressor

    cls = kw.pop("cls", "reg")
    return (LGBMRegressor if cls == "reg" else LGBMClassifier)(verbose=-1, n_jobs=threads, **kw)


# --------------------------------------------------------------------- 1. reuse
def bench_reuse(n: int, threads: int, seed: int) -> dict[str, Any]:
    import numpy as np
    from sklearn.base import clone
    from sklearn.model_selection import ParameterGrid

    import metalearn as ml
    from metalearn.scoring import cate_losses, fit_scoring_nuisance

    sim = ml.datasets.simulate_nie_wager("A", n=n, seed=seed)
    learner = ml.DRLearner(
        outcome_model=_lgbm(threads, n_estimators=300, learning_rate=0.05),
        propensity_model=_lgbm(threads, cls="clf", n_estimators=300, learning_rate=0.05),
        effect_model=_lgbm(threads, n_estimators=100),
        n_folds=5,
        random_state=seed,
    )
    grid = {
        "effect_model__num_leaves": [2, 4, 8, 16],
        "effect_model__min_child_samples": [20, 100, 400],
    }
    sn = fit_scoring_nuisance(
        sim.X,
        sim.y,
        sim.w,
        nuisance=ml.Nuisance(
            outcome_model=_lgbm(threads),
            propensity_model=_lgbm(threads, cls="clf"),
            random_state=0,
        ),
    )
    start = time.perf_counter()
    search = ml.MetaLearnerGridSearch(learner, grid, scoring_nuisance=sn, refit=False)
    search.fit(sim.X, sim.y, sim.w)
    t_reuse = time.perf_counter() - start
    fits_reuse = search.n_nuisance_fits_ + search.n_final_fits_
    start = time.perf_counter()
    naive_scores, fits_naive = [], 0
    for params in ParameterGrid(grid):
        cand = clone(learner).set_params(**params)
        tau = cand.fit_predict(sim.X, sim.y, sim.w)
        fits_naive += cand.n_model_fits_
        table = cate_losses(tau, sn)
        naive_scores.append(float(table.filter(table["loss"] == "r_loss")["value"][0]))
    t_naive = time.perf_counter() - start
    same = np.allclose(np.sort(naive_scores), np.sort(search.results_["r_loss"].to_numpy()))
    return {
        "candidates": search.n_candidates_,
        "fits_reuse": fits_reuse,
        "fits_naive": fits_naive,
        "seconds_reuse": t_reuse,
        "seconds_naive": t_naive,
        "same_scores": bool(same),
    }


# ------------------------------------------------- 2 + 3. selection and tuning
def _pehe(learner: Any, X: Any, tau: Any) -> float:
    import numpy as np

    return float(np.sqrt(np.mean((learner.predict(X) - tau) ** 2)))


def bench_selection(
    setup: str, seed: int, n: int, n_test: int, trials: int, nuisance_trials: int
) -> dict[str, Any]:
    import numpy as np
    import optuna
    from scipy.stats import spearmanr
    from sklearn.base import clone

    import metalearn as ml

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    train = ml.datasets.simulate_nie_wager(setup, n=n, seed=seed)
    test = ml.datasets.simulate_nie_wager(setup, n=n_test, seed=10_000 + seed)
    X, y, w = train.X, train.y, train.w

    def default(cls: type) -> Any:
        kw: dict[str, Any] = {"outcome_model": _lgbm(1), "n_folds": 5, "random_state": seed}
        if cls is not ml.TLearner:
            kw.update(propensity_model=_lgbm(1, cls="clf"), effect_model=_lgbm(1))
        return cls(**kw)

    out: dict[str, Any] = {"setup": setup, "seed": seed}
    start = time.perf_counter()
    base = default(ml.DRLearner).fit(X, y, w)
    out["pehe_default"] = _pehe(base, test.X, test.tau)
    out["seconds_default"] = time.perf_counter() - start

    # 2. a grid over learner types and final-stage settings
    effect = {
        "effect_model__num_leaves": [2, 8, 31],
        "effect_model__min_child_samples": [20, 200],
    }
    grid = [{"learner": [default(ml.TLearner)]}] + [
        {"learner": [default(c)], **effect} for c in (ml.XLearner, ml.RLearner, ml.DRLearner)
    ]
    start = time.perf_counter()
    search = ml.MetaLearnerGridSearch(default(ml.DRLearner), grid, refit=False).fit(X, y, w)
    out["seconds_grid"] = time.perf_counter() - start
    res = search.results_
    shared: dict[str, Any] = {}
    pehe = []
    for params in (dict(p) for g in grid for p in _expand(g)):
        cand = clone(params.pop("learner")).set_params(**params)
        pooling = getattr(cand, "outcome_pooling", "per_variant")
        if pooling not in shared:
            shared[pooling] = ml.Nuisance(
                outcome_model=_lgbm(1),
                propensity_model=_lgbm(1, cls="clf"),
                n_folds=5,
                outcome_pooling=pooling,
                random_state=seed,
            ).fit(X, y, w)
        cand.set_params(nuisance=shared[pooling], outcome_model=None)
        if "propensity_model" in cand.get_params(deep=False):
            cand.set_params(propensity_model=None)
        pehe.append(_pehe(cand.fit(X, y, w), test.X, test.tau))
    pehe_arr = np.asarray(pehe)
    for score in ("r_loss", "dr_loss", "plugin"):
        values = res[score].to_numpy()
        out[f"spearman_{score}"] = float(spearmanr(values, pehe_arr).statistic)
        out[f"regret_{score}"] = float(pehe_arr[int(np.argmin(values))] / pehe_arr.min())
    out["pehe_grid_pick"] = float(pehe_arr[int(np.argmin(res["r_loss"].to_numpy()))])
    out["pehe_grid_best"] = float(pehe_arr.min())

    # 3. Optuna, staged, LightGBM preset, modest budget
    start = time.perf_counter()
    tuner = ml.MetaLearnerOptunaSearch(
        default(ml.DRLearner),
        "lightgbm",
        n_trials=trials,
        nuisance_trials=nuisance_trials,
        scoring="r_loss",
        random_state=seed,
    ).fit(X, y, w)
    out["seconds_optuna"] = time.perf_counter() - start
    out["pehe_optuna"] = _pehe(tuner.best_estimator_, test.X, test.tau)
    return out


def _expand(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    from sklearn.model_selection import ParameterGrid

    return [dict(p) for p in ParameterGrid(grid)]


def main() -> None:
    parser = argparse.ArgumentParser(description="Tuning benchmark.")
    parser.add_argument("--only", choices=["reuse", "selection"], default=None)
    parser.add_argument("--setups", default="A,B,C,D", help="Nie-Wager setups")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n", type=int, default=2000, help="training rows (selection/tuning)")
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--n-reuse", type=int, default=4000, help="rows of the reuse benchmark")
    parser.add_argument("--trials", type=int, default=15, help="final-stage Optuna trials")
    parser.add_argument("--nuisance-trials", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="LightGBM threads (reuse)")
    parser.add_argument("--jobs", type=int, default=1, help="processes for the selection runs")
    args = parser.parse_args()

    if args.only in (None, "reuse"):
        r = bench_reuse(args.n_reuse, args.threads, 0)
        print(
            f"[reuse] DR-learner, Nie-Wager A, n={args.n_reuse}, {r['candidates']} final-stage "
            "settings, out-of-fold scoring"
        )
        print(f"  base-model fits: {r['fits_reuse']} with reuse, {r['fits_naive']} refitting")
        print(
            f"  seconds: {r['seconds_reuse']:.1f} with reuse, {r['seconds_naive']:.1f} refitting"
            f" -> {r['seconds_naive'] / r['seconds_reuse']:.1f}x faster; "
            f"same scores: {r['same_scores']}"
        )
    if args.only in (None, "selection"):
        setups = args.setups.split(",")
        jobs = [(s, seed) for s in setups for seed in range(args.seeds)]
        run = (args.n, args.n_test, args.trials, args.nuisance_trials)
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(bench_selection, s, seed, *run) for s, seed in jobs]
            rows = [f.result() for f in futures]
        print(
            f"\n[selection + tuning] n={args.n} train, {args.n_test} test, "
            f"seeds 0..{args.seeds - 1}"
            f"; Optuna: {args.nuisance_trials} trials per nuisance model + {args.trials} final"
        )
        head = (
            "setup | PEHE default DR | PEHE Optuna | PEHE grid pick | best in grid | "
            "rho(r_loss) | rho(dr_loss) | rho(plugin) | regret r/dr | s default/grid/optuna"
        )
        print(head)
        for s in [*setups, "all"]:
            sel = [r for r in rows if s == "all" or r["setup"] == s]

            def med(key: str, sel: list[dict[str, Any]] = sel) -> float:
                return statistics.median(r[key] for r in sel)

            print(
                f"{s:>5} | {med('pehe_default'):15.3f} | {med('pehe_optuna'):11.3f} | "
                f"{med('pehe_grid_pick'):14.3f} | {med('pehe_grid_best'):12.3f} | "
                f"{med('spearman_r_loss'):11.2f} | {med('spearman_dr_loss'):12.2f} | "
                f"{med('spearman_plugin'):11.2f} | "
                f"{med('regret_r_loss'):.2f}/{med('regret_dr_loss'):.2f} | "
                f"{med('seconds_default'):.0f}/{med('seconds_grid'):.0f}/"
                f"{med('seconds_optuna'):.0f}"
            )
        wins = sum(r["pehe_optuna"] < r["pehe_default"] for r in rows)
        print(f"Optuna beats the defaults in {wins} of {len(rows)} runs.")


if __name__ == "__main__":
    main()
