"""metalearn.evaluation: hand computations, ties, weights, frames, errors, coverage of the truth."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy import stats
from sklearn.linear_model import LinearRegression, LogisticRegression

import metalearn as ml
from metalearn import evaluation as ev
from metalearn.scoring import fit_scoring_nuisance

# ---------------------------------------------------------------- tiny inputs
# Five rows, two variants, known propensity 0.5: IPW scores are 2*y*(2w - 1).
Y = np.array([3.0, 1.0, 4.0, 1.0, 5.0])
W = np.array([1, 0, 1, 0, 1])
TAU = np.array([0.9, 0.1, 0.5, 0.7, 0.3])
GAMMA = Y * W / 0.5 - Y * (1 - W) / 0.5


def _sorted_gamma(tau: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    return gamma[np.argsort(-tau, kind="stable")]


def _brute(tau: np.ndarray, gamma: np.ndarray) -> dict[str, float]:
    """Yadlowsky et al.'s discrete definitions over the sorted rows (no ties)."""
    g = _sorted_gamma(tau, gamma)
    n = len(g)
    j = np.arange(1, n + 1)
    ate = g.mean()
    toc = np.cumsum(g) / j - ate  # TOC(j/n): mean of the top j minus the ATE
    gain = np.cumsum(g) / n  # g(j/n): incremental outcome per unit of population
    return {
        "autoc": float(np.mean(toc)),
        "qini": float(np.mean(j / n * toc)),
        "auuc": float(np.mean(gain)),
        "random": float(ate * (n + 1) / (2 * n)),
    }


def test_ipw_gain_curve_is_the_cumulative_score_sum() -> None:
    curve = ev.qini_curve(TAU, Y, W, propensity=0.5, shares=[0, 0.2, 0.4, 0.6, 0.8, 1.0])
    expected = np.concatenate([[0.0], np.cumsum(_sorted_gamma(TAU, GAMMA)) / 5])
    np.testing.assert_allclose(curve["gain"].to_numpy(), expected)
    np.testing.assert_allclose(curve["random"].to_numpy(), np.linspace(0, 1, 6) * GAMMA.mean())
    assert curve["n_targeted"].to_list() == [0, 1, 2, 3, 4, 5]
    assert curve["threshold"].to_list()[1:] == [0.9, 0.7, 0.5, 0.3, 0.1]


def test_gain_curve_interpolates_between_rows() -> None:
    curve = ev.qini_curve(TAU, Y, W, propensity=0.5, shares=[0.1])
    # half of the first row (tau 0.9, score 6) is targeted
    assert curve["gain"][0] == pytest.approx(0.5 * 6.0 / 5)


def test_uplift_curve_is_gain_over_share() -> None:
    q = [0.2, 0.6, 1.0]
    up = ev.uplift_curve(TAU, Y, W, propensity=0.5, shares=q)
    gain = ev.qini_curve(TAU, Y, W, propensity=0.5, shares=q)
    np.testing.assert_allclose(up["uplift"].to_numpy(), gain["gain"].to_numpy() / q)
    np.testing.assert_allclose(up["std_error"].to_numpy(), gain["std_error"].to_numpy() / q)
    assert up["uplift"][2] == pytest.approx(GAMMA.mean())
    np.testing.assert_allclose(up["ate"].to_numpy(), GAMMA.mean())


def test_curve_standard_error_by_hand() -> None:
    curve = ev.qini_curve(TAU, Y, W, propensity=0.5, shares=[0.4])
    z = np.where(np.isin(np.arange(5), np.argsort(-TAU)[:2]), GAMMA, 0.0)
    se = np.sqrt(np.sum((z / 5 - z.mean() / 5) ** 2) * 5 / 4)
    assert curve["std_error"][0] == pytest.approx(se)
    assert curve["ci_low"][0] == pytest.approx(curve["gain"][0] - stats.norm.ppf(0.975) * se)


def test_areas_match_the_discrete_definitions() -> None:
    brute = _brute(TAU, GAMMA)
    area = ev.auuc(TAU, Y, W, propensity=0.5)
    qini = ev.qini_coefficient(TAU, Y, W, propensity=0.5)
    autoc = ev.rate(TAU, Y, W, propensity=0.5, n_bootstrap=20, random_state=0)
    qrate = ev.rate(TAU, Y, W, target="QINI", propensity=0.5, n_bootstrap=20, random_state=0)
    assert area.estimate == pytest.approx(brute["auuc"])
    assert area.random == pytest.approx(brute["random"])
    assert qini.estimate == pytest.approx(brute["qini"])
    assert qini.estimate == pytest.approx(area.estimate - area.random)
    assert autoc.estimate == pytest.approx(brute["autoc"])
    assert qrate.estimate == pytest.approx(qini.estimate)
    assert qini.random == 0.0
    assert area.p_value == pytest.approx(qini.p_value)


def test_ties_average_over_the_orders_of_tied_rows() -> None:
    tau = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    tied = [1, 2, 3]
    results: dict[str, list[float]] = {"auuc": [], "qini": [], "autoc": []}
    for perm in itertools.permutations(tied):
        # break the tie in the order `perm` with tiny offsets
        t = tau.copy()
        for rank_in_block, row in enumerate(perm):
            t[row] = 0.5 - 1e-9 * rank_in_block
        brute = _brute(t, GAMMA)
        for key in results:
            results[key].append(brute[key])
    assert ev.auuc(tau, Y, W, propensity=0.5).estimate == pytest.approx(np.mean(results["auuc"]))
    qini = ev.qini_coefficient(tau, Y, W, propensity=0.5).estimate
    assert qini == pytest.approx(np.mean(results["qini"]))
    autoc = ev.rate(tau, Y, W, propensity=0.5, n_bootstrap=5, random_state=0).estimate
    assert autoc == pytest.approx(np.mean(results["autoc"]))
    # the gain curve is linear across a tie block
    mid = ev.qini_curve(tau, Y, W, propensity=0.5, shares=[0.2, 0.4, 0.8])["gain"].to_numpy()
    assert mid[1] == pytest.approx(mid[0] + (mid[2] - mid[0]) / 3)


def test_constant_prediction_targets_like_random() -> None:
    tau = np.full(5, 0.3)
    assert ev.qini_coefficient(tau, Y, W, propensity=0.5).estimate == 0.0
    assert ev.rate(tau, Y, W, propensity=0.5, n_bootstrap=5).estimate == 0.0
    area = ev.auuc(tau, Y, W, propensity=0.5)
    assert area.estimate == pytest.approx(area.random)
    curve = ev.qini_curve(tau, Y, W, propensity=0.5)
    np.testing.assert_allclose(curve["gain_over_random"].to_numpy(), 0.0, atol=1e-12)


def test_aipw_scores_by_hand() -> None:
    mu = np.column_stack([np.full(5, 1.0), np.full(5, 2.0)])
    e1 = np.array([0.5, 0.4, 0.6, 0.5, 0.8])
    gamma = 2.0 - 1.0 + W * (Y - 2.0) / e1 - (1 - W) * (Y - 1.0) / (1 - e1)
    curve = ev.qini_curve(TAU, Y, W, propensity=e1, mu=mu, shares=[1.0])
    assert curve["gain"][0] == pytest.approx(gamma.mean())
    blp = ev.blp_test(TAU, Y, W, propensity=e1, mu=mu)
    assert blp.method == "AIPW" and blp.ate == pytest.approx(gamma.mean())


def test_calibration_table_by_hand() -> None:
    table = ev.calibration_table(TAU, Y, W, propensity=0.5, n_groups=2)
    low = np.argsort(TAU)[:2]  # shares 0.1, 0.3 -> group 1; midpoint 0.5 -> group 2
    assert table["n"].to_list() == [2, 3]
    assert table["estimate"][0] == pytest.approx(GAMMA[low].mean())
    assert table["predicted"][0] == pytest.approx(TAU[low].mean())
    assert table["tau_min"][1] == pytest.approx(0.5)
    se = GAMMA[low].std(ddof=1) / np.sqrt(2)
    assert table["std_error"][0] == pytest.approx(se)


def test_calibration_groups_keep_ties_together() -> None:
    tau = np.array([0.1, 0.1, 0.1, 0.1, 0.9])
    table = ev.calibration_table(tau, Y, W, propensity=0.5, n_groups=4)
    assert table["n"].to_list() == [4, 1]


def test_blp_matches_ols_with_hc1() -> None:
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(0)
    n = 300
    tau = rng.normal(size=n)
    w = rng.integers(0, 2, size=n)
    y = 1 + w * (0.5 + tau) + rng.normal(size=n)
    res = ev.blp_test(tau, y, w, propensity=0.5)
    gamma = y * w / 0.5 - y * (1 - w) / 0.5
    fit = sm.OLS(gamma, sm.add_constant(tau - tau.mean())).fit(cov_type="HC1")
    assert res.ate == pytest.approx(fit.params[0])
    assert res.estimate == pytest.approx(fit.params[1])
    assert res.ate_std_error == pytest.approx(fit.bse[0])
    assert res.std_error == pytest.approx(fit.bse[1])
    assert res.p_value == pytest.approx(fit.pvalues[1])


def test_policy_value_by_hand() -> None:
    policy = np.array([1, 0, 0, 1, 1])
    v = ev.policy_value(None, Y, W, policy=policy, propensity=0.5, cost=0.5)
    terms = np.where(policy == W, Y / 0.5, 0.0) - 0.5 * policy
    assert v.estimate == pytest.approx(terms.mean())
    assert v.std_error == pytest.approx(terms.std(ddof=1) / np.sqrt(5))
    none = np.where(W == 0, Y / 0.5, 0.0)
    everyone = np.where(W == 1, Y / 0.5, 0.0) - 0.5
    assert v.treat_none == pytest.approx(none.mean())
    assert v.treat_all == pytest.approx(everyone.mean())
    assert v.gain_over_none == pytest.approx(terms.mean() - none.mean())
    assert v.gain_over_none_std_error == pytest.approx((terms - none).std(ddof=1) / np.sqrt(5))
    assert v.share_treated == pytest.approx(0.6) and v.method == "IPW"


def test_policy_from_predictions_threshold_and_budget() -> None:
    # treat if tau > cost: rows with tau 0.9, 0.7, 0.5
    v = ev.policy_value(TAU, Y, W, propensity=0.5, cost=0.4)
    explicit = ev.policy_value(None, Y, W, policy=(TAU > 0.4).astype(int), propensity=0.5, cost=0.4)
    assert v.estimate == pytest.approx(explicit.estimate)
    top = ev.policy_value(TAU, Y, W, propensity=0.5, share=0.4)
    assert top.share_treated == pytest.approx(0.4)
    best_two = np.isin(np.arange(5), np.argsort(-TAU)[:2]).astype(int)
    assert top.estimate == pytest.approx(
        ev.policy_value(None, Y, W, policy=best_two, propensity=0.5).estimate
    )


def test_budget_curve_ends_and_policy_agreement() -> None:
    curve = ev.budget_curve(TAU, Y, W, propensity=0.5, cost=0.05, shares=[0, 0.4, 1])
    none = np.where(W == 0, Y / 0.5, 0.0).mean()
    everyone = (np.where(W == 1, Y / 0.5, 0.0) - 0.05).mean()
    assert curve["value"][0] == pytest.approx(none)
    assert curve["value"][2] == pytest.approx(everyone)
    assert curve["gain"][0] == 0.0
    top = ev.policy_value(TAU, Y, W, propensity=0.5, share=0.4, cost=0.05)
    assert curve["value"][1] == pytest.approx(top.estimate)
    assert curve["std_error"][1] == pytest.approx(top.std_error)
    assert curve["gain_std_error"][1] == pytest.approx(top.gain_over_none_std_error)
    assert curve["random"][2] == pytest.approx(everyone)


def test_integer_weights_equal_duplicated_rows() -> None:
    sw = np.array([1, 2, 1, 3, 1])
    rep = np.repeat(np.arange(5), sw)
    kw = {"propensity": 0.5}
    for func, col in ((ev.qini_curve, "gain"), (ev.budget_curve, "value")):
        a = func(TAU, Y, W, sample_weight=sw, shares=[0.25, 0.5, 1.0], **kw)[col].to_numpy()
        b = func(TAU[rep], Y[rep], W[rep], shares=[0.25, 0.5, 1.0], **kw)[col].to_numpy()
        np.testing.assert_allclose(a, b)
    a = ev.blp_test(TAU, Y, W, sample_weight=sw, **kw)
    b = ev.blp_test(TAU[rep], Y[rep], W[rep], **kw)
    assert a.estimate == pytest.approx(b.estimate)
    pa = ev.policy_value(TAU, Y, W, sample_weight=sw, cost=0.4, **kw)
    pb = ev.policy_value(TAU[rep], Y[rep], W[rep], cost=0.4, **kw)
    assert pa.estimate == pytest.approx(pb.estimate)


def test_rate_bootstrap_is_seeded_and_positive() -> None:
    sim = ml.datasets.simulate_nie_wager("B", n=400, seed=0)
    a = ev.rate(sim.tau, sim.y, sim.w, propensity=0.5, n_bootstrap=30, random_state=1)
    b = ev.rate(sim.tau, sim.y, sim.w, propensity=0.5, n_bootstrap=30, random_state=1)
    assert a == b and a.std_error > 0 and a.n_bootstrap == 30
    assert a.ci_low == pytest.approx(a.estimate - stats.norm.ppf(0.975) * a.std_error)
    assert "AUTOC" in repr(a) and "bootstrap se" in repr(a)


# ----------------------------------------------------------- several variants
@pytest.fixture(scope="module")
def multiarm() -> Any:
    return ml.datasets.simulate_multiarm(n=900, n_variants=3, seed=0)


def test_multi_variant_curves_have_a_best_policy(multiarm: Any) -> None:
    sim = multiarm
    curve = ev.qini_curve(sim.tau, sim.y, sim.w, propensity=sim.propensity[0], shares=[1.0])
    assert curve["variant"].to_list() == ["1", "2", "best"]
    best = np.argmax(sim.tau, axis=1) + 1
    gamma = (
        np.where(sim.w == best, sim.y, 0.0) / sim.propensity[0][best]
        - np.where(sim.w == 0, sim.y, 0.0) / sim.propensity[0][0]
    )
    assert curve["gain"][2] == pytest.approx(gamma.mean())
    areas = ev.qini_coefficient(sim.tau, sim.y, sim.w, propensity=sim.propensity)
    assert [a.variant for a in areas] == ["1", "2", "best"]
    blps = ev.blp_test(sim.tau, sim.y, sim.w, propensity=sim.propensity)
    assert [b.variant for b in blps] == ["1", "2"]
    table = ev.calibration_table(sim.tau, sim.y, sim.w, propensity=sim.propensity, n_groups=3)
    # tau_2 is a step function: its two tied values make two groups, not three
    assert table["variant"].to_list() == ["1"] * 3 + ["2"] * 2


def test_multi_variant_policy_gives_each_row_its_best_variant(multiarm: Any) -> None:
    sim = multiarm
    v = ev.policy_value(sim.tau, sim.y, sim.w, propensity=sim.propensity, cost={1: 0.1, 2: 0.3})
    net = sim.tau - np.array([0.1, 0.3])
    policy = np.where(net.max(axis=1) > 0, net.argmax(axis=1) + 1, 0)
    same = ev.policy_value(
        None, sim.y, sim.w, policy=policy, propensity=sim.propensity, cost=[0.1, 0.3]
    )
    assert v.estimate == pytest.approx(same.estimate)
    assert v.treat_all_variant in ("1", "2")
    curve = ev.budget_curve(sim.tau, sim.y, sim.w, propensity=sim.propensity, shares=[0, 1])
    assert set(curve["variant"].to_list()) == {"1", "2", "best"}


def test_string_variants_and_control(multiarm: Any) -> None:
    sim = multiarm
    labels = np.array(["ctrl", "a", "b"])[sim.w]  # sorted variants: a, b, ctrl
    areas = ev.auuc(sim.tau, sim.y, labels, propensity=[1 / 3, 1 / 6, 1 / 2], control="ctrl")
    assert [(a.variant, a.control) for a in areas] == [
        ("a", "ctrl"),
        ("b", "ctrl"),
        ("best", "ctrl"),
    ]
    same = ev.auuc(sim.tau, sim.y, sim.w, propensity=sim.propensity)
    assert areas[0].estimate == pytest.approx(same[0].estimate)


# --------------------------------------------------------------------- frames
def test_frame_type_follows_the_input() -> None:
    tau_pd = pd.DataFrame({"tau_1_vs_0": TAU})
    assert isinstance(ev.qini_curve(tau_pd, Y, W, propensity=0.5), pd.DataFrame)
    assert isinstance(
        ev.calibration_table(TAU, pd.Series(Y), W, propensity=0.5, n_groups=2), pd.DataFrame
    )
    assert isinstance(ev.budget_curve(TAU, pl.Series(Y), W, propensity=0.5), pl.DataFrame)
    assert isinstance(ev.uplift_curve(TAU, Y, W, propensity=0.5), pl.DataFrame)
    curve = ev.qini_curve(pl.DataFrame({"t": TAU}), Y, W, propensity=0.5)
    assert isinstance(curve, pl.DataFrame) and curve.height == 101


def test_learner_predictions_plug_in() -> None:
    train = ml.datasets.simulate_nie_wager("B", n=600, seed=0)
    test = ml.datasets.simulate_nie_wager("B", n=600, seed=1)
    dr = ml.DRLearner(
        outcome_model=LinearRegression(),
        propensity_model=LogisticRegression(),
        effect_model=LinearRegression(),
        n_folds=2,
        random_state=0,
    )
    dr.fit(pd.DataFrame(train.X, columns=train.feature_names), train.y, train.w)
    frame = dr.predict_frame(pd.DataFrame(test.X, columns=test.feature_names))
    table = ev.calibration_table(frame, test.y, test.w, propensity=0.5, n_groups=3)
    assert isinstance(table, pd.DataFrame)
    assert ev.blp_test(frame, test.y, test.w, propensity=0.5).estimate > 0.5


def test_reprs_are_readable() -> None:
    text = repr(ev.qini_coefficient(TAU, Y, W, propensity=0.5))
    assert text.startswith("TargetingArea(Qini coefficient of '1' vs '0'")
    assert "BLPResult('1' vs '0': slope" in repr(ev.blp_test(TAU, Y, W, propensity=0.5))
    assert "treating 60.0%" in repr(ev.policy_value(TAU, Y, W, propensity=0.5, cost=0.4))


# --------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"tau": TAU[:4]}, ValueError, r"`tau` must have shape \(5,\)"),
        ({"tau": np.column_stack([TAU, TAU])}, ValueError, r"got shape \(5, 2\)"),
        ({"tau": np.r_[TAU[:4], np.nan]}, ValueError, "`tau` holds 1 NaN"),
        ({"tau": None}, ValueError, "`tau` .* is required"),
        ({"tau": np.array(["a"] * 5)}, ValueError, "`tau` must be numeric"),
        ({"y": np.r_[Y[:4], np.nan]}, ValueError, "`y` holds 1 NaN"),
        ({"y": np.array(["yes"] * 5)}, ValueError, "`y` must be numeric"),
        ({"y": None}, ValueError, "`y` .* is required"),
        ({"w": W[:3]}, ValueError, "`w` has 3 entries"),
        ({"propensity": None}, ValueError, "`propensity` is required"),
        ({"propensity": np.array([0.5, 0.5, 1.0, 0.5, 0.5])}, ValueError, "strictly between 0"),
        ({"propensity": 0.0}, ValueError, "strictly between 0 and 1"),
        ({"mu": np.ones((5, 3))}, ValueError, r"`mu` must hold .* \(5, 2\)"),
        ({"mu": np.full((5, 2), np.nan)}, ValueError, "`mu` holds NaN"),
        ({"sample_weight": np.zeros(5)}, ValueError, "positive sum"),
        ({"sample_weight": -np.ones(5)}, ValueError, "`sample_weight` must be finite and non"),
        ({"level": 1.5}, ValueError, "`level` must be a number strictly between 0 and 1"),
        ({"control": "x"}, ValueError, "`control`='x' is not one of the variants"),
    ],
)
def test_bad_inputs(kwargs: dict[str, Any], exc: type, match: str) -> None:
    args = {"tau": TAU, "y": Y, "w": W, "propensity": 0.5}
    args.update(kwargs)
    tau, y, w = args.pop("tau"), args.pop("y"), args.pop("w")
    with pytest.raises(exc, match=match):
        ev.qini_curve(tau, y, w, **args)


def test_bad_shares() -> None:
    with pytest.raises(ValueError, match=r"`shares` must lie in \(0, 1\]"):
        ev.uplift_curve(TAU, Y, W, propensity=0.5, shares=[0.0, 0.5])
    with pytest.raises(ValueError, match=r"`shares` must lie in \[0, 1\]"):
        ev.qini_curve(TAU, Y, W, propensity=0.5, shares=[1.5])
    with pytest.raises(ValueError, match="`shares` must be a non-empty 1-D"):
        ev.budget_curve(TAU, Y, W, propensity=0.5, shares=[])


def test_bad_groups_targets_and_bootstrap() -> None:
    with pytest.raises(ValueError, match="`n_groups` must be an integer >= 2"):
        ev.calibration_table(TAU, Y, W, propensity=0.5, n_groups=1)
    with pytest.raises(ValueError, match="`n_groups`=6 exceeds the number of rows"):
        ev.calibration_table(TAU, Y, W, propensity=0.5, n_groups=6)
    with pytest.raises(ValueError, match="`target` must be 'AUTOC' or 'QINI'"):
        ev.rate(TAU, Y, W, propensity=0.5, target="auc")
    with pytest.raises(ValueError, match="`n_bootstrap` must be an integer >= 2"):
        ev.rate(TAU, Y, W, propensity=0.5, n_bootstrap=1)


def test_blp_needs_varying_predictions() -> None:
    with pytest.raises(ValueError, match="predicted effects of variant '1' are constant"):
        ev.blp_test(np.ones(5), Y, W, propensity=0.5)


def test_policy_errors() -> None:
    with pytest.raises(ValueError, match="The policy treats no row"):
        ev.policy_value(None, Y, W, policy=np.zeros(5, dtype=int), propensity=0.5)
    with pytest.raises(ValueError, match="The policy treats no row"):
        ev.policy_value(TAU, Y, W, propensity=0.5, cost=5.0)
    with pytest.raises(ValueError, match="Pass either `policy` or `share`"):
        ev.policy_value(TAU, Y, W, policy=W, share=0.5, propensity=0.5)
    for share in (0.0, 1.5, True):
        with pytest.raises(ValueError, match=r"`share` must be a number in \(0, 1\]"):
            ev.policy_value(TAU, Y, W, share=share, propensity=0.5)
    with pytest.raises(ValueError, match="`policy` holds variants not seen at fit"):
        ev.policy_value(None, Y, W, policy=np.full(5, 7), propensity=0.5)
    with pytest.raises(ValueError, match=r"`cost` must be a number, one cost per treated"):
        ev.policy_value(TAU, Y, W, cost=[1.0, 2.0, 3.0], propensity=0.5)
    with pytest.raises(ValueError, match="`cost` names variants not in `w`"):
        ev.budget_curve(TAU, Y, W, cost={"z": 1.0}, propensity=0.5)
    with pytest.raises(ValueError, match="`cost` must be finite"):
        ev.budget_curve(TAU, Y, W, cost=np.nan, propensity=0.5)


# -------------------------------------------------------- coverage of the truth
def _true_area(tau_hat: np.ndarray, tau: np.ndarray) -> float:
    return _brute(tau_hat, tau)["qini"]


def _true_slope(tau_hat: np.ndarray, tau: np.ndarray) -> float:
    s = tau_hat - tau_hat.mean()
    return float(s @ tau / (s @ s))


def coverage(n_reps: int, n: int, seed: int = 0) -> dict[str, float]:
    """Share of repetitions whose 95% interval holds the value computed from the truth.

    Observational design (`simulate_confounded`): scores are doubly robust with
    cross-fitted linear outcome models (misspecified for the treated arm) and a
    logistic propensity model (well specified). The ranking is a fixed function
    of the features, so the truth on each sample is computed from its true
    effects with the same ranking. Randomized design (`simulate_nie_wager("B")`):
    IPW scores with the known propensity.
    """
    hits: dict[str, int] = {}
    template = ml.Nuisance(
        outcome_model=LinearRegression(),
        propensity_model=LogisticRegression(),
        n_folds=2,
        random_state=0,
    )
    for rep in range(n_reps):
        obs = ml.datasets.simulate_confounded(n=n, seed=seed + rep)
        tau_hat = (
            1.0 + 0.3 * obs.X[:, 0] + 0.5 * np.tanh(3 * obs.X[:, 3])
        )  # informative, miscalibrated
        sn = fit_scoring_nuisance(obs.X, obs.y, obs.w, nuisance=template)
        kw = {"propensity": sn.propensity, "mu": sn.mu}
        policy = (tau_hat > 0.5).astype(int)  # treat if predicted effect > cost
        checks = {
            "dr_qini": (
                ev.qini_coefficient(tau_hat, obs.y, obs.w, **kw),
                _true_area(tau_hat, obs.tau),
            ),
            "dr_blp_slope": (
                ev.blp_test(tau_hat, obs.y, obs.w, **kw),
                _true_slope(tau_hat, obs.tau),
            ),
            "dr_policy_value": (
                ev.policy_value(tau_hat, obs.y, obs.w, cost=0.5, **kw),
                float(np.mean(obs.mu[np.arange(n), policy] - 0.5 * policy)),
            ),
        }
        rct = ml.datasets.simulate_nie_wager("B", n=n, seed=10_000 + seed + rep)
        r_hat = rct.X[:, 0] + 0.5 * rct.X[:, 1]
        r_policy = (r_hat > 0).astype(int)
        checks["ipw_qini"] = (
            ev.qini_coefficient(r_hat, rct.y, rct.w, propensity=0.5),
            _true_area(r_hat, rct.tau),
        )
        checks["ipw_blp_slope"] = (
            ev.blp_test(r_hat, rct.y, rct.w, propensity=0.5),
            _true_slope(r_hat, rct.tau),
        )
        checks["ipw_policy_value"] = (
            ev.policy_value(r_hat, rct.y, rct.w, propensity=0.5),
            float(np.mean(rct.mu[np.arange(n), r_policy])),
        )
        for name, (res, truth) in checks.items():
            hits[name] = hits.get(name, 0) + int(res.ci_low <= truth <= res.ci_high)
    return {k: v / n_reps for k, v in hits.items()}


def _min_share(n_reps: int, level: float = 0.95, alpha: float = 0.001) -> float:
    """Smallest hit share that nominal coverage produces with probability >= 1 - alpha."""
    return float(stats.binom.ppf(alpha, n_reps, level)) / n_reps


def test_intervals_cover_the_truth_fast() -> None:
    n_reps = 40
    shares = coverage(n_reps, n=1000)
    floor = _min_share(n_reps)
    assert all(v >= floor for v in shares.values()), (shares, floor)


@pytest.mark.slow
def test_intervals_cover_the_truth() -> None:
    n_reps = 300
    shares = coverage(n_reps, n=2000, seed=1000)
    floor = _min_share(n_reps)
    print("coverage over", n_reps, "repetitions:", shares, "floor", floor)
    assert all(v >= floor for v in shares.values()), (shares, floor)
    # the nominal share itself, up to the same binomial tolerance around 0.95
    assert np.mean(list(shares.values())) >= 0.95 - 2 * np.sqrt(0.95 * 0.05 / n_reps)
