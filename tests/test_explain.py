"""Tests of metalearn.explain: SHAP explainers, importance, the honest CATE tree."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from conftest import to_frame
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsRegressor

import metalearn as ml
from metalearn import explain as mex
from metalearn._core.frames import encode_features
from metalearn.explain import (
    CATETree,
    Explainer,
    feature_importance,
    permutation_importance,
    summarize_cate,
)
from metalearn.scoring import fit_scoring_nuisance

shap = pytest.importorskip("shap")

LEARNERS = {
    "S": ml.SLearner,
    "T": ml.TLearner,
    "X": ml.XLearner,
    "R": ml.RLearner,
    "DR": ml.DRLearner,
}
# The additivity tolerance an exactness claim must meet (SHAP's interventional
# TreeSHAP sums in a way that leaves errors of about 1e-7).
TOL = 1e-6


def lgbm() -> LGBMRegressor:
    return LGBMRegressor(n_estimators=15, num_leaves=7, min_child_samples=10, verbose=-1, n_jobs=1)


def lgbm_clf() -> LGBMClassifier:
    return LGBMClassifier(n_estimators=15, num_leaves=7, min_child_samples=10, verbose=-1, n_jobs=1)


def make(cls: type, family: str, *, outcome: Any = None, **kw: Any) -> Any:
    params = cls().get_params(deep=False)
    reg = lgbm if family == "lgbm" else LinearRegression
    clf = lgbm_clf if family == "lgbm" else LogisticRegression
    models = {"outcome_model": reg() if outcome is None else outcome}
    if "propensity_model" in params:
        models["propensity_model"] = clf()
    if "effect_model" in params:
        models["effect_model"] = reg()
    return cls(n_folds=2, random_state=0, **models, **kw)


def max_error(explanations: dict[str, Any], tau: np.ndarray) -> float:
    tau = tau.reshape(tau.shape[0], -1)
    return max(
        float(np.max(np.abs(e.base_values + e.values.sum(axis=1) - tau[:, i])))
        for i, e in enumerate(explanations.values())
    )


@pytest.fixture(scope="module")
def sim() -> Any:
    return ml.datasets.simulate_nie_wager("B", n=400, p=5, seed=0)


@pytest.fixture(scope="module")
def dr_lin(sim: Any) -> Any:
    return make(ml.DRLearner, "linear").fit(sim.X, sim.y, sim.w)


# ------------------------------------------------------------- additivity
EXPECTED_ALGORITHM = {
    ("S", "lgbm"): "interventional",
    ("T", "lgbm"): "interventional",
    ("X", "lgbm"): "coalitions",  # propensity model: model-agnostic, exact enumeration
    ("R", "lgbm"): "pred_contrib",
    ("DR", "lgbm"): "pred_contrib",
    ("X", "linear"): "coalitions",
}


@pytest.mark.parametrize("honest", [False, True], ids=["fit", "fit_predict"])
@pytest.mark.parametrize("family", ["lgbm", "linear"])
@pytest.mark.parametrize("name", list(LEARNERS))
def test_base_value_plus_shap_values_is_the_cate(sim: Any, name: str, family: str, honest: bool):
    learner = make(LEARNERS[name], family)
    if honest:
        learner.fit_predict(sim.X, sim.y, sim.w)
    else:
        learner.fit(sim.X, sim.y, sim.w)
    explainer = learner.explainer(n_background=20, random_state=0)
    explanation = explainer(sim.X[:60])
    assert explanation.values.shape == (60, 5)
    assert max_error({"e": explanation}, learner.predict(sim.X[:60])) < TOL
    info = explainer.info_["tau_1_vs_0"]
    assert info.additive and info.exact
    assert info.max_additivity_error < TOL
    assert EXPECTED_ALGORITHM.get((name, family), "linear SHAP") in info.algorithm


@pytest.mark.parametrize("name", ["DR", "T", "S", "R"])
def test_additivity_with_several_variants(name: str):
    sim = ml.datasets.simulate_multiarm(n=600, n_variants=3, seed=0)
    X = sim.to_frame()
    learner = make(LEARNERS[name], "lgbm").fit(X, sim.y, sim.w)
    out = learner.explainer(n_background=20, random_state=0)(X[:50])
    assert list(out) == ["tau_1_vs_0", "tau_2_vs_0"]
    assert max_error(out, learner.predict(X[:50])) < TOL


def test_x_learner_with_known_constant_propensity_is_exact_by_linearity(sim: Any):
    learner = make(ml.XLearner, "lgbm").set_params(final_stage="crossfit")
    learner.fit(sim.X, sim.y, sim.w, propensity=0.5)
    explainer = learner.explainer(n_background=20, random_state=0)
    explanation = explainer(sim.X[:50])
    info = explainer.info_["tau_1_vs_0"]
    assert info.method == "models" and info.n_models == 4  # 2 folds x 2 sides
    assert max_error({"e": explanation}, learner.predict(sim.X[:50])) < TOL


@pytest.mark.parametrize("name", ["T", "S", "DR"])
def test_binary_outcome_is_explained_on_the_probability_scale(name: str):
    sim = ml.datasets.simulate_binary_outcome(n=600, seed=0)
    learner = make(LEARNERS[name], "lgbm", outcome=lgbm_clf()).fit(sim.X, sim.y, sim.w)
    explainer = learner.explainer(n_background=20, random_state=0)
    explanation = explainer(sim.X[:50])
    assert max_error({"e": explanation}, learner.predict(sim.X[:50])) < TOL
    info = explainer.info_["tau_1_vs_0"]
    assert info.exact and info.method == "models"
    if name != "DR":  # T/S outcome models: probabilities, interventional only
        assert info.feature_perturbation == "interventional"


def test_multiclass_outcome_falls_back_to_the_model_agnostic_method(sim: Any):
    y = np.digitize(sim.y, np.quantile(sim.y, [1 / 3, 2 / 3]))
    learner = make(ml.TLearner, "lgbm", outcome=lgbm_clf()).fit(sim.X, y, sim.w)
    explainer = learner.explainer(n_background=10, random_state=0)
    out = explainer(sim.X[:30])
    assert list(out) == ["tau_1_vs_0_0", "tau_1_vs_0_1", "tau_1_vs_0_2"]
    assert max_error(out, learner.predict(sim.X[:30])) < 1e-10
    info = explainer.info_["tau_1_vs_0_2"]
    assert info.method == "agnostic" and info.outcome_class == 2
    assert "softmax" in info.note


def test_t_learner_with_a_pooled_nuisance(sim: Any):
    if "outcome_pooling" not in ml.Nuisance().get_params():
        pytest.skip("this Nuisance has no outcome pooling")
    nuis = ml.Nuisance(
        outcome_model=lgbm(),
        propensity_model=lgbm_clf(),
        n_folds=2,
        random_state=0,
        outcome_pooling="pooled",
    ).fit(sim.X, sim.y, sim.w)
    learner = ml.TLearner(nuisance=nuis).fit(sim.X, sim.y, sim.w)
    explainer = learner.explainer(n_background=20, random_state=0)
    assert max_error({"e": explainer(sim.X[:40])}, learner.predict(sim.X[:40])) < TOL
    assert explainer.info_["tau_1_vs_0"].feature_perturbation == "interventional"


# ---------------------------------------------------------------- exactness
def test_lightgbm_pred_contrib_equals_shap_tree_explainer(sim: Any):
    learner = make(ml.DRLearner, "lgbm", final_stage="full").fit(sim.X, sim.y, sim.w)
    (model,) = learner.effect_models_[(1, 0)]
    ours = learner.explainer()(sim.X)
    theirs = shap.TreeExplainer(model)(sim.X)
    np.testing.assert_allclose(ours.values, theirs.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.base_values, theirs.base_values, rtol=0, atol=1e-12)


def test_per_model_values_equal_the_exact_shapley_values_of_the_cate(sim: Any):
    # T-learner: difference of interventional TreeSHAP values of two models, against the
    # exact enumeration of the CATE function's game with the same background.
    learner = make(ml.TLearner, "lgbm").fit(sim.X, sim.y, sim.w)
    background = sim.X[100:120]
    by_models = learner.explainer(method="models", background=background)(sim.X[:40])
    exact = Explainer(learner, method="agnostic", background=background)
    by_function = exact(sim.X[:40])
    assert exact.info_["tau_1_vs_0"].exact
    np.testing.assert_allclose(by_models.values, by_function.values, atol=1e-6)
    np.testing.assert_allclose(by_models.base_values, by_function.base_values, atol=1e-6)


def test_permutation_estimate_is_additive_and_exact_for_linear_cate(dr_lin: Any, sim: Any):
    background = sim.X[:30]
    closed = dr_lin.explainer(background=background)(sim.X[:40])
    sampled = dr_lin.explainer(
        method="agnostic", background=background, n_permutations=2, random_state=0
    )
    values = sampled(sim.X[:40])
    info = sampled.info_["tau_1_vs_0"]
    assert not info.exact and "permutations" in info.algorithm
    # For a CATE linear in x every permutation gives the exact values.
    np.testing.assert_allclose(values.values, closed.values, atol=1e-10)
    assert info.max_additivity_error < 1e-10


def test_model_agnostic_estimate_of_a_nonlinear_cate_is_additive(sim: Any):
    learner = make(ml.XLearner, "lgbm").fit(sim.X, sim.y, sim.w)
    explainer = learner.explainer(
        method="agnostic", n_permutations=2, n_background=10, random_state=0
    )
    explanation = explainer(sim.X[:30])
    assert not explainer.info_["tau_1_vs_0"].exact
    assert max_error({"e": explanation}, learner.predict(sim.X[:30])) < 1e-10


def test_failed_additivity_check_falls_back_or_raises(
    dr_lin: Any, sim: Any, monkeypatch: pytest.MonkeyPatch
):
    def wrong(model: Any, Z: np.ndarray, **kw: Any) -> tuple[np.ndarray, float, str]:
        return np.zeros_like(Z), 0.0, "broken"

    monkeypatch.setattr(mex, "model_shap", wrong)
    explainer = dr_lin.explainer(n_background=10)
    with pytest.warns(UserWarning, match="did not add up to the CATE"):
        explanation = explainer(sim.X[:20])
    assert explainer.info_["tau_1_vs_0"].method == "agnostic"
    assert max_error({"e": explanation}, dr_lin.predict(sim.X[:20])) < 1e-10
    with pytest.raises(ValueError, match="do not add up to the learner's CATE"):
        dr_lin.explainer(method="models")(sim.X[:20])


# --------------------------------------------------------- names and frames
def test_feature_names_come_from_the_frame(frame: Any, sim: Any):
    X = frame(sim.X, columns=["age", "income", "tenure", "visits", "score"])
    learner = make(ml.DRLearner, "linear").fit(X, sim.y, sim.w)
    explanation = learner.explainer()(X)
    expected = (
        ["x0", "x1", "x2", "x3", "x4"]
        if frame.kind == "numpy"
        else ["age", "income", "tenure", "visits", "score"]
    )
    assert list(explanation.feature_names) == expected


def test_categorical_columns_of_a_polars_frame():
    pl = pytest.importorskip("polars")
    rng = np.random.default_rng(0)
    n = 500
    X = pl.DataFrame(
        {
            "spend": rng.normal(size=n),
            "plan": rng.choice(["basic", "plus", "pro"], n),
            "age": rng.normal(size=n),
        }
    )
    w = rng.integers(0, 2, n)
    y = X["spend"].to_numpy() + w * 2.0 * (X["plan"] == "pro").to_numpy() + rng.normal(size=n)
    for cls, method in (
        (ml.DRLearner, "models"),
        (ml.TLearner, "models"),
        (ml.SLearner, "agnostic"),
    ):
        learner = make(cls, "lgbm").fit(X, y, w)
        explainer = learner.explainer(n_background=10, random_state=0)
        explanation = explainer(X[:40])
        info = explainer.info_["tau_1_vs_0"]
        assert info.method == method
        assert list(explanation.feature_names) == ["spend", "plan", "age"]
        assert set(explanation.display_data[:, 1]) <= {"basic", "plus", "pro"}
        assert max_error({"e": explanation}, learner.predict(X[:40])) < TOL
        if cls is ml.TLearner:  # SHAP misreads LightGBM categorical splits: path-dependent
            assert info.feature_perturbation == "tree_path_dependent"
            assert "randomized" in info.note
            assert "not available" in info.note  # a fallback here, not the user's choice
            chosen = learner.explainer(feature_perturbation="tree_path_dependent")
            chosen(X[:5])
            note = chosen.info_["tau_1_vs_0"].note
            assert "Chosen by feature_perturbation" in note and "not available" not in note


def test_one_effect_gives_an_explanation_several_give_a_dict(dr_lin: Any, sim: Any):
    explainer = dr_lin.explainer()
    assert isinstance(explainer(sim.X[:5]), shap.Explanation)
    assert list(explainer.explain(sim.X[:5])) == ["tau_1_vs_0"]


def test_shap_plots_accept_the_explanations(dr_lin: Any, sim: Any):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    explanation = dr_lin.explainer()(sim.X[:50])
    shap.plots.beeswarm(explanation, show=False)
    shap.plots.bar({"a": explanation, "b": explanation}, show=False)
    shap.plots.waterfall(explanation[0], show=False)
    plt.close("all")


def test_surrogate_reports_fidelity_and_is_not_claimed_additive(sim: Any):
    learner = make(ml.XLearner, "lgbm")
    tau = learner.fit_predict(sim.X, sim.y, sim.w)
    explainer = learner.explainer(method="surrogate", surrogate_model=lgbm(), random_state=0)
    explanation = explainer(sim.X, tau=tau)
    info = explainer.info_["tau_1_vs_0"]
    assert info.method == "surrogate" and not info.additive
    assert info.max_additivity_error < 1e-10  # additive to the surrogate itself
    assert info.fidelity_r2 is not None and info.fidelity_r2 > 0.3
    assert explanation.values.shape == sim.X.shape


# ------------------------------------------------------------------ errors
def test_explainer_errors(dr_lin: Any, sim: Any):
    with pytest.raises(TypeError, match="must be a fitted metalearn"):
        Explainer(LinearRegression())
    with pytest.raises(NotFittedError, match="not fitted"):
        Explainer(ml.DRLearner())
    with pytest.raises(ValueError, match="`method` must be one of"):
        Explainer(dr_lin, method="kernel")
    with pytest.raises(ValueError, match="`feature_perturbation` must be one of"):
        Explainer(dr_lin, feature_perturbation="observational")
    with pytest.raises(ValueError, match="`n_background` must be a positive integer"):
        Explainer(dr_lin, n_background=0)
    with pytest.raises(ValueError, match="`n_permutations` must be a positive integer"):
        Explainer(dr_lin, n_permutations=True)
    with pytest.raises(ValueError, match="`tau` is used only by method='surrogate'"):
        dr_lin.explainer()(sim.X, tau=np.zeros(len(sim.X)))
    with pytest.raises(ValueError, match="`tau` must hold the CATE estimates of the 10 rows"):
        dr_lin.explainer(method="surrogate")(sim.X[:10], tau=np.zeros(9))
    with pytest.raises(ValueError, match="NaN or infinite"):
        dr_lin.explainer(method="surrogate")(sim.X[:10], tau=np.full(10, np.nan))
    with pytest.raises(ValueError, match="`X` has no rows to explain"):
        dr_lin.explainer()(sim.X[:0])
    with pytest.raises(ValueError, match="`background` has no rows"):
        dr_lin.explainer(background=sim.X[:0])(sim.X[:5])
    with pytest.raises(ValueError, match=r"`surrogate_model` .* must be a tree model"):
        dr_lin.explainer(method="surrogate", surrogate_model=KNeighborsRegressor())(sim.X[:30])


def test_path_dependent_game_is_refused_where_it_is_not_exact(sim: Any):
    s = make(ml.SLearner, "lgbm").fit(sim.X, sim.y, sim.w)
    with pytest.raises(ValueError, match="indicator columns of its outcome model"):
        s.explainer(feature_perturbation="tree_path_dependent")(sim.X[:5])
    b = ml.datasets.simulate_binary_outcome(n=300, seed=0)
    t = make(ml.TLearner, "lgbm", outcome=lgbm_clf()).fit(b.X, b.y, b.w)
    with pytest.raises(ValueError, match="log-odds margin"):
        t.explainer(feature_perturbation="tree_path_dependent")(b.X[:5])
    dr = make(ml.DRLearner, "linear").fit(sim.X, sim.y, sim.w)
    with pytest.raises(ValueError, match="no exact per-model SHAP explanation"):
        dr.explainer(feature_perturbation="tree_path_dependent")(sim.X[:5])


def test_x_learner_errors(sim: Any):
    x = make(ml.XLearner, "lgbm").fit(sim.X, sim.y, sim.w)
    with pytest.raises(ValueError, match="not a linear combination of models"):
        x.explainer(method="models")(sim.X[:5])
    p = np.linspace(0.2, 0.8, len(sim.w))  # known, different per row
    xk = make(ml.XLearner, "lgbm").fit(sim.X, sim.y, sim.w, propensity=p)
    with pytest.raises(ValueError, match="per-row known propensities"):
        xk.explainer()(sim.X[:5])
    out = xk.explainer(method="surrogate", surrogate_model=lgbm())(
        sim.X, tau=xk.predict(sim.X, propensity=p)
    )
    assert out.values.shape == sim.X.shape


def test_learner_explainer_passes_options(dr_lin: Any):
    explainer = dr_lin.explainer(method="agnostic", n_background=7)
    assert isinstance(explainer, Explainer)
    assert (explainer.method, explainer.n_background) == ("agnostic", 7)


# -------------------------------------------------------------- importance
def test_feature_importance_table(frame: Any, sim: Any):
    X = frame(sim.X)
    learner = make(ml.DRLearner, "linear").fit(X, sim.y, sim.w)
    table = learner.explainer().feature_importance(X)
    if frame.kind == "pandas":
        import pandas as pd

        assert isinstance(table, pd.DataFrame)
    cols = {c: np.asarray(table[c]) for c in table.columns}
    assert list(table.columns) == ["effect", "feature", "mean_abs_shap", "mean_shap", "rank"]
    assert np.all(np.diff(cols["mean_abs_shap"]) <= 0)
    assert cols["rank"].tolist() == [1, 2, 3, 4, 5]
    # Setup B: tau(x) = x0 + x1 (a linear final model finds both, and little else).
    assert set(cols["feature"][:2].tolist()) == {"x0", "x1"}


def test_feature_importance_of_a_plain_explanation_and_error():
    e = shap.Explanation(values=np.array([[1.0, -3.0], [-1.0, 1.0]]), base_values=np.zeros(2))
    table = feature_importance(e)
    assert table["feature"].to_list() == ["x1", "x0"]
    assert table["mean_shap"].to_list() == [-1.0, 0.0]
    bad = shap.Explanation(values=np.zeros((2, 2, 2)), base_values=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="must hold 2-D SHAP values"):
        feature_importance({"x": bad})


@pytest.mark.parametrize("loss", ["dr", "r", "plugin"])
def test_permutation_importance_finds_the_effect_modifiers(dr_lin: Any, sim: Any, loss: str):
    sn = fit_scoring_nuisance(
        sim.X,
        sim.y,
        sim.w,
        nuisance=ml.Nuisance(
            outcome_model=LinearRegression(),
            propensity_model=LogisticRegression(),
            n_folds=2,
            random_state=0,
        ),
    )
    table = permutation_importance(
        dr_lin, sim.X, sim.y, sim.w, loss=loss, n_repeats=3, nuisance=sn, random_state=0
    )
    assert list(table.columns) == [
        "effect",
        "feature",
        "importance_mean",
        "importance_std",
        "baseline_loss",
        "rank",
    ]
    assert set(table["feature"].to_list()[:2]) == {"x0", "x1"}
    assert table["importance_mean"].to_list()[0] > 0


def test_permutation_importance_default_yardstick_and_frame_type(sim: Any):
    pd = pytest.importorskip("pandas")
    X = to_frame(sim.X, "pandas")
    learner = make(ml.DRLearner, "linear").fit(X, sim.y, sim.w)
    table = permutation_importance(learner, X, sim.y, sim.w, n_repeats=2, random_state=0)
    assert isinstance(table, pd.DataFrame)
    assert len(table) == 5


def test_permutation_importance_errors(dr_lin: Any, sim: Any):
    with pytest.raises(ValueError, match="`loss` must be 'dr', 'r' or 'plugin'"):
        permutation_importance(dr_lin, sim.X, sim.y, sim.w, loss="mse")
    with pytest.raises(ValueError, match="`n_repeats` must be a positive integer"):
        permutation_importance(dr_lin, sim.X, sim.y, sim.w, n_repeats=0)
    with pytest.raises(ValueError, match="`w` must hold the learner's variants"):
        permutation_importance(dr_lin, sim.X, sim.y, sim.w + 1)
    other = fit_scoring_nuisance(
        sim.X[:200],
        sim.y[:200],
        sim.w[:200],
        nuisance=ml.Nuisance(
            outcome_model=LinearRegression(), propensity_model=LogisticRegression(), n_folds=2
        ),
    )
    with pytest.raises(ValueError, match="ScoringNuisance `nuisance` was fitted on other rows"):
        permutation_importance(dr_lin, sim.X, sim.y, sim.w, nuisance=other)
    with pytest.raises(TypeError, match=r"`nuisance` must be a metalearn\.Nuisance"):
        permutation_importance(dr_lin, sim.X, sim.y, sim.w, nuisance="lgbm")


# -------------------------------------------------------------- CATE tree
@pytest.fixture(scope="module")
def step() -> Any:
    """Randomized design with tau = 2 if x0 > 0 else 0 and a linear baseline."""
    rng = np.random.default_rng(1)
    n = 2000
    X = rng.normal(size=(n, 3))
    w = rng.integers(0, 2, n)
    tau = np.where(X[:, 0] > 0, 2.0, 0.0)
    y = X[:, 1] + w * tau + rng.normal(size=n)
    return X, y, w, tau


@pytest.fixture(scope="module")
def step_learner(step: Any) -> Any:
    X, y, w, _ = step
    learner = make(ml.DRLearner, "lgbm")
    learner.fit_predict(X, y, w, propensity=0.5)
    return learner


@pytest.fixture(scope="module")
def step_scoring(step: Any) -> Any:
    X, y, w, _ = step
    return fit_scoring_nuisance(
        X,
        y,
        w,
        propensity=0.5,
        nuisance=ml.Nuisance(outcome_model=LinearRegression(), n_folds=2, random_state=0),
    )


def test_summary_splits_where_the_effect_changes(step: Any, step_learner: Any, step_scoring: Any):
    X, y, w, tau = step
    summary = summarize_cate(
        step_learner,
        X,
        y,
        w,
        max_depth=1,
        nuisance=step_scoring,
        propensity=0.5,
        random_state=0,
    )
    assert isinstance(summary, CATETree)
    assert summary.tau_source == "out-of-fold"
    assert summary.tree.tree_.feature[0] == 0
    assert abs(summary.tree.tree_.threshold[0]) < 0.3
    assert summary.n_fit + summary.n_estimate == len(y)
    leaves = sorted(summary.leaves, key=lambda r: r.estimate)
    assert leaves[0].ci_low < 0.0 < leaves[0].ci_high
    assert leaves[1].ci_low < 2.0 < leaves[1].ci_high
    assert summary.overall.ci_low < tau.mean() < summary.overall.ci_high
    text = str(summary)
    assert text.startswith("Honest CATE tree for tau_1_vs_0")
    assert "x0 <= " in text and "x0 > " in text and "Leaves, largest effect first" in text
    assert leaves[1].rule.startswith("x0 > ")
    np.testing.assert_array_equal(np.unique(summary.apply(X)), sorted(r.leaf for r in leaves))


def test_summary_table_plot_and_tau_sources(step: Any, step_learner: Any, step_scoring: Any):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pd = pytest.importorskip("pandas")
    X, y, w, _ = step
    Xp = to_frame(X, "pandas")
    summary = summarize_cate(
        step_learner, Xp, y, w, nuisance=step_scoring, propensity=0.5, random_state=0
    )
    table = summary.table()
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == [
        "leaf",
        "rule",
        "n_fit",
        "n_estimate",
        "cate_fit",
        "estimate",
        "std_error",
        "ci_low",
        "ci_high",
    ]
    assert np.all(np.diff(table["estimate"].to_numpy()) <= 0)
    ax = summary.plot()
    assert len(ax.get_yticklabels()) == len(summary.leaves)
    plt.close("all")
    given = summarize_cate(
        step_learner,
        X,
        y,
        w,
        tau=step_learner.predict(X),
        nuisance=step_scoring,
        propensity=0.5,
        random_state=0,
    )
    assert given.tau_source == "given"
    fitted = make(ml.DRLearner, "linear").fit(X, y, w, propensity=0.5)
    assert (
        summarize_cate(
            fitted, X, y, w, nuisance=step_scoring, propensity=0.5, random_state=0
        ).tau_source
        == "predict"
    )


def test_summary_renders_categories_and_missing_values():
    pl = pytest.importorskip("polars")
    rng = np.random.default_rng(2)
    n = 1200
    spend = rng.normal(size=n)
    spend[rng.random(n) < 0.1] = np.nan
    plan = rng.choice(["basic", "plus", "pro"], n)
    X = pl.DataFrame({"spend": spend, "plan": plan})
    w = rng.integers(0, 2, n)
    y = w * 2.0 * (plan == "pro") + rng.normal(size=n)
    learner = make(ml.DRLearner, "lgbm")
    learner.fit_predict(X, y, w, propensity=0.5)
    summary = summarize_cate(
        learner,
        X,
        y,
        w,
        max_depth=2,
        propensity=0.5,
        random_state=0,
        nuisance=ml.Nuisance(outcome_model=lgbm(), n_folds=2, random_state=0),
    )
    text = summary.text()
    assert "plan == 'pro'" in text or "plan in {" in text
    rules = [r.rule for r in summary.leaves]
    assert any("'pro'" in r for r in rules)
    if any(i == 0 for i in summary.nan_features):
        assert "missing" in text


def test_summary_with_several_variants_and_classes():
    sim = ml.datasets.simulate_multiarm(n=900, n_variants=3, seed=0)
    learner = make(ml.DRLearner, "linear")
    learner.fit_predict(sim.X, sim.y, sim.w)
    sn = fit_scoring_nuisance(
        sim.X,
        sim.y,
        sim.w,
        nuisance=ml.Nuisance(
            outcome_model=LinearRegression(),
            propensity_model=LogisticRegression(),
            n_folds=2,
            random_state=0,
        ),
    )
    summary = summarize_cate(learner, sim.X, sim.y, sim.w, variant=2, nuisance=sn, random_state=0)
    assert summary.effect == "tau_2_vs_0" and summary.variant == 2
    with pytest.raises(ValueError, match="has 2 treated variants"):
        summarize_cate(learner, sim.X, sim.y, sim.w, nuisance=sn)
    with pytest.raises(
        ValueError, match=r"one of the treated variants \[1, 2\]; got 0 \(it is the control\)"
    ):
        summarize_cate(learner, sim.X, sim.y, sim.w, variant=0, nuisance=sn)
    with pytest.raises(ValueError, match="`outcome_class` is only for multi-class outcomes"):
        summarize_cate(learner, sim.X, sim.y, sim.w, variant=1, outcome_class=1, nuisance=sn)


def test_summary_of_a_multiclass_outcome_needs_the_class(sim: Any):
    y = np.digitize(sim.y, np.quantile(sim.y, [1 / 3, 2 / 3]))
    learner = make(ml.DRLearner, "linear", outcome=LogisticRegression())
    learner.fit_predict(sim.X, y, sim.w)
    nuis = ml.Nuisance(
        outcome_model=LogisticRegression(), propensity_model=LogisticRegression(), n_folds=2
    )
    with pytest.raises(ValueError, match="pass `outcome_class=` one of them"):
        summarize_cate(learner, sim.X, y, sim.w, nuisance=nuis)
    summary = summarize_cate(learner, sim.X, y, sim.w, outcome_class=2, nuisance=nuis)
    assert summary.effect == "tau_1_vs_0_2" and summary.outcome_class == 2


def test_summary_errors(step: Any, step_learner: Any, step_scoring: Any):
    X, y, w, _ = step
    kw = {"nuisance": step_scoring, "propensity": 0.5}
    with pytest.raises(ValueError, match="`max_depth` must be a positive integer"):
        summarize_cate(step_learner, X, y, w, max_depth=0, **kw)
    with pytest.raises(ValueError, match="`fit_fraction` must be in"):
        summarize_cate(step_learner, X, y, w, fit_fraction=1.0, **kw)
    with pytest.raises(ValueError, match="`level` must be in"):
        summarize_cate(step_learner, X, y, w, level=95, **kw)
    with pytest.raises(ValueError, match="`tau` must hold the CATE estimates of the 2000 rows"):
        summarize_cate(step_learner, X, y, w, tau=np.zeros(3), **kw)
    with pytest.raises(ValueError, match="NaN or infinite"):
        summarize_cate(step_learner, X, y, w, tau=np.full(len(y), np.inf), **kw)
    with pytest.raises(ValueError, match="`y` must hold the learner's outcome classes"):
        b = ml.datasets.simulate_binary_outcome(n=300, seed=0)
        t = make(ml.TLearner, "linear", outcome=LogisticRegression()).fit(b.X, b.y, b.w)
        summarize_cate(t, b.X, b.y * 2, b.w)
    rows = np.r_[0:4, 1000:1004]  # two folds leave each variant's models 2 rows
    tiny = fit_scoring_nuisance(
        X[rows],
        y[rows],
        w[rows],
        propensity=0.5,
        nuisance=ml.Nuisance(outcome_model=LinearRegression(), n_folds=2),
    )
    with pytest.raises(ValueError, match="Cannot split the 8 rows"):
        summarize_cate(
            step_learner,
            X[rows],
            y[rows],
            w[rows],
            tau=np.zeros(8),
            fit_fraction=0.1,
            nuisance=tiny,
            propensity=0.5,
        )


# ----------------------------------------------------------- lazy imports
def test_importing_metalearn_imports_neither_shap_nor_matplotlib():
    code = (
        "import sys, metalearn, metalearn.explain; "
        "print('shap' in sys.modules, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_missing_shap_and_matplotlib_name_what_to_install(
    dr_lin: Any,
    sim: Any,
    step: Any,
    step_learner: Any,
    step_scoring: Any,
    monkeypatch: pytest.MonkeyPatch,
):
    X, y, w, _ = step
    summary = summarize_cate(
        step_learner, X, y, w, nuisance=step_scoring, propensity=0.5, random_state=0
    )
    monkeypatch.setitem(sys.modules, "shap", None)
    with pytest.raises(ImportError, match="pip install shap"):
        dr_lin.explainer()(sim.X[:5])
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install metalearn\[plot\]"):
        summary.plot()


def test_encoded_background_uses_the_fitted_schema(sim: Any):
    pl = pytest.importorskip("polars")
    X = to_frame(sim.X, "polars")
    learner = make(ml.DRLearner, "linear").fit(X, sim.y, sim.w)
    explainer = learner.explainer(background=X[:10])
    np.testing.assert_array_equal(
        explainer._background, encode_features(X[:10], learner.schema_)[0]
    )
    assert isinstance(X, pl.DataFrame)
