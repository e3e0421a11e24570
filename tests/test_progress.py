"""metalearn.progress: bars for cross-fitting batches and bootstrap replicates."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

import metalearn as ml
from metalearn import cli

LINE = re.compile(
    r"metalearn: (?P<desc>[a-z ]+) \[[#.]{24}\] (?P<done>\d+)/(?P<total>\d+) [\d.]+ s"
)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X, w, y, *_ = ml.datasets.simulate_nie_wager("B", n=600, seed=0)
    return X, w, y


def _dr(n_jobs: int) -> ml.DRLearner:
    return ml.DRLearner(
        outcome_model=LinearRegression(),
        propensity_model=LogisticRegression(),
        effect_model=LinearRegression(),
        n_folds=3,
        n_jobs=n_jobs,
        random_state=0,
    )


def _summaries(text: str) -> list[tuple[str, int, int]]:
    out = []
    for line in text.splitlines():
        m = LINE.fullmatch(line)
        assert m is not None, f"not a progress line: {line!r}"
        out.append((m["desc"], int(m["done"]), int(m["total"])))
    return out


def test_off_by_default(data, capsys: pytest.CaptureFixture[str]) -> None:
    _dr(1).fit_predict(*data[:1], data[2], data[1])
    out, err = capsys.readouterr()
    assert out == "" and err == ""


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_one_summary_line_per_batch_counting_every_fit(data, n_jobs: int) -> None:
    X, w, y = data
    log = io.StringIO()
    with ml.progress(file=log):
        learner = _dr(n_jobs)
        tau = learner.fit_predict(X, y, w)
    lines = _summaries(log.getvalue())
    assert [d for d, *_ in lines] == ["nuisance models", "effect models"]
    assert all(done == total for _, done, total in lines)
    # outcome (pooled) + propensity per fold, then one effect model per fold
    assert [t for *_, t in lines] == [6, 3]
    assert sum(t for *_, t in lines) == learner.n_model_fits_
    # reporting changes nothing about the estimates
    np.testing.assert_array_equal(tau, _dr(n_jobs).fit_predict(X, y, w))


def test_terminal_line_is_redrawn_then_finished(data) -> None:
    X, w, y = data
    term = _Terminal()
    with ml.progress(file=term):
        _dr(1).fit(X, y, w)
    text = term.getvalue()
    frames = text.split("\r")[1:]
    assert text.endswith("\n")
    nuisance = [f for f in frames if "nuisance models" in f]
    # drawn at 0/6, after each of the six fits, and once more to end the line
    assert [int(LINE.search(f)["done"]) for f in nuisance] == [*range(7), 6]
    assert nuisance[-1].endswith("\n") and not nuisance[-2].endswith("\n")


def test_disabled_block_silences_nested_code(data) -> None:
    X, w, y = data
    log = io.StringIO()
    with ml.progress(file=log), ml.progress(False):
        _dr(1).fit(X, y, w)
    assert log.getvalue() == ""


def test_bootstrap_draws_one_bar_for_its_replicates(data) -> None:
    X, w, y = data
    log = io.StringIO()
    t = ml.TLearner(outcome_model=LinearRegression(), random_state=0)
    with ml.progress(file=log):
        ml.inference.bootstrap_cate(t, X, y, w, X_new=X[:3], n_boot=5, n_jobs=1, random_state=0)
    lines = _summaries(log.getvalue())
    # the fit on all rows, then the replicates without one line per replicate fit
    assert lines[-1] == ("bootstrap replicates", 5, 5)
    assert [d for d, *_ in lines].count("bootstrap replicates") == 1
    assert len(lines) == 2


def test_cli_fit_reports_progress_on_request(tmp_path, data, capsys) -> None:
    import polars as pl

    X, w, y = data
    path = tmp_path / "d.csv"
    pl.DataFrame({"x0": X[:, 0], "x1": X[:, 1], "t": w, "y": y}).write_csv(path)
    base = ["fit", "--data", str(path), "--outcome", "y", "--treatment", "t", "--n-folds", "2"]
    assert cli.main([*base, "--learner", "T", "--n-jobs", "1", "--progress"]) == 0
    _, err = capsys.readouterr()
    assert [d for d, *_ in _summaries(err)] == ["nuisance models"]
    assert cli.main([*base, "--learner", "T", "--n-jobs", "1", "--no-progress"]) == 0
    assert capsys.readouterr()[1] == ""
