"""The command line: ``metalearn fit`` on CSV/Parquet files, its errors, ``--help``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from lightgbm import LGBMClassifier, LGBMRegressor

import metalearn as ml
from metalearn import cli


def _small_model(kind: str) -> Any:
    kw = {"n_estimators": 15, "num_leaves": 4, "min_child_samples": 10, "n_jobs": 1}
    return LGBMClassifier(verbose=-1, **kw) if kind == "clf" else LGBMRegressor(verbose=-1, **kw)


@pytest.fixture(autouse=True)
def _fast_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small LightGBM models instead of the defaults, to keep the tests fast."""
    monkeypatch.setattr(cli, "_default_model", _small_model)


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    sim = ml.datasets.simulate_nie_wager("B", n=300, seed=0)
    return pl.DataFrame(
        {
            "customer": [f"c{i:03d}" for i in range(300)],
            "x0": sim.X[:, 0],
            "x1": sim.X[:, 1],
            "x2": sim.X[:, 2],
            "region": np.where(sim.X[:, 3] > 0, "north", "south"),
            "treated": sim.w,
            "spend": sim.y,
        }
    )


@pytest.fixture
def csv(tmp_path: Path, frame: pl.DataFrame) -> Path:
    path = tmp_path / "data.csv"
    frame.write_csv(path)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


BASE = ("--outcome", "spend", "--treatment", "treated", "--n-folds", "2", "--n-jobs", "1")


def test_fit_writes_out_of_fold_effects_with_ids(
    tmp_path: Path, csv: Path, frame: pl.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "effects.parquet"
    rc, stdout, err = _run(
        capsys, "fit", "--data", str(csv), *BASE, "--id-columns", "customer", "--out", str(out)
    )
    assert rc == 0, err
    assert err == ""
    assert "300 rows, 4 features" in stdout
    assert "ATE 1 vs 0:" in stdout and "95% CI" in stdout and "AIPW" in stdout
    assert "positive for" in stdout
    effects = pl.read_parquet(out)
    assert effects.columns == ["customer", "tau_1_vs_0"]
    assert effects["customer"].to_list() == frame["customer"].to_list()
    # the same as fitting the DR-learner by hand: out-of-fold, seeded
    learner = ml.DRLearner(
        outcome_model=_small_model("reg"),
        propensity_model=_small_model("clf"),
        effect_model=_small_model("reg"),
        n_folds=2,
        n_jobs=1,
        random_state=0,
    )
    X = frame.select("x0", "x1", "x2", "region")
    expected = learner.fit_predict(X, frame["spend"].to_numpy(), frame["treated"])
    np.testing.assert_allclose(effects["tau_1_vs_0"].to_numpy(), expected)
    ate = learner.ate()
    assert f"{ate.estimate:.4g} (95% CI {ate.ci_low:.4g} to {ate.ci_high:.4g}" in stdout


def test_fit_parquet_in_csv_out_with_row_numbers(
    tmp_path: Path, frame: pl.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = tmp_path / "data.parquet", tmp_path / "effects.csv"
    frame.drop("customer").write_parquet(data)
    rc, stdout, _ = _run(
        capsys, "fit", "--data", str(data), *BASE, "--learner", "T", "--out", str(out)
    )
    assert rc == 0
    assert "T-learner" in stdout
    assert "no interval" in stdout  # the T-learner's ATE is a plug-in mean
    effects = pl.read_csv(out)
    assert effects.columns == ["row", "tau_1_vs_0"]
    assert effects["row"].to_list() == list(range(300))


def test_fit_several_string_variants_and_control(
    tmp_path: Path, frame: pl.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    arms = np.array(["A", "B", "C"])[np.arange(300) % 3]
    data, out = tmp_path / "arms.csv", tmp_path / "effects.parquet"
    frame.with_columns(treated=pl.Series(arms)).write_csv(data)
    rc, stdout, err = _run(
        capsys,
        "fit",
        "--data",
        str(data),
        *BASE,
        "--learner",
        "S",
        "--control",
        "B",
        "--features",
        "x0",
        "x1",
        "--out",
        str(out),
    )
    assert rc == 0, err
    assert "2 features" in stdout
    assert "B (control): 100 rows" in stdout
    assert "ATE A vs B" in stdout and "ATE C vs B" in stdout
    assert pl.read_parquet(out).columns == ["row", "tau_A_vs_B", "tau_C_vs_B"]


def test_fit_without_out_prints_a_hint_and_writes_nothing(
    tmp_path: Path, csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, stdout, _ = _run(
        capsys, "fit", "--data", str(csv), *BASE, "--learner", "S", "--id-columns", "customer"
    )
    assert rc == 0
    assert "pass --out" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


# ---------------------------------------------------------------- bad input
def _bad_files(tmp_path: Path, frame: pl.DataFrame) -> dict[str, Path]:
    one = tmp_path / "one.csv"
    frame.with_columns(treated=pl.lit(1)).write_csv(one)
    junk = tmp_path / "junk.parquet"
    junk.write_text("this is not a parquet file")
    nulls = tmp_path / "nulls.csv"
    frame.with_columns(
        spend=pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("spend"))
    ).write_csv(nulls)
    return {"one": one, "junk": junk, "nulls": nulls}


ERRORS = [
    (["--data", "{missing}", *BASE], "--data: no such file"),
    (["--data", "{tmp}/data.xlsx", *BASE], "--data: unknown file type '.xlsx'"),
    (["--data", "{junk}", *BASE], "--data: could not read"),
    (["--data", "{csv}", "--outcome", "revenue", "--treatment", "treated"], "--outcome: column"),
    (["--data", "{csv}", "--outcome", "spend", "--treatment", "arm"], "--treatment: column"),
    (["--data", "{csv}", *BASE, "--features", "x0", "x9"], "--features: column(s) 'x9'"),
    (["--data", "{csv}", *BASE, "--features", "x0", "spend"], "is the outcome or the treatment"),
    (["--data", "{csv}", *BASE, "--id-columns", "id"], "--id-columns: column(s) 'id'"),
    (["--data", "{one}", *BASE], "--treatment: column 'treated' has a single value (1)"),
    (
        ["--data", "{csv}", "--outcome", "region", "--treatment", "treated"],
        "--outcome: column 'region' must be numeric; got String",
    ),
    (["--data", "{nulls}", *BASE], "has 1 missing or non-finite values"),
    (["--data", "{csv}", *BASE, "--control", "7"], "--control: '7' is not a value"),
    (["--data", "{csv}", *BASE, "--out", "{tmp}/e.json"], "--out: unknown file type '.json'"),
    (["--data", "{csv}", *BASE, "--out", "{tmp}/no/e.csv"], "--out: directory"),
    (["--data", "{csv}", "--outcome", "spend", "--treatment", "spend"], "name the same column"),
]


@pytest.mark.parametrize(("argv", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_bad_input_exits_non_zero_with_one_line(
    argv: list[str],
    message: str,
    tmp_path: Path,
    csv: Path,
    frame: pl.DataFrame,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = {"csv": csv, "tmp": tmp_path, "missing": tmp_path / "missing.csv"}
    paths.update(_bad_files(tmp_path, frame))
    args = [a.format(**{k: str(v) for k, v in paths.items()}) for a in argv]
    rc, stdout, err = _run(capsys, "fit", *args)
    assert rc == 2
    assert stdout == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("metalearn: error: ")
    assert message in lines[0]


def test_library_errors_are_one_line_too(csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, "fit", "--data", str(csv), *BASE[:4], "--n-folds", "1")
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("metalearn: error: ")


# --------------------------------------------------------------------- help
@pytest.mark.parametrize(
    ("command", "expected"),
    [("fit", ["--data", "--outcome", "--treatment", "--id-columns", "--out"]), ("demo", ["--n"])],
)
def test_help_of_each_subcommand(
    command: str, expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: metalearn {command}" in out
    for option in expected:
        assert option in out


def test_demo_is_still_a_subcommand() -> None:
    args = cli.build_parser().parse_args(["demo", "--n", "100"])
    assert args.func is cli._cmd_demo
    assert args.n == 100
