"""Command line: ``metalearn demo``, ``metalearn fit`` and ``metalearn tune``.

``metalearn demo`` is a tour on a simulated randomized retention experiment
whose true effects are known: it fits every learner and prints a comparison
table, then evaluates the learner with the lowest R-loss as a targeting rule
on held-out rows (Qini coefficient, AUUC, calibration slope), compares the
value of treating its top 30% with treating everyone or nobody, and lists
the features that drive the DR-learner's estimated effect (mean |SHAP|),
each estimate beside the simulator's truth.
``metalearn fit --data FILE --outcome COL --treatment COL`` fits a learner on
a CSV or Parquet file by cross-fitting, prints the average effect and a
summary of the per-row effects, and (with ``--out``) writes the out-of-fold
effect of every row.
``metalearn tune --data FILE --outcome COL --treatment COL --n-trials N``
tunes the learner's LightGBM models with Optuna on CATE losses (resumable
through ``--storage``), prints the best settings and (with ``--out``) writes
the out-of-fold effects of the best settings.
Bad input exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]

# The features the true effect of ``simulate_retention`` depends on (its docstring):
# tau = 4 - 3 engagement + 2 min(support_tickets, 5) - is_premium (8 + 0.1 (monthly_spend - 50)).
_RETENTION_DRIVERS = frozenset({"engagement", "support_tickets", "is_premium", "monthly_spend"})
_TOP_SHARE = 0.3  # the budget of the demo's targeting policy
_TOP_FEATURES = 5
_SHAP_ROWS = 1_000  # test rows explained (exact TreeSHAP costs about 0.3 ms a row and model)


def _lgbm(kind: str, n_estimators: int) -> Any:
    from lightgbm import LGBMClassifier, LGBMRegressor

    cls = LGBMRegressor if kind == "reg" else LGBMClassifier
    return cls(n_estimators=n_estimators, learning_rate=0.05, min_child_samples=40, verbose=-1)


@dataclass
class _DemoRun:
    """Everything the demo fitted and predicted, for the sections after the table."""

    rows: list[dict]
    learners: dict[str, Any]  # fitted, by name ("S", ..., "DR")
    tau_test: dict[str, np.ndarray]  # predicted effects on the test rows, by name
    test: Any  # the test Simulation (true effects and mean outcomes)
    X_test: Any  # its features, as a frame
    mu_test: np.ndarray  # cross-fitted outcome predictions of every arm on the test rows
    seed: int


def _fit_demo(n: int, n_test: int, seed: int, n_jobs: int) -> _DemoRun:
    import metalearn as ml
    from metalearn.scoring import fit_scoring_nuisance, r_loss

    train = ml.datasets.simulate_retention(n=n, seed=seed)
    test = ml.datasets.simulate_retention(n=n_test, seed=seed + 1)
    Xtr, Xte = train.to_frame(), test.to_frame()

    # Scoring nuisance on the test set: cross-fitted m(x) (for the R-loss) and mu_k(x)
    # (for the doubly robust evaluation), known propensity.
    scorer = ml.Nuisance(
        outcome_model=_lgbm("reg", 200), n_folds=5, random_state=seed, n_jobs=n_jobs
    )
    sn = fit_scoring_nuisance(Xte, test.y, test.w, nuisance=scorer, propensity=test.propensity)
    m_hat = np.asarray(sn.marginal[1][:, 0])

    from metalearn.learners.base import learner_registry

    learners = {}
    for name, cls in learner_registry().items():
        params = cls().get_params(deep=False)
        models = {"outcome_model": _lgbm("reg", 200)}
        if "effect_model" in params:
            models["effect_model"] = _lgbm("reg", 100)
        learners[name] = cls(**models)
    rows = []
    tau_test = {}
    true_ate = float(test.tau.mean())
    for name, learner in learners.items():
        learner.set_params(n_jobs=n_jobs, random_state=seed)
        t0 = time.perf_counter()
        learner.fit(Xtr, train.y, train.w, propensity=0.5)
        elapsed = time.perf_counter() - t0
        tau_hat = learner.predict(Xte)
        tau_test[name] = tau_hat
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
    return _DemoRun(rows, learners, tau_test, test, Xte, np.asarray(sn.mu), seed)


def run_demo(n: int = 10_000, n_test: int = 5_000, seed: int = 0, n_jobs: int = -1) -> list[dict]:
    """Fit S, T, X, R and DR learners on the retention simulator and score them.

    Returns one dict per learner with PEHE on a fresh test set, the ATE
    estimate and the truth, the R-loss on the test set (against scoring
    nuisances cross-fitted there, with the experiment's known propensity)
    and the fit time.
    """
    return _fit_demo(n, n_test, seed, n_jobs).rows


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


def _truth(test: Any) -> dict[str, Any]:
    """Inputs that make :mod:`metalearn.evaluation` return the truth on these rows.

    With the simulator's noise-free mean outcomes as ``mu`` and each row's
    mean outcome under its own arm as ``y``, the AIPW effect scores are the
    true potential outcomes exactly, so every estimator returns its
    estimand for the rows and the ranking at hand (the true Qini
    coefficient, calibration slope, policy value, ...).
    """
    return {
        "y": test.mu[np.arange(len(test.w)), test.w],
        "w": test.w,
        "mu": test.mu,
        "propensity": test.propensity,
    }


def _observed(run: _DemoRun) -> dict[str, Any]:
    """What an analyst has: outcomes, arms, the known propensity, cross-fitted outcome models.

    With ``mu`` the evaluation uses doubly robust (AIPW) scores: unbiased like
    the IPW scores of a randomized experiment, and far less noisy.
    """
    test = run.test
    return {"y": test.y, "w": test.w, "propensity": test.propensity, "mu": run.mu_test}


_SECTION = f"{'':<36}{'estimate':>10}{'95% CI':>22}{'truth':>10}"


def _line(label: str, est: float, truth: float, ci: tuple[float, float] | None = None) -> str:
    interval = f"{ci[0]:.3f} to {ci[1]:.3f}" if ci is not None else ""
    return f"{label:<36}{est:>10.3f}{interval:>22}{truth:>10.3f}"


def _print_targeting(run: _DemoRun, name: str, out: Any) -> None:
    from metalearn.evaluation import auuc, blp_test, qini_coefficient

    tau = run.tau_test[name]
    obs, truth = _observed(run), _truth(run.test)
    print(
        f"\nTargeting with the {name}-learner on the {len(tau):,} test rows (estimates from "
        "doubly robust scores with outcome models cross-fitted on the test rows and the known "
        "propensity; truth from the simulated effects):",
        file=out,
    )
    print(_SECTION, file=out)
    q, q_true = qini_coefficient(tau, **obs), qini_coefficient(tau, **truth)
    print(_line("Qini coefficient", q.estimate, q_true.estimate, (q.ci_low, q.ci_high)), file=out)
    a, a_true = auuc(tau, **obs), auuc(tau, **truth)
    print(_line("AUUC", a.estimate, a_true.estimate, (a.ci_low, a.ci_high)), file=out)
    print(_line("  AUUC of random targeting", a.random, a_true.random), file=out)
    b, b_true = blp_test(tau, **obs), blp_test(tau, **truth)
    print(
        _line("calibration slope (BLP)", b.estimate, b_true.estimate, (b.ci_low, b.ci_high)),
        file=out,
    )
    print(
        "(Qini coefficient: gain over random targeting, 0 = no better; calibration slope: "
        "1 = calibrated, 0 = no signal.)",
        file=out,
    )


def _print_policy(run: _DemoRun, name: str, out: Any) -> None:
    from scipy.stats import norm

    from metalearn.evaluation import budget_curve, policy_value

    tau = run.tau_test[name]
    obs, truth = _observed(run), _truth(run.test)
    z = float(norm.ppf(0.975))
    v = policy_value(tau, share=_TOP_SHARE, **obs)
    v_true = policy_value(tau, share=_TOP_SHARE, **truth)
    oracle = policy_value(run.test.tau, share=_TOP_SHARE, **truth)
    top = f"top {_TOP_SHARE:.0%}"
    print(
        f"\nPolicy value on the test rows (mean 90-day revenue per customer) of treating the "
        f"{top} by the {name}-learner's predicted effect ({v.share_treated:.0%} treated):",
        file=out,
    )
    print(_SECTION, file=out)
    print(_line("treat nobody", v.treat_none, v_true.treat_none), file=out)
    print(_line("treat everyone", v.treat_all, v_true.treat_all), file=out)
    print(_line(f"treat the {top}", v.estimate, v_true.estimate, (v.ci_low, v.ci_high)), file=out)
    for label, est, se, true in (
        (
            "  gain over treating nobody",
            v.gain_over_none,
            v.gain_over_none_std_error,
            v_true.gain_over_none,
        ),
        (
            "  gain over treating everyone",
            v.gain_over_all,
            v.gain_over_all_std_error,
            v_true.gain_over_all,
        ),
    ):
        print(_line(label, est, true, (est - z * se, est + z * se)), file=out)
    print(
        f"{f'treat the true {top} (oracle)':<36}{'':>10}{'':>22}{oracle.estimate:>10.3f}",
        file=out,
    )
    shares = np.linspace(0.0, 1.0, 11)
    est_curve = np.asarray(budget_curve(tau, shares=shares, **obs)["value"], dtype=float)
    true_curve = np.asarray(budget_curve(tau, shares=shares, **truth)["value"], dtype=float)
    best, best_true = int(np.argmax(est_curve)), int(np.argmax(true_curve))
    print(
        f"Best share to treat by this ranking (budget curve, steps of 10%): "
        f"{shares[best]:.0%} by the estimates (value {est_curve[best]:.3f}), "
        f"{shares[best_true]:.0%} in truth (value {true_curve[best_true]:.3f}).",
        file=out,
    )


def _print_drivers(run: _DemoRun, out: Any) -> None:
    from metalearn.explain import feature_importance

    explainer = run.learners["DR"].explainer(random_state=run.seed)
    rows = run.X_test.head(_SHAP_ROWS)  # simulated rows are i.i.d.: the first are a sample
    table = feature_importance(explainer(rows))
    info = next(iter(explainer.info_.values()))
    how = "exact" if info.exact else "estimated"
    print(
        f"\nWhat drives the DR-learner's estimated effect: top {_TOP_FEATURES} features by mean "
        f"|SHAP| on {len(rows):,} test rows ({how}, {info.algorithm}):",
        file=out,
    )
    print(f"{'feature':<20}{'mean |SHAP|':>12}{'mean SHAP':>11}  in the true effect?", file=out)
    features = table["feature"].to_list()[:_TOP_FEATURES]
    mean_abs = table["mean_abs_shap"].to_list()[:_TOP_FEATURES]
    mean = table["mean_shap"].to_list()[:_TOP_FEATURES]
    for f, ma, m in zip(features, mean_abs, mean, strict=True):
        truth = "yes" if f in _RETENTION_DRIVERS else "no"
        print(f"{f:<20}{ma:>12.3f}{m:>11.3f}  {truth}", file=out)


def _cmd_demo(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    print(
        f"Simulated retention experiment: {args.n} training rows, {args.n_test} test rows, "
        "true effects known.\nEvery learner uses LightGBM base models; PEHE is the RMSE of "
        "the estimated CATE on the test rows (lower is better); R-loss is computed on the test "
        "rows against cross-fitted scoring nuisances (lower is better, no truth needed).\n"
    )
    run = _fit_demo(n=args.n, n_test=args.n_test, seed=args.seed, n_jobs=args.n_jobs)
    rows = run.rows
    _print_table(rows, sys.stdout)
    best = min(rows, key=lambda r: r["r_loss"])
    print(f"\nLowest R-loss: {best['learner']}-learner (PEHE {best['pehe']:.3f}).")
    _print_targeting(run, best["learner"], sys.stdout)
    _print_policy(run, best["learner"], sys.stdout)
    _print_drivers(run, sys.stdout)
    print(f"\n(demo finished in {time.perf_counter() - t_start:.1f} s)")
    return 0


def _learner_names() -> list[str]:
    from metalearn.learners.base import learner_registry

    return list(learner_registry())


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


def _prepare_data(args: argparse.Namespace) -> tuple[Any, Any, Any, Any, list[str], Any]:
    """Read the file and check the columns: (frame, X, y, w, features, groups)."""
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
    if args.groups is not None:
        _check_columns(df, [args.groups], "--groups", path)
    if args.outcome == args.treatment:
        raise ValueError("--outcome and --treatment name the same column; they must differ.")
    reserved = {args.outcome, args.treatment} | ({args.groups} - {None})
    if args.features:
        _check_columns(df, args.features, "--features", path)
        clash = [c for c in args.features if c in reserved]
        if clash:
            raise ValueError(
                f"--features: {', '.join(map(repr, clash))} is the outcome, the treatment or "
                "the groups column; leave it out of the features."
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
    groups = None
    if args.groups is not None:
        groups = df.get_column(args.groups)
        if groups.null_count():
            raise ValueError(
                f"--groups: column {args.groups!r} has {groups.null_count()} missing values; "
                "give every row a group."
            )
    return df, df.select(features), y.to_numpy(), w, features, groups


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


def _build_learner(args: argparse.Namespace, w: Any) -> Any:
    """The ``--learner`` with default LightGBM base models and the shared settings."""

    control = None if args.control is None else _parse_control(args.control, w, args.treatment)
    from metalearn.learners.base import learner_registry

    cls = learner_registry()[args.learner]
    params = cls().get_params(deep=False)
    models = {
        name: _default_model("clf" if name == "propensity_model" else "reg")
        for name in ("outcome_model", "propensity_model", "effect_model")
        if name in params
    }
    return cls(
        **models,
        control=control,
        n_folds=args.n_folds,
        n_jobs=args.n_jobs,
        random_state=args.seed,
    )


def _out_of_fold(
    learner: Any, X: Any, y: Any, w: Any, progress: bool, groups: Any = None
) -> tuple[np.ndarray, float]:
    """``learner.fit_predict`` as (n_rows, n_effects) and its time in seconds."""
    from metalearn._core.progress import progress as report

    t0 = time.perf_counter()
    with report(progress):
        tau = np.asarray(learner.fit_predict(X, y, w, groups=groups))
    return tau.reshape(len(y), -1), time.perf_counter() - t0


def _resolved_control(learner: Any, w: Any) -> Any:
    """The control variant ``learner`` will use on ``w`` (its ``control_`` after fitting)."""
    from metalearn._core.validation import control_index, encode_treatment

    variants = encode_treatment(w, len(w)).variants
    return variants[control_index(variants, learner.control)]


def _print_data(
    args: argparse.Namespace, y: Any, w: Any, features: list[str], control: Any
) -> None:
    counts = w.value_counts().sort(w.name)
    arms = "; ".join(
        f"{v}{' (control)' if v == control else ''}: {n:,} rows"
        for v, n in zip(counts[w.name].to_list(), counts["count"].to_list(), strict=True)
    )
    print(f"data: {args.data}, {len(y):,} rows, {len(features)} features")
    print(f"treatment {args.treatment!r}: {arms}")
    print(f"outcome {args.outcome!r}: mean {float(np.mean(y)):.4g}")


def _print_effects(
    learner: Any, tau: np.ndarray, X: Any, y: Any, w: Any, groups: Any = None
) -> None:
    """The average effect (AIPW from the learner's cross-fitted nuisances; plug-in for the
    S-learner) and a summary of the out-of-fold effects of each variant."""
    nuis = learner._uses_nuisance
    effects = learner.ate(X, y, w, groups=groups) if nuis else learner.ate()
    effects = list(effects) if isinstance(effects, tuple) else [effects]
    for j, effect in enumerate(effects):
        col = tau[:, j]
        p10, p50, p90 = np.quantile(col, [0.1, 0.5, 0.9])
        label = f"{effect.variant} vs {effect.control}"
        print(f"ATE {label}: {_ci_text(effect)}")
        print(
            f"CATE {label}: positive for {float(np.mean(col > 0)):.1%} of rows; "
            f"10/50/90% quantiles {p10:.4g}, {p50:.4g}, {p90:.4g}"
        )


def _write_effects(args: argparse.Namespace, df: Any, tau: np.ndarray, names: list[str]) -> None:
    """Write the id columns (or a row number) and one column per effect to ``--out``."""
    import polars as pl

    ids = list(args.id_columns or [])
    keep = df.select(ids) if ids else pl.DataFrame({"row": np.arange(tau.shape[0])})
    result = keep.with_columns(pl.Series(name, tau[:, j]) for j, name in enumerate(names))
    out = Path(args.out)
    if _file_kind(out, "--out") == "csv":
        result.write_csv(out)
    else:
        result.write_parquet(out)
    print(f"out-of-fold effects written to {args.out} (columns: {', '.join(result.columns)})")


def _cmd_fit(args: argparse.Namespace) -> int:
    df, X, y, w, features, groups = _prepare_data(args)
    learner = _build_learner(args, w)
    tau, elapsed = _out_of_fold(learner, X, y, w, _progress_on(args), groups)
    print(
        f"{args.learner}-learner, LightGBM base models, {args.n_folds}-fold cross-fitting "
        f"({elapsed:.1f} s)"
    )
    _print_data(args, y, w, features, learner.control_)
    _print_effects(learner, tau, X, y, w, groups)
    if args.out is None:
        print("(pass --out effects.parquet to save the out-of-fold effects of every row)")
        return 0
    _write_effects(args, df, tau, learner._effect_names())
    return 0


# --------------------------------------------------------------------- tune
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{option}: must be a positive number of trials; got {value}.")


def _open_storage(spec: str | None) -> Any:
    """The Optuna storage of ``--storage``: in memory, a database URL or a journal file.

    The storage is opened and read here, so that a bad URL or path fails
    before any fitting.
    """
    if spec is None:
        return None
    import optuna

    if "://" not in spec:
        path = Path(spec)
        if path.is_dir():
            raise ValueError(f"--storage: {spec!r} is a directory; give a journal file path.")
        if not path.parent.is_dir():
            raise FileNotFoundError(
                f"--storage: directory {str(path.parent)!r} of the journal file does not exist."
            )
        if path.is_file():
            with path.open("rb") as fh:
                if fh.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC:
                    raise ValueError(
                        f"--storage: {spec!r} is an SQLite database, not a journal file; pass "
                        f"it as a URL: sqlite:///{path}"
                    )
    storage: Any
    try:
        if "://" in spec:
            storage = optuna.storages.RDBStorage(spec)
        else:
            from optuna.storages.journal import JournalFileBackend

            storage = optuna.storages.JournalStorage(JournalFileBackend(spec))
        optuna.study.get_all_study_names(storage)
    except Exception as exc:  # any driver's error: a bad URL, a missing driver, no access
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise ValueError(f"--storage: could not open {spec!r}: {first}") from exc
    return storage


def _finished(study: Any) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def _stored_trials(storage: Any, base: str) -> dict[str, int]:
    """Finished trials already in the storage, by study name (the studies of a search)."""
    if storage is None:
        return {}
    import optuna

    from metalearn.tuning.optuna import _STAGES

    present = set(optuna.study.get_all_study_names(storage))
    out = {}
    for name in (base, *(f"{base}:{stage}" for stage in _STAGES)):
        if name in present:
            out[name] = _finished(optuna.load_study(study_name=name, storage=storage))
    return out


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial INFO log off while the search runs (the summary says it all)."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _value_text(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return str(value)


def _cmd_tune(args: argparse.Namespace) -> int:
    from sklearn.base import clone

    import metalearn as ml

    _check_positive(args.n_trials, "--n-trials")
    _check_positive(args.nuisance_trials, "--nuisance-trials")
    df, X, y, w, features, groups = _prepare_data(args)
    learner = _build_learner(args, w)
    storage = _open_storage(args.storage)
    base = args.study_name or "metalearn"
    before = _stored_trials(storage, base)
    progress = _progress_on(args)
    search = ml.MetaLearnerOptunaSearch(
        learner,
        "lightgbm",
        n_trials=args.n_trials,
        nuisance_trials=args.nuisance_trials,
        scoring=args.scoring,
        storage=storage,
        study_name=base,
        load_if_exists=True,
        refit=False,  # `--out` refits the best settings by cross-fitting instead
        random_state=args.seed,
        show_progress_bar=progress,
    )
    t0 = time.perf_counter()
    try:
        with _quiet_optuna():
            search.fit(X, y, w, groups=groups)
    except KeyboardInterrupt:
        kept = "are lost"
        if storage is not None:
            kept = "are kept in --storage: run the same command to resume"
        print(f"metalearn: interrupted; the finished trials {kept}.", file=sys.stderr)
        return 130
    elapsed = time.perf_counter() - t0

    n_studies = len(search.studies_)
    print(
        f"{args.learner}-learner, LightGBM base models tuned with Optuna on the {args.scoring} "
        f"({_plural(n_studies, 'study', 'studies')}, {elapsed:.1f} s)"
    )
    _print_data(args, y, w, features, _resolved_control(learner, w))
    _print_search(args, search, before)
    if args.out is None:
        print(
            "(pass --out effects.parquet to refit the best settings by cross-fitting and save "
            "the out-of-fold effects of every row)"
        )
        return 0
    # Honest per-row effects come from a cross-fitted fit of the best settings, as in
    # `metalearn fit` (a refit on all rows, the search's `best_estimator_`, has none).
    oof = clone(learner).set_params(**search.best_params_)
    tau, seconds = _out_of_fold(oof, X, y, w, progress, groups)
    print(f"best settings refitted by {args.n_folds}-fold cross-fitting ({seconds:.1f} s):")
    _print_effects(oof, tau, X, y, w, groups)
    _write_effects(args, df, tau, oof._effect_names())
    return 0


def _plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


def _print_search(args: argparse.Namespace, search: Any, before: dict[str, int]) -> None:
    """Trials per study (loaded from the storage and new), the best score and settings."""
    import optuna

    loaded = sum(before.get(s.study_name, 0) for s in search.studies_.values())
    where = "in memory (pass --storage to keep the trials and resume)"
    if args.storage is not None:
        where = f"{args.storage}; {_plural(loaded, 'finished trial')} loaded from it"
    print(f"storage: {where}")
    for stage, study in search.studies_.items():
        done = _finished(study)
        old = before.get(study.study_name, 0)
        pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
        if stage == "final":
            best, score = search.best_trial_, args.scoring
        else:
            best = study.best_trial
            score = next(iter(best.user_attrs.get("scores", {})), "loss")
        extra = f", {len(pruned)} pruned" if pruned else ""
        print(
            f"study {study.study_name!r}: {_plural(done, 'finished trial')} ({old} loaded, "
            f"{max(done - old, 0)} new{extra}); best {score} {best.values[0]:.4g} "
            f"(trial {best.number})"
        )
    scores = search.best_trial_.user_attrs.get("scores", {})
    baseline = scores.get(f"{args.scoring}_baseline")
    versus = "" if baseline is None else f" (the best constant effect: {baseline:.4g})"
    print(f"best {args.scoring}: {search.best_score_:.4g}{versus}")
    print("best parameters:")
    width = max((len(k) for k in search.best_params_), default=0)
    for key in sorted(search.best_params_):
        print(f"  {key:<{width}}  {_value_text(search.best_params_[key])}")


def _add_data_arguments(parser: argparse.ArgumentParser, out_help: str) -> None:
    """The options ``fit`` and ``tune`` share: the file, its columns, the learner."""
    parser.add_argument("--data", required=True, help="input file, .csv or .parquet")
    parser.add_argument("--outcome", required=True, help="outcome column (numeric)")
    parser.add_argument("--treatment", required=True, help="treatment variant column")
    parser.add_argument(
        "--features",
        nargs="+",
        metavar="COL",
        help="feature columns (default: every column but outcome, treatment and id columns)",
    )
    parser.add_argument(
        "--learner", choices=_learner_names(), default="DR", help="meta-learner (default DR)"
    )
    parser.add_argument(
        "--control",
        metavar="VALUE",
        help="control value of the treatment column (default 0 if present, else the smallest)",
    )
    parser.add_argument(
        "--id-columns",
        nargs="+",
        metavar="COL",
        help="columns copied to the output to identify rows (default: a row number)",
    )
    parser.add_argument(
        "--groups",
        metavar="COL",
        help="cluster column (a school, a customer): each group stays in one cross-fitting "
        "fold and the AIPW standard error is clustered",
    )
    parser.add_argument("--out", metavar="FILE", help=out_help)
    parser.add_argument("--n-folds", type=int, default=5, help="cross-fitting folds (default 5)")
    parser.add_argument("--n-jobs", type=int, default=-1, help="joblib workers (default -1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr for cross-fitting and trials "
        "(default: when stderr is a terminal)",
    )


def _progress_on(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() if args.progress is None else bool(args.progress)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metalearn", description="Meta-learners for heterogeneous treatment effects."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="a tour on a simulated experiment: compare the learners, evaluate, explain",
        description=(
            "Fit every learner on a simulated randomized retention experiment with known "
            "effects and compare them; then evaluate the best one as a targeting rule on "
            "held-out rows (Qini coefficient, AUUC, calibration slope), value the policy of "
            "treating its top 30% against treating everyone or nobody, and list the features "
            "that drive the DR-learner's estimated effect (mean |SHAP|), each beside the truth."
        ),
    )
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
    _add_data_arguments(fit, "write the per-row effects here (.parquet or .csv)")
    fit.set_defaults(func=_cmd_fit)

    tune = sub.add_parser(
        "tune",
        help="tune a learner's LightGBM models with Optuna on CATE losses (resumable)",
        description=(
            "Tune the LightGBM base models of a meta-learner with Optuna "
            "(metalearn.MetaLearnerOptunaSearch with the 'lightgbm' search space): the "
            "nuisance models on their own cross-validated losses, then the final stage on the "
            "R- or DR-loss. With --storage the trials are kept, and running the same command "
            "again resumes: finished trials are loaded and only the missing ones run. Prints "
            "the best settings and, with --out, writes the out-of-fold effects of the best "
            "settings refitted by cross-fitting."
        ),
    )
    _add_data_arguments(
        tune, "write the out-of-fold effects of the best settings here (.parquet or .csv)"
    )
    tune.add_argument(
        "--n-trials",
        type=int,
        required=True,
        metavar="N",
        help="finished trials of each study, those loaded from --storage included",
    )
    tune.add_argument(
        "--nuisance-trials",
        type=int,
        metavar="N",
        help="finished trials of each nuisance-model study (default: --n-trials)",
    )
    tune.add_argument(
        "--storage",
        metavar="URL_OR_PATH",
        help=(
            "keep the trials here to resume or share them: a database URL "
            "(sqlite:///tune.db, postgresql://...) or a journal file path (tune.log); "
            "default: in memory"
        ),
    )
    tune.add_argument(
        "--study-name",
        metavar="NAME",
        help="study name in the storage (default metalearn; stages add :outcome, "
        ":propensity, :final)",
    )
    tune.add_argument(
        "--scoring",
        choices=("r_loss", "dr_loss"),
        default="r_loss",
        help="loss of the final stage (default r_loss)",
    )
    tune.set_defaults(func=_cmd_tune)
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
