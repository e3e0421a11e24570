"""The engine's data path: one conversion, sliced subsets, immutable fitted stages."""

from __future__ import annotations

import re
from typing import ClassVar

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

import metalearn as ml
from metalearn._core.data import prepare_data

LIN = {"outcome_model": LinearRegression(), "propensity_model": LogisticRegression()}


@pytest.fixture(scope="module")
def sim():
    return ml.datasets.simulate_nie_wager("C", n=600, seed=0)


def test_refitting_a_fitted_nuisance_raises_and_learners_keep_their_fit(sim):
    nuis = ml.Nuisance(**LIN, n_folds=2, random_state=0).fit(sim.X, sim.y, sim.w)
    dr = ml.DRLearner(nuisance=nuis, effect_model=LinearRegression()).fit(sim.X, sim.y, sim.w)
    before = dr.predict(sim.X[:20])
    other = ml.datasets.simulate_nie_wager("C", n=600, seed=1)
    with pytest.raises(RuntimeError, match=r"already fitted.*Nuisance\(\*\*nuisance"):
        nuis.fit(other.X, other.y, other.w)
    np.testing.assert_array_equal(dr.predict(sim.X[:20]), before)
    # The documented way to refit: a new object from the same settings.
    fresh = ml.Nuisance(**nuis.get_params(deep=False)).fit(other.X, other.y, other.w)
    assert fresh is not nuis


def test_fingerprint_sees_every_row():
    sim = ml.datasets.simulate_nie_wager("A", n=5000, seed=0)
    X = np.array(sim.X)
    nuis = ml.Nuisance(**LIN, n_folds=2, random_state=0).fit(X, sim.y, sim.w)
    changed = X.copy()
    changed[1::2, 0] += 1.0  # every odd row differs
    with pytest.raises(ValueError, match="fitted on different data"):
        ml.DRLearner(nuisance=nuis, effect_model=LinearRegression()).fit(changed, sim.y, sim.w)
    one_row = X.copy()
    one_row[4321, 3] = -one_row[4321, 3]
    with pytest.raises(ValueError, match="fitted on different data"):
        ml.TLearner(nuisance=nuis).fit(one_row, sim.y, sim.w)


def test_sample_weight_with_a_propensity_model_that_cannot_take_it_raises(sim):
    sw = np.ones(len(sim.y))
    nuis = ml.Nuisance(
        outcome_model=LinearRegression(), propensity_model=KNeighborsClassifier(), n_folds=2
    )
    with pytest.raises(TypeError, match="`propensity_model` \\(KNeighborsClassifier\\)"):
        nuis.fit(sim.X, sim.y, sim.w, sample_weight=sw)
    # Known propensities need no propensity model, so the weights are fine then.
    ml.Nuisance(
        outcome_model=LinearRegression(), propensity_model=KNeighborsClassifier(), n_folds=2
    ).fit(sim.X, sim.y, sim.w, sample_weight=sw, propensity=0.5)


def test_data_take_slices_arrays_and_keeps_the_schema():
    pl = pytest.importorskip("polars")
    X = pl.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "c": ["x", "y", "z", "x"]})
    data = prepare_data(X, [1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1], classification=False)
    sub = data.take(np.array([0, 3, 3]))
    assert sub.schema is data.schema
    np.testing.assert_array_equal(sub.X, data.X[[0, 3, 3]])
    np.testing.assert_array_equal(sub.w, [0, 1, 1])
    assert sub.fingerprint != data.fingerprint
    # Group codes of a subset are renumbered 0..G-1.
    assert data.take(np.array([2, 0]), groups=np.array([7, 7])).groups.tolist() == [0, 0]


def test_bootstrap_keeps_every_copy_of_a_row_in_one_fold(sim, monkeypatch):
    seen = []
    original = ml.TLearner._fit_data

    def spy(self, data, *, honest):
        out = original(self, data, honest=honest)
        seen.append((data.X.copy(), self.nuisance_.folds_.copy()))
        return out

    monkeypatch.setattr(ml.TLearner, "_fit_data", spy)
    t = ml.TLearner(outcome_model=LinearRegression(), n_folds=3, random_state=0)
    ml.inference.bootstrap_cate(t, sim.X, sim.y, sim.w, X_new=sim.X[:5], n_boot=3, random_state=0)
    replicates = seen[1:]
    assert len(replicates) == 3
    for X_rep, folds in replicates:
        _, row_id = np.unique(X_rep, axis=0, return_inverse=True)
        row_id = row_id.ravel()
        assert len(np.unique(row_id)) < len(row_id)  # the replicate has copies
        for r in np.unique(row_id):
            assert len(np.unique(folds[row_id == r])) == 1


def test_grid_search_outer_folds_know_a_category_seen_in_one_row():
    pl = pytest.importorskip("polars")
    sim = ml.datasets.simulate_nie_wager("B", n=300, seed=0)
    city = np.array(["a", "b"] * 150, dtype=object)
    city[17] = "rare"
    X = pl.DataFrame({f"x{j}": sim.X[:, j] for j in range(3)}).with_columns(pl.Series("city", city))
    search = ml.MetaLearnerGridSearch(
        ml.TLearner(outcome_model=LinearRegression(), n_folds=2, random_state=0),
        {},
        cv=3,
        scoring_nuisance=ml.Nuisance(**LIN, n_folds=2, random_state=0),
    ).fit(X, sim.y, sim.w)
    assert np.isfinite(search.results_["r_loss"].to_numpy()).all()


def test_features_are_checked_for_nan_once_per_fit(sim, monkeypatch):
    import metalearn.learners.base as base
    import metalearn.learners.nuisance as nuisance_module

    calls = []

    def counting(X, models, **kw):
        calls.append(1)

    monkeypatch.setattr(base, "check_finite_X", counting)
    monkeypatch.setattr(nuisance_module, "check_finite_X", counting)
    ml.DRLearner(**LIN, effect_model=LinearRegression(), n_folds=2).fit(sim.X, sim.y, sim.w)
    assert len(calls) == 1


class _CountingRegression(LinearRegression):
    predictions = 0

    def predict(self, X):
        type(self).predictions += 1
        return super().predict(X)


def test_fit_makes_no_out_of_fold_final_stage_predictions(sim):
    _CountingRegression.predictions = 0
    dr = ml.DRLearner(**LIN, effect_model=_CountingRegression(), n_folds=3)
    dr.fit(sim.X, sim.y, sim.w)
    assert _CountingRegression.predictions == 0  # fit only fits the fold models
    dr.fit_predict(sim.X, sim.y, sim.w)
    assert _CountingRegression.predictions == 3  # each fold model predicts its fold


@pytest.mark.parametrize("name", ["SLearner", "TLearner", "XLearner", "DRLearner", "RALearner"])
def test_handle_unknown_category_at_predict(name):
    pl = pytest.importorskip("polars")
    from lightgbm import LGBMClassifier, LGBMRegressor

    sim = ml.datasets.simulate_nie_wager("B", n=400, seed=0)
    city = np.where(sim.X[:, 0] > 0.5, "north", "south")
    X = pl.DataFrame({"x0": sim.X[:, 0], "x1": sim.X[:, 1], "city": city})
    cls = getattr(ml, name)
    params = cls().get_params()
    kw = {"outcome_model": LGBMRegressor(n_estimators=5, verbose=-1), "n_folds": 2}
    if "propensity_model" in params:
        kw["propensity_model"] = LGBMClassifier(n_estimators=5, verbose=-1)
    if "effect_model" in params:
        kw["effect_model"] = LGBMRegressor(n_estimators=5, verbose=-1)
    new = X.head(3).with_columns(pl.Series("city", ["east", "north", "west"]))
    strict = cls(**kw).fit(X, sim.y, sim.w)
    with pytest.raises(ValueError, match="Column 'city' of `X` holds categories not seen"):
        strict.predict(new)
    lenient = cls(**kw, handle_unknown="missing").fit(X, sim.y, sim.w)
    with pytest.warns(UserWarning, match="2 value"):
        tau = lenient.predict(new)
    assert np.isfinite(tau).all()
    # A model that cannot take missing values gets a clear message, not sklearn's.
    linear = cls(
        **{
            k: LinearRegression() if k != "propensity_model" else LogisticRegression()
            for k in kw
            if k.endswith("_model")
        },
        n_folds=2,
        handle_unknown="missing",
    ).fit(X, sim.y, sim.w)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="cannot handle missing"):
        linear.predict(new)


def test_handle_unknown_is_checked():
    sim = ml.datasets.simulate_nie_wager("B", n=100, seed=0)
    with pytest.raises(ValueError, match="`handle_unknown` must be one of"):
        ml.TLearner(outcome_model=LinearRegression(), handle_unknown="ignore").fit(
            sim.X, sim.y, sim.w
        )


def test_predict_rejects_infinite_and_unsupported_missing_values(sim):
    t = ml.TLearner(outcome_model=LinearRegression(), n_folds=2).fit(sim.X, sim.y, sim.w)
    X = np.array(sim.X[:4], dtype=float)
    X[1, 2] = np.inf
    with pytest.raises(ValueError, match=r"infinite value.*row 1, column 2.*before predicting"):
        t.predict(X)
    X[1, 2] = np.nan
    with pytest.raises(ValueError, match="`outcome_model` cannot handle missing values"):
        t.predict(X)


@pytest.mark.parametrize("name", ["SLearner", "TLearner", "XLearner", "RLearner", "DRLearner"])
def test_every_base_model_fit_is_built_by_the_task_builder(name, sim, monkeypatch):
    from metalearn._core.tasks import TaskBuilder

    added = []
    original = TaskBuilder.add

    def spy(self, template, train, target, **kw):
        added.append(kw["key"])
        return original(self, template, train, target, **kw)

    monkeypatch.setattr(TaskBuilder, "add", spy)
    cls = getattr(ml, name)
    params = cls().get_params()
    kw = {k: v for k, v in {**LIN, "effect_model": LinearRegression()}.items() if k in params}
    learner = cls(**kw, n_folds=3, random_state=0)
    learner.fit_predict(sim.X, sim.y, sim.w)
    assert len(added) == learner.n_model_fits_ > 0


def test_the_workflow_reads_the_one_prepared_data_type(sim):
    from metalearn._core.data import Data
    from metalearn._core.design import prepare_design

    design = prepare_design(sim.X, sim.y, sim.w)
    assert isinstance(design.data, Data)
    reference = prepare_data(sim.X, sim.y, sim.w, classification=False)
    np.testing.assert_array_equal(design.X, reference.X)
    np.testing.assert_array_equal(design.w, reference.w)
    np.testing.assert_array_equal(design.y, reference.y)
    no_features = prepare_design(None, sim.y, sim.w, need_X=False)
    assert no_features.X is None and no_features.data.X.shape == (len(sim.y), 0)
    no_outcome = prepare_design(sim.X, None, sim.w, need_y=False)
    assert no_outcome.y is None


def test_evaluation_converts_its_rows_through_prepare_data(sim, monkeypatch):
    import metalearn.evaluation._common as common

    calls = []
    original = common.prepare_data

    def spy(*args, **kw):
        calls.append(kw.get("workflow"))
        return original(*args, **kw)

    monkeypatch.setattr(common, "prepare_data", spy)
    tau = np.asarray(sim.tau)
    ml.evaluation.qini_curve(tau, sim.y, sim.w, propensity=0.5)
    assert calls == [True]


class _Boom(LinearRegression):
    def fit(self, X, y, sample_weight=None):
        raise ValueError("boom")


class _BoomClassifier(LogisticRegression):
    def fit(self, X, y, sample_weight=None):
        raise ValueError("boom")


@pytest.mark.parametrize(
    ("kw", "where"),
    [
        ({"outcome_model": _Boom()}, r"`outcome_model` \(_Boom; nuisance stage, pooled"),
        (
            {"outcome_model": _Boom(), "outcome_pooling": "per_variant"},
            r"`outcome_model` \(_Boom; nuisance stage, outcome of variant 0, fold 0\)",
        ),
        (
            {"propensity_model": _BoomClassifier()},
            r"`propensity_model` \(_BoomClassifier; nuisance stage, fold 0\)",
        ),
        (
            {"effect_model": _Boom()},
            r"`effect_model` \(_Boom; final stage, variant 1 vs 0, fold 0\)",
        ),
    ],
)
def test_a_failing_base_model_says_which_fit_failed(sim, kw, where):
    args = {**LIN, "effect_model": LinearRegression(), "n_folds": 2, "n_jobs": 1, **kw}
    with pytest.raises(ValueError, match="boom") as info:
        ml.DRLearner(**args).fit(sim.X, sim.y, sim.w)
    assert isinstance(info.value, ml.BaseModelError)
    assert re.search(where, str(info.value)), str(info.value)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n_jobs": "two"}, r"`n_jobs` must be None .*got 'two'"),
        ({"n_jobs": 0}, r"`n_jobs` must be None .*got 0"),
        ({"n_jobs": True}, r"`n_jobs` must be None .*got True"),
        ({"random_state": "abc"}, r"`random_state` must be None, an integer seed.*'abc'"),
        ({"propensity_clip": (0.1, 0.2, 0.3)}, r"`propensity_clip` must be a float.*0\.3\)"),
    ],
)
def test_bad_engine_settings_are_named(sim, kw, match):
    learner = ml.DRLearner(**LIN, effect_model=LinearRegression(), n_folds=2, **kw)
    with pytest.raises(ValueError, match=match):
        learner.fit(sim.X, sim.y, sim.w)


@pytest.mark.parametrize(
    ("kw", "match"), [({"n_jobs": 0}, "`n_jobs`"), ({"random_state": 1.5}, "`random_state`")]
)
def test_bad_nuisance_settings_are_named(sim, kw, match):
    with pytest.raises(ValueError, match=match):
        ml.Nuisance(**LIN, n_folds=2, **kw).fit(sim.X, sim.y, sim.w)


# ------------------------------------------------------------- wasted work removed
class _RowRecorder(LinearRegression):
    """Records the feature rows it was fitted on and the rows it predicted."""

    log: ClassVar[list[tuple[str, int, frozenset]]] = []

    def fit(self, X, y, sample_weight=None):
        _RowRecorder.log.append(("fit", id(self), frozenset(map(bytes, np.asarray(X)))))
        return super().fit(X, y, sample_weight=sample_weight)

    def predict(self, X):
        _RowRecorder.log.append(("predict", id(self), frozenset(map(bytes, np.asarray(X)))))
        return super().predict(X)


@pytest.mark.parametrize("K", [2, 3])
def test_x_per_variant_fit_imputes_with_full_data_models_of_the_other_arm(K):
    rng = np.random.default_rng(0)
    n = 300
    X = rng.normal(size=(n, 3))
    w = rng.integers(0, K, n)
    y = X[:, 0] + w * X[:, 1] + rng.normal(size=n)
    _RowRecorder.log = []
    x = ml.XLearner(
        outcome_model=_RowRecorder(),
        propensity_model=LogisticRegression(),
        effect_model=LinearRegression(),
        outcome_pooling="per_variant",
        final_stage="crossfit",  # counted below: 3 fold models per effect
        n_folds=3,
        random_state=0,
    ).fit(X, y, w)
    fits = [e for e in _RowRecorder.log if e[0] == "fit"]
    # One outcome model per variant, on every row of that variant: no cross-fitting.
    assert len(fits) == K
    assert {len(rows) for _, _, rows in fits} == {int(np.sum(w == k)) for k in range(K)}
    assert x.n_model_fits_ == K + 3 + 2 * (K - 1) * 3  # outcome, propensity, effect
    # No outcome model predicts a row it was trained on (the imputations are honest).
    trained = {mid: rows for kind, mid, rows in fits}
    for kind, mid, rows in _RowRecorder.log:
        if kind == "predict":
            assert not rows & trained[mid]
    # ate() asks for the training data, as for the T-learner, and then cross-fits once.
    with pytest.raises(ValueError, match=r"Call `learner.ate\(X, y, w\)`"):
        x.ate()
    assert np.isfinite(np.asarray(x.predict(X[:5]))).all()
    # fit_predict still cross-fits the outcome models (its final stage is out of fold).
    _RowRecorder.log = []
    x.fit_predict(X, y, w)
    assert sum(e[0] == "fit" for e in _RowRecorder.log) == K * 3


def test_x_per_variant_fit_with_known_propensities_cross_fits_its_final_stage():
    sim = ml.datasets.simulate_nie_wager("B", n=400, seed=0)
    for stage, effect_fits in (("crossfit", 2 * 3), ("full", 2)):
        x = ml.XLearner(
            outcome_model=LinearRegression(),
            effect_model=LinearRegression(),
            outcome_pooling="per_variant",
            final_stage=stage,
            n_folds=3,
            random_state=0,
        ).fit(sim.X, sim.y, sim.w, propensity=0.5)
        assert x.n_model_fits_ == 2 + effect_fits
        assert all(len(ms) == effect_fits // 2 for ms in x.effect_models_.values())


def test_predict_models_builds_one_augmented_matrix_per_block(monkeypatch):
    from metalearn._core import tasks

    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3))
    blocks = [np.zeros((50, 1)), np.ones((50, 1))]
    models = [
        LinearRegression().fit(np.column_stack([X, rng.integers(0, 2, 50)]), rng.normal(size=50))
        for _ in range(4)
    ]
    jobs = [(m, "predict", b) for m in models for b in blocks]
    stacks = []
    real_hstack = np.hstack
    monkeypatch.setattr(
        tasks.np, "hstack", lambda arrs: stacks.append(1) or real_hstack(arrs), raising=True
    )
    preds = tasks.predict_models(jobs, X, n_jobs=None)
    monkeypatch.undo()
    assert len(stacks) == len(blocks)  # not one per model and block
    for (m, _, b), p in zip(jobs, preds, strict=True):
        np.testing.assert_array_equal(p, m.predict(np.hstack([X, b])))


def test_a_fit_on_every_row_reads_x_itself():
    from metalearn._core.tasks import Task, run_tasks

    class Keeps(LinearRegression):
        def fit(self, X, y, sample_weight=None):
            self.seen_ = X
            return super().fit(X, y)

    X = np.random.default_rng(2).normal(size=(40, 2))
    y = X[:, 0]
    every = Task(estimator=Keeps(), train=np.arange(40), target=y)
    some = Task(estimator=Keeps(), train=np.arange(39), target=y)
    (m_every, _), (m_some, _) = run_tasks([every, some], X, n_jobs=None)
    assert m_every.seen_ is X  # no copy of the features
    assert m_some.seen_ is not X
    np.testing.assert_array_equal(m_some.seen_, X[:39])
