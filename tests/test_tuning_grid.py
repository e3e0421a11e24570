"""metalearn.tuning.grid: grid and randomized searches, nuisance reuse, scikit-learn searches."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import polars as pl
import pytest
import sklearn
from conftest import to_frame
from scipy.stats import loguniform
from sklearn.base import clone
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

import metalearn as ml
from metalearn.scoring import fit_scoring_nuisance, make_cate_scorer
from metalearn.tuning import MetaLearnerGridSearch, MetaLearnerRandomizedSearch


class CountingRidge(Ridge):
    """Ridge that counts its fits (class-wide), to prove which models are refitted."""

    fits: ClassVar[int] = 0

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> CountingRidge:
        type(self).fits += 1
        return super().fit(X, y, sample_weight=sample_weight)


class CountingLogistic(LogisticRegression):
    fits: ClassVar[int] = 0

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> CountingLogistic:
        type(self).fits += 1
        return super().fit(X, y, sample_weight=sample_weight)


class CountingEffect(Ridge):
    fits: ClassVar[int] = 0

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> CountingEffect:
        type(self).fits += 1
        return super().fit(X, y, sample_weight=sample_weight)


@pytest.fixture(autouse=True)
def _reset_counters() -> None:
    for cls in (CountingRidge, CountingLogistic, CountingEffect):
        cls.fits = 0


@pytest.fixture(scope="module")
def sim() -> Any:
    return ml.datasets.simulate_nie_wager("B", n=600, seed=0)


def _dr(**kw: Any) -> ml.DRLearner:
    args: dict[str, Any] = {
        "outcome_model": LinearRegression(),
        "propensity_model": LogisticRegression(),
        "effect_model": Ridge(),
        "n_folds": 2,
        "random_state": 0,
    }
    args.update(kw)
    return ml.DRLearner(**args)


def _r(**kw: Any) -> ml.RLearner:
    args: dict[str, Any] = {
        "outcome_model": LinearRegression(),
        "propensity_model": LogisticRegression(),
        "effect_model": Ridge(),
        "n_folds": 2,
        "random_state": 0,
    }
    args.update(kw)
    return ml.RLearner(**args)


# ------------------------------------------------------------------ nuisance reuse
def test_grid_of_final_settings_costs_one_nuisance_stage(sim: Any, yardstick: Any) -> None:
    learner = _dr(outcome_model=CountingRidge(), propensity_model=CountingLogistic(), n_folds=3)
    alphas = [float(a) for a in np.logspace(-2, 4, 12)]
    search = MetaLearnerGridSearch(
        learner, {"effect_model__alpha": alphas}, scoring_nuisance=yardstick, refit=False
    ).fit(sim.X, sim.y, sim.w)
    one_stage = ml.Nuisance(
        outcome_model=Ridge(),
        propensity_model=LogisticRegression(),
        n_folds=3,
        outcome_pooling="pooled",
        random_state=0,
    ).fit(sim.X, sim.y, sim.w)
    # Counted by the base models themselves: 3 pooled outcome + 3 propensity fits in all.
    assert CountingRidge.fits == 3
    assert CountingLogistic.fits == 3
    assert search.n_nuisance_fits_ == one_stage.n_model_fits_ == 6
    assert search.results_["nuisance_fits"].to_list() == [6] + [0] * 11
    assert search.n_final_fits_ == 12 * 3  # one effect model per fold and candidate
    assert search.nuisance_cache_info_["configurations"] == 1


def test_outcome_grid_shares_the_propensity_models(sim: Any, yardstick: Any) -> None:
    learner = _r(outcome_model=CountingRidge(), propensity_model=CountingLogistic())
    grid = {"outcome_model__alpha": [0.1, 10.0], "effect_model__alpha": [1.0, 100.0]}
    search = MetaLearnerGridSearch(learner, grid, scoring_nuisance=yardstick, refit=False)
    search.fit(sim.X, sim.y, sim.w)
    assert CountingRidge.fits == 2 * 2  # two outcome settings x two folds
    assert CountingLogistic.fits == 2  # one propensity stage for both
    assert search.nuisance_cache_info_["configurations"] == 2


def test_learner_types_share_nuisance_kinds(sim: Any, yardstick: Any) -> None:
    grid = {
        "learner": [
            _r(propensity_model=CountingLogistic()),
            _dr(propensity_model=CountingLogistic()),
            ml.XLearner(
                outcome_model=LinearRegression(),
                propensity_model=CountingLogistic(),
                effect_model=Ridge(),
                n_folds=2,
                random_state=0,
            ),
        ]
    }
    search = MetaLearnerGridSearch(_dr(), grid, scoring_nuisance=yardstick).fit(sim.X, sim.y, sim.w)
    assert CountingLogistic.fits == 2  # R, DR and X read one propensity stage
    assert search.results_["learner"].to_list() == ["RLearner", "DRLearner", "XLearner"]


def test_best_estimator_equals_a_fresh_fit(sim: Any, yardstick: Any) -> None:
    learner = _dr()
    search = MetaLearnerGridSearch(
        learner, {"effect_model__alpha": [0.1, 1e4]}, scoring_nuisance=yardstick
    ).fit(sim.X, sim.y, sim.w)
    fresh = clone(learner).set_params(**search.best_params_).fit(sim.X, sim.y, sim.w)
    np.testing.assert_allclose(search.predict(sim.X[:50]), fresh.predict(sim.X[:50]))
    assert search.best_estimator_.get_params()["effect_model"].alpha == 0.1
    assert search.best_estimator_.get_params()["nuisance"] is None
    assert search.best_estimator_.outcome_model is not None  # the user's parameters
    ate = search.best_estimator_.ate()
    assert ate.ci_low < ate.estimate < ate.ci_high


def test_oof_scores_match_the_scoring_module(sim: Any, yardstick: Any) -> None:
    learner = _dr(effect_model=Ridge(alpha=3.0))
    search = MetaLearnerGridSearch(learner, {}, scoring_nuisance=yardstick).fit(sim.X, sim.y, sim.w)
    tau = clone(learner).fit_predict(sim.X, sim.y, sim.w)
    sn = fit_scoring_nuisance(sim.X, sim.y, sim.w, nuisance=yardstick)
    table = ml.scoring.cate_losses(tau, sn).to_pandas().set_index("loss")
    row = search.results_.row(0, named=True)
    for loss in ("r_loss", "dr_loss", "plugin"):
        assert row[loss] == pytest.approx(table.loc[loss, "value"])
        assert row[f"{loss}_gain"] == pytest.approx(table.loc[loss, "gain"])


def test_validation_set_and_outer_folds(sim: Any, yardstick: Any) -> None:
    val = ml.datasets.simulate_nie_wager("B", n=400, seed=1)
    grid = {"effect_model__alpha": [0.1, 1e5]}
    on_val = MetaLearnerGridSearch(_dr(), grid, scoring_nuisance=yardstick).fit(
        sim.X, sim.y, sim.w, X_val=val.X, y_val=val.y, w_val=val.w
    )
    assert on_val.scoring_nuisance_.n == 400
    assert on_val.best_params_ == {"effect_model__alpha": 0.1}
    assert np.isfinite(on_val.results_["final_loss"].to_numpy()).all()
    outer = MetaLearnerGridSearch(_dr(), grid, cv=3, random_state=0, scoring_nuisance=yardstick)
    outer.fit(sim.X, sim.y, sim.w)
    assert outer.best_params_ == {"effect_model__alpha": 0.1}
    # one nuisance stage per outer fold, shared by both candidates
    assert outer.results_["nuisance_fits"].to_list() == [3 * 4, 0]


@pytest.mark.parametrize("kind", ["numpy", "pandas", "polars"])
def test_results_frame_follows_the_input(kind: str, sim: Any, yardstick: Any) -> None:
    X = to_frame(sim.X, kind)
    grid = {"effect_model": [Ridge(), DummyRegressor()], "final_stage": ["crossfit", "full"]}
    search = MetaLearnerGridSearch(_dr(), grid, scoring="dr_loss", scoring_nuisance=yardstick)
    search.fit(X, sim.y, sim.w)
    res = search.results_
    assert isinstance(res, pd.DataFrame if kind == "pandas" else pl.DataFrame)
    cols = list(res.columns)
    assert cols[:4] == ["candidate", "learner", "effect_model", "final_stage"]
    for name in (
        "params",
        "r_loss",
        "dr_loss_gain",
        "plugin_baseline",
        "final_loss",
        "outcome_rmse",
        "propensity_log_loss",
        "fit_time",
        "score_time",
        "rank",
    ):
        assert name in cols
    assert len(res) == 4
    best = int(np.argmin(np.asarray(res["dr_loss"])))
    assert search.best_index_ == best
    assert list(np.asarray(res["rank"])).count(1) >= 1
    assert isinstance(search.best_params_["effect_model"], Ridge)
    assert search.predict_frame(X).shape == (600, 1)


def test_scoring_names_the_picking_score(sim: Any, yardstick: Any) -> None:
    grid = {"effect_model__alpha": [0.1, 1e5]}
    gain = MetaLearnerGridSearch(_dr(), grid, scoring="r_loss_gain", scoring_nuisance=yardstick)
    gain.fit(sim.X, sim.y, sim.w)
    values = gain.results_["r_loss_gain"].to_numpy()
    assert gain.best_index_ == int(np.argmax(values))
    assert gain.best_score_ == pytest.approx(values.max())
    assert gain.scoring_ == "r_loss_gain"
    own = MetaLearnerGridSearch(_dr(), grid, scoring="final_loss", scoring_nuisance=yardstick)
    assert own.fit(sim.X, sim.y, sim.w).best_params_ == {"effect_model__alpha": 0.1}


def test_default_submodels_and_s_learner(sim: Any, yardstick: Any) -> None:
    tiny = {"effect_model__n_estimators": [5], "effect_model__num_leaves": [2, 4]}
    learner = _dr(effect_model=None)
    search = MetaLearnerGridSearch(learner, tiny, scoring_nuisance=yardstick).fit(
        sim.X, sim.y, sim.w
    )
    assert search.best_estimator_.effect_model.n_estimators == 5
    s = ml.SLearner(outcome_model=LinearRegression(), n_folds=2, random_state=0)
    s_search = MetaLearnerGridSearch(
        s, {"outcome_model__fit_intercept": [True, False]}, scoring_nuisance=yardstick
    ).fit(sim.X, sim.y, sim.w)
    assert s_search.n_nuisance_fits_ == 0
    assert np.isnan(s_search.results_["outcome_rmse"].to_numpy()).all()
    assert np.isfinite(s_search.results_["r_loss"].to_numpy()).all()


def test_known_propensity_multiarm_and_classification(yardstick: Any) -> None:
    rct = ml.datasets.simulate_nie_wager("B", n=400, seed=2)
    s = MetaLearnerGridSearch(
        _r(), {"effect_model__alpha": [1.0, 10.0]}, scoring_nuisance=yardstick
    ).fit(rct.X, rct.y, rct.w, propensity=0.5)
    assert np.isnan(s.results_["propensity_log_loss"].to_numpy()).all()
    arms = ml.datasets.simulate_multiarm(n=600, n_variants=3, seed=0)
    multi = MetaLearnerGridSearch(
        _dr(), {"effect_model__alpha": [1.0, 10.0]}, scoring="dr_loss"
    ).fit(arms.X, arms.y, arms.w)
    assert multi.predict(arms.X[:5]).shape == (5, 2)
    binary = ml.datasets.simulate_binary_outcome(n=600, seed=0)
    t = ml.TLearner(outcome_model=LogisticRegression(), n_folds=2, random_state=0)
    cls = MetaLearnerGridSearch(
        t, {"outcome_model__C": [0.1, 1.0]}, scoring="outcome_log_loss"
    ).fit(binary.X, binary.y, binary.w)
    assert "outcome_log_loss" in cls.results_.columns
    assert np.isfinite(cls.results_["outcome_log_loss"].to_numpy()).all()


def test_parallel_candidates_give_the_same_results(sim: Any, yardstick: Any) -> None:
    grid = {"learner": [_r(), _dr()], "effect_model__alpha": [0.1, 10.0, 1e3]}
    one = MetaLearnerGridSearch(_dr(), grid, scoring_nuisance=yardstick).fit(sim.X, sim.y, sim.w)
    two = MetaLearnerGridSearch(_dr(), grid, scoring_nuisance=yardstick, n_jobs=2)
    two.fit(sim.X, sim.y, sim.w)
    cols = ["r_loss", "dr_loss", "final_loss", "nuisance_fits", "final_fits"]
    np.testing.assert_allclose(one.results_[cols].to_numpy(), two.results_[cols].to_numpy())


def test_randomized_search(sim: Any, yardstick: Any) -> None:
    dists = {"effect_model__alpha": loguniform(1e-2, 1e4), "final_stage": ["crossfit", "full"]}
    a = MetaLearnerRandomizedSearch(
        _dr(), dists, n_iter=5, random_state=0, scoring_nuisance=yardstick
    ).fit(sim.X, sim.y, sim.w)
    b = MetaLearnerRandomizedSearch(
        _dr(), dists, n_iter=5, random_state=0, scoring_nuisance=yardstick
    ).fit(sim.X, sim.y, sim.w)
    assert (
        a.results_["effect_model__alpha"].to_list() == b.results_["effect_model__alpha"].to_list()
    )
    assert a.n_candidates_ == 5
    assert a.n_nuisance_fits_ == 4  # one nuisance stage (2 folds x (pooled outcome + propensity))
    small = MetaLearnerRandomizedSearch(
        _dr(), {"effect_model__alpha": [1.0, 2.0]}, n_iter=10, scoring_nuisance=yardstick
    ).fit(sim.X, sim.y, sim.w)
    assert small.n_candidates_ == 2


# ------------------------------------------------------------- scikit-learn searches
def test_sklearn_grid_and_randomized_search_with_routed_w(sim: Any, yardstick: Any) -> None:
    scorer = make_cate_scorer("dr_loss", nuisance=yardstick)
    with sklearn.config_context(enable_metadata_routing=True):
        grid = GridSearchCV(_dr(), {"effect_model__alpha": [0.1, 1e5]}, cv=2, scoring=scorer)
        grid.fit(sim.X, sim.y, w=sim.w)
        rand = RandomizedSearchCV(
            _r(),
            {"effect_model__alpha": loguniform(1e-2, 1e5)},
            n_iter=3,
            cv=2,
            random_state=0,
        )
        rand.fit(sim.X, sim.y, w=sim.w)  # scoring=None: learner.score, minus the R-loss
    assert grid.best_params_ == {"effect_model__alpha": 0.1}
    assert (grid.cv_results_["mean_test_score"] < 0).all()
    assert len(rand.cv_results_["params"]) == 3


# ----------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("grid", "error", "match"),
    [
        ([], ValueError, r"`param_grid` is empty"),
        (
            {"effect_model__alpha": []},
            ValueError,
            r"`param_grid\['effect_model__alpha'\]` is an empty",
        ),
        ({"effect_model__alpha": 0.1}, TypeError, r"must be a non-empty list of values; got 0.1"),
        ({"effect_model__alpha": "abc"}, TypeError, r"Wrap a single value in a list"),
        (
            {"effect_model__alpah": [1.0]},
            ValueError,
            r"Ridge \(effect_model\) has no parameter 'alpah'.*'alpha'",
        ),
        (
            {"effect_modle": [Ridge()]},
            ValueError,
            r"DRLearner has no parameter 'effect_modle'.*'effect_model'",
        ),
        (
            {"n_folds__x": [1]},
            ValueError,
            r"Unknown parameter 'n_folds__x' in `param_grid`: n_folds is 2",
        ),
        ([{"effect_model__alpha": [1.0]}, "x"], TypeError, r"`param_grid\[1\]` must be a dict"),
        ("abc", TypeError, r"`param_grid` must be a dict"),
        (
            {"learner": [ml.DRLearner]},
            TypeError,
            r"must be a learner instance such as DRLearner\(\)",
        ),
        ({1: [1]}, TypeError, r"keys must be parameter names"),
    ],
)
def test_bad_grids_name_the_parameter(
    grid: Any, error: type[Exception], match: str, sim: Any
) -> None:
    with pytest.raises(error, match=match):
        MetaLearnerGridSearch(_dr(), grid).fit(sim.X, sim.y, sim.w)


def test_bad_settings(sim: Any, yardstick: Any) -> None:
    grid = {"effect_model__alpha": [1.0]}
    with pytest.raises(ValueError, match=r"`scoring` names an unknown score 'r2'"):
        MetaLearnerGridSearch(_dr(), grid, scoring="r2").fit(sim.X, sim.y, sim.w)
    with pytest.raises(TypeError, match=r"`scoring` must be a score name"):
        MetaLearnerGridSearch(_dr(), grid, scoring=["r_loss"]).fit(sim.X, sim.y, sim.w)
    with pytest.raises(TypeError, match=r"`learner` must be a metalearn learner"):
        MetaLearnerGridSearch(Ridge(), grid).fit(sim.X, sim.y, sim.w)
    with pytest.raises(ValueError, match=r"`y_val`, `w_val` missing"):
        MetaLearnerGridSearch(_dr(), grid).fit(sim.X, sim.y, sim.w, X_val=sim.X)
    with pytest.raises(ValueError, match=r"`cv` must be None or an integer >= 2"):
        MetaLearnerGridSearch(_dr(), grid, cv=1).fit(sim.X, sim.y, sim.w)
    with pytest.raises(ValueError, match=r"either a validation set .* or `cv`"):
        MetaLearnerGridSearch(_dr(), grid, cv=2).fit(
            sim.X, sim.y, sim.w, X_val=sim.X, y_val=sim.y, w_val=sim.w
        )
    with pytest.raises(TypeError, match=r"`scoring_nuisance` must be a metalearn.Nuisance"):
        MetaLearnerGridSearch(_dr(), grid, scoring_nuisance=Ridge()).fit(sim.X, sim.y, sim.w)
    with pytest.raises(ValueError, match=r"`w` is required"):
        MetaLearnerGridSearch(_dr(), grid).fit(sim.X, sim.y)
    mixed = {"learner": [_dr(), _dr(outcome_model=LogisticRegression())]}
    with pytest.raises(ValueError, match=r"mix classifier and regressor outcome models"):
        MetaLearnerGridSearch(_dr(), mixed).fit(sim.X, sim.y, sim.w)
    t = ml.TLearner(outcome_model=LinearRegression(), n_folds=2)
    with pytest.raises(ValueError, match=r"Every candidate scored nan on the `scoring` score"):
        MetaLearnerGridSearch(t, {}, scoring="final_loss", scoring_nuisance=yardstick).fit(
            sim.X, sim.y, sim.w
        )
    with pytest.raises(ValueError, match=r"`n_iter` must be a positive integer; got 0"):
        MetaLearnerRandomizedSearch(_dr(), grid, n_iter=0).fit(sim.X, sim.y, sim.w)
    with pytest.raises(TypeError, match=r"`n_iter` must be a positive integer; got 2.5"):
        MetaLearnerRandomizedSearch(_dr(), grid, n_iter=2.5).fit(sim.X, sim.y, sim.w)
    with pytest.raises(TypeError, match=r"list of values or a distribution with `rvs`"):
        MetaLearnerRandomizedSearch(_dr(), {"effect_model__alpha": 3}).fit(sim.X, sim.y, sim.w)
    sn_other = fit_scoring_nuisance(sim.X[:300], sim.y[:300], sim.w[:300], nuisance=yardstick)
    with pytest.raises(ValueError, match=r"fitted on other data than the evaluation data"):
        MetaLearnerGridSearch(_dr(), grid, scoring_nuisance=sn_other).fit(sim.X, sim.y, sim.w)


def test_unfitted_search_cannot_predict(sim: Any) -> None:
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match=r"not fitted yet"):
        MetaLearnerGridSearch(_dr(), {}).predict(sim.X)
