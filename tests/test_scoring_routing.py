"""A CATE score inside a scikit-learn search never fails silently.

Without metadata routing a ``GridSearchCV`` passes ``w`` to the learner's
``fit`` but not to its scorer. scikit-learn turns an ``Exception`` from a
scorer into a warning and a NaN score, so the search used to return with
every score NaN and the first candidate as the best. The scorer now raises
:class:`~metalearn.scoring.TreatmentNotRoutedError`, which reaches the
caller with the fix in its message.
"""

from __future__ import annotations

import warnings
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn
from conftest import make_learner
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, cross_val_score

import metalearn as ml
from metalearn.scoring import TreatmentNotRoutedError, make_cate_scorer

FIX = "sklearn.set_config(enable_metadata_routing=True)"
GRID = {"effect_model__alpha": [1e5, 0.1]}  # the first candidate is the bad one


@pytest.fixture(scope="module")
def sim() -> Any:
    return ml.datasets.simulate_nie_wager("B", n=600, seed=0)


def _learner() -> Any:
    return make_learner(ml.RLearner, effect_model=Ridge())


def _scorer(**kw: Any) -> Any:
    nuisance = ml.Nuisance(
        outcome_model=LinearRegression(),
        propensity_model=LogisticRegression(),
        n_folds=2,
        random_state=0,
    )
    return make_cate_scorer("dr_loss", nuisance=nuisance, **kw)


@pytest.fixture(autouse=True)
def _routing_off() -> Any:
    with sklearn.config_context(enable_metadata_routing=False):
        yield


def test_routing_is_off_by_default() -> None:
    with sklearn.config_context():
        assert sklearn.get_config()["enable_metadata_routing"] is False


@pytest.mark.parametrize("error_score", [np.nan, "raise"])
def test_grid_search_with_cate_scorer_without_routing_raises_with_the_fix(
    sim: Any, error_score: Any
) -> None:
    search = GridSearchCV(_learner(), GRID, cv=2, scoring=_scorer(), error_score=error_score)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Scoring failed" warning first
        with pytest.raises(TreatmentNotRoutedError) as info:
            search.fit(sim.X, sim.y, w=sim.w)
    message = str(info.value)
    assert FIX in message
    assert "metadata routing is off" in message
    assert not hasattr(search, "best_params_")


def test_default_score_without_routing_raises_with_the_fix(sim: Any) -> None:
    # scoring=None: GridSearchCV calls learner.score(X, y), without w
    search = GridSearchCV(_learner(), GRID, cv=2)
    with pytest.raises(TreatmentNotRoutedError, match=r"enable_metadata_routing=True"):
        search.fit(sim.X, sim.y, w=sim.w)


def test_cross_val_score_without_routing_raises_in_parallel_workers(sim: Any) -> None:
    with joblib.parallel_backend("threading"), pytest.raises(TreatmentNotRoutedError):
        cross_val_score(
            _learner(), sim.X, sim.y, cv=2, scoring=_scorer(), params={"w": sim.w}, n_jobs=2
        )


def test_the_error_is_not_an_exception_so_that_error_score_cannot_swallow_it() -> None:
    assert issubclass(TreatmentNotRoutedError, BaseException)
    assert not issubclass(TreatmentNotRoutedError, Exception)


def test_direct_calls_without_w_raise_a_plain_value_error(sim: Any) -> None:
    learner = _learner().fit(sim.X, sim.y, sim.w)
    with pytest.raises(ValueError, match=r"enable_metadata_routing=True"):
        _scorer()(learner, sim.X, sim.y)
    with pytest.raises(ValueError, match="needs the treatment `w`"):
        learner.score(sim.X, sim.y)
    # with w, no routing is needed
    assert np.isfinite(_scorer()(learner, sim.X, sim.y, sim.w))


@pytest.mark.parametrize("scoring", ["cate_scorer", None])
def test_grid_search_with_routing_scores_every_candidate(sim: Any, scoring: Any) -> None:
    scorer = _scorer() if scoring == "cate_scorer" else None
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "Scoring failed"
        search = GridSearchCV(_learner(), GRID, cv=2, scoring=scorer).fit(sim.X, sim.y, w=sim.w)
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores))
    assert scores[1] > scores[0]
    assert search.best_params_ == {"effect_model__alpha": 0.1}  # not the first candidate


def test_routing_on_but_w_refused_by_the_scorer_names_the_request(sim: Any) -> None:
    scorer = _scorer().set_score_request(w=False)
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(_learner(), GRID, cv=2, scoring=scorer)
        with pytest.raises(TreatmentNotRoutedError, match=r"set_score_request\(w=True\)"):
            search.fit(sim.X, sim.y, w=sim.w)
