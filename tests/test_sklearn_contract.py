"""The learners as scikit-learn estimators: estimator checks, params, pipelines, pickling."""

from __future__ import annotations

import io
import pickle
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn
from conftest import ALL_LEARNERS, make_learner
from lightgbm import LGBMRegressor
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from metalearn import DRLearner, RLearner, SLearner, TLearner, XLearner

# --------------------------------------------------------------------------
# scikit-learn's estimator checks
#
# The checks call ``fit(X, y)`` without a treatment. These test-only
# subclasses (module level, so that they pickle) supply a deterministic one:
# rows alternate between variants 0 and 1, so each variant has at least
# n_folds=2 rows whenever the check passes 4 rows or more.


def _alternating_w(X: Any) -> np.ndarray:
    return np.arange(np.shape(X)[0]) % 2


class _SuppliesTreatment:
    def fit(self, X: Any, y: Any, w: Any = None, **kw: Any) -> Any:
        return super().fit(X, y, _alternating_w(X) if w is None else w, **kw)  # type: ignore[misc]

    def fit_predict(self, X: Any, y: Any, w: Any = None, **kw: Any) -> Any:
        w = _alternating_w(X) if w is None else w
        return super().fit_predict(X, y, w, **kw)  # type: ignore[misc]

    def score(self, X: Any, y: Any, w: Any = None, **kw: Any) -> Any:
        return super().score(X, y, _alternating_w(X) if w is None else w, **kw)  # type: ignore[misc]


class CheckedSLearner(_SuppliesTreatment, SLearner):
    pass


class CheckedTLearner(_SuppliesTreatment, TLearner):
    pass


class CheckedXLearner(_SuppliesTreatment, XLearner):
    pass


class CheckedRLearner(_SuppliesTreatment, RLearner):
    pass


class CheckedDRLearner(_SuppliesTreatment, DRLearner):
    pass


CHECKED = (CheckedSLearner, CheckedTLearner, CheckedXLearner, CheckedRLearner, CheckedDRLearner)


def _expected_failed_checks(estimator: Any) -> dict[str, str]:
    # Every applicable check passes; none is excluded.
    return {}


@parametrize_with_checks(
    [make_learner(cls) for cls in CHECKED],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator: Any, check: Any) -> None:
    check(estimator)


# --------------------------------------------------------------------------
# Parameters


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_clone_copies_params_but_not_models(cls: type) -> None:
    learner = make_learner(cls, outcome_model=LinearRegression(fit_intercept=False))
    copy = clone(learner)
    assert copy is not learner
    assert copy.outcome_model is not learner.outcome_model
    assert copy.outcome_model.get_params() == learner.outcome_model.get_params()
    assert copy.get_params(deep=False).keys() == learner.get_params(deep=False).keys()


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_clone_of_fitted_learner_is_unfitted(cls: type, small_data: Any) -> None:
    learner = make_learner(cls).fit(small_data.X, small_data.y, small_data.w)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        clone(learner).predict(small_data.X)


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_nested_set_params_reaches_base_model(cls: type) -> None:
    learner = make_learner(cls, outcome_model=LGBMRegressor(n_estimators=20, verbose=-1))
    assert learner.get_params()["outcome_model__n_estimators"] == 20
    learner.set_params(outcome_model__n_estimators=7, n_folds=3)
    assert learner.outcome_model.n_estimators == 7
    assert learner.get_params()["outcome_model__n_estimators"] == 7
    assert learner.n_folds == 3


@pytest.mark.parametrize("cls", [XLearner, RLearner, DRLearner])
def test_params_are_stored_verbatim(cls: type) -> None:
    clip = (0.05, 0.9)
    model = LinearRegression()
    learner = cls(effect_model=model, propensity_clip=clip, control="ctrl", n_folds=3)
    params = learner.get_params(deep=False)
    assert params["effect_model"] is model
    assert params["propensity_clip"] is clip
    assert params["control"] == "ctrl"
    assert params["n_folds"] == 3
    assert params["outcome_model"] is None


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_fit_does_not_touch_the_base_model_templates(cls: type, small_data: Any) -> None:
    template = LGBMRegressor(n_estimators=20, verbose=-1)
    learner = make_learner(cls, outcome_model=template, n_jobs=2)
    learner.fit(small_data.X, small_data.y, small_data.w)
    assert learner.outcome_model is template
    assert not hasattr(template, "booster_")
    assert template.get_params()["n_jobs"] is None
    assert template.get_params()["random_state"] is None


# --------------------------------------------------------------------------
# Pipelines


def _dr() -> DRLearner:
    return make_learner(DRLearner)


def test_pipeline_with_step_prefixed_w(small_data: Any) -> None:
    X, y, w = small_data.X, small_data.y, small_data.w
    pipe = Pipeline([("prep", StandardScaler()), ("cate", _dr())])
    pipe.fit(X, y, cate__w=w)
    direct = _dr().fit(StandardScaler().fit_transform(X), y, w)
    np.testing.assert_allclose(pipe.predict(X), direct.predict(StandardScaler().fit_transform(X)))


def test_pipeline_with_metadata_routing(small_data: Any) -> None:
    X, y, w = small_data.X, small_data.y, small_data.w
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = Pipeline([("prep", StandardScaler()), ("cate", _dr())])
        pipe.fit(X, y, w=w)
        pred = pipe.predict(X)
    Xs = StandardScaler().fit_transform(X)
    np.testing.assert_allclose(pred, _dr().fit(Xs, y, w).predict(Xs))


def test_pipeline_without_w_names_the_fix(small_data: Any) -> None:
    pipe = Pipeline([("prep", StandardScaler()), ("cate", _dr())])
    with pytest.raises(ValueError, match="enable metadata routing"):
        pipe.fit(small_data.X, small_data.y)


# --------------------------------------------------------------------------
# Persistence


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_pickle_round_trip(cls: type, small_data: Any) -> None:
    learner = make_learner(cls).fit(small_data.X, small_data.y, small_data.w)
    restored = pickle.loads(pickle.dumps(learner))
    np.testing.assert_array_equal(restored.predict(small_data.X), learner.predict(small_data.X))


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_joblib_round_trip(cls: type, small_data: Any) -> None:
    learner = make_learner(cls).fit(small_data.X, small_data.y, small_data.w)
    buffer = io.BytesIO()
    joblib.dump(learner, buffer)
    buffer.seek(0)
    restored = joblib.load(buffer)
    np.testing.assert_array_equal(restored.predict(small_data.X), learner.predict(small_data.X))


# --------------------------------------------------------------------------
# Unfitted learners


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_predict_before_fit_raises_not_fitted(cls: type, small_data: Any) -> None:
    with pytest.raises(NotFittedError, match=f"This {cls.__name__} instance is not fitted"):
        make_learner(cls).predict(small_data.X)
