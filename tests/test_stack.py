"""StackedLearner: non-negative combinations of learners fitted on the R- or DR-loss."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
from scipy.optimize import minimize
from sklearn.base import clone
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

import metalearn as ml
from metalearn._core.formulas import clip_propensity, pair_propensity, r_residuals
from metalearn.learners.stack import _nnls_with_intercept

LIN = {"outcome_model": LinearRegression(), "propensity_model": LogisticRegression()}


def _linear_effect(n: int, seed: int, k: int = 2) -> Any:
    """Confounded design, outcome linear in x, effect ``1 + x0`` for every treated variant."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    logits = np.column_stack([np.zeros(n)] + [0.5 * X[:, 1] * j for j in range(1, k)])
    e = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    w = np.array([rng.choice(k, p=p) for p in e])
    tau = 1.0 + X[:, 0]
    y = X[:, 1] + X[:, 2] + np.where(w > 0, tau, 0.0) + rng.normal(size=n)
    return X, y, w, tau


def _base(**kw: Any) -> list[tuple[str, Any]]:
    common = {**LIN, "n_folds": 2, "random_state": 0, **kw}
    return [
        ("dr_linear", ml.DRLearner(effect_model=LinearRegression(), **common)),
        ("dr_flat", ml.DRLearner(effect_model=Ridge(alpha=1e7), **common)),
        ("t", ml.TLearner(outcome_model=LinearRegression(), n_folds=2, random_state=0)),
    ]


def _stack(**kw: Any) -> ml.StackedLearner:
    args: dict[str, Any] = {**LIN, "n_folds": 2, "random_state": 0}
    args.update(kw)
    return ml.StackedLearner(_base(), **args)


def test_nnls_with_intercept_is_the_constrained_least_squares_solution() -> None:
    rng = np.random.default_rng(0)
    n, J = 300, 3
    taus = rng.normal(size=(n, J))
    scale = rng.normal(size=n)
    weight = rng.uniform(0.5, 2.0, size=n)
    target = scale * (0.3 + taus @ np.array([0.8, -0.5, 0.2])) + rng.normal(size=n)
    a, c = _nnls_with_intercept(taus, target, scale, weight)

    def loss(theta: np.ndarray) -> float:
        r = target - scale * (theta[0] + taus @ theta[1:])
        return float(np.sum(weight * r**2))

    bounds = [(None, None)] + [(0.0, None)] * J
    ref = minimize(loss, np.zeros(J + 1), bounds=bounds, method="L-BFGS-B", tol=1e-14)
    np.testing.assert_allclose(a, ref.x[1:], atol=1e-5)
    assert c == pytest.approx(ref.x[0], abs=1e-5)
    assert a[1] == 0.0  # the negative direction is cut at the bound
    assert loss(np.r_[c, a]) <= ref.fun + 1e-8


@pytest.mark.parametrize("loss", ["r_loss", "dr_loss"])
def test_weights_go_to_the_learner_of_the_true_effect(loss: str) -> None:
    X, y, w, _ = _linear_effect(3000, 0)
    Xt, _, _, tau_t = _linear_effect(3000, 1)
    stack = _stack(loss=loss).fit(X, y, w)
    assert stack.weights_.shape == (1, 1, 3) and (stack.weights_ >= 0).all()
    # dr_linear and the T-learner of linear outcome models both estimate 1 + x0 without bias
    # (nearly collinear: the split between them is arbitrary); the flat one adds nothing.
    a = stack.weights_[0, 0]
    assert a[0] + a[2] == pytest.approx(1.0, abs=0.1)
    assert a[1] < 0.1
    assert abs(stack.intercept_[0, 0]) < 0.1
    pehe = {
        n: np.mean((lrn.predict(Xt) - tau_t) ** 2)
        for n, lrn in zip(stack.names_, stack.learners_, strict=True)
    }
    stacked = np.mean((stack.predict(Xt) - tau_t) ** 2)
    # The combination is at most a little worse than its best member (1 + 3 weights fitted
    # on 3,000 rows), and far better than the worst.
    assert stacked <= 1.2 * min(pehe.values()) + 1e-3
    assert stacked < 0.2 * max(pehe.values())


def test_constant_effect_shrinks_to_the_intercept() -> None:
    sim = ml.datasets.simulate_nie_wager("C", n=2000, seed=0)  # tau = 1 for everybody
    test = ml.datasets.simulate_nie_wager("C", n=2000, seed=1)
    stack = _stack().fit(sim.X, sim.y, sim.w)
    assert stack.intercept_[0, 0] == pytest.approx(1.0, abs=0.3)
    stacked = np.mean((stack.predict(test.X) - test.tau) ** 2)
    best = min(np.mean((lrn.predict(test.X) - test.tau) ** 2) for lrn in stack.learners_)
    assert stacked <= best


def test_fit_predict_combines_the_out_of_fold_effects() -> None:
    X, y, w, _ = _linear_effect(1000, 2)
    stack = _stack()
    oof = stack.fit_predict(X, y, w)
    # Each fold's rows are combined with weights fitted on the other fold's R-residuals.
    nuis = stack.nuisance_
    folds = nuis._made_folds()
    p = clip_propensity(pair_propensity(nuis.oof_["e"], 1, 0), 0.01)
    ry, rt = r_residuals(y[:, None], w == 1, nuis.oof_["m:0:1"], p)
    taus = stack.oof_effects_[:, :, 0, 0]
    expected = np.empty(len(y))
    for f in np.unique(folds):
        fit, out = folds != f, folds == f
        a, c = _nnls_with_intercept(taus[fit], ry[fit, 0], rt[fit], np.ones(fit.sum()))
        expected[out] = c + taus[out] @ a
    np.testing.assert_allclose(oof, expected, rtol=1e-10)
    full = stack.intercept_[0, 0] + taus @ stack.weights_[0, 0]
    assert not np.allclose(oof, full)  # not the all-row weights of `predict`
    for i in range(len(stack.learners_)):
        np.testing.assert_allclose(
            stack.oof_effects_[:, i, 0, 0], clone(_base()[i][1]).fit_predict(X, y, w), rtol=1e-10
        )


def test_several_variants_get_their_own_weights() -> None:
    X, y, w, _ = _linear_effect(2400, 3, k=3)
    stack = _stack().fit(X, y, w)
    assert stack.weights_.shape == (2, 1, 3) and stack.intercept_.shape == (2, 1)
    assert stack.predict(X[:5]).shape == (5, 2)


def test_explains_evaluates_and_averages_like_a_learner() -> None:
    X, y, w, _ = _linear_effect(1500, 4)
    common = {**LIN, "n_folds": 2, "random_state": 0}
    stack = ml.StackedLearner(
        [
            ("linear", ml.DRLearner(effect_model=LinearRegression(), **common)),
            ("ridge", ml.RLearner(effect_model=Ridge(alpha=10.0), **common)),
        ],
        **common,
    ).fit(X, y, w)
    explainer = stack.explainer(method="models", random_state=0)
    shap = explainer(X[:40])
    assert shap.values.shape == (40, 4)
    np.testing.assert_allclose(
        shap.base_values + shap.values.sum(axis=1), stack.predict(X[:40]), atol=1e-8
    )
    assert next(iter(explainer.info_.values())).exact
    ev = stack.evaluate(X, y, w)
    assert set(ev.losses["loss"].to_list()) == {"r_loss", "dr_loss", "plugin"}
    effect = stack.ate(X, y, w)  # AIPW from the stack's own cross-fitted nuisances
    assert effect.method == "AIPW (ATE)"
    assert effect.ci_low < 1.0 < effect.ci_high  # the true ATE: E[1 + x0] = 1
    again = pickle.loads(pickle.dumps(stack))
    np.testing.assert_array_equal(again.predict(X[:7]), stack.predict(X[:7]))


def test_from_search_stacks_the_best_candidates() -> None:
    X, y, w, tau = _linear_effect(1500, 5)
    yard = ml.Nuisance(**LIN, n_folds=2, random_state=0)
    template = ml.DRLearner(**LIN, effect_model=Ridge(), n_folds=2, random_state=0)
    search = ml.MetaLearnerGridSearch(
        template, {"effect_model__alpha": [1e7, 0.1, 10.0, 1e4]}, scoring_nuisance=yard, n_jobs=1
    ).fit(X, y, w)
    top = search.top_candidates(2)
    ranks = list(search.results_["rank"])
    alphas = list(search.results_["effect_model__alpha"])
    best_two = [alphas[ranks.index(1)], alphas[ranks.index(2)]]
    assert [lrn.effect_model.alpha for lrn in top] == best_two
    stack = ml.StackedLearner.from_search(search, n_learners=2)
    assert [n for n, _ in stack.learners] == ["rank1", "rank2"]
    assert stack.nuisance is yard
    stack.fit(X, y, w)
    assert np.mean((stack.predict(X) - tau) ** 2) < 0.1
    with pytest.raises(TypeError, match=r"`search` must be a fitted MetaLearnerGridSearch"):
        ml.StackedLearner.from_search(template)
    with pytest.raises(ValueError, match=r"`n` must be a positive integer"):
        search.top_candidates(0)


def test_bad_parameters_name_the_argument() -> None:
    X, y, w, _ = _linear_effect(300, 6)
    with pytest.raises(ValueError, match=r"`learners` must be a non-empty list"):
        ml.StackedLearner([], **LIN).fit(X, y, w)
    with pytest.raises(TypeError, match=r"`learners\[1\]` must be a metalearn learner"):
        ml.StackedLearner([_base()[0][1], Ridge()], **LIN).fit(X, y, w)
    with pytest.raises(ValueError, match=r"duplicate names"):
        ml.StackedLearner([("a", _base()[0][1]), ("a", _base()[1][1])], **LIN).fit(X, y, w)
    with pytest.raises(ValueError, match=r"`loss` must be one of"):
        _stack(loss="plugin").fit(X, y, w)
    with pytest.raises(ValueError, match=r"`learners\[0\]` has control=1"):
        ml.StackedLearner([ml.TLearner(control=1)], control=0, **LIN).fit(X, y, w)
    clf = ml.TLearner(outcome_model=LogisticRegression())
    with pytest.raises(ValueError, match=r"`learners\[0\]` has a classifier outcome model"):
        ml.StackedLearner([clf], **LIN).fit(X, (y > 0).astype(int), w)
