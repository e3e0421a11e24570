"""Result objects read well in notebooks: ``summary()`` frames, HTML tables, short reprs.

Every result class mixes in :class:`metalearn._core.results.TableResult` (or,
for :class:`~metalearn.diagnostics.Overlap`, whose ``summary`` field is a
frame already, :class:`~metalearn._core.results.TableRepr`): the rows are
declared once per class, the HTML and the text are made by the mixin.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.linear_model import LinearRegression

import metalearn as ml
from metalearn._core.results import AverageEffect, TableRepr, TableResult
from metalearn.evaluation import blp_test, policy_value, qini_coefficient, rate
from metalearn.explain import summarize_cate
from metalearn.scoring import evaluate

_EFFECT = "variant control estimate std_error ci_low ci_high p_value level method n"
_INTERVAL = "estimate std_error ci_low ci_high p_value"

# class name -> the columns its summary() must have (in this order)
_COLUMNS = {
    "AverageEffect": _EFFECT,
    "WeightedEffect": f"{_EFFECT} estimand",
    "MatchingEffect": f"{_EFFECT} estimand n_unmatched mean_distance max_distance",
    "TargetingArea": f"variant control kind {_INTERVAL} random level method n",
    "RATEResult": f"variant control target {_INTERVAL} level method n n_bootstrap",
    "BLPResult": f"variant control ate ate_std_error {_INTERVAL} p_value_calibrated level method n",
    "PolicyValue": f"{_INTERVAL} treat_none treat_all treat_all_variant gain_over_none "
    "gain_over_none_std_error gain_over_all gain_over_all_std_error share_treated control "
    "level method n",
    "CATEIntervals": "effect n_rows estimate_mean std_error_mean width_mean "
    "share_excluding_zero level method n_boot",
    "LinearCATEInference": "effect term estimate std_error z p_value ci_low ci_high",
    "Evaluation": "variant control loss value baseline gain gain_std_error baseline_effect n",
    "CATETree": "effect leaf rule n_fit n_estimate cate_fit estimate std_error ci_low ci_high",
    "LeafEffect": "leaf rule n_fit n_estimate cate_fit estimate std_error ci_low ci_high",
    "ExplanationInfo": "effect variant control outcome_class method algorithm "
    "feature_perturbation exact additive n_models n_background max_additivity_error "
    "fidelity_r2 note",
    "Overlap": "variant control auc share_outside bounds suggested_bounds method n",
    "Refutation": "check variant control estimate std_error statistic expected tolerance "
    "passed rule n_repeats",
}
EXPECTED: dict[str, list[str]] = {k: v.split() for k, v in _COLUMNS.items()}


def _results(as_pandas: bool) -> dict[str, Any]:
    """One object of every result class, from numpy (or pandas) features."""
    sim = ml.datasets.simulate_confounded(n=600, seed=0)
    X = pd.DataFrame(sim.X, columns=[f"x{j}" for j in range(sim.X.shape[1])])
    X = X if as_pandas else sim.X
    y, w, e = sim.y, sim.w, sim.propensity
    lin = LinearRegression()
    dr = ml.DRLearner(
        outcome_model=lin, effect_model=lin, final_stage="full", n_folds=2, random_state=0
    )
    tau = dr.fit_predict(X, y, w, propensity=e)
    t = ml.TLearner(outcome_model=lin, n_folds=2, random_state=0)
    nuisance = ml.Nuisance(outcome_model=lin, n_folds=2, random_state=0)
    tree = summarize_cate(dr, X, y, w, propensity=e, random_state=0)
    explainer = dr.explainer(random_state=0)
    explainer(X[:20])
    out: dict[str, Any] = {
        "AverageEffect": ml.ate.difference_in_means(None, y, w),
        "WeightedEffect": ml.ate.ipw(None, y, w, propensity=e),
        "MatchingEffect": ml.ate.matching(X, y, w, propensity=e),
        "TargetingArea": qini_coefficient(tau, y, w, propensity=e),
        "RATEResult": rate(tau, y, w, propensity=e, n_bootstrap=20, random_state=0),
        "BLPResult": blp_test(tau, y, w, propensity=e),
        "PolicyValue": policy_value(tau, y, w, propensity=e, cost=0.5),
        "CATEIntervals": ml.inference.bootstrap_cate(
            t, X, y, w, X_new=X[:10], n_boot=5, random_state=0
        ),
        "LinearCATEInference": ml.inference.linear_dr_inference(dr, X),
        "Evaluation": evaluate(t.fit(X, y, w), X, y, w, propensity=e, nuisance=nuisance),
        "CATETree": tree,
        "LeafEffect": tree.leaves[0],
        "ExplanationInfo": explainer.info_["tau_1_vs_0"],
        "Overlap": ml.diagnostics.overlap(X, w, propensity=e),
        "Refutation": ml.refute.subset(
            ml.ate.difference_in_means, X, y, w, n_repeats=3, random_state=0
        ),
    }
    return out


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return _results(as_pandas=False)


@pytest.fixture(scope="module")
def pandas_results() -> dict[str, Any]:
    return _results(as_pandas=True)


def _summary(obj: Any) -> Any:
    # Overlap's ``summary`` is a field (its score table); its rows are the overview
    return obj._summary_frame() if type(obj).__name__ == "Overlap" else obj.summary()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_summary_is_a_polars_frame_with_the_expected_columns(
    results: dict[str, Any], name: str
) -> None:
    obj = results[name]
    assert type(obj).__name__ == name
    frame = _summary(obj)
    assert isinstance(frame, pl.DataFrame)
    assert frame.columns == EXPECTED[name]
    assert frame.height >= 1


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_repr_html_is_one_table_of_the_summary(results: dict[str, Any], name: str) -> None:
    obj = results[name]
    page = obj._repr_html_()
    assert isinstance(page, str)
    assert page.count("<table") == 1 and page.count("</table>") == 1
    assert f"<caption>{name}</caption>" in page
    headers = re.findall(r"<th>(.*?)</th>", page)
    assert headers == EXPECTED[name]
    frame = _summary(obj)
    assert page.count("<tr>") == 1 + min(frame.height, 50)
    assert "<=" not in page and "< " not in page  # text is escaped


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_repr_is_short(results: dict[str, Any], name: str) -> None:
    obj = results[name]
    text = repr(obj)
    lines = text.splitlines()
    # the ate subclasses keep the repr of AverageEffect
    assert text.startswith("AverageEffect" if isinstance(obj, AverageEffect) else name)
    if len(lines) == 1:
        assert len(text) < 300, text
    else:  # a compact table: a title, a header and a few rows
        assert len(lines) <= 12, text
        assert max(map(len, lines)) <= 120, text
    assert "array(" not in text and "DecisionTreeRegressor" not in text


def test_values_in_the_summary_are_the_fields(results: dict[str, Any]) -> None:
    effect = results["AverageEffect"]
    row = effect.summary().row(0, named=True)
    assert row["estimate"] == effect.estimate and row["p_value"] == pytest.approx(effect.p_value)
    assert (row["variant"], row["control"], row["n"]) == (1, 0, 600)
    tree = results["CATETree"]
    leaves = tree.summary()
    assert leaves["leaf"][0] == -1 and leaves["rule"][0] == "all rows"
    assert leaves["estimate"][0] == tree.overall.estimate
    assert leaves.height == 1 + len(tree.leaves)
    assert leaves["estimate"][1:].to_list() == tree.table()["estimate"].to_list()
    ci = results["CATEIntervals"]
    assert ci.summary()["n_rows"][0] == 10
    assert ci.summary()["width_mean"][0] == pytest.approx(np.mean(ci.ci_high - ci.ci_low))
    ev = results["Evaluation"]
    assert ev.summary().equals(ev.losses)
    inf = results["LinearCATEInference"]
    assert inf.summary().equals(inf.coef_table())


def test_refutation_summary_is_its_verdict_in_one_row(results: dict[str, Any]) -> None:
    res = results["Refutation"]
    row = res.summary().row(0, named=True)
    assert res.summary().height == 1
    assert (row["check"], row["variant"], row["control"]) == ("subset", 1, 0)
    assert row["passed"] is res.passed and row["rule"] == res.rule
    assert row["statistic"] == res.statistic and row["tolerance"] == res.tolerance
    assert row["n_repeats"] == 3 == len(res.statistics)
    assert "statistics" not in row  # the re-estimates stay on the object
    assert repr(res).startswith("Refutation(subset, 1 vs 0: ")  # its own one-line repr


def test_summary_follows_pandas_input_where_the_result_knows_it(
    pandas_results: dict[str, Any],
) -> None:
    knows = {"CATEIntervals", "LinearCATEInference", "Evaluation", "CATETree", "Overlap"}
    for name, obj in pandas_results.items():
        frame = _summary(obj)
        expected = pd.DataFrame if name in knows else pl.DataFrame
        assert isinstance(frame, expected), name
        assert list(frame.columns) == EXPECTED[name], name


def test_multi_class_effect_has_one_row_per_class() -> None:
    effect = AverageEffect.from_estimate(
        variant="b", control="a", estimate=[0.1, -0.1], std_error=[0.05, 0.05], method="x", n=9
    )
    frame = effect.summary()
    assert frame["outcome_class"].to_list() == [0, 1]
    assert frame["estimate"].to_list() == [0.1, -0.1]
    assert frame["variant"].to_list() == ["b", "b"]


@dataclasses.dataclass(frozen=True, repr=False)
class _Many(TableResult):
    n: int

    def _summary_rows(self) -> list[dict[str, Any]]:
        return [{"i": i, "label": f"<row {i}>", "x": i / 3} for i in range(self.n)]


def test_long_results_are_cut_in_html_and_repr_but_not_in_summary() -> None:
    many = _Many(75)
    assert many.summary().height == 75
    page = many._repr_html_()
    assert page.count("<tr>") == 51 and "25 more rows" in page
    assert "&lt;row 3&gt;" in page
    lines = repr(many).splitlines()
    assert lines[0] == "_Many (75 rows)" and lines[-1].strip().startswith("... 67 more rows")
    assert len(lines) == 2 + 8 + 1
    one = repr(_Many(1))
    assert one == "_Many(i=0, label='<row 0>', x=0)"


def test_every_result_class_uses_the_mixin_and_no_class_writes_its_own_html(
    results: dict[str, Any],
) -> None:
    for name, obj in results.items():
        assert isinstance(obj, TableRepr), name
        for klass in type(obj).__mro__:
            if klass not in (TableRepr, TableResult):
                assert "_repr_html_" not in vars(klass), name
        if name != "Overlap":
            assert isinstance(obj, TableResult), name


def test_dataclass_fields_and_equality_are_unchanged(results: dict[str, Any]) -> None:
    leaf = results["LeafEffect"]
    assert dataclasses.replace(leaf) == leaf
    assert [f.name for f in dataclasses.fields(leaf)] == EXPECTED["LeafEffect"]
    assert isinstance(results["Overlap"].summary, pl.DataFrame)  # still the score table
