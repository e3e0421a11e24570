"""Semi-synthetic CATE benchmark on real covariates (RAND HIE, learning mindsets).

The covariates are real; the outcome surface, the effect and the treatment
assignment are simulated, so the true CATE is known on held-out rows.

Data sets (``--data``):

* ``hie``: :func:`metalearn.datasets.load_rand_hie`, 20,190 person-years; the
  nine columns other than ``mdvis`` (all numeric).
* ``mindset``: :func:`metalearn.datasets.load_learning_mindset` (10,391
  students; path ``--mindset-csv``); the eleven columns other than
  ``intervention`` and ``achievement_score``, five of them Polars
  ``Categorical`` (``schoolid`` has 76 levels). metalearn gets the Polars
  frame (it hands the categoricals to LightGBM as categorical features); the
  peers get the same columns as a float matrix, categoricals as their integer
  codes.

Each draw (seed ``s``) of a cell (data, heterogeneity, assignment, n):

1. a new random surface: ``mu0(x)``, a sum of 6 random depth-3 trees over the
   real columns plus a smooth term ``sin(z'a)`` of a random projection of the
   standardised columns, scaled to sd 1 over the data set; ``h(x)``, the
   same construction with 3 depth-2 trees, scaled to sd 1;
   ``tau(x) = 0.5 + b * h(x)`` with ``b = 1`` (``large``: sd(tau) = the noise
   sd) or ``b = 0.2`` (``small``); ``--het xlarge`` adds ``b = 3``;
2. assignment: ``rand``, ``e = 0.5``; ``conf``,
   ``e(x) = 0.1 + 0.8 * sigmoid(2 * (0.7 * mu0(x) + 0.3 * g(x)))`` (``g`` a
   third random surface of sd 1), so ``e`` lies in (0.1, 0.9) and the treated
   have higher baseline outcomes;
3. ``n`` training rows and ``min(2000, N - n)`` disjoint test rows are sampled
   without replacement; ``y = mu0 + w * tau + eps`` with ``eps ~ N(0, 1)``;
4. every learner is fitted on the training rows; the score is the PEHE,
   ``sqrt(mean((tau_hat - tau)^2))`` on the test rows.

Learners: metalearn's S, T, X, R, DR with their defaults (``effect_model``,
``outcome_model``, ``propensity_model`` left at ``None``); the X-learner with
``outcome_pooling="per_variant"``, with ``final_stage="full"`` and with both;
the DR-learner with ``outcome_pooling="per_variant"``; and the peers' S, T, X,
R, DR (econml, causalml, QuantCo metalearners) through ``peers.py`` (LightGBM,
100 trees, 31 leaves, rate 0.1, 5 folds). All peer jobs of one cell run in
one process of the peer venv (``bash benchmarks/make_peer_venv.sh``), which
imports ``peers.py`` and calls its ``run``. Everything is single-threaded
(``n_jobs=1``, LightGBM ``n_jobs=1``, ``OMP_NUM_THREADS=1``).

Run from the repository root::

    python benchmarks/bench_realcov.py --out benchmarks/out/realcov.jsonl
    python benchmarks/bench_realcov.py --data hie --n 500 --seeds 0-4 --no-peers
    python benchmarks/bench_realcov.py --report benchmarks/out/realcov.jsonl
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy / LightGBM / polars load

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench_small_n import parse_seeds  # noqa: E402  (this folder: scripts run from it)

HERE = Path(__file__).resolve().parent
PEER_PY = HERE / ".venv-peers" / "bin" / "python"
MINDSET_CSV = "/work/shared/data/learning_mindset.csv"
LEARNERS = ("S", "T", "X", "R", "DR")
PEERS = ("econml", "causalml", "metalearners")
# metalearn settings: (label, learner, constructor keywords)
ML_SETTINGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("default", "S", {}),
    ("default", "T", {}),
    ("default", "X", {}),
    ("per_variant", "X", {"outcome_pooling": "per_variant"}),
    ("full", "X", {"final_stage": "full"}),
    ("per_variant+full", "X", {"outcome_pooling": "per_variant", "final_stage": "full"}),
    ("default", "R", {}),
    ("default", "DR", {}),
    ("per_variant", "DR", {"outcome_pooling": "per_variant"}),
    # Extra DR final stages (only with --settings): LightGBM's defaults (the DR
    # default before the n-dependent rule), and the rule at learning rate 0.1.
    ("effect legacy", "DR", {"effect_model": "legacy"}),
    ("effect rule lr=0.1", "DR", {"effect_model": "rule_lr0.1"}),
)
EXTRA_SETTINGS = {"effect legacy", "effect rule lr=0.1"}
HET = {"large": 1.0, "small": 0.2, "xlarge": 3.0}  # b: sd(tau) / noise sd
N_TEST = 2000
# Largest training size per data set: the full data less the test rows.
N_CAP_ROUND = 1000


# ------------------------------------------------------------------ data


def load_covariates(name: str, mindset_csv: str):
    """(Polars frame for metalearn, float matrix for the peers)."""
    import numpy as np
    import polars as pl

    import metalearn as ml

    if name == "hie":
        df = ml.datasets.load_rand_hie().drop("mdvis")
    elif name == "mindset":
        df = ml.datasets.load_learning_mindset(mindset_csv).drop(
            "intervention", "achievement_score"
        )
    else:
        raise SystemExit(f"unknown data set {name!r}")
    cols = []
    for c in df.columns:
        s = df[c]
        cols.append(s.to_physical().cast(pl.Float64) if s.dtype == pl.Categorical else s)
    mat = np.column_stack([s.cast(pl.Float64).to_numpy() for s in cols])
    return df, mat


def _random_tree(rng, Z, depth: int):
    """Leaf values of a random axis-aligned tree evaluated on the rows of Z."""
    import numpy as np

    out = np.zeros(len(Z))

    def grow(idx, d):
        if d == 0 or len(idx) == 0:
            out[idx] = rng.normal()
            return
        j = rng.integers(Z.shape[1])
        col = Z[idx, j]
        lo, hi = np.quantile(col, [0.2, 0.8])
        t = rng.uniform(lo, hi) if hi > lo else lo
        left = col <= t
        if left.all() or not left.any():  # a constant column: split at random
            left = rng.random(len(idx)) < 0.5
        grow(idx[left], d - 1)
        grow(idx[~left], d - 1)

    grow(np.arange(len(Z)), depth)
    return out


def _surface(rng, Z, n_trees: int, depth: int):
    import numpy as np

    f = sum(_random_tree(rng, Z, depth) for _ in range(n_trees))
    std = (Z - Z.mean(0)) / np.where(Z.std(0) > 0, Z.std(0), 1.0)
    a = rng.normal(size=Z.shape[1]) / np.sqrt(Z.shape[1])
    f = (f - f.mean()) / f.std() + np.sin(2.0 * np.clip(std, -3, 3) @ a)
    return (f - f.mean()) / f.std()


def make_draw(mat, het: str, assign: str, n: int, seed: int):
    """Surface, assignment and train / test rows of one draw."""
    import numpy as np

    rng = np.random.default_rng([seed, int(HET[het] * 100), assign == "conf", n])
    srng = np.random.default_rng(seed)  # the surface depends on the seed only
    mu0 = _surface(srng, mat, n_trees=6, depth=3)
    h = _surface(srng, mat, n_trees=3, depth=2)
    g = _surface(srng, mat, n_trees=3, depth=2)
    tau = 0.5 + HET[het] * h
    if assign == "rand":
        e = np.full(len(mat), 0.5)
    else:
        e = 0.1 + 0.8 / (1.0 + np.exp(-2.0 * (0.7 * mu0 + 0.3 * g)))
    rows = rng.permutation(len(mat))
    n_test = min(N_TEST, len(mat) - n)
    tr, te = rows[:n], rows[n : n + n_test]
    w = (rng.random(n) < e[tr]).astype(np.int64)
    y = mu0[tr] + w * tau[tr] + rng.normal(size=n)
    return {"tr": tr, "te": te, "w": w, "y": y, "tau": tau, "e": e}


# ------------------------------------------------------------- metalearn


def run_metalearn(df, draw, seed: int, label: str, learner: str, kw: dict, suffix="") -> dict:
    import numpy as np

    import metalearn as ml

    cls = {
        "S": ml.SLearner,
        "T": ml.TLearner,
        "X": ml.XLearner,
        "R": ml.RLearner,
        "DR": ml.DRLearner,
    }[learner]
    from metalearn._core.defaults import (
        default_classifier,
        default_effect_regressor,
        default_regressor,
    )

    X_tr, X_te = df[draw["tr"]], df[draw["te"]]
    n = len(draw["tr"])
    # The default base models, pinned to one LightGBM thread (left at None,
    # metalearn gives LightGBM every physical core).
    models: dict[str, Any] = {"outcome_model": default_regressor().set_params(n_jobs=1)}
    if learner != "S" and learner != "T":
        models["propensity_model"] = default_classifier().set_params(n_jobs=1)
        effect = default_effect_regressor(n) if learner in ("R", "DR") else default_regressor()
        models["effect_model"] = effect.set_params(n_jobs=1)
    # mindset: schools absent from the training rows are encoded as missing.
    warnings.filterwarnings("ignore", message=".*categories not seen at fit")
    kw = dict(kw)
    if kw.get("effect_model") == "legacy":
        kw["effect_model"] = default_regressor().set_params(n_jobs=1)
    elif kw.get("effect_model") == "rule_lr0.1":
        kw["effect_model"] = default_effect_regressor(n).set_params(n_jobs=1, learning_rate=0.1)
    models.update(kw)
    t0 = time.perf_counter()
    est = cls(n_jobs=1, random_state=seed, handle_unknown="missing", **models)
    est.fit(X_tr, draw["y"], draw["w"])
    tau_hat = np.asarray(est.predict(X_te), dtype=float).reshape(-1)
    seconds = time.perf_counter() - t0
    tau = draw["tau"][draw["te"]]
    return {
        "library": "metalearn",
        "setting": label + suffix,
        "learner": learner,
        "pehe": float(np.sqrt(np.mean((tau_hat - tau) ** 2))),
        "seconds": seconds,
        "ok": True,
    }


# ----------------------------------------------------------------- peers


def peer_worker(jobs_path: str, out_path: str) -> None:
    """Run in the peer venv: every job of ``jobs_path`` through ``peers.run``."""
    sys.path.insert(0, str(HERE))
    import peers  # benchmarks/peers.py

    peers._limit_threads(1)
    with open(jobs_path) as fh:
        jobs = [json.loads(line) for line in fh if line.strip()]
    real_stdout = os.dup(1)
    os.dup2(2, 1)  # libraries may print; keep the result file clean
    try:
        with open(out_path, "a") as sink:
            for job in jobs:
                try:
                    res = peers.run(job)
                except Exception as exc:
                    res = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                res["library"], res["learner"] = job["library"], job["learner"]
                res["tag"] = job["tag"]
                sink.write(json.dumps(res) + "\n")
                sink.flush()
    finally:
        os.dup2(real_stdout, 1)
        os.close(real_stdout)


def run_peers(jobs: list[dict], tmp: str, timeout: float) -> list[dict]:
    if not PEER_PY.exists():
        return [
            {**j, "ok": False, "error": "peer venv missing: run benchmarks/make_peer_venv.sh"}
            for j in jobs
        ]
    jobs_path, out_path = Path(tmp) / "jobs.jsonl", Path(tmp) / "peer_out.jsonl"
    jobs_path.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    out_path.write_text("")
    cmd = [str(PEER_PY), str(Path(__file__).resolve()), "--peer-worker", str(jobs_path)]
    cmd += [str(out_path)]
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    done = {}
    for line in out_path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            done[(r["tag"], r["library"], r["learner"])] = r
    out = []
    for j in jobs:
        r = done.get((j["tag"], j["library"], j["learner"]))
        out.append(r if r is not None else {**j, "ok": False, "error": "no result (timeout?)"})
    return out


# ---------------------------------------------------------------- report


def _median(v: list[float]) -> float:
    v = sorted(v)
    m = len(v) // 2
    return v[m] if len(v) % 2 else 0.5 * (v[m - 1] + v[m])


def report(rows: list[dict]) -> str:
    """Markdown: one table per data set; rows = cells, columns = library/setting.

    Each learner gets its own table; the best median PEHE per row is bold.
    """
    ok = [r for r in rows if r.get("ok")]
    vals: dict[tuple, list[float]] = defaultdict(list)
    for r in ok:
        col = r["setting"] if r["library"] == "metalearn" else r["library"]
        cell = (r["data"], r["het"], r["assign"], r["n"])
        vals[(cell, r["learner"], col)].append(r["pehe"])
    cells = sorted(
        {k[0] for k in vals},
        key=lambda c: (c[0], -HET[c[1]], c[2] != "rand", c[3]),
    )
    lines: list[str] = []
    for data in dict.fromkeys(c[0] for c in cells):
        dcells = [c for c in cells if c[0] == data]
        for learner in LEARNERS:
            found = list(dict.fromkeys(k[2] for k in vals if k[1] == learner and k[0][0] == data))
            order = [s for s, lrn, _ in ML_SETTINGS if lrn == learner]
            mine = [s for s in order if s in found]
            mine += sorted(s for s in found if s not in order and s not in PEERS)
            keyof = {("metalearn" if s == "default" else f"metalearn {s}"): s for s in mine}
            keyof.update({p: p for p in PEERS if p in found})
            cols = list(keyof)
            if not any((c, learner, keyof[col]) in vals for c in dcells for col in cols):
                continue
            lines += [
                f"**{data}, {learner}-learner** (median PEHE; draws per cell in brackets)",
                "",
                "| sd(tau) | assignment | n | " + " | ".join(cols) + " |",
                "|---|---|---|" + "---:|" * len(cols),
            ]
            for c in dcells:
                meds = {}
                counts = []
                for col in cols:
                    v = vals.get((c, learner, keyof[col]), [])
                    if v:
                        meds[col] = _median(v)
                        counts.append(len(v))
                if not meds:
                    continue
                best = min(meds.values())
                cells_txt = []
                for col in cols:
                    if col not in meds:
                        cells_txt.append("")
                    elif meds[col] == best:
                        cells_txt.append(f"**{meds[col]:.3f}**")
                    else:
                        cells_txt.append(f"{meds[col]:.3f}")
                het = f"{HET[c[1]]:.1f} ({c[1]})"
                lines.append(
                    f"| {het} | {c[2]} | {c[3]:,} ({max(counts)}) | " + " | ".join(cells_txt) + " |"
                )
            lines.append("")
    return "\n".join(lines)


def load_rows(paths: list[str]) -> list[dict]:
    rows = []
    for path in paths:
        with open(path) as fh:
            rows.extend(json.loads(line) for line in fh if line.strip())
    return rows


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--peer-worker"]:
        peer_worker(argv[1], argv[2])
        return
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Peer jobs need the venv of benchmarks/make_peer_venv.sh.",
    )
    p.add_argument("--data", nargs="+", default=["hie", "mindset"], choices=["hie", "mindset"])
    p.add_argument(
        "--het",
        nargs="+",
        default=["large", "small"],
        choices=list(HET),
        help="sd(tau) / noise sd: large 1.0, small 0.2, xlarge 3.0 (not in the default grid)",
    )
    p.add_argument("--assign", nargs="+", default=["rand", "conf"], choices=["rand", "conf"])
    p.add_argument(
        "--n",
        type=int,
        nargs="+",
        default=[500, 2000, 10_000],
        help="training sizes; one above N - 2000 is cut to that (rounded down to 1,000s)",
    )
    p.add_argument("--seeds", nargs="+", default=["0-4"], help="draws for n <= 2,000")
    p.add_argument("--seeds-large", nargs="+", default=["0-2"], help="draws for n > 2,000")
    p.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=LEARNERS)
    p.add_argument("--no-peers", action="store_true", help="metalearn only")
    p.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    p.add_argument(
        "--metalearn-input",
        default="frame",
        choices=["frame", "codes"],
        help="metalearn gets the Polars frame (default) or the peers' float matrix "
        "(categoricals as integer codes; settings labelled '... (codes)')",
    )
    p.add_argument(
        "--settings",
        nargs="+",
        default=None,
        help="metalearn settings to run (labels of ML_SETTINGS, e.g. default per_variant)",
    )
    p.add_argument(
        "--label-suffix",
        default="",
        help="appended to the metalearn setting labels (to tell engine versions apart)",
    )
    p.add_argument("--mindset-csv", default=MINDSET_CSV)
    p.add_argument("--timeout", type=float, default=3600, help="per cell, peer jobs")
    p.add_argument("--out", default=None, help="append one JSON line per fit here")
    p.add_argument("--report", nargs="+", default=None, help="only print the tables of JSONLs")
    args = p.parse_args(argv)
    if args.report:
        print(report(load_rows(args.report)))
        return

    import numpy as np

    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    rows: list[dict] = []

    def emit(new: list[dict]) -> None:
        rows.extend(new)
        if args.out:
            with open(args.out, "a") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in new)

    settings = [s for s in ML_SETTINGS if s[1] in args.learners]
    if args.settings:
        settings = [s for s in settings if s[0] in args.settings]
    else:
        settings = [s for s in settings if s[0] not in EXTRA_SETTINGS]
    frames = {d: load_covariates(d, args.mindset_csv) for d in args.data}
    # Smallest n first over both data sets, so a cut-short run has whole rows.
    for n_req in args.n:
        for data in args.data:
            df, mat = frames[data]
            ml_x, sfx = (df, "") if args.metalearn_input == "frame" else (mat, " (codes)")
            sfx += args.label_suffix
            cap = (len(mat) - N_TEST) // N_CAP_ROUND * N_CAP_ROUND
            n = min(n_req, cap)
            seeds = parse_seeds(args.seeds if n <= 2000 else args.seeds_large)
            for het in args.het:
                for assign in args.assign:
                    t0 = time.perf_counter()
                    base = {"data": data, "het": het, "assign": assign, "n": n}
                    jobs = []
                    with tempfile.TemporaryDirectory() as tmp:
                        for seed in seeds:
                            draw = make_draw(mat, het, assign, n, seed)
                            tau = draw["tau"][draw["te"]]
                            meta = {
                                **base,
                                "seed": seed,
                                "sd_tau": float(np.std(tau)),
                                "e_range": [float(draw["e"].min()), float(draw["e"].max())],
                            }
                            emit(
                                [
                                    {**meta, **run_metalearn(ml_x, draw, seed, lab, lrn, kw, sfx)}
                                    for lab, lrn, kw in settings
                                ]
                            )
                            if args.no_peers:
                                continue
                            tr = Path(tmp) / f"train_{seed}.npz"
                            te = Path(tmp) / f"test_{seed}.npz"
                            np.savez(tr, X=mat[draw["tr"]], w=draw["w"], y=draw["y"])
                            np.savez(te, X=mat[draw["te"]], tau=tau)
                            for lrn in args.learners:
                                for lib in args.peers:
                                    jobs.append(
                                        {
                                            "library": lib,
                                            "learner": lrn,
                                            "train": str(tr),
                                            "test": str(te),
                                            "threads": 1,
                                            "seed": seed,
                                            "tag": json.dumps(meta),
                                        }
                                    )
                        if jobs:
                            for r in run_peers(jobs, tmp, args.timeout):
                                meta = json.loads(r.pop("tag"))
                                for k in ("train", "test", "threads"):
                                    r.pop(k, None)
                                r["setting"] = r["library"]
                                emit([{**meta, **r}])
                    print(
                        f"{data} n={n} {het} {assign}: {len(seeds)} draws, "
                        f"{time.perf_counter() - t0:.0f}s",
                        flush=True,
                    )
    print(report(rows))


if __name__ == "__main__":
    main()
