"""metalearn.plotting: every figure renders with the expected elements (Agg backend)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import polars as pl
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

import metalearn as ml
from metalearn import evaluation as ev
from metalearn import plotting


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def two() -> ml.datasets.Simulation:
    return ml.datasets.simulate_nie_wager("B", n=800, seed=0)


@pytest.fixture(scope="module")
def three() -> ml.datasets.Simulation:
    return ml.datasets.simulate_multiarm(n=900, seed=0)


def _legend(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def _bands(ax: Axes) -> list[PolyCollection]:
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


# ------------------------------------------------------------------ overlap
def test_overlap_from_result_draws_two_histograms_and_bounds() -> None:
    sim = ml.datasets.simulate_confounded(n=600, seed=1)
    ov = ml.diagnostics.overlap(sim.X, sim.w, propensity=sim.propensity, bounds=0.05)
    ax = plotting.overlap(ov, sim.w, bins=20)
    assert isinstance(ax, Axes)
    assert len(ax.patches) == 40  # two histograms of 20 bins
    assert _legend(ax) == ["0 (control)", "1", "bounds"]
    assert [line.get_xdata()[0] for line in ax.lines] == [0.05, 0.95]
    assert ax.get_xlabel() == "propensity P(W = 1 | X)"


def test_overlap_array_input_has_no_bounds_unless_asked(two: ml.datasets.Simulation) -> None:
    ax = plotting.overlap(np.full(len(two.w), 0.5), two.w, bins=10)
    assert isinstance(ax, Axes)
    assert len(ax.patches) == 20 and len(ax.lines) == 0
    ax = plotting.overlap(0.5, two.w, bounds=(0.1, 0.9))
    assert isinstance(ax, Axes)
    assert len(ax.lines) == 2


def test_overlap_several_variants_gives_one_panel_each(three: ml.datasets.Simulation) -> None:
    fig = plotting.overlap(three.propensity, three.w, bins=15)
    assert isinstance(fig, Figure)
    assert [a.get_title() for a in fig.axes] == ["Overlap: 1 vs 0", "Overlap: 2 vs 0"]
    assert all(len(a.patches) == 30 for a in fig.axes)
    _, axes = plt.subplots(1, 2)
    out = plotting.overlap(three.propensity, three.w, ax=list(axes))
    assert out is axes[0].figure


def test_overlap_errors(two: ml.datasets.Simulation, three: ml.datasets.Simulation) -> None:
    ov = ml.diagnostics.overlap(None, two.w, propensity=0.5)
    with pytest.raises(ValueError, match="`w` has 10 rows but the Overlap result has 800"):
        plotting.overlap(ov, two.w[:10])
    with pytest.raises(ValueError, match="computed for"):
        plotting.overlap(ov, three.w[: len(two.w)])
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="one Axes per treated variant"):
        plotting.overlap(three.propensity, three.w, ax=ax)
    with pytest.raises(ValueError, match="`bins` must be a positive integer"):
        plotting.overlap(0.5, two.w, bins=0)


# ------------------------------------------------------------------ balance
def test_balance_love_plot(two: ml.datasets.Simulation) -> None:
    table = ml.diagnostics.balance_table(two.X, two.w, propensity=0.5)
    ax = plotting.balance(table)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert sorted(labels) == sorted(two.feature_names)
    raw = dict(zip(table["covariate"].to_list(), np.abs(table["smd_raw"].to_numpy())))
    assert raw[labels[-1]] == max(raw.values())  # most imbalanced on top
    assert len(ax.lines) == 3 + 1  # raw, ipw, overlap + the 0.1 line
    assert _legend(ax) == ["unweighted", "IPW", "overlap weights", "|SMD| = 0.1"]
    assert ax.lines[-1].get_xdata()[0] == 0.1


def test_balance_signed_and_pandas(two: ml.datasets.Simulation) -> None:
    X = pd.DataFrame(two.X, columns=list(two.feature_names))
    table = ml.diagnostics.balance_table(X, two.w, weighting=(), threshold=0.2)
    ax = plotting.balance(table, threshold=0.2, absolute=False)
    assert _legend(ax) == ["unweighted", "|SMD| = 0.2"]
    assert len(ax.lines) == 1 + 3  # markers, +-0.2 and 0
    assert ax.get_xlabel() == "standardized mean difference"


def test_balance_several_variants_needs_a_choice(three: ml.datasets.Simulation) -> None:
    table = ml.diagnostics.balance_table(three.X, three.w, weighting=())
    with pytest.raises(ValueError, match="choose one with `variant=`"):
        plotting.balance(table)
    ax = plotting.balance(table, variant=2)
    assert ax.get_title() == "Covariate balance: 2 vs 0"
    with pytest.raises(ValueError, match="`variant`=5 is not in the table"):
        plotting.balance(table, variant=5)


# ------------------------------------------------------- effect distribution
def test_cate_distribution_vector_and_frame(three: ml.datasets.Simulation) -> None:
    ax = plotting.cate_distribution(three.tau[:, 0], bins=12)
    assert len(ax.patches) == 12
    assert _legend(ax) == ["effect"]
    frame = pl.DataFrame({"tau_1_vs_0": three.tau[:, 0], "tau_2_vs_0": three.tau[:, 1]})
    ax = plotting.cate_distribution(frame, bins=10)
    assert len(ax.patches) == 20
    assert _legend(ax) == ["tau_1_vs_0", "tau_2_vs_0"]
    assert ax.lines[0].get_xdata()[0] == 0.0  # the zero line
    ax = plotting.cate_distribution(three.tau)
    assert _legend(ax) == ["effect 1", "effect 2"]


def test_cate_distribution_errors(three: ml.datasets.Simulation) -> None:
    with pytest.raises(ValueError, match="`labels` has 1 entries"):
        plotting.cate_distribution(three.tau, labels=["a"])
    with pytest.raises(ValueError, match="multi-class outcome pick one class"):
        plotting.cate_distribution(np.zeros((5, 2, 3)))
    with pytest.raises(ValueError, match="no finite value"):
        plotting.cate_distribution(np.array([np.nan, np.nan]))


# ------------------------------------------------------------------- curves
def test_uplift_curve_line_band_and_random_line(two: ml.datasets.Simulation) -> None:
    curve = ev.uplift_curve(two.tau, two.y, two.w, propensity=0.5)
    _, given = plt.subplots()
    ax = plotting.uplift_curve(curve, ax=given)
    assert ax is given
    assert len(ax.lines) == 2 and len(_bands(ax)) == 1
    assert _legend(ax) == ["1 vs 0", "random targeting"]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), curve["ate"].to_numpy())
    assert len(_bands(plotting.uplift_curve(curve, ci=False))) == 0


def test_qini_curve_several_variants(three: ml.datasets.Simulation) -> None:
    curve = ev.qini_curve(three.tau, three.y, three.w, propensity=three.propensity)
    ax = plotting.qini_curve(curve)
    assert _legend(ax) == [
        "1 vs 0",
        "2 vs 0",
        "best vs 0",
        "random targeting (1)",
        "random targeting (2)",
        "random targeting (best)",
    ]
    assert len(_bands(ax)) == 3
    ax = plotting.qini_curve(curve.to_pandas(), variant="2")
    assert _legend(ax) == ["2 vs 0", "random targeting"]
    line, random = ax.lines[0], ax.lines[1]
    assert random.get_ydata()[0] == 0.0
    assert line.get_ydata()[-1] == pytest.approx(random.get_ydata()[-1])


def test_curve_input_errors(two: ml.datasets.Simulation) -> None:
    curve = ev.uplift_curve(two.tau, two.y, two.w, propensity=0.5)
    with pytest.raises(ValueError, match=r"metalearn.evaluation.qini_curve"):
        plotting.qini_curve(curve)
    with pytest.raises(TypeError, match="pandas or Polars DataFrame"):
        plotting.uplift_curve(np.zeros((3, 3)))


def test_budget_curve_references(two: ml.datasets.Simulation) -> None:
    curve = ev.budget_curve(two.tau, two.y, two.w, propensity=0.5, cost=0.5)
    ax = plotting.budget_curve(curve)
    assert _legend(ax) == ["1 vs 0", "treat none", "treat all"]
    value = curve["value"].to_numpy()
    none_line, all_line = ax.lines[1], ax.lines[2]
    assert none_line.get_ydata()[0] == pytest.approx(value[0])
    assert all_line.get_ydata()[0] == pytest.approx(value[-1])
    assert len(_bands(ax)) == 1


def test_budget_curve_without_share_one(two: ml.datasets.Simulation) -> None:
    full = ev.budget_curve(two.tau, two.y, two.w, propensity=0.5, cost=0.5)
    part = ev.budget_curve(two.tau, two.y, two.w, propensity=0.5, cost=0.5, shares=[0.2, 0.5])
    ax = plotting.budget_curve(part, ci=False)
    assert ax.lines[2].get_ydata()[0] == pytest.approx(full["value"].to_numpy()[-1])
    assert ax.lines[1].get_ydata()[0] == pytest.approx(full["value"].to_numpy()[0])


# -------------------------------------------------------------- calibration
def test_calibration_error_bars_and_diagonal(two: ml.datasets.Simulation) -> None:
    table = ev.calibration_table(two.tau, two.y, two.w, propensity=0.5, n_groups=4)
    ax = plotting.calibration(table)
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1
    points = bars[0].lines[0]
    np.testing.assert_allclose(points.get_xdata(), table["predicted"].to_numpy())
    np.testing.assert_allclose(points.get_ydata(), table["estimate"].to_numpy())
    diagonal = ax.lines[0]
    np.testing.assert_allclose(diagonal.get_xdata(), diagonal.get_ydata())
    assert _legend(ax) == ["perfect calibration", "1 vs 0"]


def test_calibration_several_variants(three: ml.datasets.Simulation) -> None:
    table = ev.calibration_table(three.tau, three.y, three.w, propensity=three.propensity)
    ax = plotting.calibration(table)
    assert len(ax.containers) == 2
    assert _legend(ax)[1:] == ["1 vs 0", "2 vs 0"]


# ------------------------------------------------------------ missing extra
def test_missing_matplotlib_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, two: ml.datasets.Simulation
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r'pip install "metalearn\[plot\]"'):
        plotting.cate_distribution(two.tau)


def test_plotting_is_reachable_from_the_package_without_importing_matplotlib() -> None:
    import subprocess
    import sys

    code = (
        "import sys, metalearn as ml; f = ml.plotting.overlap; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported by import metalearn'"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
