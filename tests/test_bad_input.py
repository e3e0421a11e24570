"""Bad input gives a metalearn error that names the argument and the fix (issue 14).

Each case of the red-team pass has its own test: missing labels, non-estimators,
non-finite rows at predict and explain time, empty and tiny batches, bad engine
settings, continuous outcomes for classifiers, unseen variants, base models that
fail in one fold, and pickles from another metalearn version.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import LinearRegression, LogisticRegression

import metalearn as ml
from metalearn.scoring import TreatmentNotRoutedError

pd = pytest.importorskip("pandas")

LIN = {
    "outcome_model": LinearRegression(),
    "propensity_model": LogisticRegression(),
    "effect_model": LinearRegression(),
    "n_folds": 2,
    "random_state": 0,
}
LEARNERS = (ml.SLearner, ml.TLearner, ml.XLearner, ml.RLearner, ml.DRLearner)


def _lin(cls: type, **kw):
    """``cls`` with the linear models of ``LIN`` it takes; ``kw`` overrides."""
    names = cls().get_params(deep=False)
    return cls(**{k: v for k, v in {**LIN, **kw}.items() if k in names})


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 300
    X = rng.normal(size=(n, 3))
    w = rng.integers(0, 2, n)
    y = X[:, 0] + w * (1 + X[:, 1]) + rng.normal(size=n)
    return X, y, w


@pytest.fixture(scope="module")
def dr(data):
    X, y, w = data
    return ml.DRLearner(**LIN).fit(X, y, w)


# ---------------------------------------------------------------- item 2: labels
@pytest.mark.parametrize("cls", [ml.TLearner, ml.DRLearner])
def test_pd_na_in_object_y_for_a_classifier_is_a_missing_value(data, cls):
    X, _, w = data
    y = pd.Series(np.where(X[:, 0] > 0, "yes", "no"), dtype=object)
    y[7] = pd.NA
    learner = _lin(cls, outcome_model=LogisticRegression())
    with pytest.raises(
        ValueError, match=r"`y` holds 1 missing values \(NaN/None/NA\), e.g. at row 7"
    ):
        learner.fit(X, y, w)


@pytest.mark.parametrize("dtype", ["string", "category", object])
def test_missing_labels_of_pandas_dtypes_for_a_classifier(data, dtype):
    X, _, w = data
    y = pd.Series(np.where(X[:, 0] > 0, "yes", "no")).astype(dtype)
    y[11] = None  # pd.NA or NaN, as the dtype stores it
    with pytest.raises(ValueError, match=r"`y` holds 1 missing values .* at row 11"):
        ml.TLearner(outcome_model=LogisticRegression(), n_folds=2).fit(X, y, w)


def test_pd_na_in_object_y_for_a_regressor_is_a_missing_value(data):
    X, y, w = data
    y_na = pd.Series(list(y), dtype=object)
    y_na[2] = pd.NA
    with pytest.raises(ValueError, match=r"`y` holds 1 missing values \(NaN/None/NA\)"):
        ml.TLearner(outcome_model=LinearRegression(), n_folds=2).fit(X, y_na, w)


def test_pd_na_in_w_and_groups_is_a_missing_value(data):
    X, y, w = data
    w_na = pd.Series(w, dtype=object)
    w_na[3] = pd.NA
    with pytest.raises(ValueError, match=r"`w` holds 1 missing values .* at row 3"):
        ml.TLearner(outcome_model=LinearRegression(), n_folds=2).fit(X, y, w_na)
    groups = pd.Series(np.arange(len(y)) % 10, dtype=object)
    groups[5] = pd.NA
    with pytest.raises(ValueError, match=r"`groups` has 1 missing label\(s\).*at row 5"):
        ml.DRLearner(**LIN).fit(X, y, w, groups=groups)


# ------------------------------------------------------ item 2: non-estimators
@pytest.mark.parametrize("cls", LEARNERS)
def test_a_string_outcome_model_is_named(data, cls):
    X, y, w = data
    with pytest.raises(
        TypeError, match=r"`outcome_model` must be a scikit-learn estimator.*'lgbm'"
    ):
        cls(outcome_model="lgbm").fit(X, y, w)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (
            {"outcome_model": LinearRegression},
            r"`outcome_model` must be an estimator instance.*"
            r"`outcome_model=LinearRegression\(\)`",
        ),
        (
            {"propensity_model": LogisticRegression},
            r"`propensity_model` must be an estimator "
            r"instance.*LogisticRegression\(\)",
        ),
        ({"effect_model": "lgbm"}, r"`effect_model` must be a scikit-learn estimator.*'lgbm'"),
        ({"propensity_model": "logit"}, r"`propensity_model` must be a scikit-learn estimator"),
        ({"outcome_model": 3}, r"`outcome_model` must be a scikit-learn estimator.*got 3 \(int\)"),
    ],
)
def test_other_non_estimators_are_named(data, kw, match):
    X, y, w = data
    with pytest.raises(TypeError, match=match):
        ml.DRLearner(n_folds=2, **kw).fit(X, y, w)


def test_a_string_outcome_model_of_a_nuisance_is_named(data):
    X, y, w = data
    with pytest.raises(TypeError, match=r"`outcome_model` must be a scikit-learn estimator"):
        ml.Nuisance(outcome_model="lgbm").fit(X, y, w)


# ------------------------------------------- item 2: non-finite rows after fit
def test_nan_in_X_at_predict_names_the_models_that_cannot_take_it(data, dr):
    X, _, _ = data
    Xn = X[:5].copy()
    Xn[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"`X` holds NaN values but `outcome_model`.*predicting"):
        dr.predict(Xn)
    with pytest.raises(ValueError, match=r"`X` holds NaN values but `outcome_model`"):
        dr.predict_outcomes(Xn)
    with pytest.raises(ValueError, match=r"`X` holds NaN values but `outcome_model`"):
        dr.nuisance_.predict_outcomes(Xn)
    with pytest.raises(ValueError, match=r"`X` holds NaN values but `propensity_model`"):
        dr.nuisance_.predict_propensity(Xn)


def test_inf_in_X_is_rejected_at_fit_predict_and_explain_alike(data, dr):
    X, y, w = data
    Xi = X.copy()
    Xi[4, 2] = np.inf
    pattern = r"`X` holds 1 infinite value\(s\) \(first at row 4, column 2\).*before {}"
    with pytest.raises(ValueError, match=pattern.format("fitting")):
        ml.DRLearner(**LIN).fit(Xi, y, w)
    with pytest.raises(ValueError, match=pattern.format("predicting")):
        dr.predict(Xi[:10])
    pytest.importorskip("shap")
    with pytest.raises(ValueError, match=pattern.format("predicting")):
        dr.explainer()(Xi[:10])
    Xn = X[:10].copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"`X` holds NaN values but `outcome_model`"):
        dr.explainer()(Xn)
    with pytest.raises(ValueError, match=r"`background` holds 1 infinite value"):
        dr.explainer(background=Xi[:10])


def test_inf_in_w_is_rejected(data):
    X, y, w = data
    w_inf = w.astype(float)
    w_inf[9] = np.inf
    with pytest.raises(
        ValueError, match=r"`w` holds 1 infinite values \(inf/-inf\), e.g. at row 9"
    ):
        ml.DRLearner(**LIN).fit(X, y, w_inf)


# ------------------------------------------------------ item 2: batch sizes
@pytest.mark.parametrize("cls", LEARNERS)
def test_predict_on_zero_rows_is_a_clear_error(data, cls):
    X, y, w = data
    learner = _lin(cls).fit(X, y, w)
    with pytest.raises(ValueError, match=r"`X` has no rows to predict \(shape \(0, 3\)\)"):
        learner.predict(X[:0])
    with pytest.raises(ValueError, match=r"`X` has no rows to predict"):
        learner.predict_frame(X[:0])


def test_predict_outcomes_and_explain_on_zero_rows_are_clear_errors(data, dr):
    X, _, _ = data
    with pytest.raises(ValueError, match=r"`X` has no rows to predict"):
        dr.predict_outcomes(X[:0])
    with pytest.raises(ValueError, match=r"`X` has no rows to predict"):
        dr.nuisance_.predict_propensity(X[:0])
    pytest.importorskip("shap")
    with pytest.raises(ValueError, match=r"`X` has no rows to explain"):
        dr.explainer()(X[:0])


@pytest.mark.parametrize("cls", LEARNERS)
@pytest.mark.parametrize("n_rows", [1, 2, 3, 4])
def test_predict_on_one_to_four_rows_works(data, cls, n_rows):
    X, y, w = data
    learner = _lin(cls).fit(X, y, w)
    full = learner.predict(X[:10])
    tau = learner.predict(X[:n_rows])
    assert tau.shape == (n_rows,)
    np.testing.assert_allclose(tau, full[:n_rows], rtol=1e-10, atol=1e-12)


def test_evaluate_on_zero_and_too_few_rows_is_a_clear_error(data, dr):
    X, y, w = data
    with pytest.raises(ValueError, match=r"`X` needs n_samples = 2 or more rows"):
        dr.evaluate(X[:0], y[:0], w[:0], propensity=0.5)
    with pytest.raises(ValueError, match=r"`X` needs n_samples = 2 or more rows"):
        dr.evaluate(X[:1], y[:1], w[:1], propensity=0.5)
    # Four rows, two per variant: the default scoring nuisance (two folds) would train each
    # variant's outcome model on one row; the error says so before any model is fitted.
    rows = np.r_[np.flatnonzero(w == 0)[:2], np.flatnonzero(w == 1)[:2]]
    with pytest.raises(
        ValueError,
        match=r"`w`: the fit of `outcome_model` \(LGBMRegressor; nuisance stage, outcome of "
        r"variant 0, fold 0\) would train on 1 row",
    ):
        dr.evaluate(X[rows], y[rows], w[rows], propensity=0.5)


# --------------------------------------------------- item 2: engine settings
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"random_state": "abc"}, r"`random_state` must be None, an integer seed.*'abc'"),
        ({"n_jobs": "two"}, r"`n_jobs` must be None .*got 'two'"),
        ({"n_jobs": 0}, r"`n_jobs` must be None .*got 0"),
        ({"propensity_clip": (0.1, 0.2, 0.3)}, r"`propensity_clip` must be a float.*0\.3\)"),
        ({"propensity_clip": [[0.1, 0.9]]}, r"`propensity_clip` must be a float"),
        ({"propensity_clip": "abc"}, r"`propensity_clip` must be a float.*'abc'"),
        ({"propensity_clip": (0.9, 0.1)}, r"`propensity_clip` must be a float"),
    ],
)
def test_bad_engine_settings_name_the_argument(data, kw, match):
    X, y, w = data
    with pytest.raises(ValueError, match=match):
        ml.DRLearner(**{**LIN, **kw}).fit(X, y, w)


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"random_state": "abc"}, r"`random_state` must be None"), ({"n_jobs": "two"}, "`n_jobs`")],
)
def test_bad_engine_settings_of_s_learner_and_nuisance(data, kw, match):
    X, y, w = data
    with pytest.raises(ValueError, match=match):
        ml.SLearner(outcome_model=LinearRegression(), **kw).fit(X, y, w)
    with pytest.raises(ValueError, match=match):
        ml.Nuisance(outcome_model=LinearRegression(), **kw).fit(X, y, w)


# --------------------------------------------- item 2: continuous y, classifier
@pytest.mark.parametrize("cls", [ml.SLearner, ml.TLearner, ml.DRLearner])
def test_a_continuous_y_for_a_classifier_asks_for_a_regressor(data, cls):
    X, y, w = data
    learner = _lin(cls, outcome_model=LogisticRegression())
    with pytest.raises(
        ValueError, match=r"`y` looks continuous.*Use a regressor as `outcome_model`"
    ):
        learner.fit(X, y, w)


def test_integral_float_labels_are_classes_for_a_classifier(data):
    X, y, w = data
    y01 = (y > 0).astype(np.float64)
    t = ml.TLearner(outcome_model=LogisticRegression(), n_folds=2).fit(X, y01, w)
    assert t.classes_.tolist() == [0.0, 1.0]


# ------------------------------------------------- item 2: unseen variants
def test_evaluate_and_ate_on_a_variant_unseen_at_fit(data, dr):
    X, y, w = data
    w3 = w.copy()
    w3[:30] = 2
    with pytest.raises(ValueError, match=r"`w` holds the variants \[0, 1, 2\] but the learner"):
        dr.evaluate(X, y, w3, propensity=np.full((len(y), 3), 1 / 3))
    with pytest.raises(ValueError, match=r"`w` holds the variants \[0, 1, 2\], but the learner"):
        dr.ate(X, y, w3)


# ----------------------------------------------- item 5: errors say where
class _FailsOnFewRows(RegressorMixin, BaseEstimator):
    """A regressor whose fit raises ``exc`` on fewer than ``min_rows`` rows."""

    def __init__(self, min_rows: int = 1000, exc: type = ValueError):
        self.min_rows = min_rows
        self.exc = exc

    def fit(self, X, y):
        if len(y) < self.min_rows:
            raise self.exc("too few rows for me")
        self.model_ = LinearRegression().fit(X, y)
        return self

    def predict(self, X):
        return self.model_.predict(X)


@pytest.mark.parametrize(
    ("kw", "where"),
    [
        (
            {"outcome_model": _FailsOnFewRows(), "outcome_pooling": "per_variant"},
            r"`outcome_model` \(_FailsOnFewRows; nuisance stage, outcome of variant 0, fold 0\)",
        ),
        (
            {"effect_model": _FailsOnFewRows()},
            r"`effect_model` \(_FailsOnFewRows; final stage, variant 1 vs 0, fold 0\)",
        ),
    ],
)
def test_a_base_model_failing_in_a_fold_names_stage_model_variant_and_fold(data, kw, where):
    X, y, w = data
    learner = ml.DRLearner(**{**LIN, "n_jobs": 1, **kw})
    with pytest.raises(
        ml.BaseModelError, match=where + r" raised ValueError: too few rows"
    ) as info:
        learner.fit(X, y, w)
    err = info.value
    assert isinstance(err, ValueError)  # `except ValueError` still catches it
    assert type(err.__cause__) is ValueError and str(err.__cause__) == "too few rows for me"
    assert err.original is err.__cause__


def test_a_propensity_model_failing_names_its_stage(data):
    X, y, w = data

    class _Boom(LogisticRegression):
        def fit(self, X, y, sample_weight=None):
            raise RuntimeError("no convergence")

    with pytest.raises(
        ml.BaseModelError, match=r"`propensity_model` \(_Boom; nuisance stage, fold 0\) raised"
    ) as info:
        ml.DRLearner(**{**LIN, "propensity_model": _Boom()}).fit(X, y, w)
    assert isinstance(info.value, RuntimeError)


def test_the_error_of_a_failing_fold_survives_worker_threads(data):
    X, y, w = data
    learner = ml.TLearner(outcome_model=_FailsOnFewRows(), n_folds=2, n_jobs=2)
    with pytest.raises(
        ml.BaseModelError, match=r"`outcome_model` \(_FailsOnFewRows; nuisance"
    ) as info:
        learner.fit_predict(X, y, w)
    assert isinstance(info.value.original, ValueError)


def test_the_error_of_a_failing_fold_pickles(data):
    X, y, w = data
    with pytest.raises(ml.BaseModelError) as info:
        ml.SLearner(outcome_model=_FailsOnFewRows(exc=KeyError), n_folds=2).fit(X, y, w)
    copy = pickle.loads(pickle.dumps(info.value))
    assert isinstance(copy, ml.BaseModelError) and isinstance(copy, KeyError)
    assert str(copy) == str(info.value)
    assert "S-learner's outcome model, all rows" in str(copy)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, TreatmentNotRoutedError])
def test_base_exceptions_pass_through_unwrapped(data, exc):
    X, y, w = data
    with pytest.raises(exc) as info:
        ml.TLearner(outcome_model=_FailsOnFewRows(exc=exc), n_folds=2).fit(X, y, w)
    assert not isinstance(info.value, ml.BaseModelError)


# ------------------------------------------------ item 6: pickled versions
def _pickled_with_version(obj, version):
    """``obj`` pickled as if written by metalearn ``version``."""
    state = obj.__getstate__()
    assert state["_metalearn_version"] == ml.__version__
    clone = object.__new__(type(obj))
    return clone, {**state, "_metalearn_version": version}


@pytest.mark.parametrize("cls", [ml.DRLearner, ml.TLearner, ml.SLearner])
def test_a_learner_pickled_by_another_version_warns(data, cls):
    X, y, w = data
    learner = _lin(cls).fit(X, y, w)
    blank, state = _pickled_with_version(learner, "0.0.1")
    with pytest.warns(ml.InconsistentVersionWarning, match=r"pickled by metalearn 0\.0\.1") as rec:
        blank.__setstate__(state)
    message = str(rec[0].message)
    assert f"loaded by metalearn {ml.__version__}" in message and "Refit" in message
    assert rec[0].message.original_version == "0.0.1"
    np.testing.assert_array_equal(blank.predict(X[:5]), learner.predict(X[:5]))


def test_the_same_version_loads_silently(data, dr):
    X, _, _ = data
    payload = pickle.dumps(dr)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = pickle.loads(payload)
        nuis = pickle.loads(pickle.dumps(dr.nuisance_))
    np.testing.assert_array_equal(loaded.predict(X[:5]), dr.predict(X[:5]))
    assert "_metalearn_version" not in loaded.__dict__ and "_metalearn_version" not in nuis.__dict__


def test_a_pickle_without_a_version_warns(dr):
    state = dr.__getstate__()
    del state["_metalearn_version"]
    blank = object.__new__(type(dr))
    with pytest.warns(ml.InconsistentVersionWarning, match="pickled by metalearn unknown"):
        blank.__setstate__(state)


def test_a_nuisance_and_a_search_pickled_by_another_version_warn(data, dr):
    X, y, w = data
    blank, state = _pickled_with_version(dr.nuisance_, "9.9")
    with pytest.warns(
        ml.InconsistentVersionWarning, match="This Nuisance was pickled by metalearn 9.9"
    ):
        blank.__setstate__(state)
    search = ml.MetaLearnerGridSearch(
        ml.DRLearner(**LIN),
        {"final_stage": ["crossfit", "full"]},
        scoring_nuisance=ml.Nuisance(
            outcome_model=LinearRegression(), propensity_model=LogisticRegression(), n_folds=2
        ),
        random_state=0,
    )
    search.fit(X, y, w)
    payload = pickle.dumps(search)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pickle.loads(payload)
    blank, state = _pickled_with_version(search, "9.9")
    with pytest.warns(ml.InconsistentVersionWarning, match="MetaLearnerGridSearch was pickled"):
        blank.__setstate__(state)
