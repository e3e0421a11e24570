"""Command line: ``metalearn demo`` and ``metalearn fit``.

``metalearn demo`` fits every learner on a simulated randomized retention
experiment whose true effects are known and prints a comparison table.
``metalearn fit --data FILE --outcome COL --treatment COL`` fits a learner on
a CSV or Parquet file by cross-fitting, prints the average effect and a
summary of the per-row effects, and (with ``--out``) writes the out-of-fold
effect of every row. Bad input exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]


def _lgbm(kind: str, n_estimators: int) -> Any:
    from lightgbm import LGBMClassifier, LGBMRegressor

    cls = LGBMRegressor if kind == "reg" else LGBMClassifier
    return cls(n_estimators=n_estimators, learning_rate=0.05, min_child_samples=40, verbose=-1)


def run_demo(n: int = 10_000, n_test: int = 5_000, seed: int = 0, n_jobs: int = -1) -> list[dict]:
    """Fit S, T, X, R and DR learners on the retention simulator and score them.

    Returns one dict per learner with PEHE on a fresh test set, the ATE
    estimate and the truth, the R-loss on the test set (against scoring
    nuisances cross-fitted there, with the experiment's known propensity)
    and the fit time.
    """
    import metalearn as ml
    from metalearn.scoring import r_loss

    train = ml.datasets.simulate_retention(n=n, seed=seed)
    test = ml.datasets.simulate_retention(n=n_test, seed=seed + 1)
    Xtr, Xte = train.to_frame(), test.to_frame()

    # Scoring nuisance on the test set: cross-fitted m(x), known propensity.
    scorer = ml.Nuisance(
        outcome_model=_lgbm("reg", 200), n_folds=5, random_state=seed, n_jobs=n_jobs
    )
    m_hat = _marginal_outcome(scorer, Xte, test.y, test.w, test.propensity)

    learners = {
        "S": ml.SLearner(outcome_model=_lgbm("reg", 200)),
        "T": ml.TLearner(outcome_model=_lgbm("reg", 200)),
        "X": ml.XLearner(outcome_model=_lgbm("reg", 200), effect_model=_lgbm("reg", 100)),
        "R": ml.RLearner(outcome_model=_lgbm("reg", 200), effect_model=_lgbm("reg", 100)),
        "DR": ml.DRLearner(outcome_model=_lgbm("reg", 200), effect_model=_lgbm("reg", 100)),
    }
    rows = []
    true_ate = float(test.tau.mean())
    for name, learner in learners.items():
        learner.set_params(n_jobs=n_jobs, random_state=seed)
        t0 = time.perf_counter()
        learner.fit(Xtr, train.y, train.w, propensity=0.5)
        elapsed = time.perf_counter() - t0
        tau_hat = learner.predict(Xte)
        rows.append(
            {
                "learner": name,
                "pehe": float(np.sqrt(np.mean((tau_hat - test.tau) ** 2))),
                "ate": float(tau_hat.mean()),
                "true_ate": true_ate,
                "r_loss": r_loss(
                    test.y, test.w, tau_hat, outcome=m_hat, propensity=test.propensity
                ),
                "fit_s": elapsed,
            }
        )
    return rows


def _marginal_outcome(nuis: Any, X: Any, y: Any, w: Any, propensity: Any) -> np.ndarray:
    from metalearn.nuisance import prepare_data

    data = prepare_data(X, y, w, classification=False, propensity=propensity)
    nuis.ensure(data, {"m:0:1"})
    return np.asarray(nuis.oof_["m:0:1"][:, 0])


def _print_table(rows: list[dict], out: Any) -> None:
    header = f"{'learner':<8}{'PEHE':>8}{'ATE':>9}{'true ATE':>10}{'R-loss':>9}{'fit (s)':>9}"
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        print(
            f"{r['learner']:<8}{r['pehe']:>8.3f}{r['ate']:>9.3f}{r['true_ate']:>10.3f}"
            f"{r['r_loss']:>9.2f}{r['fit_s']:>9.2f}",
            file=out,
        )


def _cmd_demo(args: argparse.Namespace) -> int:
    print(
        f"Simulated retention experiment: {args.n} training rows, {args.n_test} test rows, "
        "true effects known.\nEvery learner uses LightGBM base models; PEHE is the RMSE of "
        "the estimated CATE on the test rows (lower is better); R-loss is computed on the test "
        "rows against cross-fitted scoring nuisances (lower is better, no truth needed).\n"
    )
    rows = run_demo(n=args.n, n_test=args.n_test, seed=args.seed, n_jobs=args.n_jobs)
    _print_table(rows, sys.stdout)
    best = min(rows, key=lambda r: r["r_loss"])
    print(f"\nLowest R-loss: {best['learner']}-learner (PEHE {best['pehe']:.3f}).")
    return 0


_LEARNERS = ("S", "T", "X", "R", "DR")
_READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _default_model(kind: str) -> Any:
    """LightGBM with its default parameters (quiet): the base models of ``metalearn fit``."""
    from lightgbm import LGBMClassifier, LGBMRegressor

    return LGBMClassifier(verbose=-1) if kind == "clf" else LGBMRegressor(verbose=-1)


def _file_kind(path: Path, option: str) -> str:
    kind = _READERS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(
            f"{option}: unknown file type {path.suffix or '(none)'!r} of {str(path)!r}; use a "
            ".csv or .parquet file."
        )
    return kind


def _read_data(path: Path) -> Any:
    import polars as pl

    kind = _file_kind(path, "--data")
    if not path.is_file():
        raise FileNotFoundError(f"--data: no such file: {str(path)!r}.")
    try:
        if kind == "csv":
            return pl.read_csv(path, infer_schema_length=10_000)
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"--data: could not read {str(path)!r} as {kind}: {first}") from exc


def _check_columns(df: Any, names: Sequence[str], option: str, path: Path) -> None:
    missing = [c for c in names if c not in df.columns]
    if missing:
        shown = ", ".join(df.columns[:20]) + (", ..." if len(df.columns) > 20 else "")
        raise ValueError(
            f"{option}: column(s) {', '.join(map(repr, missing))} not in {str(path)!r} "
            f"(its columns: {shown})."
        )


def _parse_control(value: str, w: Any, treatment: str) -> Any:
    import polars as pl

    dtype = w.dtype
    try:
        if dtype.is_integer():
            parsed: Any = int(value)
        elif dtype.is_float():
            parsed = float(value)
        elif dtype == pl.Boolean:
            parsed = {"true": True, "false": False, "1": True, "0": False}[value.lower()]
        else:
            parsed = value
    except (ValueError, KeyError):
        parsed = None
    present = w.unique().sort().to_list()
    if parsed is None or parsed not in present:
        raise ValueError(
            f"--control: {value!r} is not a value of the treatment column {treatment!r}; its "
            f"values are {present}."
        )
    return parsed


def _prepare_fit_data(args: argparse.Namespace) -> tuple[Any, Any, Any, Any, list[str]]:
    """Read the file and check the columns: (frame, X, y, w, features)."""
    import polars as pl

    path = Path(args.data)
    if args.out is not None:
        out = Path(args.out)
        _file_kind(out, "--out")
        if not out.parent.is_dir():
            raise FileNotFoundError(f"--out: directory {str(out.parent)!r} does not exist.")
    df = _read_data(path)
    ids = list(args.id_columns or [])
    _check_columns(df, [args.outcome], "--outcome", path)
    _check_columns(df, [args.treatment], "--treatment", path)
    _check_columns(df, ids, "--id-columns", path)
    if args.outcome == args.treatment:
        raise ValueError("--outcome and --treatment name the same column; they must differ.")
    reserved = {args.outcome, args.treatment}
    if args.features:
        _check_columns(df, args.features, "--features", path)
        clash = [c for c in args.features if c in reserved]
        if clash:
            raise ValueError(
                f"--features: {', '.join(map(repr, clash))} is the outcome or the treatment; "
                "leave it out of the features."
            )
        features = list(dict.fromkeys(args.features))
    else:
        features = [c for c in df.columns if c not in reserved and c not in ids]
    if not features:
        raise ValueError(
            f"No feature columns left in {str(path)!r} besides the outcome, treatment and id "
            "columns; pass --features."
        )
    y = df.get_column(args.outcome)
    if y.dtype == pl.Boolean:
        y = y.cast(pl.Int8)
    if not y.dtype.is_numeric():
        raise ValueError(
            f"--outcome: column {args.outcome!r} must be numeric; got {y.dtype} (e.g. "
            f"{y.drop_nulls().head(1).to_list()}). Encode a binary outcome as 0/1."
        )
    y = y.cast(pl.Float64)
    if y.null_count() or not y.is_finite().all():
        bad = y.null_count() + int((~y.drop_nulls().is_finite()).sum())
        raise ValueError(
            f"--outcome: column {args.outcome!r} has {bad} missing or non-finite values; drop "
            "or impute those rows."
        )
    w = df.get_column(args.treatment)
    if w.dtype in (pl.Categorical, pl.Enum):
        w = w.cast(pl.String)
    if w.null_count():
        raise ValueError(
            f"--treatment: column {args.treatment!r} has {w.null_count()} missing values; drop "
            "those rows."
        )
    if w.n_unique() < 2:
        raise ValueError(
            f"--treatment: column {args.treatment!r} has a single value "
            f"({w.head(1).to_list()[0]!r}); estimating an effect needs at least two "
            "(a control and a treatment)."
        )
    return df, df.select(features), y.to_numpy(), w, features


def _ci_text(effect: Any) -> str:
    if np.isfinite(effect.std_error):
        return (
            f"{effect.estimate:.4g} ({effect.level:.0%} CI {effect.ci_low:.4g} to "
            f"{effect.ci_high:.4g}; {effect.method})"
        )
    return (
        f"{effect.estimate:.4g} ({effect.method} mean of the out-of-fold effects; no "
        "interval: use --learner DR for an AIPW confidence interval)"
    )


def _cmd_fit(args: argparse.Namespace) -> int:
    import polars as pl

    import metalearn as ml

    df, X, y, w, features = _prepare_fit_data(args)
    control = None if args.control is None else _parse_control(args.control, w, args.treatment)
    cls = {
        "S": ml.SLearner,
        "T": ml.TLearner,
        "X": ml.XLearner,
        "R": ml.RLearner,
        "DR": ml.DRLearner,
    }[args.learner]
    params = cls().get_params(deep=False)
    models = {
        name: _default_model("clf" if name == "propensity_model" else "reg")
        for name in ("outcome_model", "propensity_model", "effect_model")
        if name in params
    }
    learner = cls(
        **models,
        control=control,
        n_folds=args.n_folds,
        n_jobs=args.n_jobs,
        random_state=args.seed,
    )
    t0 = time.perf_counter()
    tau = np.asarray(learner.fit_predict(X, y, w))
    elapsed = time.perf_counter() - t0
    tau = tau.reshape(len(y), -1)
    names = learner._effect_names()
    effects = learner.ate()
    effects = list(effects) if isinstance(effects, tuple) else [effects]

    counts = w.value_counts().sort(w.name)
    c = learner.control_
    arms = "; ".join(
        f"{v}{' (control)' if v == c else ''}: {n:,} rows"
        for v, n in zip(counts[w.name].to_list(), counts["count"].to_list(), strict=True)
    )
    print(
        f"{args.learner}-learner, LightGBM base models, {args.n_folds}-fold cross-fitting "
        f"({elapsed:.1f} s)"
    )
    print(f"data: {args.data}, {len(y):,} rows, {len(features)} features")
    print(f"treatment {args.treatment!r}: {arms}")
    print(f"outcome {args.outcome!r}: mean {float(np.mean(y)):.4g}")
    for j, effect in enumerate(effects):
        col = tau[:, j]
        p10, p50, p90 = np.quantile(col, [0.1, 0.5, 0.9])
        label = f"{effect.variant} vs {effect.control}"
        print(f"ATE {label}: {_ci_text(effect)}")
        print(
            f"CATE {label}: positive for {float(np.mean(col > 0)):.1%} of rows; "
            f"10/50/90% quantiles {p10:.4g}, {p50:.4g}, {p90:.4g}"
        )
    if args.out is None:
        print("(pass --out effects.parquet to save the out-of-fold effects of every row)")
        return 0
    ids = list(args.id_columns or [])
    keep = df.select(ids) if ids else pl.DataFrame({"row": np.arange(len(y))})
    result = keep.with_columns(pl.Series(name, tau[:, j]) for j, name in enumerate(names))
    out = Path(args.out)
    if _file_kind(out, "--out") == "csv":
        result.write_csv(out)
    else:
        result.write_parquet(out)
    print(f"out-of-fold effects written to {args.out} (columns: {', '.join(result.columns)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metalearn", description="Meta-learners for heterogeneous treatment effects."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit every learner on a simulated experiment")
    demo.add_argument("--n", type=int, default=10_000, help="training rows (default 10000)")
    demo.add_argument("--n-test", type=int, default=5_000, help="test rows (default 5000)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--n-jobs", type=int, default=-1, help="joblib workers (default -1)")
    demo.set_defaults(func=_cmd_demo)

    fit = sub.add_parser(
        "fit",
        help="fit a learner on a CSV or Parquet file and write out-of-fold effects",
        description=(
            "Fit a meta-learner with LightGBM base models by cross-fitting, print the average "
            "effect and a summary of the per-row effects, and write the out-of-fold effect of "
            "every row (each estimated by models that did not see the row)."
        ),
    )
    fit.add_argument("--data", required=True, help="input file, .csv or .parquet")
    fit.add_argument("--outcome", required=True, help="outcome column (numeric)")
    fit.add_argument("--treatment", required=True, help="treatment variant column")
    fit.add_argument(
        "--features",
        nargs="+",
        metavar="COL",
        help="feature columns (default: every column but outcome, treatment and id columns)",
    )
    fit.add_argument("--learner", choices=_LEARNERS, default="DR", help="meta-learner (default DR)")
    fit.add_argument(
        "--control",
        metavar="VALUE",
        help="control value of the treatment column (default 0 if present, else the smallest)",
    )
    fit.add_argument(
        "--id-columns",
        nargs="+",
        metavar="COL",
        help="columns copied to the output to identify rows (default: a row number)",
    )
    fit.add_argument(
        "--out", metavar="FILE", help="write the per-row effects here (.parquet or .csv)"
    )
    fit.add_argument("--n-folds", type=int, default=5, help="cross-fitting folds (default 5)")
    fit.add_argument("--n-jobs", type=int, default=-1, help="joblib workers (default -1)")
    fit.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fit.set_defaults(func=_cmd_fit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, TypeError, FileNotFoundError) as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message
        print(f"metalearn: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
