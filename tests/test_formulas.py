"""The formula module: hand-checked values, and every former copy now calling it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LinearRegression, LogisticRegression

import metalearn as ml
from metalearn._core import formulas as F

LIN = {"outcome_model": LinearRegression(), "propensity_model": LogisticRegression()}


# ------------------------------------------------------------------ clipping
def test_clip_bounds() -> None:
    assert F.clip_bounds(None) == (0.0, 1.0)
    assert F.clip_bounds(0.05) == (0.05, 0.95)
    assert F.clip_bounds((0.01, 0.9)) == (0.01, 0.9)


def test_clip_propensity_clips_each_arm_without_renormalising() -> None:
    e = np.array([[0.001, 0.3, 0.699], [0.2, 0.2, 0.6]])
    out = F.clip_propensity(e, (0.01, 0.65))
    np.testing.assert_array_equal(out, [[0.01, 0.3, 0.65], [0.2, 0.2, 0.6]])
    # no clip: unchanged
    np.testing.assert_array_equal(F.clip_propensity(e, None), e)
    # pair propensities (1-D) follow the same rule
    np.testing.assert_array_equal(
        F.clip_propensity(np.array([0.0, 0.5, 1.0]), 0.1), [0.1, 0.5, 0.9]
    )


def test_clip_distribution_renormalises_only_for_more_than_two_arms() -> None:
    two = np.array([[0.995, 0.005], [0.4, 0.6]])
    np.testing.assert_allclose(F.clip_distribution(two, 0.01), [[0.99, 0.01], [0.4, 0.6]])
    three = np.array([[0.0, 0.5, 0.5]])
    # clipped to (0.2, 0.5, 0.5), then divided by 1.2
    np.testing.assert_allclose(F.clip_distribution(three, 0.2), [[1 / 6, 5 / 12, 5 / 12]])


def test_pair_propensity_and_its_zero_rule() -> None:
    e = np.array([[0.2, 0.6, 0.2], [0.5, 0.0, 0.5], [1.0, 0.0, 0.0]])
    # k = 2 against c = 1: 0.2 / 0.8, 0.5 / 0.5, and 0 / 0 -> 1/2
    np.testing.assert_array_equal(F.pair_propensity(e, 2, 1), [0.25, 1.0, 0.5])
    with np.errstate(all="raise"):  # no 0/0 is evaluated
        F.pair_propensity(e, 2, 1)


# ---------------------------------------------------------------------- AIPW
def test_aipw_potential_outcomes_by_hand() -> None:
    y = np.array([3.0, 1.0, 2.0])
    w = np.array([1, 0, 2])
    mu = np.array([[0.0, 2.0, 1.0], [1.5, 2.0, 0.0], [1.0, 1.0, 4.0]])
    e = np.array([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [0.2, 0.4, 0.4]])
    got = F.aipw_potential_outcomes(y, w, mu, e)
    expected = [
        [0.0, 2.0 + (3.0 - 2.0) / 0.25, 1.0],
        [1.5 + (1.0 - 1.5) / 0.5, 2.0, 0.0],
        [1.0, 1.0, 4.0 + (2.0 - 4.0) / 0.4],
    ]
    np.testing.assert_allclose(got, expected)
    # mu = 0: inverse-propensity weighted outcomes
    ipw = F.aipw_potential_outcomes(y, w, np.zeros((3, 3)), e)
    np.testing.assert_allclose(ipw, [[0, 12, 0], [2, 0, 0], [0, 0, 5]])


def test_aipw_scores_by_hand_binary_multiarm_and_columns() -> None:
    y = np.array([3.0, 1.0, 2.0])
    w = np.array([1, 0, 2])
    mu = np.array([[0.0, 2.0, 1.0], [1.5, 2.0, 0.0], [1.0, 1.0, 4.0]])
    e = np.array([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [0.2, 0.4, 0.4]])
    phi = F.aipw_scores(y, w, mu, e, [1, 2], 0)
    # row 0 (arm 1): mu1 - mu0 + (3 - 2) / 0.25 = 6; vs arm 2: 1 - 0 = 1
    # row 1 (arm 0): mu1 - mu0 - (1 - 1.5) / 0.5 = 1.5; vs arm 2: -1.5 + 1 = -0.5
    # row 2 (arm 2): 1 - 1 = 0; vs arm 2: 4 - 1 + (2 - 4) / 0.4 = -2
    np.testing.assert_allclose(phi, [[6.0, 1.0], [1.5, -0.5], [0.0, -2.0]])
    pot = F.aipw_potential_outcomes(y, w, mu, e)
    np.testing.assert_allclose(phi, pot[:, [1, 2]] - pot[:, [0]])
    # (n, D) targets with (n, K, D) outcome predictions: column by column
    Y2 = np.column_stack([y, 2 * y])
    mu2 = np.stack([mu, 2 * mu], axis=2)
    phi2 = F.aipw_scores(Y2, w, mu2, e, [1, 2], 0)
    assert phi2.shape == (3, 2, 2)
    np.testing.assert_allclose(phi2[..., 0], phi)
    np.testing.assert_allclose(phi2[..., 1], 2 * phi)
    # a zero propensity of another arm adds no term (no 0 * inf)
    e0 = e.copy()
    e0[0, 0] = 0.0
    assert np.isfinite(F.aipw_scores(y, w, mu, e0, [1], 0)).all()


def test_aipw_att_terms_by_hand() -> None:
    y = np.array([3.0, 1.0, 2.0])
    w = np.array([1, 0, 0])
    mu = np.array([[0.5, 2.0], [1.5, 2.0], [1.0, 1.0]])
    e = np.array([[0.5, 0.5], [0.8, 0.2], [0.6, 0.4]])
    num, is_k = F.aipw_att_terms(y, w, mu, e, 1, 0)
    # treated row: Y - mu0; control rows: -(e1/e0)(Y - mu0)
    np.testing.assert_allclose(num[:, 0], [2.5, -0.25 * (1.0 - 1.5), -(0.4 / 0.6) * 1.0])
    np.testing.assert_array_equal(is_k[:, 0], [1.0, 0.0, 0.0])


# -------------------------------------------------------------------- R-loss
def test_r_residuals_pseudo_outcome_weight_and_loss_by_hand() -> None:
    y = np.array([2.0, 0.0, 1.0])
    t = np.array([1, 0, 1])
    m = np.array([1.0, 1.0, 1.0])
    p = np.array([0.25, 0.5, 1.0])
    y_res, t_res = F.r_residuals(y, t, m, p)
    np.testing.assert_array_equal(y_res, [1.0, -1.0, 0.0])
    np.testing.assert_array_equal(t_res, [0.75, -0.5, 0.0])
    pseudo, weight = F.r_pseudo_outcome(y_res, t_res)
    np.testing.assert_allclose(pseudo, [4 / 3, 2.0, 0.0])  # 0 / 1e-12 for T - p = 0
    np.testing.assert_allclose(weight, [0.5625, 0.25, 0.0])
    tau = np.array([1.0, 2.0, 5.0])
    np.testing.assert_allclose(F.r_loss_terms(y_res, t_res, tau), [0.0625, 0.0, 0.0])
    # the weighted squared distance to the pseudo-outcome is the R-loss
    np.testing.assert_allclose(weight * (pseudo - tau) ** 2, F.r_loss_terms(y_res, t_res, tau))
    # (n, D) residuals: terms summed over the columns
    Y2 = np.column_stack([y_res, 2 * y_res])
    tau2 = np.column_stack([tau, 2 * tau])
    np.testing.assert_allclose(F.r_loss_terms(Y2, t_res, tau2), 5 * np.array([0.0625, 0, 0]))
    pseudo2, _ = F.r_pseudo_outcome(Y2, t_res)
    np.testing.assert_allclose(pseudo2[:, 1], 2 * pseudo[:])


def test_weighted_mean() -> None:
    psi = np.array([[1.0, 2.0], [3.0, 6.0]])
    np.testing.assert_allclose(F.weighted_mean(psi), [2.0, 4.0])
    np.testing.assert_allclose(F.weighted_mean(psi, np.array([3.0, 1.0])), [1.5, 3.0])


# -------------------------------------------- DRLearner.ate() == ate.aipw(...)
def _dr_case(arms: int, weighted: bool, grouped: bool) -> tuple[Any, dict[str, Any], dict]:
    if arms == 2:
        sim = ml.datasets.simulate_nie_wager("C", n=4000, seed=0)
        kw: dict[str, Any] = {}  # the default clip (0.05) binds on setup C
    else:
        sim = ml.datasets.simulate_multiarm(n=1500, n_variants=3, seed=0)
        kw = {"propensity_clip": (0.3, 0.9)}  # binds for the smaller arms
    rng = np.random.default_rng(1)
    n = len(sim.y)
    fit_kw: dict[str, Any] = {}
    if weighted:
        fit_kw["sample_weight"] = rng.uniform(0.2, 3.0, n)
    if grouped:
        fit_kw["groups"] = rng.integers(0, 50, n)
    dr = ml.DRLearner(**LIN, effect_model=LinearRegression(), n_folds=3, random_state=0, **kw)
    dr.fit(sim.X, sim.y, sim.w, **fit_kw)
    return dr, {"X": sim.X, "y": sim.y, "w": sim.w}, fit_kw


@pytest.mark.parametrize("arms", [2, 3])
@pytest.mark.parametrize(("weighted", "grouped"), [(False, False), (True, False), (True, True)])
def test_drlearner_ate_equals_aipw_with_the_learner(arms: int, weighted: bool, grouped: bool):
    dr, d, fit_kw = _dr_case(arms, weighted, grouped)
    e = dr.nuisance_.oof_["e"]
    lo, hi = F.clip_bounds(dr.propensity_clip)
    assert ((e < lo) | (e > hi)).any()  # the clip matters here
    own = dr.ate()
    shared = ml.ate.aipw(d["X"], d["y"], d["w"], learner=dr, **fit_kw)
    own_t = own if isinstance(own, tuple) else (own,)
    shared_t = shared if isinstance(shared, tuple) else (shared,)
    assert len(own_t) == len(shared_t) == arms - 1
    for a, b in zip(own_t, shared_t, strict=True):
        np.testing.assert_allclose(a.estimate, b.estimate, rtol=0, atol=1e-10)
        np.testing.assert_allclose(a.std_error, b.std_error, rtol=0, atol=1e-10)
    # Before the fix `aipw` silently used its own 0.01 clip: another answer.
    other = ml.ate.aipw(d["X"], d["y"], d["w"], learner=dr, clip=0.01, **fit_kw)
    other_t = other if isinstance(other, tuple) else (other,)
    assert max(abs(a.estimate - b.estimate) for a, b in zip(own_t, other_t)) > 1e-6


def test_aipw_without_a_learner_keeps_its_own_clip() -> None:
    sim = ml.datasets.simulate_confounded(n=1000, seed=0)
    kw = dict(**LIN, n_folds=3, random_state=0)
    auto = ml.ate.aipw(sim.X, sim.y, sim.w, **kw)
    explicit = ml.ate.aipw(sim.X, sim.y, sim.w, clip=0.01, **kw)
    assert auto.estimate == explicit.estimate and auto.std_error == explicit.std_error


# ------------------------------------------------ the R-learner's 0/0 pair score
class _ZeroPairClassifier(ClassifierMixin, BaseEstimator):
    """Propensities (0, 0, 1) where x0 > 1, else uniform: e_0 + e_1 = 0 on those rows."""

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> _ZeroPairClassifier:
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        X = np.asarray(X)
        out = np.full((len(X), 3), 1 / 3)
        out[X[:, 0] > 1.0] = [0.0, 0.0, 1.0]
        return out


def test_rlearner_pair_score_with_both_propensities_zero_is_finite() -> None:
    sim = ml.datasets.simulate_multiarm(n=900, n_variants=3, seed=0)
    X = np.asarray(sim.X)
    assert ((X[:, 0] > 1.0) & (sim.w != 2)).any()
    r = ml.RLearner(
        outcome_model=LinearRegression(),
        propensity_model=_ZeroPairClassifier(),
        effect_model=LinearRegression(),
        n_folds=3,
        random_state=0,
    )
    tau = r.fit_predict(X, sim.y, sim.w)  # raised (NaN pseudo-outcomes) before the fix
    assert np.isfinite(tau).all()
    assert np.isfinite(r.predict(X[:20])).all()


# ---------------------------------------------- the former copies use the module
def test_every_former_copy_imports_the_formulas() -> None:
    from metalearn import ate, scoring
    from metalearn._core import effects as _effects
    from metalearn.evaluation import _common as _eval_common
    from metalearn.learners import base as _base
    from metalearn.learners import dr, r, x
    from metalearn.scoring import _nuisance as _scoring_nuisance

    uses = {
        dr: ["aipw_scores"],
        _effects: ["aipw_scores", "aipw_att_terms", "clip_propensity", "weighted_mean"],
        r: ["pair_propensity", "r_residuals", "r_pseudo_outcome", "r_loss_terms"],
        x: ["pair_propensity"],
        _base: ["clip_bounds", "clip_propensity"],
        _scoring_nuisance: ["aipw_scores", "clip_distribution"],
        scoring: ["pair_propensity", "clip_propensity", "r_residuals", "r_loss_terms"],
        ate: ["clip_propensity"],
        _eval_common: ["aipw_potential_outcomes"],
    }
    for module, names in uses.items():
        for name in names:
            assert getattr(module, name) is getattr(F, name), (module.__name__, name)
    assert _base._clip_bounds(0.1) == F.clip_bounds(0.1)


@pytest.fixture(scope="module")
def scored() -> dict[str, Any]:
    from metalearn.scoring import fit_scoring_nuisance

    sim = ml.datasets.simulate_multiarm(n=900, n_variants=3, seed=0)
    template = ml.Nuisance(**LIN, n_folds=3, random_state=0)
    sn = fit_scoring_nuisance(sim.X, sim.y, sim.w, nuisance=template, propensity_clip=0.2)
    return {"sim": sim, "sn": sn}


def test_scoring_losses_equal_the_formulas(scored: dict[str, Any]) -> None:
    from metalearn.scoring import cate_losses, dr_loss, r_loss

    sim, sn = scored["sim"], scored["sn"]
    e = sn.propensity
    np.testing.assert_allclose(e.sum(axis=1), 1.0)  # a distribution (renormalised)
    tau = np.asarray(sim.tau) + 0.2
    phi = F.aipw_scores(sn.target, sn.w, sn.outcomes, e, sn.treated, sn.control)
    np.testing.assert_array_equal(sn.pseudo_outcomes(), phi)
    table = cate_losses(tau, sn, propensity_clip=0.05).to_pandas()
    for j, k in enumerate(sn.treated):
        rows = np.flatnonzero((sn.w == k) | (sn.w == sn.control))
        p = F.clip_propensity(F.pair_propensity(e[rows], k, sn.control), 0.05)
        y_res, t_res = F.r_residuals(
            sn.target[rows, 0], sn.w[rows] == k, sn.marginal[k][rows, 0], p
        )
        expected_r = F.r_loss_terms(y_res, t_res, tau[rows, j]).mean()
        sel = table[table["variant"] == str(sn.variants[k])].set_index("loss")
        assert sel.loc["r_loss", "value"] == pytest.approx(expected_r, rel=1e-12)
        public = r_loss(
            sim.y[rows],
            (sn.w[rows] == k).astype(float),
            tau[rows, j],
            outcome=sn.marginal[k][rows, 0],
            propensity=p,
        )
        assert public == pytest.approx(expected_r, rel=1e-12)
        expected_dr = np.mean((phi[:, j, 0] - tau[:, j]) ** 2)
        assert sel.loc["dr_loss", "value"] == pytest.approx(expected_dr, rel=1e-12)
        assert dr_loss(phi[:, j, 0], tau[:, j]) == pytest.approx(expected_dr, rel=1e-12)


def test_learners_pseudo_outcomes_equal_the_formulas() -> None:
    sim = ml.datasets.simulate_multiarm(n=900, n_variants=3, seed=0)
    common = dict(**LIN, effect_model=LinearRegression(), n_folds=3, random_state=0)
    dr = ml.DRLearner(**common, propensity_clip=(0.3, 0.9)).fit(sim.X, sim.y, sim.w)
    nuis = dr.nuisance_
    Y = np.asarray(sim.y, dtype=float)[:, None]
    e = F.clip_propensity(nuis.oof_["e"], (0.3, 0.9))
    phi = F.aipw_scores(Y, sim.w, nuis.oof_["mu"], e, [1, 2], 0)
    np.testing.assert_array_equal(dr.pseudo_outcomes_, phi)
    r = ml.RLearner(**common, propensity_clip=0.3).fit(sim.X, sim.y, sim.w)
    from metalearn._core.data import prepare_data

    data = prepare_data(sim.X, sim.y, sim.w, classification=False)
    _, y_res, t_res = r.residuals(data, r.nuisance_, 2)
    p = F.clip_propensity(F.pair_propensity(r.nuisance_.oof_["e"], 2, 0), 0.3)
    np.testing.assert_array_equal(t_res, (sim.w == 2) - p)
    np.testing.assert_array_equal(y_res, Y - r.nuisance_.oof_["m:0:2"])
    xl = ml.XLearner(**common, propensity_clip=0.3).fit(sim.X, sim.y, sim.w)
    ex = F.clip_propensity(xl.nuisance_.e_predict(np.asarray(sim.X[:5])), 0.3)
    g = xl._blend_weight(xl.nuisance_.e_predict(np.asarray(sim.X[:5])))
    np.testing.assert_array_equal(g[:, 1], F.pair_propensity(ex, 2, 0))


def test_evaluation_potential_outcomes_use_the_formula() -> None:
    from metalearn.evaluation._common import _design

    y = np.array([3.0, 1.0, 2.0, 0.5])
    w = np.array([1, 0, 1, 0])
    mu = np.array([[0.0, 2.0], [1.5, 2.0], [1.0, 1.0], [0.0, 0.5]])
    e = np.array([[0.5, 0.5], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    d = _design(y, w, propensity=e, mu=mu, control=None, sample_weight=None)
    np.testing.assert_array_equal(d.pot, F.aipw_potential_outcomes(y, w, mu, e))
