"""The command line end to end, each command in a subprocess as a user runs it.

``fit --save`` then ``predict`` on a new file (the schema checked), ``--propensity`` as a
number or column(s), ``--features``, ``--version``, ``tune`` writing its best settings as
JSON with one stderr line per trial off a terminal, a continuous treatment refused, and
the output files: never replaced without ``--force``, never the input, never through a
symbolic link, formula-like CSV cells escaped.

The CLI's default LightGBM models cannot be swapped in a subprocess, so the files are
small (400 rows, 2 folds, one job, one thread).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import polars as pl
import pytest

import metalearn as ml

# A model file of `fit --save` (metalearn/cli.py, _save_model): this header, then a
# joblib pickle of a dict holding the fitted learner and the feature schema.
MODEL_HEADER = b"metalearn model\n"

N_TRAIN, N_NEW = 400, 100
FEATURES = ["x0", "x1", "x2", "region"]
# One thread per LightGBM fit: the subprocesses stay quick on a busy machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
FAST = "--n-folds 2 --n-jobs 1"
BASE = f"--outcome spend --treatment treated {FAST}"


def metalearn(command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``metalearn COMMAND`` (split as a shell would) in a fresh Python process, with
    stdout and stderr piped (not a terminal)."""
    cmd = [
        sys.executable,
        "-c",
        "from metalearn.cli import main; raise SystemExit(main())",
        *shlex.split(command),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)


def q(path: Path) -> str:
    return shlex.quote(str(path))


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stderr
    return proc


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit status 2 and exactly one stderr line, ``metalearn: error: ...`` with needles;
    nothing on stdout (every error here is found before any fitting)."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("metalearn: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def load_model(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        assert fh.read(len(MODEL_HEADER)) == MODEL_HEADER
        return joblib.load(fh)


def frame(n: int, seed: int, arms: tuple[Any, ...] = (0, 1)) -> pl.DataFrame:
    """Customers with three numeric features, a region, a treatment and an outcome."""
    rng = np.random.default_rng(seed)
    sim = ml.datasets.simulate_nie_wager("B", n=n, seed=seed)
    w = np.asarray(arms, dtype=object)[rng.integers(0, len(arms), n)]
    return pl.DataFrame(
        {
            "customer": [f"c{seed}-{i:04d}" for i in range(n)],
            "x0": sim.X[:, 0],
            "x1": sim.X[:, 1],
            "x2": sim.X[:, 2],
            "region": np.where(sim.X[:, 3] > 0, "north", "south"),
            "treated": pl.Series(w.tolist()),
            "spend": sim.y,
        }
    )


# ------------------------------------------------------------------ fit --save, predict
@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``fit --save`` on a three-variant CSV: the files and the finished process."""
    root = tmp_path_factory.mktemp("job")
    data = frame(N_TRAIN + N_NEW, seed=1, arms=("A", "B", "C"))
    train, new = data.head(N_TRAIN), data.tail(N_NEW).drop("treated", "spend")
    new = new.with_columns(note=pl.lit("not a feature")).select("note", *new.columns)
    train.write_csv(root / "train.csv")
    new.write_csv(root / "new.csv")
    proc = metalearn(
        f"fit --data train.csv {BASE} --id-columns customer "
        "--save model.joblib --out effects.parquet",
        cwd=root,
    )
    return {"root": root, "train": train, "new": new, "proc": proc}


def test_fit_save_writes_effects_and_a_model_with_its_schema(job: dict[str, Any]) -> None:
    proc, root = ok(job["proc"]), job["root"]
    # The id column is named: no id warning. (A propensity model fitted on 400 rows may
    # warn of poor overlap, in one line.)
    lines = proc.stderr.splitlines()
    assert all(line.startswith("metalearn: warning: Poor overlap") for line in lines), lines
    assert f"{N_TRAIN} rows, 4 features" in proc.stdout
    assert "model saved to model.joblib" in proc.stdout
    effects = pl.read_parquet(root / "effects.parquet")
    assert effects.columns == ["customer", "tau_B_vs_A", "tau_C_vs_A"]
    assert effects["customer"].to_list() == job["train"]["customer"].to_list()
    assert np.isfinite(effects.drop("customer").to_numpy()).all()
    bundle = load_model(root / "model.joblib")
    assert bundle["features"] == FEATURES
    assert bundle["kinds"] == {
        "x0": "numeric",
        "x1": "numeric",
        "x2": "numeric",
        "region": "categorical",
    }
    assert bundle["variants"] == ["A", "B", "C"] and bundle["control"] == "A"
    assert bundle["effect_names"] == ["tau_B_vs_A", "tau_C_vs_A"]
    assert bundle["id_columns"] == ["customer"]
    assert bundle["metalearn_version"] == ml.__version__
    assert isinstance(bundle["learner"], ml.DRLearner)


def test_predict_writes_ids_and_one_effect_per_variant_as_python_does(
    job: dict[str, Any],
) -> None:
    root, new = job["root"], job["new"]
    ok(job["proc"])
    proc = ok(metalearn("predict --model model.joblib --data new.csv --out pred.csv", root))
    assert proc.stderr == ""
    assert f"{N_NEW} rows, 4 features" in proc.stdout
    assert "ignored 1 column(s) the model does not use: note" in proc.stdout
    pred = pl.read_csv(root / "pred.csv")
    # the id columns of the fit (the new file has them), then one column per variant
    assert pred.columns == ["customer", "tau_B_vs_A", "tau_C_vs_A"]
    assert pred["customer"].to_list() == new["customer"].to_list()
    learner = load_model(root / "model.joblib")["learner"]
    expected = np.asarray(learner.predict(new.select(FEATURES)))
    assert expected.shape == (N_NEW, 2)
    np.testing.assert_allclose(pred.drop("customer").to_numpy(), expected, rtol=1e-12, atol=0)
    assert np.ptp(expected, axis=0).min() > 0  # per-row effects, not one constant


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        pytest.param(lambda df: df.drop("x1"), ["'x1'", "lacks the feature"], id="missing"),
        pytest.param(
            lambda df: df.with_columns(x2=pl.lit("n/a:") + pl.col("x2").cast(pl.String)),
            ["'x2'", "was numeric", "now String"],
            id="wrong-type",
        ),
        pytest.param(
            lambda df: df.with_columns(
                region=pl.when(pl.int_range(pl.len()) == 7)
                .then(pl.lit("west"))
                .otherwise(pl.col("region"))
            ),
            ["'region'", "'west'"],
            id="unknown-category",
        ),
    ],
)
def test_predict_checks_the_new_file_against_the_saved_schema(
    job: dict[str, Any], tmp_path: Path, change: Any, needles: list[str]
) -> None:
    ok(job["proc"])
    change(job["new"]).write_csv(tmp_path / "bad.csv")
    model = job["root"] / "model.joblib"
    proc = metalearn(f"predict --model {q(model)} --data bad.csv --out pred.csv", tmp_path)
    one_line_error(proc, *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]  # nothing written


# ------------------------------------------------------------------------ --propensity
@pytest.fixture(scope="module")
def two_arms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomized two-arm CSV with each row's known P(treated) in column ``p``."""
    path = tmp_path_factory.mktemp("two_arms") / "data.csv"
    rng = np.random.default_rng(2)
    p = rng.uniform(0.3, 0.7, N_TRAIN)
    w = (rng.uniform(size=N_TRAIN) < p).astype(int)
    frame(N_TRAIN, seed=2).with_columns(treated=pl.Series(w), p=pl.Series(p)).write_csv(path)
    return path


def test_propensity_number_is_used_for_every_row(two_arms: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.joblib"
    proc = ok(
        metalearn(
            f"fit --data {q(two_arms)} {BASE} --id-columns customer --propensity 0.5 "
            f"--save {q(model)}"
        )
    )
    line = "propensity: known, P(1) = 0.5 for every row (no propensity model is fitted)"
    assert line in proc.stdout
    learner = load_model(model)["learner"]
    assert learner.get_params()["propensity_model"] is None
    np.testing.assert_array_equal(learner.nuisance_.oof_propensity_, np.full((N_TRAIN, 2), 0.5))


def test_propensity_column_is_used_and_is_not_a_feature(two_arms: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.joblib"
    proc = ok(
        metalearn(
            f"fit --data {q(two_arms)} {BASE} --id-columns customer --propensity p "
            f"--save {q(model)}"
        )
    )
    assert proc.stderr == ""
    assert f"{N_TRAIN} rows, 4 features" in proc.stdout
    assert "propensity: known, P(1) from column 'p'" in proc.stdout
    bundle = load_model(model)
    assert bundle["features"] == FEATURES  # `p` is not among them
    p = pl.read_csv(two_arms)["p"].to_numpy()
    expected = np.column_stack([1 - p, p])
    np.testing.assert_allclose(bundle["learner"].nuisance_.oof_propensity_, expected)


def test_propensity_columns_one_per_variant(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    probs = rng.dirichlet([4.0, 4.0, 4.0], N_TRAIN)
    arms = np.array(["A", "B", "C"])[[rng.choice(3, p=row) for row in probs]]
    df = frame(N_TRAIN, seed=3).with_columns(
        treated=pl.Series(arms),
        pA=pl.Series(probs[:, 0]),
        pB=pl.Series(probs[:, 1]),
        pC=pl.Series(probs[:, 2]),
    )
    df.write_csv(tmp_path / "data.csv")
    proc = ok(
        metalearn(
            f"fit --data data.csv {BASE} --id-columns customer --propensity pA,pB,pC "
            "--save m.joblib --out eff.parquet",
            tmp_path,
        )
    )
    assert "propensity: known, columns 'pA', 'pB', 'pC' for A, B, C" in proc.stdout
    assert f"{N_TRAIN} rows, 4 features" in proc.stdout
    bundle = load_model(tmp_path / "m.joblib")
    assert bundle["features"] == FEATURES
    np.testing.assert_allclose(bundle["learner"].nuisance_.oof_propensity_, probs, rtol=1e-12)
    effects = pl.read_parquet(tmp_path / "eff.parquet")
    assert effects.columns == ["customer", "tau_B_vs_A", "tau_C_vs_A"]


@pytest.mark.parametrize(
    ("value", "needles"),
    [
        ("0", ["--propensity", "'0'", "strictly between 0 and 1"]),
        ("1.5", ["--propensity", "'1.5'", "strictly between 0 and 1"]),
        ("p_missing", ["--propensity", "'p_missing'", "not in"]),
    ],
)
def test_bad_propensity_is_one_line(two_arms: Path, value: str, needles: list[str]) -> None:
    proc = metalearn(f"fit --data {q(two_arms)} {BASE} --propensity {value}")
    one_line_error(proc, *needles)


# -------------------------------------------------------------------------- --features
@pytest.mark.parametrize("spelling", ["x0,region", "x0 region"], ids=["comma", "space"])
def test_features_listed_are_the_features(two_arms: Path, tmp_path: Path, spelling: str) -> None:
    model = tmp_path / "m.joblib"
    proc = ok(
        metalearn(
            f"fit --data {q(two_arms)} {BASE} --features {spelling} --propensity p "
            f"--save {q(model)}"
        )
    )
    assert proc.stderr == ""  # `customer` is not a feature: no id warning
    assert f"{N_TRAIN} rows, 2 features" in proc.stdout
    assert load_model(model)["features"] == ["x0", "region"]


def test_unknown_feature_is_one_line(two_arms: Path) -> None:
    proc = metalearn(f"fit --data {q(two_arms)} {BASE} --features x0,x9")
    one_line_error(proc, "--features", "'x9'", "not in")


def test_a_column_of_distinct_strings_as_a_feature_warns(two_arms: Path) -> None:
    proc = ok(metalearn(f"fit --data {q(two_arms)} {BASE} --propensity p"))
    (line,) = proc.stderr.splitlines()
    assert line.startswith(
        f"metalearn: warning: column(s) 'customer' (all {N_TRAIN} values are distinct "
        "strings) look like row identifiers"
    )
    assert "--id-columns" in line
    assert f"{N_TRAIN} rows, 5 features" in proc.stdout  # still used, as the warning says


# --------------------------------------------------------------------------- --version
def test_version_is_the_package_version() -> None:
    proc = ok(metalearn("--version"))
    assert proc.stdout.strip() == f"metalearn {ml.__version__}"


# -------------------------------------------------------------------------------- tune
def test_tune_writes_the_best_settings_as_json_and_one_line_per_trial(
    two_arms: Path, tmp_path: Path
) -> None:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    n_trials = 3
    proc = ok(
        metalearn(
            f"tune --data {q(two_arms)} {BASE} --id-columns customer --n-trials {n_trials} "
            "--storage tune.log --out tuned.parquet",
            tmp_path,
        )
    )
    # the JSON beside --out holds the best settings of the studies in the storage
    assert "best settings written to tuned.best_params.json" in proc.stdout
    saved = json.loads((tmp_path / "tuned.best_params.json").read_text())
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "tune.log")))
    names = sorted(optuna.study.get_all_study_names(storage))
    assert names == ["metalearn:final", "metalearn:outcome", "metalearn:propensity"]
    studies = {n: optuna.load_study(study_name=n, storage=storage) for n in names}
    best: dict[str, Any] = {}
    for study in studies.values():
        best.update(study.best_trial.params)
    assert saved["best_params"].keys() == best.keys()
    for key, value in best.items():
        assert saved["best_params"][key] == pytest.approx(value, rel=1e-12), key
    final = studies["metalearn:final"]
    assert saved["best_trial"] == final.best_trial.number
    assert saved["best_score"] == pytest.approx(final.best_value, rel=1e-12)
    assert saved["scoring"] == "r_loss"
    assert saved["features"] == [*FEATURES, "p"]
    assert pl.read_parquet(tmp_path / "tuned.parquet").columns == ["customer", "tau_1_vs_0"]

    # stderr is a pipe: one line per finished trial of each study, numbered in order
    lines = proc.stderr.splitlines()
    assert all(line.startswith("metalearn: ") for line in lines), proc.stderr
    done = re.compile(r"^metalearn: study '([^']+)': trial (\d+)/(\d+) done, best \w+ \S+, ")
    seen: dict[str, list[int]] = {}
    for line in lines:
        m = done.match(line)
        if m:
            assert int(m[3]) == n_trials, line
            seen.setdefault(m[1], []).append(int(m[2]))
    assert seen == {n: list(range(1, n_trials + 1)) for n in names}, proc.stderr


# ------------------------------------------------------------------ continuous treatment
def test_a_continuous_treatment_is_refused_in_one_line(tmp_path: Path) -> None:
    dose = (np.arange(N_TRAIN) % 300) / 7.0  # 300 distinct values, most not whole
    frame(N_TRAIN, seed=4).with_columns(dose=pl.Series(dose)).write_csv(tmp_path / "data.csv")
    proc = metalearn(f"fit --data data.csv --outcome spend --treatment dose {FAST}", tmp_path)
    one_line_error(proc, "--treatment", "'dose'", "300 distinct values", "looks continuous")


# ------------------------------------------------------------------------ output files
def test_an_existing_out_is_kept_without_force_and_replaced_with_force(
    two_arms: Path, tmp_path: Path
) -> None:
    out = tmp_path / "effects.csv"
    out.write_text("keep me\n")
    fit = f"fit --data {q(two_arms)} {BASE} --propensity p --id-columns customer --out {q(out)}"
    one_line_error(metalearn(fit), "--out", "exists", "--force")
    assert out.read_text() == "keep me\n"
    ok(metalearn(f"{fit} --force"))
    assert pl.read_csv(out).columns == ["customer", "tau_1_vs_0"]
    assert [p.name for p in tmp_path.iterdir()] == ["effects.csv"]  # no temporary left


def test_out_is_never_the_input_not_even_with_force(two_arms: Path, tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(two_arms.read_bytes())
    (tmp_path / "sub").mkdir()
    proc = metalearn(
        f"fit --data data.csv {BASE} --propensity p --out sub/../data.csv --force", tmp_path
    )
    one_line_error(proc, "--out", "is the --data file", "not even with --force")
    assert data.read_bytes() == two_arms.read_bytes()


def test_out_through_a_symbolic_link_is_refused(two_arms: Path, tmp_path: Path) -> None:
    target = tmp_path / "target.csv"
    target.write_text("someone else's file\n")
    (tmp_path / "effects.csv").symlink_to(target)
    proc = metalearn(
        f"fit --data {q(two_arms)} {BASE} --propensity p --out effects.csv --force", tmp_path
    )
    one_line_error(proc, "--out", "symbolic link")
    assert (tmp_path / "effects.csv").is_symlink()
    assert target.read_text() == "someone else's file\n"


FORMULAS = ["=1+2", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_formula_like_id_cells_are_escaped_in_csv_only(
    two_arms: Path, tmp_path: Path, suffix: str
) -> None:
    df = pl.read_csv(two_arms)
    ids = FORMULAS + df["customer"].to_list()[len(FORMULAS) :]
    df.with_columns(customer=pl.Series(ids)).write_csv(tmp_path / "data.csv")
    out = f"effects{suffix}"
    fit = f"fit --data data.csv {BASE} --propensity p --id-columns customer --out {out}"
    ok(metalearn(fit, tmp_path))
    if suffix == ".csv":
        written = pl.read_csv(tmp_path / out)["customer"].to_list()
        assert written[: len(FORMULAS)] == ["'" + v for v in FORMULAS]
        text = (tmp_path / out).read_text()
        assert "\n'=1+2," in text and "\n=1+2" not in text
    else:
        written = pl.read_parquet(tmp_path / out)["customer"].to_list()
        assert written[: len(FORMULAS)] == FORMULAS  # Parquet keeps the values verbatim
    assert written[len(FORMULAS) :] == ids[len(FORMULAS) :]  # the other cells as they were


# ------------------------------------------------------------------------- warnings
def test_library_warnings_are_one_metalearn_line_each(tmp_path: Path) -> None:
    """A tiny variant gets the learners' OverlapWarning: on stderr as ``metalearn: warning:``
    lines, not Python's ``file:line: Category: message`` and a line of source."""
    arms = np.where(np.arange(N_TRAIN) < 20, "C", np.where(np.arange(N_TRAIN) % 2, "A", "B"))
    df = frame(N_TRAIN, seed=5).with_columns(treated=pl.Series(arms))
    df.write_csv(tmp_path / "data.csv")
    proc = ok(metalearn(f"fit --data data.csv {BASE} --id-columns customer", tmp_path))
    lines = proc.stderr.splitlines()
    assert lines, "expected an overlap warning"
    assert all(line.startswith("metalearn: warning: ") for line in lines), proc.stderr
    assert any("Poor overlap" in line and "'C' has only 20 row(s)" in line for line in lines)
    assert "cli.py" not in proc.stderr and "Warning:" not in proc.stderr


def test_a_closed_stdout_pipe_ends_quietly(two_arms: Path) -> None:
    """``metalearn fit ... | head -1``: the reader leaves early; no traceback on stderr."""
    cmd = [
        sys.executable,
        "-c",
        "from metalearn.cli import main; raise SystemExit(main())",
        *shlex.split(f"fit --data {q(two_arms)} {BASE} --id-columns customer --propensity p"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
