"""Command line: ``metalearn demo``, ``fit``, ``predict`` and ``tune``.

``metalearn demo`` is a tour on a simulated randomized retention experiment
whose true effects are known: it fits every learner and prints a comparison
table, then evaluates the learner with the lowest R-loss as a targeting rule
on held-out rows (Qini coefficient, AUUC, calibration slope), compares the
value of treating its top 30% with treating everyone or nobody, and lists
the features that drive the DR-learner's estimated effect (mean |SHAP|),
each estimate beside the simulator's truth.
``metalearn fit --data FILE --outcome COL --treatment COL`` fits a learner on
a CSV or Parquet file by cross-fitting, prints the average effect and a
summary of the per-row effects, (with ``--out``) writes the out-of-fold
effect of every row and (with ``--save``) saves the fitted learner with the
feature schema it needs.
``metalearn predict --model FILE --data FILE --out FILE`` loads a saved
learner, checks the new file's feature columns against the saved schema and
writes the effect of every new row.
``metalearn tune --data FILE --outcome COL --treatment COL --n-trials N``
tunes the learner's LightGBM models with Optuna on CATE losses (resumable
through ``--storage``), prints the best settings, writes them as JSON
(``--best-params``) and (with ``--out``) writes the out-of-fold effects of
the best settings. When stderr is not a terminal it gets one line per
finished trial.

``--propensity`` gives the known propensity of a randomized design (a number
for two variants, or column(s)); ``--features`` lists the features (by
default every other column, with a warning for columns that look like
identifiers). A numeric treatment with many distinct values is refused as
continuous.

Outputs are safe to point at real files: an existing ``--out``, ``--save``
or ``--best-params`` file is only replaced with ``--force``; the input files
are never overwritten (not even with ``--force``); a symbolic link at an
output path is refused; files are written under a temporary name and moved
into place; CSV cells that a spreadsheet would read as a formula (text
starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) get a
leading ``'``.
Bad input exits with status 2 and one line on stderr (warnings before it
start with ``metalearn: warning:``); warnings, the library's too, are one
line each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
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


def _column_list(values: Sequence[str] | None, columns: Sequence[str]) -> list[str]:
    """Column names given as separate words and/or comma-separated (``a,b c``).

    A word that is itself a column name is kept whole (a name with a comma).
    """
    out: list[str] = []
    for value in values or []:
        if value in columns:
            out.append(value)
        else:
            out.extend(part.strip() for part in value.split(",") if part.strip())
    return list(dict.fromkeys(out))


def _warn(message: str) -> None:
    print(f"metalearn: warning: {message}", file=sys.stderr)


# ------------------------------------------------------------------ outputs
def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (after symbolic links, or one inode: a hard link)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def _check_output(
    value: str | None, option: str, inputs: dict[str, Path], force: bool
) -> Path | None:
    """Refuse an output path that would replace an input, a link or (without --force) a file."""
    if value is None:
        return None
    path = Path(value)
    if path.is_symlink():
        raise ValueError(
            f"{option}: {value!r} is a symbolic link; metalearn does not write through links. "
            "Give the path of a regular file."
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{option}: directory {str(path.parent)!r} does not exist.")
    if path.is_dir():
        raise ValueError(f"{option}: {value!r} is a directory; give a file path.")
    for source, src in inputs.items():
        if _same_file(path, src):
            raise ValueError(
                f"{option}: {value!r} is the {source} file; metalearn never overwrites its "
                "input (not even with --force). Choose another file."
            )
    if path.exists() and not force:
        raise ValueError(f"{option}: {value!r} exists; pass --force to replace it.")
    return path


def _check_outputs(args: argparse.Namespace, inputs: dict[str, Path]) -> dict[str, Path]:
    """Check every output path of the command before any work: {option: path}."""
    force = bool(getattr(args, "force", False))
    wanted = {"--out": getattr(args, "out", None)}
    if getattr(args, "save", None) is not None:
        wanted["--save"] = args.save
    if hasattr(args, "best_params"):
        wanted["--best-params"] = _best_params_path(args)
    if wanted["--out"] is not None:
        _file_kind(Path(wanted["--out"]), "--out")
    outputs: dict[str, Path] = {}
    for option, value in wanted.items():
        path = _check_output(value, option, inputs, force)
        if path is None:
            continue
        for other, seen in outputs.items():
            if _same_file(path, seen):
                raise ValueError(f"{option} and {other} name the same file; give two files.")
        outputs[option] = path
    return outputs


def _write_new(path: Path, option: str, force: bool, write: Callable[[Path], object]) -> None:
    """``write`` a temporary file beside ``path``, then move it into place.

    Without ``force`` the move is a hard link, which fails if ``path`` appeared
    meanwhile: an existing file is never replaced. A symbolic link at ``path``
    is replaced itself (never followed); the checks refuse one beforehand.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        if force:
            os.replace(tmp, path)
            return
        exists = ValueError(f"{option}: {str(path)!r} exists; pass --force to replace it.")
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise exists from None
        except OSError:  # a file system without hard links
            if path.exists() or path.is_symlink():
                raise exists from None
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape_formulas(frame: Any) -> Any:
    """Text cells (and column names) a spreadsheet would run as formulas, with a leading ``'``.

    OWASP's advice against CSV injection; numeric columns are left as they are.
    """
    import polars as pl

    exprs = []
    for name, dtype in frame.schema.items():
        if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
            col = pl.col(name).cast(pl.String)
            risky = pl.any_horizontal([col.str.starts_with(c) for c in _FORMULA_START])
            exprs.append(pl.when(risky).then(pl.lit("'") + col).otherwise(col).alias(name))
    if exprs:
        frame = frame.with_columns(exprs)
    renamed = {c: "'" + c for c in frame.columns if c.startswith(_FORMULA_START)}
    return frame.rename(renamed) if renamed else frame


def _write_table(frame: Any, path: Path, force: bool) -> None:
    """A frame to ``--out`` as CSV (formula-like text escaped) or Parquet."""
    if _file_kind(path, "--out") == "csv":
        escaped = _escape_formulas(frame)
        _write_new(path, "--out", force, escaped.write_csv)
    else:
        _write_new(path, "--out", force, frame.write_parquet)


# --------------------------------------------------------------------- data
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


# A treatment column is read as continuous (not a few variants) with more distinct
# non-integer values than this, or with more distinct values than
# _CONTINUOUS_SHARE of the rows and than _MAX_FLOAT_LEVELS (float) / _MAX_LEVELS (integer).
_MAX_LEVELS = 20
_MAX_FLOAT_LEVELS = 10
_CONTINUOUS_SHARE = 0.1


def _check_discrete(w: Any, treatment: str) -> None:
    """Refuse a numeric treatment that looks continuous, with a message that says what to do."""
    if not w.dtype.is_numeric():
        return
    levels = w.unique()
    distinct = levels.len()
    fractional = 0
    if w.dtype.is_float():
        fractional = levels.filter(levels != levels.floor()).len()
    limit = _MAX_FLOAT_LEVELS if w.dtype.is_float() else _MAX_LEVELS
    if fractional > _MAX_LEVELS or (distinct > limit and distinct > _CONTINUOUS_SHARE * w.len()):
        raise ValueError(
            f"--treatment: metalearn estimates effects of discrete treatment variants; column "
            f"{treatment!r} has {distinct:,} distinct values from {levels.min():.4g} to "
            f"{levels.max():.4g} (looks continuous): bin it into a few levels (e.g. with "
            "polars' Expr.cut or pandas.cut) and pass the binned column as --treatment."
        )


_ID_NAME = re.compile(r"(^id$|_id$|^id_|uuid|key)", re.IGNORECASE)
_ID_MIN_ROWS = 20  # fewer rows: distinct values prove nothing


def _id_like(df: Any, features: Sequence[str]) -> list[str]:
    """Feature columns that look like row identifiers: by name, or all values distinct."""
    import polars as pl

    found = []
    for name in features:
        s = df.get_column(name)
        text = s.dtype in (pl.String, pl.Categorical) or isinstance(s.dtype, pl.Enum)
        if _ID_NAME.search(name):
            found.append(f"{name!r} (its name)")
        elif (
            (s.dtype.is_integer() or text)
            and s.len() >= _ID_MIN_ROWS
            and s.null_count() == 0
            and s.n_unique() == s.len()
        ):
            kind = "integers" if s.dtype.is_integer() else "strings"
            found.append(f"{name!r} (all {s.len():,} values are distinct {kind})")
    return found


@dataclass
class _Data:
    """The checked input of ``fit`` and ``tune``."""

    df: Any  # the whole file
    X: Any  # the feature columns
    y: np.ndarray
    w: Any  # the treatment column (a Series)
    features: list[str]
    groups: Any
    control: Any  # --control parsed (None: the learner's default)
    control_value: Any  # the control variant the learner will use
    ids: list[str]
    propensity: np.ndarray | None  # (n, K) known propensities, or None
    propensity_text: str | None  # how --propensity was read, for the summary
    warnings: list[str]


def _propensity_columns(spec: str | None, columns: Sequence[str]) -> list[str]:
    """The columns ``--propensity`` names ([] for a number or no option)."""
    if spec is None:
        return []
    if spec in columns:
        return [spec]
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if len(parts) == 1:
        try:
            float(parts[0])
        except ValueError:
            pass
        else:
            return []
    return parts


def _parse_propensity(
    spec: str, cols: list[str], df: Any, w: Any, control: Any, path: Path
) -> tuple[np.ndarray, str]:
    """``--propensity`` as an (n, K) matrix over the sorted variants, and a description."""
    import polars as pl

    from metalearn._core.validation import control_index, encode_treatment

    variants = encode_treatment(w, len(w)).variants
    k, n = len(variants), len(w)
    c = control_index(variants, control)
    labels = ", ".join(map(str, variants.tolist()))
    if not cols:
        p = float(spec)
        if not 0 < p < 1:
            raise ValueError(
                f"--propensity: {spec!r} must be a probability strictly between 0 and 1 (the "
                "known share of treated rows)."
            )
        if k != 2:
            raise ValueError(
                f"--propensity: a number is P(treated) of a two-variant experiment, but the "
                f"treatment has {k} variants ({labels}); give {k} comma-separated columns, one "
                "probability per variant in this order."
            )
        probs = np.where(np.arange(2) == c, 1 - p, p)
        treated = variants[1 - c]
        return np.tile(probs, (n, 1)), f"known, P({treated}) = {p:g} for every row"
    _check_columns(df, cols, "--propensity", path)
    if not (len(cols) == k or (k == 2 and len(cols) == 1)):
        raise ValueError(
            f"--propensity: the treatment has {k} variants ({labels}); give "
            + ("one column holding P(treated) or " if k == 2 else "")
            + f"{k} comma-separated columns, one probability per variant in this order; got "
            f"{len(cols)} column(s)."
        )
    values = []
    for name in cols:
        s = df.get_column(name)
        if not s.dtype.is_numeric():
            raise ValueError(f"--propensity: column {name!r} must be numeric; got {s.dtype}.")
        v = s.cast(pl.Float64).to_numpy()
        bad = int(np.sum(~np.isfinite(v) | (v <= 0) | (v >= 1)))
        if bad:
            raise ValueError(
                f"--propensity: column {name!r} has {bad:,} values that are missing or not "
                "strictly between 0 and 1; propensities must be."
            )
        values.append(v)
    if len(cols) == 1:
        p = values[0]
        treated = variants[1 - c]
        matrix = np.where(np.arange(2)[None, :] == c, 1 - p[:, None], p[:, None])
        return matrix, f"known, P({treated}) from column {cols[0]!r}"
    matrix = np.column_stack(values)
    off = np.abs(matrix.sum(axis=1) - 1) > 1e-6
    if off.any():
        raise ValueError(
            f"--propensity: the columns {', '.join(map(repr, cols))} must sum to 1 in every "
            f"row; {int(off.sum()):,} rows do not (first: row {int(np.argmax(off))})."
        )
    return matrix, f"known, columns {', '.join(map(repr, cols))} for {labels}"


def _input_paths(args: argparse.Namespace) -> dict[str, Path]:
    """The files a command reads, which its outputs must never replace."""
    inputs = {"--data": Path(args.data)}
    if getattr(args, "model", None) is not None:
        inputs["--model"] = Path(args.model)
    spec = getattr(args, "storage", None)
    if spec is not None:
        if "://" not in spec:
            inputs["--storage"] = Path(spec)
        elif spec.startswith("sqlite:///"):
            inputs["--storage"] = Path(spec[len("sqlite:///") :])
    return inputs


def _prepare_data(args: argparse.Namespace) -> _Data:
    """Check the output paths, read the file and check the columns and the treatment."""
    import polars as pl

    path = Path(args.data)
    _check_outputs(args, _input_paths(args))
    df = _read_data(path)
    ids = _column_list(args.id_columns, df.columns)
    _check_columns(df, [args.outcome], "--outcome", path)
    _check_columns(df, [args.treatment], "--treatment", path)
    _check_columns(df, ids, "--id-columns", path)
    if args.groups is not None:
        _check_columns(df, [args.groups], "--groups", path)
    if args.outcome == args.treatment:
        raise ValueError("--outcome and --treatment name the same column; they must differ.")
    prop_cols = _propensity_columns(args.propensity, df.columns)
    reserved = {args.outcome, args.treatment} | ({args.groups} - {None})
    warnings = []
    if args.features:
        features = _column_list(args.features, df.columns)
        _check_columns(df, features, "--features", path)
        clash = [c for c in features if c in reserved]
        if clash:
            raise ValueError(
                f"--features: {', '.join(map(repr, clash))} is the outcome, the treatment or "
                "the groups column; leave it out of the features."
            )
        clash = [c for c in features if c in prop_cols]
        if clash:
            raise ValueError(
                f"--features: {', '.join(map(repr, clash))} is a --propensity column; leave it "
                "out of the features."
            )
    else:
        skip = reserved | set(ids) | set(prop_cols)
        features = [c for c in df.columns if c not in skip]
        suspects = _id_like(df, features)
        if suspects:
            warnings.append(
                f"column(s) {', '.join(suspects)} look like row identifiers but are used as "
                "features; pass --id-columns to copy them to the output instead, or --features "
                "to list the features."
            )
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
    _check_discrete(w, args.treatment)
    if w.n_unique() < 2:
        raise ValueError(
            f"--treatment: column {args.treatment!r} has a single value "
            f"({w.head(1).to_list()[0]!r}); estimating an effect needs at least two "
            "(a control and a treatment)."
        )
    control = None if args.control is None else _parse_control(args.control, w, args.treatment)
    propensity, propensity_text = None, None
    if args.propensity is not None:
        propensity, propensity_text = _parse_propensity(
            args.propensity, prop_cols, df, w, control, path
        )
    groups = None
    if args.groups is not None:
        groups = df.get_column(args.groups)
        if groups.null_count():
            raise ValueError(
                f"--groups: column {args.groups!r} has {groups.null_count()} missing values; "
                "give every row a group."
            )
    return _Data(
        df=df,
        X=df.select(features),
        y=y.to_numpy(),
        w=w,
        features=features,
        groups=groups,
        control=control,
        control_value=_resolved_control(control, w),
        ids=ids,
        propensity=propensity,
        propensity_text=propensity_text,
        warnings=warnings,
    )


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


def _build_learner(args: argparse.Namespace, data: _Data) -> Any:
    """The ``--learner`` with default LightGBM base models and the shared settings.

    With a known ``--propensity`` no propensity model is fitted (nor tuned).
    """
    from metalearn.learners.base import learner_registry

    cls = learner_registry()[args.learner]
    params = cls().get_params(deep=False)
    names = ["outcome_model", "effect_model"]
    if data.propensity is None:
        names.insert(1, "propensity_model")
    models = {
        name: _default_model("clf" if name == "propensity_model" else "reg")
        for name in names
        if name in params
    }
    return cls(
        **models,
        control=data.control,
        n_folds=args.n_folds,
        n_jobs=args.n_jobs,
        random_state=args.seed,
    )


def _out_of_fold(learner: Any, data: _Data, progress: bool) -> tuple[np.ndarray, float]:
    """``learner.fit_predict`` as (n_rows, n_effects) and its time in seconds."""
    from metalearn._core.progress import progress as report

    t0 = time.perf_counter()
    with report(progress):
        tau = np.asarray(
            learner.fit_predict(
                data.X, data.y, data.w, propensity=data.propensity, groups=data.groups
            )
        )
    return tau.reshape(len(data.y), -1), time.perf_counter() - t0


def _resolved_control(control: Any, w: Any) -> Any:
    """The control variant a learner with ``control`` will use on ``w``."""
    from metalearn._core.validation import control_index, encode_treatment

    variants = encode_treatment(w, len(w)).variants
    return variants[control_index(variants, control)]


def _print_data(args: argparse.Namespace, data: _Data) -> None:
    w, control = data.w, data.control_value
    counts = w.value_counts().sort(w.name)
    arms = "; ".join(
        f"{v}{' (control)' if v == control else ''}: {n:,} rows"
        for v, n in zip(counts[w.name].to_list(), counts["count"].to_list(), strict=True)
    )
    print(f"data: {args.data}, {len(data.y):,} rows, {len(data.features)} features")
    print(f"treatment {args.treatment!r}: {arms}")
    print(f"outcome {args.outcome!r}: mean {float(np.mean(data.y)):.4g}")
    if data.propensity_text is not None:
        print(f"propensity: {data.propensity_text} (no propensity model is fitted)")


def _print_quantiles(label: str, col: np.ndarray) -> None:
    p10, p50, p90 = np.quantile(col, [0.1, 0.5, 0.9])
    print(
        f"CATE {label}: positive for {float(np.mean(col > 0)):.1%} of rows; "
        f"10/50/90% quantiles {p10:.4g}, {p50:.4g}, {p90:.4g}"
    )


def _print_effects(learner: Any, tau: np.ndarray, data: _Data) -> None:
    """The average effect (AIPW from the learner's cross-fitted nuisances; plug-in for the
    S-learner) and a summary of the out-of-fold effects of each variant."""
    if learner._uses_nuisance:
        effects = learner.ate(
            data.X, data.y, data.w, propensity=data.propensity, groups=data.groups
        )
    else:
        effects = learner.ate()
    effects = list(effects) if isinstance(effects, tuple) else [effects]
    for j, effect in enumerate(effects):
        label = f"{effect.variant} vs {effect.control}"
        print(f"ATE {label}: {_ci_text(effect)}")
        _print_quantiles(label, tau[:, j])


def _effects_frame(df: Any, ids: list[str], tau: np.ndarray, names: list[str]) -> Any:
    """The id columns (or a row number) first, then one column per effect."""
    import polars as pl

    keep = df.select(ids) if ids else pl.DataFrame({"row": np.arange(tau.shape[0])})
    return keep.with_columns(pl.Series(name, tau[:, j]) for j, name in enumerate(names))


def _write_effects(
    args: argparse.Namespace, data: _Data, tau: np.ndarray, names: list[str]
) -> None:
    """Write the id columns (or a row number) and one column per effect to ``--out``."""
    result = _effects_frame(data.df, data.ids, tau, names)
    _write_table(result, Path(args.out), bool(args.force))
    print(f"out-of-fold effects written to {args.out} (columns: {', '.join(result.columns)})")


# ------------------------------------------------------------- saved models
_MODEL_FORMAT = "metalearn.cli model"
_MODEL_FORMAT_VERSION = 1
# The first bytes of a model file, before the joblib pickle: a file without them is
# refused before anything is unpickled.
_MODEL_MAGIC = b"metalearn model\n"


def _version() -> str:
    import metalearn

    return str(metalearn.__version__)


def _dtype_kind(dtype: Any) -> str:
    """What a feature column's type means to the learner: numbers, categories or other."""
    import polars as pl

    if dtype.is_numeric() or dtype == pl.Boolean:
        return "numeric"
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "categorical"
    return str(dtype)


def _save_model(args: argparse.Namespace, data: _Data, learner: Any) -> None:
    """Write the fitted learner and what ``predict`` needs to check new files (joblib)."""
    import datetime

    import joblib

    schema = data.X.schema
    bundle = {
        "format": _MODEL_FORMAT,
        "format_version": _MODEL_FORMAT_VERSION,
        "metalearn_version": _version(),
        "python_version": sys.version.split()[0],
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "learner_name": args.learner,
        "learner_class": type(learner).__name__,
        "learner": learner,
        "features": list(data.features),
        "dtypes": {c: str(schema[c]) for c in data.features},
        "kinds": {c: _dtype_kind(schema[c]) for c in data.features},
        "outcome": args.outcome,
        "treatment": args.treatment,
        "variants": np.asarray(learner.variants_).tolist(),
        "control": np.asarray(learner.control_).tolist(),
        "effect_names": learner._effect_names(),
        "effect_labels": [
            f"{learner.variants_[k]} vs {learner.control_}" for k in learner._treated_codes
        ],
        "id_columns": list(data.ids),
        "propensity": args.propensity,
        "groups": args.groups,
        "data": str(args.data),
        "n_rows": len(data.y),
    }

    def write(tmp: Path) -> None:
        with tmp.open("xb") as fh:
            fh.write(_MODEL_MAGIC)
            joblib.dump(bundle, fh, compress=3)

    _write_new(Path(args.save), "--save", bool(args.force), write)
    print(
        f"model saved to {args.save} ({args.learner}-learner, {len(data.features)} features; "
        f"predict with: metalearn predict --model {args.save} --data NEW_FILE --out FILE)"
    )


def _load_model(path: Path) -> dict[str, Any]:
    """A file of ``fit --save``, checked; a model of another metalearn version warns."""
    import joblib

    if not path.is_file():
        raise FileNotFoundError(f"--model: no such file: {str(path)!r}.")
    not_model = (
        f"--model: {str(path)!r} is not a metalearn model (a file written by `metalearn fit "
        "--save`)"
    )
    with path.open("rb") as fh:
        if fh.read(len(_MODEL_MAGIC)) != _MODEL_MAGIC:
            raise ValueError(f"{not_model}: it lacks the model file header; nothing was loaded.")
        try:
            bundle = joblib.load(fh)
        except Exception as exc:  # unpickling a damaged file raises anything
            text = str(exc).strip()
            first = text.splitlines()[0][:200] if text else ""
            raise ValueError(
                f"--model: {str(path)!r} could not be loaded ({type(exc).__name__}: {first}); "
                "the file is damaged, or was saved with packages this environment lacks."
            ) from exc
    if not isinstance(bundle, dict) or bundle.get("format") != _MODEL_FORMAT:
        raise ValueError(f"{not_model}: it holds a {type(bundle).__name__}.")
    if int(bundle.get("format_version", 0)) > _MODEL_FORMAT_VERSION:
        raise ValueError(
            f"--model: {str(path)!r} was saved by metalearn {bundle.get('metalearn_version')} "
            f"in a newer format (version {bundle.get('format_version')}); upgrade metalearn."
        )
    saved = bundle.get("metalearn_version")
    if saved != _version():
        _warn(
            f"{str(path)!r} was saved by metalearn {saved}; this is metalearn {_version()}. "
            "Its predictions may differ or fail: refit it with this version if in doubt."
        )
    return bundle


def _predict_features(bundle: dict[str, Any], df: Any, path: Path) -> Any:
    """The saved feature columns of ``df``, checked against the saved types."""
    import polars as pl

    features: list[str] = bundle["features"]
    missing = [c for c in features if c not in df.columns]
    if missing:
        raise ValueError(
            f"--data: {str(path)!r} lacks the feature column(s) "
            f"{', '.join(map(repr, missing))} that the model was fitted on (its features: "
            f"{', '.join(features)})."
        )
    changed = []
    columns = []
    for name in features:
        s = df.get_column(name)
        kind, saved = _dtype_kind(s.dtype), bundle["kinds"][name]
        if s.null_count() == s.len():  # an empty column reads as any type
            s = s.cast(pl.String if saved == "categorical" else pl.Float64)
        elif kind != saved:
            changed.append(f"{name!r} was {saved} ({bundle['dtypes'][name]}), now {s.dtype}")
        columns.append(s)
    if changed:
        raise ValueError(
            f"--data: column type(s) changed since the model was fitted: {'; '.join(changed)}. "
            "Give the columns their training types."
        )
    return pl.DataFrame(columns)


def _cmd_predict(args: argparse.Namespace) -> int:
    data_path, model_path = Path(args.data), Path(args.model)
    _file_kind(data_path, "--data")
    _check_outputs(args, _input_paths(args))
    bundle = _load_model(model_path)
    df = _read_data(data_path)
    if args.id_columns:
        ids = _column_list(args.id_columns, df.columns)
        _check_columns(df, ids, "--id-columns", data_path)
    else:  # the id columns of the fit, when the new file has them
        saved_ids = list(bundle.get("id_columns") or [])
        ids = saved_ids if all(c in df.columns for c in saved_ids) else []
    X = _predict_features(bundle, df, data_path)
    known = set(bundle["features"]) | set(ids)
    known |= {bundle.get("outcome"), bundle.get("treatment"), bundle.get("groups")}
    known |= set(_propensity_columns(bundle.get("propensity"), df.columns))
    extra = [c for c in df.columns if c not in known]
    learner = bundle["learner"]
    t0 = time.perf_counter()
    tau = np.asarray(learner.predict(X)).reshape(df.height, -1)
    elapsed = time.perf_counter() - t0
    names = list(bundle["effect_names"])
    print(
        f"model: {args.model} ({bundle['learner_name']}-learner fitted on "
        f"{bundle.get('n_rows', '?'):,} rows of {bundle.get('data')}, metalearn "
        f"{bundle.get('metalearn_version')})"
    )
    print(
        f"data: {args.data}, {df.height:,} rows, {len(bundle['features'])} features "
        f"({elapsed:.1f} s)"
    )
    if extra:
        shown = ", ".join(extra[:10]) + (", ..." if len(extra) > 10 else "")
        print(f"ignored {len(extra)} column(s) the model does not use: {shown}")
    for j, label in enumerate(bundle["effect_labels"]):
        print(f"mean CATE {label}: {float(np.mean(tau[:, j])):.4g}")
        _print_quantiles(label, tau[:, j])
    result = _effects_frame(df, ids, tau, names)
    _write_table(result, Path(args.out), bool(args.force))
    print(f"effects written to {args.out} (columns: {', '.join(result.columns)})")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    data = _prepare_data(args)
    learner = _build_learner(args, data)
    for message in data.warnings:
        _warn(message)
    tau, elapsed = _out_of_fold(learner, data, _progress_on(args))
    print(
        f"{args.learner}-learner, LightGBM base models, {args.n_folds}-fold cross-fitting "
        f"({elapsed:.1f} s)"
    )
    _print_data(args, data)
    _print_effects(learner, tau, data)
    if args.save is not None:
        _save_model(args, data, learner)
    if args.out is None:
        print("(pass --out effects.parquet to save the out-of-fold effects of every row)")
        return 0
    _write_effects(args, data, tau, learner._effect_names())
    return 0


# --------------------------------------------------------------------- tune
def _check_positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{option}: must be a positive number of trials; got {value}.")


def _open_storage(spec: str | None) -> Any:
    """The Optuna storage of ``--storage``: in memory, a database URL or a journal file.

    The storage is checked, opened and read here (by the function the
    searches use), so that a bad URL or path fails before any fitting.
    """
    from metalearn.tuning._storage import open_storage

    return open_storage(spec, label="--storage", heartbeat_interval=60)


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


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class _TrialLines:
    """One stderr line per finished trial of a search, for logs (stderr not a terminal).

    A thread reads the search's studies from its storage every ``interval``
    seconds and writes ``metalearn: study 'metalearn:final': trial 7/40 done,
    best r_loss 1.234, elapsed 1 min 05 s`` for each trial that finished since;
    when no trial finished for ``heartbeat`` seconds it says it is still
    running. Trials loaded from the storage at the start are not reported.
    :meth:`stop` reports the last ones.
    """

    def __init__(
        self,
        storage: Any,
        targets: dict[str, tuple[int, str | None]],  # study name -> (n_trials, score name)
        *,
        interval: float = 1.0,
        heartbeat: float = 30.0,
    ) -> None:
        import optuna

        self._storage = storage
        self._targets = targets
        self._interval = interval
        self._heartbeat = heartbeat
        self._finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        self._seen: dict[str, set[int]] = {}
        self._best: dict[str, float] = {}
        self._start = time.perf_counter()
        self._last_line = self._start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metalearn-trials", daemon=True)
        self._poll(report=False)  # what the storage holds already

    def __enter__(self) -> _TrialLines:
        self._start = self._last_line = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self._poll(report=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._poll(report=True)
            except Exception as exc:  # progress is a courtesy: never fail the search
                _warn(f"progress lines stopped: {type(exc).__name__}: {exc}")
                return
            now = time.perf_counter()
            if now - self._last_line >= self._heartbeat:
                done = sum(len(s) for s in self._seen.values())
                self._print(
                    f"tuning, {_plural(done, 'finished trial')} in all, elapsed "
                    f"{_duration(now - self._start)}"
                )

    def _print(self, line: str) -> None:
        self._last_line = time.perf_counter()
        print(f"metalearn: {line}", file=sys.stderr, flush=True)

    def _poll(self, report: bool) -> None:
        import optuna

        for name, (target, score) in self._targets.items():
            try:
                study_id = self._storage.get_study_id_from_name(name)
            except KeyError:
                continue  # not created yet
            minimize = (
                self._storage.get_study_directions(study_id)[0]
                == optuna.study.StudyDirection.MINIMIZE
            )
            trials = self._storage.get_all_trials(study_id, deepcopy=False, states=self._finished)
            seen = self._seen.setdefault(name, set())
            new = [t for t in trials if t.number not in seen]
            new.sort(key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number))
            for t in new:
                seen.add(t.number)
                if t.state == optuna.trial.TrialState.COMPLETE and t.values:
                    value = float(t.values[0])
                    best = self._best.get(name)
                    if best is None or (value < best if minimize else value > best):
                        self._best[name] = value
                    if score is None:
                        score = next(iter(t.user_attrs.get("scores", {})), "loss")
                        self._targets[name] = (target, score)
                if not report:
                    continue
                best_text = ""
                if name in self._best:
                    best_text = f", best {score or 'loss'} {self._best[name]:.4g}"
                pruned = " (pruned)" if t.state == optuna.trial.TrialState.PRUNED else ""
                self._print(
                    f"study {name!r}: trial {len(seen)}/{target} done{pruned}{best_text}, "
                    f"elapsed {_duration(time.perf_counter() - self._start)}"
                )


def _lines_on(args: argparse.Namespace) -> bool:
    """Per-trial progress lines: by default when stderr is not a terminal (logs, CI)."""
    return args.progress is None and not sys.stderr.isatty()


def _trial_targets(args: argparse.Namespace, base: str) -> dict[str, tuple[int, str | None]]:
    """The studies a search may run, with their trial counts and score names."""
    from metalearn.tuning.optuna import _STAGES

    nuisance = args.nuisance_trials or args.n_trials
    targets: dict[str, tuple[int, str | None]] = {base: (args.n_trials, args.scoring)}
    for stage in _STAGES:
        if stage == "final":
            targets[f"{base}:{stage}"] = (args.n_trials, args.scoring)
        else:
            targets[f"{base}:{stage}"] = (nuisance, None)
    return targets


def _best_params_path(args: argparse.Namespace) -> str | None:
    """``--best-params``, or ``<out stem>.best_params.json`` beside ``--out``."""
    if args.best_params is not None:
        return str(args.best_params)
    if args.out is not None:
        out = Path(args.out)
        return str(out.with_name(f"{out.stem}.best_params.json"))
    return None


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _write_best_params(args: argparse.Namespace, search: Any, data: _Data) -> None:
    import datetime

    path = _best_params_path(args)
    if path is None:
        return
    score = search.best_score_
    payload = {
        "metalearn_version": _version(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "learner": args.learner,
        "scoring": args.scoring,
        "best_score": _json_value(score) if not isinstance(score, dict) else score,
        "best_trial": search.best_trial_.number,
        "best_params": {k: _json_value(v) for k, v in sorted(search.best_params_.items())},
        "study_name": args.study_name or "metalearn",
        "storage": args.storage,
        "data": str(args.data),
        "outcome": args.outcome,
        "treatment": args.treatment,
        "features": list(data.features),
        "n_trials": args.n_trials,
        "nuisance_trials": args.nuisance_trials or args.n_trials,
    }
    text = json.dumps(payload, indent=2) + "\n"
    _write_new(Path(path), "--best-params", bool(args.force), lambda tmp: tmp.write_text(text))
    print(f"best settings written to {path}")


def _cmd_tune(args: argparse.Namespace) -> int:
    from sklearn.base import clone

    import metalearn as ml

    _check_positive(args.n_trials, "--n-trials")
    _check_positive(args.nuisance_trials, "--nuisance-trials")
    data = _prepare_data(args)
    learner = _build_learner(args, data)
    storage = _open_storage(args.storage)
    base = args.study_name or "metalearn"
    before = _stored_trials(storage, base)
    progress = _progress_on(args)
    lines = _lines_on(args)
    search_storage = storage
    if lines and search_storage is None:
        import optuna

        search_storage = optuna.storages.InMemoryStorage()  # one the progress lines can read
    search = ml.MetaLearnerOptunaSearch(
        learner,
        "lightgbm",
        n_trials=args.n_trials,
        nuisance_trials=args.nuisance_trials,
        scoring=args.scoring,
        storage=search_storage,
        study_name=base,
        load_if_exists=True,
        refit=False,  # `--out` refits the best settings by cross-fitting instead
        random_state=args.seed,
        show_progress_bar=progress,
    )
    for message in data.warnings:
        _warn(message)
    t0 = time.perf_counter()
    try:
        with _quiet_optuna(), _trial_lines(lines, search_storage, _trial_targets(args, base)):
            search.fit(data.X, data.y, data.w, propensity=data.propensity, groups=data.groups)
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
    _print_data(args, data)
    _print_search(args, search, before)
    _write_best_params(args, search, data)
    if args.out is None:
        print(
            "(pass --out effects.parquet to refit the best settings by cross-fitting and save "
            "the out-of-fold effects of every row)"
        )
        return 0
    # Honest per-row effects come from a cross-fitted fit of the best settings, as in
    # `metalearn fit` (a refit on all rows, the search's `best_estimator_`, has none).
    oof = clone(learner).set_params(**search.best_params_)
    if lines:
        print("metalearn: refitting the best settings by cross-fitting", file=sys.stderr)
    tau, seconds = _out_of_fold(oof, data, progress)
    print(f"best settings refitted by {args.n_folds}-fold cross-fitting ({seconds:.1f} s):")
    _print_effects(oof, tau, data)
    _write_effects(args, data, tau, oof._effect_names())
    return 0


@contextmanager
def _trial_lines(
    on: bool, storage: Any, targets: dict[str, tuple[int, str | None]]
) -> Iterator[None]:
    """:class:`_TrialLines` on ``storage`` inside the block when ``on``."""
    if not on:
        yield
        return
    if isinstance(storage, str):  # a database URL: read it through a connection of our own
        import optuna

        storage = optuna.storages.RDBStorage(storage)
    with _TrialLines(storage, targets):
        yield


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
    check = getattr(search, "selection_", None)
    if check is not None:
        for row in check._summary_rows():
            print(
                f"  lead over the {row['rival']}: {row['lead']:.3g} (standard error "
                f"{row['std_error']:.3g}): {row['verdict']}"
            )
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
        help="feature columns, separated by spaces or commas (default: every column but the "
        "outcome, treatment, id, groups and propensity columns, with a warning for columns "
        "that look like row identifiers)",
    )
    parser.add_argument(
        "--learner", choices=_learner_names(), default="DR", help="meta-learner (default DR)"
    )
    parser.add_argument(
        "--propensity",
        metavar="P_OR_COLUMNS",
        help="known propensity of a randomized design, used instead of a propensity model: a "
        "number in (0, 1), the share of rows assigned to the treated variant (two variants "
        "only); or a column holding each row's probability of the treated variant; or, with "
        "K variants, K comma-separated columns, one probability per variant in sorted order. "
        "Propensity columns are not features",
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
        help="columns copied to the output to identify rows, separated by spaces or commas "
        "(default: a row number)",
    )
    parser.add_argument(
        "--groups",
        metavar="COL",
        help="cluster column (a school, a customer): each group stays in one cross-fitting "
        "fold and the AIPW standard error is clustered",
    )
    parser.add_argument("--out", metavar="FILE", help=out_help)
    _add_force(parser)
    parser.add_argument("--n-folds", type=int, default=5, help="cross-fitting folds (default 5)")
    parser.add_argument("--n-jobs", type=int, default=-1, help="joblib workers (default -1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--progress: progress bars on stderr for cross-fitting and trials; "
        "--no-progress: nothing (default: bars when stderr is a terminal; otherwise tune "
        "writes one line per finished trial)",
    )


def _add_force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace existing output files (never an input file, nor through a symbolic "
        "link); without it an existing output exits with status 2",
    )


def _progress_on(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() if args.progress is None else bool(args.progress)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metalearn", description="Meta-learners for heterogeneous treatment effects."
    )
    parser.add_argument("--version", action="version", version=f"metalearn {_version()}")
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
            "every row (each estimated by models that did not see the row); with --save, save "
            "the fitted learner for 'metalearn predict'. Existing output files are kept "
            "unless --force; the input is never overwritten."
        ),
    )
    _add_data_arguments(fit, "write the per-row effects here (.parquet or .csv)")
    fit.add_argument(
        "--save",
        metavar="MODEL",
        help="save the fitted learner here (a joblib pickle, e.g. model.joblib) with its "
        "feature columns and types, variants and control, for metalearn predict",
    )
    fit.set_defaults(func=_cmd_fit)

    predict = sub.add_parser(
        "predict",
        help="predict the effects of new rows with a model saved by fit --save",
        description=(
            "Load a learner saved by 'metalearn fit --save', check that the new file has its "
            "feature columns with the same types (other columns are ignored), and write the "
            "effect of every row, tau_<variant>_vs_<control>, after the id columns. "
            "A model file is a pickle: loading it can run any code, so load only model files "
            "you trust (ones you saved yourself)."
        ),
    )
    predict.add_argument(
        "--model", required=True, metavar="MODEL", help="a file of fit --save (trusted only)"
    )
    predict.add_argument("--data", required=True, help="the new rows, .csv or .parquet")
    predict.add_argument(
        "--out", required=True, metavar="FILE", help="write the effects here (.parquet or .csv)"
    )
    predict.add_argument(
        "--id-columns",
        nargs="+",
        metavar="COL",
        help="columns copied to the output to identify rows, separated by spaces or commas "
        "(default: the id columns of the fit when the file has them, else a row number)",
    )
    _add_force(predict)
    predict.set_defaults(func=_cmd_predict)

    tune = sub.add_parser(
        "tune",
        help="tune a learner's LightGBM models with Optuna on CATE losses (resumable)",
        description=(
            "Tune the LightGBM base models of a meta-learner with Optuna "
            "(metalearn.MetaLearnerOptunaSearch with the 'lightgbm' search space): the "
            "nuisance models on their own cross-validated losses, then the final stage on the "
            "R- or DR-loss. With --storage the trials are kept, and running the same command "
            "again resumes: finished trials are loaded and only the missing ones run. Prints "
            "the best settings, writes them as JSON (--best-params, or beside --out) and, "
            "with --out, writes the out-of-fold effects of the best settings refitted by "
            "cross-fitting. When stderr is not a terminal (a log file, CI) it gets one line "
            "per finished trial. Existing output files are kept unless --force."
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
    tune.add_argument(
        "--best-params",
        metavar="FILE",
        help="write the best settings (and the best score) here as JSON (default: "
        "<out stem>.best_params.json beside --out; none without --out)",
    )
    tune.set_defaults(func=_cmd_tune)
    return parser


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """A Python warning as one ``metalearn: warning:`` line (no source file nor code line)."""
    _warn(" ".join(str(message).split()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():  # the warning filters stay; only the display changes
        warnings.showwarning = _show_warning
        try:
            rc = int(args.func(args))
            sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
            return rc
        except BrokenPipeError:
            # The reader of stdout went away (`metalearn ... | head`): stop quietly, and keep
            # Python from reporting the pipe again when it flushes stdout at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 141  # 128 + SIGPIPE, as a shell reports a command cut off by a pipe
        except (ValueError, TypeError, FileNotFoundError) as exc:
            message = " ".join(str(exc).split())  # one line, whatever the message
            print(f"metalearn: error: {message}", file=sys.stderr)
            return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
