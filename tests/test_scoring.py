"""metalearn.scoring: CATE losses on shared scoring nuisances, evaluate, score, scorers."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest
import sklearn
from conftest import ALL_LEARNERS, make_learner
from sklearn.dummy import DummyRegressor
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import metalearn as ml
from metalearn import scoring
from metalearn.scoring import (
    CATEScorer,
    ScoringNuisance,
    cate_losses,
    dr_loss,
    evaluate,
    fit_scoring_nuisance,
    make_cate_scorer,
    r_loss,
)


def _template(**kw: Any) -> ml.Nuisance:
    args = {
        "outcome_model": LinearRegression(),
        "propensity_model": LogisticRegression(),
        "n_folds": 2,
        "random_state": 0,
    }
    args.update(kw)
    return ml.Nuisance(**args)


@pytest.fixture(scope="module")
def design() -> dict[str, Any]:
    """Nie-Wager B (randomized, strong heterogeneity): train and held-out test."""
    train = ml.datasets.simulate_nie_wager("B", n=1500, seed=0)
    test = ml.datasets.simulate_nie_wager("B", n=1500, seed=1)
    sn = fit_scoring_nuisance(test.X, test.y, test.w, nuisance=_template())
    return {"train": train, "test": test, "sn": sn}


# ------------------------------------------------------------------ the losses
def test_losses_agree_with_the_formula_functions(design: dict[str, Any]) -> None:
    test, sn = design["test"], design["sn"]
    tau = test.tau + 0.3
    table = cate_losses(tau, sn).to_pandas().set_index("loss")
    e = sn.propensity
    p = np.clip(e[:, 1] / (e[:, 1] + e[:, 0]), 0.01, 0.99)
    expected_r = r_loss(test.y, test.w, tau, outcome=sn.marginal[1][:, 0], propensity=p)
    assert table.loc["r_loss", "value"] == pytest.approx(expected_r)
    phi = sn.pseudo_outcomes()[:, 0, 0]
    assert table.loc["dr_loss", "value"] == pytest.approx(dr_loss(phi, tau))
    plug = sn.mu[:, 1] - sn.mu[:, 0]
    assert table.loc["plugin", "value"] == pytest.approx(np.mean((plug - tau) ** 2))
    assert table.loc["dr_loss", "baseline_effect"] == pytest.approx(phi.mean())


def test_baseline_is_the_best_constant(design: dict[str, Any]) -> None:
    sn = design["sn"]
    table = cate_losses(np.zeros(sn.n), sn).to_pandas().set_index("loss")
    for loss in ("r_loss", "dr_loss", "plugin"):
        const = table.loc[loss, "baseline_effect"]
        at_const = cate_losses(np.full(sn.n, const), sn).to_pandas().set_index("loss")
        assert at_const.loc[loss, "gain"] == pytest.approx(0.0, abs=1e-10)
        for shift in (-0.1, 0.1):
            other = cate_losses(np.full(sn.n, const + shift), sn).to_pandas().set_index("loss")
            assert other.loc[loss, "gain"] < 0


def test_losses_rank_good_above_bad_and_constant(design: dict[str, Any]) -> None:
    train, test, sn = design["train"], design["test"], design["sn"]
    good = make_learner(ml.TLearner).fit(train.X, train.y, train.w).predict(test.X)
    bad = np.random.default_rng(0).permutation(good)  # right spread, no information
    good_t = cate_losses(good, sn).to_pandas().set_index("loss")
    bad_t = cate_losses(bad, sn).to_pandas().set_index("loss")
    for loss in ("r_loss", "dr_loss"):
        assert good_t.loc[loss, "value"] < bad_t.loc[loss, "value"]
        assert good_t.loc[loss, "gain"] > 3 * good_t.loc[loss, "gain_std_error"]
        assert bad_t.loc[loss, "gain"] < 0


def test_no_heterogeneity_gain_under_a_constant_effect() -> None:
    train = ml.datasets.simulate_nie_wager("C", n=1500, seed=0)  # tau = 1, confounded
    test = ml.datasets.simulate_nie_wager("C", n=1500, seed=1)
    sn = fit_scoring_nuisance(test.X, test.y, test.w, nuisance=_template())
    learner = make_learner(ml.DRLearner).fit(train.X, train.y, train.w)
    table = cate_losses(learner.predict(test.X), sn).to_pandas().set_index("loss")
    for loss in ("r_loss", "dr_loss"):
        # not better than the constant effect beyond noise
        assert table.loc[loss, "gain"] < 2 * table.loc[loss, "gain_std_error"]
    truth = cate_losses(test.tau, sn).to_pandas().set_index("loss")
    assert (truth["gain"] <= 1e-12).all()


def test_multi_variant_losses() -> None:
    sim = ml.datasets.simulate_multiarm(n=900, n_variants=3, seed=0)
    sn = fit_scoring_nuisance(sim.X, sim.y, sim.w, nuisance=_template(), propensity=sim.propensity)
    table = cate_losses(sim.tau, sn)
    assert table.shape == (6, 9)
    assert table["variant"].to_list() == ["1"] * 3 + ["2"] * 3
    assert sn.known_propensity and set(sn.marginal) == {1, 2}


# ------------------------------------------------------------------- evaluate
@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_evaluate_every_learner(cls: type, design: dict[str, Any]) -> None:
    train, test, sn = design["train"], design["test"], design["sn"]
    learner = make_learner(cls).fit(train.X, train.y, train.w)
    result = learner.evaluate(test.X, test.y, test.w, nuisance=sn)
    assert isinstance(result.losses, pl.DataFrame)
    assert result.losses["loss"].to_list() == ["r_loss", "dr_loss", "plugin"]
    gain, se = result.scores["r_loss_gain"], result.losses["gain_std_error"][0]
    if cls is ml.SLearner:  # a linear S-learner predicts a constant effect
        assert abs(gain) < 3 * se
    else:
        assert gain > 3 * se
    learner_models = set(
        result.nuisance_losses.filter(pl.col("source") == "learner")["model"].to_list()
    )
    expected = {
        "SLearner": {"outcome"},
        "TLearner": {"outcome"},
        "XLearner": {"outcome", "propensity"},
        "RLearner": {"marginal", "propensity"},
        "DRLearner": {"outcome", "propensity"},
    }[cls.__name__]
    assert learner_models == expected
    assert "Evaluation(n=1500" in repr(result)


def test_evaluate_per_fold_rows(design: dict[str, Any]) -> None:
    train, test, sn = design["train"], design["test"], design["sn"]
    dr = make_learner(ml.DRLearner, outcome_pooling="per_variant").fit(train.X, train.y, train.w)
    rows = dr.evaluate(test.X, test.y, test.w, nuisance=sn).nuisance_losses
    outcome = rows.filter((pl.col("source") == "learner") & (pl.col("model") == "outcome"))
    assert outcome["fold"].to_list() == ["0", "1", "mean"] * 2
    assert outcome["n"].to_list()[:3] == [int((test.w == 0).sum())] * 3
    pred = dr.nuisance_.models_["mu"][0][1].predict(test.X[test.w == 0])
    rmse = np.sqrt(np.mean((test.y[test.w == 0] - pred) ** 2))
    assert outcome["value"][1] == pytest.approx(rmse)
    scoring_rows = rows.filter(pl.col("source") == "scoring")
    assert set(scoring_rows["fold"].to_list()) == {"0", "1", "oof"}
    t = make_learner(ml.TLearner).fit(train.X, train.y, train.w)  # one model per variant
    t_rows = t.evaluate(test.X, test.y, test.w, nuisance=sn).nuisance_losses
    t_outcome = t_rows.filter(pl.col("source") == "learner")
    assert t_outcome["fold"].to_list() == ["all", "all"]


def test_one_yardstick_for_all_learners(design: dict[str, Any]) -> None:
    train, test = design["train"], design["test"]
    template = _template()
    sn = fit_scoring_nuisance(test.X, test.y, test.w, nuisance=template)
    t = make_learner(ml.TLearner).fit(train.X, train.y, train.w)
    a = t.evaluate(test.X, test.y, test.w, nuisance=sn).losses
    b = t.evaluate(test.X, test.y, test.w, nuisance=template).losses
    np.testing.assert_allclose(a["value"].to_numpy(), b["value"].to_numpy())
    assert not hasattr(template, "fingerprint_")  # the template is cloned, not fitted


def test_default_yardstick_is_cached(
    design: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    train = design["train"]
    test = ml.datasets.simulate_nie_wager("B", n=300, seed=5)
    calls = []
    original = scoring.fit_scoring

    def counting(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        return original(*args, **kw)

    monkeypatch.setattr(scoring, "fit_scoring", counting)
    t = make_learner(ml.TLearner).fit(train.X, train.y, train.w)
    s = make_learner(ml.SLearner).fit(train.X, train.y, train.w)
    first = t.score(test.X, test.y, test.w, propensity=0.5)
    s.score(test.X, test.y, test.w, propensity=0.5)
    t.evaluate(test.X, test.y, test.w, propensity=0.5)
    assert t.score(test.X, test.y, test.w, propensity=0.5) == first
    assert len(calls) == 1


def test_fitted_nuisance_on_the_evaluation_data_is_reused() -> None:
    sim = ml.datasets.simulate_nie_wager("A", n=600, seed=0)
    nuis = _template().fit(sim.X, sim.y, sim.w)
    before = nuis.n_model_fits_
    sn = fit_scoring_nuisance(sim.X, sim.y, sim.w, nuisance=nuis)
    assert nuis.n_model_fits_ == before + 2  # only the pair model, on 2 folds
    np.testing.assert_array_equal(sn.outcomes, nuis.oof_outcomes_)
    assert "control=0" in repr(sn) and "cross-fitted" in repr(sn)


def test_default_nuisance_lowers_folds_for_small_variants() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    w = np.r_[np.zeros(37, int), np.ones(3, int)]
    sn = fit_scoring_nuisance(X, rng.normal(size=40), w, propensity=0.1)
    assert int(sn.folds.max()) + 1 == 3


def test_frames_follow_x(design: dict[str, Any]) -> None:
    train, test = design["train"], design["test"]
    X = pd.DataFrame(train.X, columns=train.feature_names)
    Xt = pd.DataFrame(test.X, columns=test.feature_names)
    t = make_learner(ml.TLearner).fit(X, train.y, train.w)
    result = t.evaluate(Xt, test.y, test.w, nuisance=_template())
    assert isinstance(result.losses, pd.DataFrame)
    assert isinstance(result.nuisance_losses, pd.DataFrame)


def test_classification_outcome() -> None:
    train = ml.datasets.simulate_binary_outcome(n=800, seed=0)
    test = ml.datasets.simulate_binary_outcome(n=800, seed=1)
    t = ml.TLearner(outcome_model=LogisticRegression(), n_folds=2, random_state=0)
    t.fit(train.X, train.y, train.w)
    tmpl = _template(outcome_model=LogisticRegression())
    result = t.evaluate(test.X, test.y, test.w, nuisance=tmpl, propensity=0.5)
    assert "outcome_log_loss" in result.scores
    assert result.scores["dr_loss_gain"] > 0
    auc = t.evaluate(test.X, test.y, test.w, nuisance=tmpl, propensity=0.5, metric="roc_auc")
    assert 0.5 < auc.scores["outcome_roc_auc"] < 1


def test_multiclass_outcome() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 3))
    w = rng.integers(0, 2, size=600)
    y = np.where(X[:, 0] + w * X[:, 1] > 0.5, "a", np.where(X[:, 2] > 0, "b", "c"))
    t = ml.TLearner(outcome_model=LogisticRegression(), n_folds=2, random_state=0)
    t.fit(X, y, w)
    result = t.evaluate(X, y, w, nuisance=_template(outcome_model=LogisticRegression()))
    assert result.losses.height == 3
    assert result.losses["baseline_effect"].is_nan().all()  # one constant per class


@pytest.mark.parametrize(
    ("metric", "key"),
    [
        ("mae", "outcome_mae"),
        ("neg_root_mean_squared_error", "outcome_rmse"),
        ({"outcome": "r2", "propensity": "accuracy"}, "outcome_r2"),
    ],
)
def test_metrics(metric: Any, key: str, design: dict[str, Any]) -> None:
    train, test, sn = design["train"], design["test"], design["sn"]
    x = make_learner(ml.XLearner).fit(train.X, train.y, train.w)
    assert key in x.evaluate(test.X, test.y, test.w, nuisance=sn, metric=metric).scores


def test_callable_metric(design: dict[str, Any]) -> None:
    train, test, sn = design["train"], design["test"], design["sn"]

    def max_error(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(np.max(np.abs(y_true - y_pred)))

    t = make_learner(ml.TLearner).fit(train.X, train.y, train.w)
    scores = t.evaluate(test.X, test.y, test.w, nuisance=sn, metric=max_error).scores
    assert scores["outcome_max_error"] > 0


# ---------------------------------------------------------- score and scorers
def test_score_is_minus_the_r_loss(design: dict[str, Any]) -> None:
    train = design["train"]
    test = ml.datasets.simulate_nie_wager("B", n=300, seed=6)
    t = make_learner(ml.TLearner).fit(train.X, train.y, train.w)
    value = t.score(test.X, test.y, test.w, propensity=0.5)
    losses = t.evaluate(test.X, test.y, test.w, propensity=0.5).losses
    r = losses.filter(pl.col("loss") == "r_loss")["value"][0]
    assert isinstance(value, float) and value == pytest.approx(-r)


def test_pipeline_score_under_routing(design: dict[str, Any]) -> None:
    train = design["train"]
    test = ml.datasets.simulate_nie_wager("B", n=300, seed=7)
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = Pipeline([("scale", StandardScaler()), ("cate", make_learner(ml.DRLearner))])
        pipe.fit(train.X, train.y, w=train.w)
        value = pipe.score(test.X, test.y, w=test.w, propensity=0.5)
        # the learner scores the transformed rows, as Pipeline.score does for any step
        Xt = pipe[:-1].transform(test.X)
        assert value == pytest.approx(pipe[-1].score(Xt, test.y, test.w, propensity=0.5))
    with pytest.raises(ValueError, match="needs the treatment `w`"):
        pipe.score(test.X, test.y)


def test_grid_search_with_the_default_score(design: dict[str, Any]) -> None:
    train = design["train"]
    grid = {"effect_model": [LinearRegression(), DummyRegressor()]}
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(make_learner(ml.DRLearner), grid, cv=2).fit(
            train.X[:600], train.y[:600], w=train.w[:600], propensity=np.full(600, 0.5)
        )
    assert isinstance(search.best_params_["effect_model"], LinearRegression)


@pytest.mark.parametrize("loss", ["r_loss", "dr_loss", "plugin"])
def test_cate_scorer_in_grid_search(loss: str, design: dict[str, Any]) -> None:
    train = design["train"]
    scorer = make_cate_scorer(loss, nuisance=_template())
    grid = {"effect_model": [LinearRegression(), DummyRegressor()]}
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(make_learner(ml.RLearner), grid, cv=2, scoring=scorer)
        search.fit(train.X, train.y, w=train.w)
    assert isinstance(search.best_params_["effect_model"], LinearRegression)
    assert len(scorer._cache) == 2  # one scoring nuisance per split, shared by candidates


def test_cross_val_score_and_sample_weight_request(design: dict[str, Any]) -> None:
    train = design["train"]
    scorer = CATEScorer("dr_loss", nuisance=_template()).set_score_request(sample_weight=True)
    assert scorer.get_metadata_routing().score.requests == {
        "w": True,
        "propensity": True,
        "sample_weight": True,
    }
    sw = np.ones(len(train.y))
    with sklearn.config_context(enable_metadata_routing=True):
        learner = make_learner(ml.TLearner)
        learner.set_fit_request(sample_weight=True)
        plain = cross_val_score(
            learner,
            train.X,
            train.y,
            cv=2,
            scoring=scorer,
            params={"w": train.w, "sample_weight": sw},
        )
    assert plain.shape == (2,) and (plain < 0).all()


def test_scorer_pickles_without_its_cache(design: dict[str, Any]) -> None:
    train, test = design["train"], design["test"]
    scorer = CATEScorer(nuisance=_template())
    t = make_learner(ml.TLearner).fit(train.X, train.y, train.w)
    value = scorer(t, test.X, test.y, test.w)
    copy = pickle.loads(pickle.dumps(scorer))
    assert len(copy._cache) == 0 and repr(copy).startswith("CATEScorer(loss='r_loss'")
    assert copy(t, test.X, test.y, test.w) == pytest.approx(value)


def test_scorer_on_a_non_metalearn_estimator(design: dict[str, Any]) -> None:
    train, test = design["train"], design["test"]

    class Oracle:
        def predict(self, X: np.ndarray) -> np.ndarray:
            return X[:, 0] + np.logaddexp(0.0, X[:, 1])

    scorer = CATEScorer("dr_loss", nuisance=_template())
    good = scorer(Oracle(), test.X, test.y, test.w)
    t = make_learner(ml.SLearner).fit(train.X, train.y, train.w)
    assert good > scorer(t, test.X, test.y, test.w)


# --------------------------------------------------------------------- errors
def test_evaluate_errors(design: dict[str, Any]) -> None:
    train, test, sn = design["train"], design["test"], design["sn"]
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        make_learner(ml.TLearner).evaluate(test.X, test.y, test.w)
    t = make_learner(ml.TLearner).fit(train.X, train.y, train.w)
    with pytest.raises(ValueError, match=r"`w` holds the variants \[0, 2\] but the learner"):
        t.evaluate(test.X, test.y, 2 * test.w, nuisance=_template())
    other = fit_scoring_nuisance(train.X, train.y, train.w, nuisance=_template())
    with pytest.raises(ValueError, match="ScoringNuisance was fitted on other data"):
        t.evaluate(test.X, test.y, test.w, nuisance=other)
    fitted_elsewhere = _template().fit(train.X, train.y, train.w)
    with pytest.raises(ValueError, match="fitted `nuisance` was fitted on other data"):
        t.evaluate(test.X, test.y, test.w, nuisance=fitted_elsewhere)
    with pytest.raises(TypeError, match=r"`nuisance` must be a metalearn\.Nuisance"):
        t.evaluate(test.X, test.y, test.w, nuisance="lgbm")
    with pytest.raises(ValueError, match="has a classifier as outcome model but the outcome is"):
        t.evaluate(test.X, test.y, test.w, nuisance=_template(outcome_model=LogisticRegression()))
    with pytest.raises(ValueError, match=r"`propensity_clip` must be a number in \[0, 0.5\)"):
        evaluate(t, test.X, test.y, test.w, nuisance=sn, propensity_clip=0.7)
    with pytest.raises(ValueError, match="X has 2 features, but TLearner is expecting 6"):
        t.evaluate(test.X[:, :2], test.y, test.w, nuisance=sn)
    labelled = make_learner(ml.TLearner, control=1).fit(train.X, train.y, train.w)
    with pytest.raises(ValueError, match="uses the control 0 but the learner uses 1"):
        labelled.evaluate(test.X, test.y, test.w, nuisance=sn)


def test_evaluate_class_mismatch() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    w = rng.integers(0, 2, size=200)
    y = np.where(X[:, 0] > 0, "a", np.where(X[:, 1] > 0, "b", "c"))
    t = ml.TLearner(outcome_model=LogisticRegression(), n_folds=2).fit(X, y, w)
    with pytest.raises(ValueError, match=r"`y` holds the classes \['a', 'b'\] but the learner"):
        t.evaluate(X, np.where(y == "c", "b", y), w, nuisance=_template())


@pytest.mark.parametrize(
    ("metric", "exc", "match"),
    [
        ("huber", ValueError, "Unknown outcome metric 'huber'"),
        ("log_loss", ValueError, "is for class probabilities, but the outcome models"),
        ({"propensity": "rmse"}, ValueError, "propensity metric 'rmse' is for numeric"),
        ({"effect": "rmse"}, ValueError, "`metric` keys must be 'outcome'"),
        (3, TypeError, "must be a name or a callable"),
    ],
)
def test_metric_errors(metric: Any, exc: type, match: str, design: dict[str, Any]) -> None:
    train, test, sn = design["train"], design["test"], design["sn"]
    t = make_learner(ml.TLearner).fit(train.X, train.y, train.w)
    with pytest.raises(exc, match=match):
        t.evaluate(test.X, test.y, test.w, nuisance=sn, metric=metric)


def test_cate_losses_errors(design: dict[str, Any]) -> None:
    sn = design["sn"]
    with pytest.raises(ValueError, match=r"`tau` must have shape \(1500,\)"):
        cate_losses(np.zeros((sn.n, 2)), sn)
    with pytest.raises(ValueError, match="`tau` holds NaN"):
        cate_losses(np.full(sn.n, np.nan), sn)
    with pytest.raises(TypeError, match="`scoring` must be a ScoringNuisance"):
        cate_losses(np.zeros(sn.n), "sn")  # type: ignore[arg-type]
    assert isinstance(sn, ScoringNuisance)


def test_scorer_errors(design: dict[str, Any]) -> None:
    train, test = design["train"], design["test"]
    with pytest.raises(ValueError, match="`loss` must be one of"):
        CATEScorer("mse")
    with pytest.raises(TypeError, match=r"`nuisance` must be a metalearn\.Nuisance template"):
        CATEScorer(nuisance=LinearRegression())  # type: ignore[arg-type]
    t = make_learner(ml.TLearner).fit(train.X, train.y, train.w)
    with pytest.raises(ValueError, match="enable metadata routing"):
        CATEScorer(nuisance=_template())(t, test.X, test.y)


def test_fit_scoring_nuisance_errors(design: dict[str, Any]) -> None:
    test = design["test"]
    with pytest.raises(TypeError, match=r"`nuisance` must be a metalearn\.Nuisance \(a template"):
        fit_scoring_nuisance(test.X, test.y, test.w, nuisance="lgbm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`propensity_clip` must be a number in \[0, 0.5\)"):
        fit_scoring_nuisance(test.X, test.y, test.w, propensity_clip=-0.1)


def test_formula_function_errors() -> None:
    with pytest.raises(ValueError, match="`y` must be 1-dimensional; got shape"):
        r_loss(np.zeros((2, 2)), [0, 1], [0, 0], outcome=[0, 0], propensity=[0.5, 0.5])
    with pytest.raises(ValueError, match="`propensity` must have equal length"):
        r_loss([1.0, 2.0], [0, 1], [0, 0], outcome=[0, 0], propensity=[0.5])
    with pytest.raises(ValueError, match="`pseudo_outcome` and `tau` must have equal length"):
        dr_loss([1.0, 2.0], [0.0])


def test_evaluate_names_a_known_propensity_mismatch_with_the_scoring_nuisance() -> None:

    from metalearn.scoring import fit_scoring_nuisance

    sim = ml.datasets.simulate_nie_wager("B", n=300, seed=0)
    template = ml.Nuisance(outcome_model=LinearRegression(), n_folds=2, random_state=0)
    known = fit_scoring_nuisance(sim.X, sim.y, sim.w, propensity=0.5, nuisance=template)
    estimated = fit_scoring_nuisance(sim.X, sim.y, sim.w, nuisance=template)
    t = ml.TLearner(outcome_model=LinearRegression()).fit(sim.X, sim.y, sim.w)
    with pytest.raises(ValueError, match=r"known `propensity=`.*pass the same `propensity=`"):
        t.evaluate(sim.X, sim.y, sim.w, nuisance=known)
    with pytest.raises(ValueError, match=r"estimated its propensities.*leave `propensity=` out"):
        t.evaluate(sim.X, sim.y, sim.w, nuisance=estimated, propensity=0.5)
    # matching calls work
    assert t.evaluate(sim.X, sim.y, sim.w, nuisance=known, propensity=0.5) is not None
    assert t.evaluate(sim.X, sim.y, sim.w, nuisance=estimated) is not None
