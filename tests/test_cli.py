"""The command line: ``metalearn fit`` and ``metalearn tune`` on CSV/Parquet files, their
errors, the ``metalearn demo`` tour, ``--help``."""

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
    assert "AIPW" in stdout and "95% CI" in stdout  # AIPW from its cross-fitted nuisances
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
    (["--data", "{csv}", *BASE, "--features", "x0", "spend"], "the treatment or the groups column"),
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
    rc, _, err = _run(
        capsys, "fit", "--data", str(csv), *BASE[:4], "--id-columns", "customer", "--n-folds", "1"
    )
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("metalearn: error: ")


# --------------------------------------------------------------------- help
@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("fit", ["--data", "--outcome", "--treatment", "--id-columns", "--out"]),
        ("demo", ["--n", "--n-test", "--seed", "--n-jobs"]),
        (
            "tune",
            [
                "--data",
                "--outcome",
                "--treatment",
                "--learner",
                "--n-trials",
                "--nuisance-trials",
                "--storage",
                "--study-name",
                "--scoring",
                "--progress",
                "--no-progress",
                "--out",
            ],
        ),
    ],
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


# --------------------------------------------------------------------- tune
@pytest.fixture(scope="module")
def tune_frame() -> pl.DataFrame:
    sim = ml.datasets.simulate_nie_wager("B", n=600, seed=1)
    return pl.DataFrame(
        {
            "customer": [f"c{i:03d}" for i in range(600)],
            **{f"x{j}": sim.X[:, j] for j in range(4)},
            "treated": sim.w,
            "spend": sim.y,
        }
    )


@pytest.fixture
def tune_csv(tmp_path: Path, tune_frame: pl.DataFrame) -> Path:
    path = tmp_path / "tune.csv"
    tune_frame.write_csv(path)
    return path


TUNE = (*BASE, "--n-trials", "2", "--no-progress")


def _study_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("study ")]


def _finished_in(storage: Any, name: str) -> int:
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(states=states))


def test_tune_writes_effects_of_the_best_settings_and_resumes(
    tmp_path: Path,
    tune_csv: Path,
    tune_frame: pl.DataFrame,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    journal, out = tmp_path / "tune.log", tmp_path / "effects.parquet"
    argv = (
        "tune",
        "--data",
        str(tune_csv),
        *TUNE,
        "--id-columns",
        "customer",
        "--storage",
        str(journal),
        "--out",
        str(out),
    )
    rc, stdout, err = _run(capsys, *argv)
    assert rc == 0, err
    # Two trials on 600 rows: the pick may not beat a constant effect, and the CLI says so.
    assert all(line.startswith("metalearn: warning: The pick of") for line in err.splitlines())
    assert "DR-learner" in stdout and "3 studies" in stdout
    assert "600 rows, 4 features" in stdout
    assert f"storage: {journal}; 0 finished trials loaded" in stdout
    names = ["metalearn:outcome", "metalearn:propensity", "metalearn:final"]
    lines = _study_lines(stdout)
    assert [line.split("'")[1] for line in lines] == names
    assert all("2 finished trials (0 loaded, 2 new)" in line for line in lines), lines
    assert "best r_loss:" in stdout and "effect_model__num_leaves" in stdout
    assert "  lead over the constant effect: " in stdout  # the search's selection check
    assert "  lead over the runner-up (" in stdout
    effects = pl.read_parquet(out)
    assert effects.columns == ["customer", "tau_1_vs_0"]
    assert effects["customer"].to_list() == tune_frame["customer"].to_list()

    # The effects are those of the stored best settings, refitted by cross-fitting.
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    best: dict[str, Any] = {}
    for name in names:
        best.update(optuna.load_study(study_name=name, storage=storage).best_params)
    learner = ml.DRLearner(
        outcome_model=_small_model("reg"),
        propensity_model=_small_model("clf"),
        effect_model=_small_model("reg"),
        n_folds=2,
        n_jobs=1,
        random_state=0,
    ).set_params(**best)
    X = tune_frame.select("x0", "x1", "x2", "x3")
    expected = learner.fit_predict(X, tune_frame["spend"].to_numpy(), tune_frame["treated"])
    np.testing.assert_allclose(effects["tau_1_vs_0"].to_numpy(), expected)

    # The same command again (--force: the effects file exists): every trial is loaded,
    # none is run, the total stays 2.
    rc, again, err = _run(capsys, *argv, "--force")
    assert rc == 0, err
    assert f"storage: {journal}; 6 finished trials loaded" in again
    lines = _study_lines(again)
    assert len(lines) == 3
    assert all("2 finished trials (2 loaded, 0 new)" in line for line in lines), lines
    assert all(_finished_in(storage, name) == 2 for name in names)
    np.testing.assert_allclose(pl.read_parquet(out)["tau_1_vs_0"].to_numpy(), expected)


def test_tune_resumes_an_sqlite_study_up_to_n_trials(
    tmp_path: Path, tune_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    argv = ["tune", "--data", str(tune_csv), *BASE, "--learner", "S", "--storage", url]
    argv += ["--study-name", "s-study", "--scoring", "dr_loss"]
    rc, stdout, err = _run(capsys, *argv, "--n-trials", "2")
    assert rc == 0, err
    assert "S-learner" in stdout and "1 study" in stdout
    (line,) = _study_lines(stdout)
    assert "'s-study': 2 finished trials (0 loaded, 2 new)" in line
    assert "best dr_loss:" in stdout
    assert "pass --out" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tune.csv", "tune.db"]

    rc, stdout, err = _run(capsys, *argv, "--n-trials", "3")
    assert rc == 0, err
    assert f"storage: {url}; 2 finished trials loaded" in stdout
    (line,) = _study_lines(stdout)
    assert "'s-study': 3 finished trials (2 loaded, 1 new)" in line
    assert _finished_in(url, "s-study") == 3


def test_tune_in_memory_says_so(tune_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, stdout, err = _run(
        capsys, "tune", "--data", str(tune_csv), *TUNE, "--learner", "T", "--n-trials", "1"
    )
    assert rc == 0, err
    assert "storage: in memory" in stdout
    # the T-learner's outcome models are its nuisance stage; nothing is left for the final one
    assert "'metalearn:outcome': 1 finished trial (0 loaded, 1 new)" in stdout
    assert "'metalearn:final': 1 finished trial (0 loaded, 1 new)" in stdout


TUNE_ERRORS = [
    (["--data", "{csv}", *TUNE, "--n-trials", "0"], "--n-trials: must be a positive number"),
    (["--data", "{csv}", *TUNE, "--nuisance-trials", "0"], "--nuisance-trials: must be"),
    (["--data", "{tmp}/data.xlsx", *TUNE], "--data: unknown file type '.xlsx'"),
    (["--data", "{csv}", *TUNE, "--features", "x0", "x9"], "--features: column(s) 'x9'"),
    (
        ["--data", "{csv}", "--outcome", "revenue", "--treatment", "treated", "--n-trials", "1"],
        "--outcome: column",
    ),
    (["--data", "{one}", *TUNE], "--treatment: column 'treated' has a single value (1)"),
    (["--data", "{csv}", *TUNE, "--storage", "nosuchdb://x"], "--storage: could not open"),
    (["--data", "{csv}", *TUNE, "--storage", "sqlite:///{tmp}/no/t.db"], "could not open"),
    (["--data", "{csv}", *TUNE, "--storage", "{tmp}/no/t.log"], "--storage: directory"),
    (["--data", "{csv}", *TUNE, "--storage", "{tmp}"], "is a directory"),
    (["--data", "{csv}", *TUNE, "--storage", "{sqlite}"], "is an SQLite database"),
    (["--data", "{csv}", *TUNE, "--out", "{tmp}/e.json"], "--out: unknown file type '.json'"),
]


@pytest.mark.parametrize(("argv", "message"), TUNE_ERRORS, ids=[m for _, m in TUNE_ERRORS])
def test_tune_bad_input_exits_2_with_one_line(
    argv: list[str],
    message: str,
    tmp_path: Path,
    csv: Path,
    frame: pl.DataFrame,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import sqlite3
    from contextlib import closing

    db = tmp_path / "tune.db"
    with closing(sqlite3.connect(db)) as con:
        con.execute("create table t (a)")
        con.commit()
    paths = {"csv": csv, "tmp": tmp_path, "sqlite": db}
    paths.update(_bad_files(tmp_path, frame))
    args = [a.format(**{k: str(v) for k, v in paths.items()}) for a in argv]
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, stdout, err = _run(capsys, "tune", *args)
    assert rc == 2
    assert stdout == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("metalearn: error: ")
    assert message in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


# --------------------------------------------------------------------- demo
def test_demo_tour_prints_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    rc, stdout, err = _run(capsys, "demo", "--n", "600", "--n-test", "400", "--n-jobs", "1")
    assert rc == 0, err
    sections = [
        "learner     PEHE",
        "Lowest R-loss:",
        "-learner on the 400 test rows",
        "Qini coefficient",
        "AUUC",
        "calibration slope (BLP)",
        "Policy value on the test rows",
        "treat nobody",
        "treat everyone",
        "treat the top 30%",
        "treat the true top 30% (oracle)",
        "Best share to treat",
        "What drives the DR-learner's estimated effect: top 5 features by mean |SHAP|",
    ]
    positions = [stdout.find(s) for s in sections]
    assert all(p >= 0 for p in positions), [s for s, p in zip(sections, positions) if p < 0]
    assert positions == sorted(positions)  # the table first, then the tour in order
    lines = stdout.splitlines()
    i = next(j for j, line in enumerate(lines) if line.startswith("feature "))
    shown = [line.split()[0] for line in lines[i + 1 : i + 6]]
    features = ml.datasets.simulate_retention(n=10, seed=0).feature_names
    assert set(shown) <= set(features) and len(set(shown)) == 5
    assert all(line.split()[-1] in ("yes", "no") for line in lines[i + 1 : i + 6])
    # the truth column: treating nobody is worth the mean untreated outcome of the test rows
    test = ml.datasets.simulate_retention(n=400, seed=1)
    (nobody,) = [line for line in lines if line.startswith("treat nobody")]
    assert float(nobody.split()[-1]) == pytest.approx(test.mu[:, 0].mean(), abs=5e-4)


def test_demo_truth_is_the_estimand_on_the_test_rows() -> None:
    """Scores built from the simulator's mean outcomes give the exact policy value."""
    from metalearn.evaluation import policy_value, qini_coefficient

    test = ml.datasets.simulate_retention(n=500, seed=3)
    rng = np.random.default_rng(0)
    tau_hat = test.tau + rng.normal(0, 5, size=500)
    truth = cli._truth(test)
    top = np.argsort(-tau_hat, kind="stable")[:150]  # the top 30%, all with positive effects
    assert (tau_hat[top] > 0).all()
    treated = np.zeros(500, dtype=bool)
    treated[top] = True
    value = policy_value(tau_hat, share=0.3, **truth)
    assert value.estimate == pytest.approx(np.mean(test.mu[:, 0] + treated * test.tau))
    assert value.treat_all == pytest.approx(test.mu[:, 1].mean())
    # a useless ranking gains nothing over random targeting, in truth
    q = qini_coefficient(np.zeros(500), **truth)
    assert q.estimate == pytest.approx(0.0)


def test_tune_interrupted_says_how_to_resume(
    tmp_path: Path,
    tune_csv: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def interrupt(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(ml.MetaLearnerOptunaSearch, "fit", interrupt)
    storage = str(tmp_path / "tune.log")
    argv = ("tune", "--data", str(tune_csv), *TUNE, "--id-columns", "customer")
    rc, stdout, err = _run(capsys, *argv, "--storage", storage)
    assert rc == 130
    assert stdout == ""
    assert err == (
        "metalearn: interrupted; the finished trials are kept in --storage: run the same "
        "command to resume.\n"
    )


def test_fit_with_groups_keeps_groups_in_folds_and_clusters_the_ate(
    tmp_path: Path, frame: pl.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    data = frame.with_columns((pl.int_range(pl.len()) // 10).alias("store"))
    path = tmp_path / "stores.csv"
    data.write_csv(path)
    out = tmp_path / "effects.parquet"
    rc, stdout, err = _run(
        capsys,
        "fit",
        "--data",
        str(path),
        *BASE,
        "--id-columns",
        "customer",
        "--groups",
        "store",
        "--out",
        str(out),
    )
    assert rc == 0, err
    assert "clustered by 30 groups" in stdout
    assert "300 rows, 4 features" in stdout  # the groups column is not a feature
    # the same as the DR-learner fitted by hand with groups
    learner = ml.DRLearner(
        outcome_model=_small_model("reg"),
        propensity_model=_small_model("clf"),
        effect_model=_small_model("reg"),
        n_folds=2,
        n_jobs=1,
        random_state=0,
    )
    X = data.select("x0", "x1", "x2", "region")
    tau = learner.fit_predict(X, data["spend"].to_numpy(), data["treated"], groups=data["store"])
    np.testing.assert_allclose(pl.read_parquet(out)["tau_1_vs_0"].to_numpy(), tau)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--groups", "nowhere"], "--groups"),
        (["--groups", "x0", "--features", "x0", "x1"], "the groups column"),
    ],
)
def test_fit_groups_errors(
    csv: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    rc, _stdout, err = _run(capsys, "fit", "--data", str(csv), *BASE, *extra)
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_tune_with_groups_refits_with_clustered_ate(
    tmp_path: Path, tune_frame: pl.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "grouped.csv"
    tune_frame.with_columns((pl.int_range(pl.len()) % 12).alias("store")).write_csv(path)
    out = tmp_path / "effects.parquet"
    rc, stdout, err = _run(
        capsys,
        "tune",
        "--data",
        str(path),
        *TUNE,
        "--n-trials",
        "1",
        "--nuisance-trials",
        "1",
        "--groups",
        "store",
        "--out",
        str(out),
    )
    assert rc == 0, err
    assert "clustered by 12 groups" in stdout
    assert pl.read_parquet(out).height == tune_frame.height
