"""metalearn.progress: bars for cross-fitting batches and bootstrap replicates."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

import metalearn as ml
from metalearn import cli
from metalearn._core import progress as _progress
from metalearn._core.progress import Bar, _Settings

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


# ------------------------------------------------- time left and stage labels
class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _terminal_bar(total: int, **kw: object) -> tuple[Bar, _Terminal, _Clock]:
    clock = _Clock()
    term = _Terminal()
    b = Bar(total, "nuisance models", _Settings(stream=term, live=None), clock=clock, **kw)
    return b, term, clock


def _last_frame(term: _Terminal) -> str:
    return term.getvalue().split("\r")[-1]


def test_eta_appears_after_a_few_units_and_extrapolates_the_rate(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    b, term, clock = _terminal_bar(10)
    assert b.eta() is None and "left" not in _last_frame(term)
    for _ in range(2):
        clock.now += 2.0
        b.update()
        assert b.eta() is None and "left" not in _last_frame(term)
    clock.now += 2.0
    b.update()  # 3 done in 6 s: 7 more at 2 s each
    assert b.eta() == pytest.approx(14.0)
    assert _last_frame(term).startswith("metalearn: nuisance models [#######")
    assert "3/10 6.0 s, about 14.0 s left" in _last_frame(term)
    clock.now += 14.0  # a slow unit: the estimate follows the mean rate
    b.update()
    assert b.eta() == pytest.approx(20.0 / 4 * 6)
    assert "4/10 20.0 s, about 30.0 s left" in _last_frame(term)
    b.update(6)
    assert b.eta() is None
    b.close()
    assert _last_frame(term).rstrip() == f"metalearn: nuisance models [{'#' * 24}] 10/10 20.0 s"


def test_eta_is_shown_early_for_small_batches_and_in_minutes_for_long_ones(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    b, term, clock = _terminal_bar(2)
    clock.now += 1.5
    b.update()
    assert "1/2 1.5 s, about 1.5 s left" in _last_frame(term)
    b, term, clock = _terminal_bar(100)
    clock.now += 45.0
    b.update(3)
    assert "about 24 min 15 s left" in _last_frame(term)
    clock.now += 5 * 3600  # 4 done in 18045 s: 96 more take 433080 s
    b.update()
    assert "about 120 h 18 min left" in _last_frame(term)


def test_off_a_terminal_the_line_has_neither_eta_nor_labels() -> None:
    log = io.StringIO()
    clock = _Clock()
    with _progress.stage("candidate 2/5"):
        b = Bar(
            4,
            "effect models",
            _Settings(stream=log, live=None),
            labels=["`a` (M)"] * 4,
            clock=clock,
        )
    for _ in range(4):
        clock.now += 1.0
        b.update()
    assert log.getvalue() == ""
    b.close()
    assert log.getvalue() == f"metalearn: effect models [{'#' * 24}] 4/4 4.0 s\n"


def test_terminal_line_names_the_model_being_fitted(data, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    X, w, y = data
    term = _Terminal()
    with ml.progress(file=term):
        _dr(1).fit(X, y, w)
    frames = term.getvalue().split("\r")[1:]
    nuisance = [f for f in frames if "nuisance models" in f]
    labels = [f.split(" | ")[1].strip() if " | " in f else None for f in nuisance]
    # one frame per fit drawn before it finishes, none once the batch is done
    assert all(lab is not None for lab in labels[:6]) and labels[6:] == [None, None]
    assert {lab.split(",")[0] for lab in labels[:6]} == {"outcome_model", "propensity_model"}
    assert all("nuisance stage" in lab for lab in labels[:6])
    effect = [f for f in frames if "effect models" in f and " | " in f]
    assert effect and all("effect_model, final stage" in f for f in effect)
    assert any("left" in f for f in nuisance)  # 6 fits: the estimate shows from the third


def test_long_lines_are_cut_to_the_terminal_and_leftovers_wiped(data, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "70")
    X, w, y = data
    term = _Terminal()
    with ml.progress(file=term):
        _dr(1).fit(X, y, w)
    frames = term.getvalue().split("\r")[1:]
    assert max(len(f.rstrip()) for f in frames) <= 69
    assert any(f.rstrip().endswith("...") for f in frames)
    # what a terminal shows: each frame overwrites the line from its start, so a
    # shorter frame must be padded to wipe the longer one before it
    screen = ""
    for frame in frames:
        text = frame.rstrip("\n")
        screen = text + screen[len(text) :]
        assert screen.rstrip() == text.rstrip()
        if frame.endswith("\n"):
            screen = ""


def test_stage_labels_nest_and_are_reset() -> None:
    assert _progress._STAGE.get() is None
    with _progress.stage("refit"), _progress.stage("bootstrap"):
        assert _progress._STAGE.get() == "refit: bootstrap"
    assert _progress._STAGE.get() is None
    seen = [(_progress._STAGE.get(), c) for c in _progress.candidates("abc")]
    assert seen == [("candidate 1/3", "a"), ("candidate 2/3", "b"), ("candidate 3/3", "c")]
    assert _progress._STAGE.get() is None
    with pytest.raises(RuntimeError):
        for _ in _progress.candidates([1, 2], name="trial"):
            assert _progress._STAGE.get() == "trial 1/2"
            raise RuntimeError
    assert _progress._STAGE.get() is None


def test_grid_search_labels_each_candidate_on_a_terminal_only(data, monkeypatch) -> None:
    from metalearn.tuning import MetaLearnerGridSearch

    monkeypatch.setenv("COLUMNS", "200")
    X, w, y = data
    grid = {"n_folds": [2, 3]}  # two nuisance stages, two final stages
    search = MetaLearnerGridSearch(
        _dr(1),
        grid,
        scoring_nuisance=ml.Nuisance(
            outcome_model=LinearRegression(), propensity_model=LogisticRegression(), n_folds=2
        ),
    )
    term = _Terminal()
    with ml.progress(file=term):
        search.fit(X, y, w)
    text = term.getvalue()
    for i in (1, 2):
        assert f"metalearn: candidate {i}/2: nuisance models [" in text
        assert f"metalearn: candidate {i}/2: effect models [" in text
    assert "candidate 3/" not in text
    log = io.StringIO()
    with ml.progress(file=log):
        search.fit(X, y, w)
    assert "candidate" not in log.getvalue()
    assert {d for d, *_ in _summaries(log.getvalue())} >= {"nuisance models", "effect models"}
