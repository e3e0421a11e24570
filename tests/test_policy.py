"""metalearn.policy.PolicyTree: the exact search against brute force, a simulator, options."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

import metalearn as ml
import metalearn.policy as policy_module
from metalearn.policy import PolicyTree, plot_policy_tree


# ------------------------------------------------------------ brute force
def _cuts(x: np.ndarray) -> np.ndarray:
    u = np.unique(x)
    return (u[:-1] + u[1:]) / 2


def _brute(X: np.ndarray, G: np.ndarray, rows: np.ndarray, depth: int, m: int) -> float:
    """Largest total reward of any tree of depth <= ``depth`` with leaves of >= ``m`` rows.

    Every feature, every threshold between sorted distinct values and (through the
    best leaf action of each side) every leaf action.
    """
    best = float(G[rows].sum(axis=0).max())
    if depth == 0:
        return best
    for j in range(X.shape[1]):
        for t in _cuts(X[rows, j]):
            left, right = rows[X[rows, j] <= t], rows[X[rows, j] > t]
            if len(left) >= m and len(right) >= m:
                v = _brute(X, G, left, depth - 1, m) + _brute(X, G, right, depth - 1, m)
                best = max(best, v)
    return best


def _structure(tree: PolicyTree) -> list[tuple]:
    return [
        (nd.feature, None if nd.is_leaf else nd.threshold, nd.action, nd.n_samples)
        for nd in tree.nodes_
    ]


def _total(tree: PolicyTree, X: np.ndarray, G: np.ndarray) -> float:
    return float(G[np.arange(len(G)), tree.predict(X)].sum())


CASES = [(p, K, ties) for p in (2, 3) for K in (2, 3) for ties in (True, False)]


@pytest.mark.parametrize(("p", "K", "ties"), CASES)
@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("min_leaf_size", [1, 4])
def test_matches_brute_force(p, K, ties, depth, min_leaf_size):
    rng = np.random.default_rng(100 * p + 10 * K + ties)
    n = 40
    X = rng.integers(0, 7, (n, p)).astype(float) if ties else rng.standard_normal((n, p))
    G = rng.standard_normal((n, K))
    tree = PolicyTree(depth=depth, min_leaf_size=min_leaf_size).fit(X, rewards=G)
    expected = _brute(X, G, np.arange(n), depth, min_leaf_size)
    assert _total(tree, X, G) == pytest.approx(expected, abs=1e-9)
    assert min(nd.n_samples for nd in tree.nodes_ if nd.is_leaf) >= min_leaf_size
    assert max(nd.depth for nd in tree.nodes_) <= depth


@pytest.mark.parametrize("min_leaf_size", [1, 3])
def test_depth_three_matches_brute_force(min_leaf_size):
    rng = np.random.default_rng(7)
    n = 24
    X = rng.integers(0, 6, (n, 2)).astype(float)
    G = rng.standard_normal((n, 2))
    tree = PolicyTree(depth=3, min_leaf_size=min_leaf_size).fit(X, rewards=G)
    expected = _brute(X, G, np.arange(n), 3, min_leaf_size)
    assert _total(tree, X, G) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("min_leaf_size", [1, 5])
def test_row_by_row_and_histogram_prefix_sums_agree(monkeypatch, min_leaf_size):
    # Depth 2 builds its prefix sums row by row when bins are many: force that path
    # (and tiny blocks) and compare with brute force.
    rng = np.random.default_rng(11)
    n = 40
    X = rng.standard_normal((n, 3))
    G = rng.standard_normal((n, 3))
    monkeypatch.setattr(policy_module, "_SPARSE_RATIO", 0)
    monkeypatch.setattr(policy_module, "_BLOCK2", 8)
    tree = PolicyTree(depth=2, min_leaf_size=min_leaf_size).fit(X, rewards=G)
    expected = _brute(X, G, np.arange(n), 2, min_leaf_size)
    assert _total(tree, X, G) == pytest.approx(expected, abs=1e-9)


def test_max_split_points_restricts_the_thresholds():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((500, 2))
    G = np.column_stack([np.zeros(500), X[:, 0] - 0.3 + 0.1 * rng.standard_normal(500)])
    tree = PolicyTree(depth=1, max_split_points=9).fit(X, rewards=G)
    assert tree.n_split_points_.tolist() == [9, 9]
    assert abs(tree.nodes_[0].threshold - 0.3) < 0.3
    exact = PolicyTree(depth=1).fit(X, rewards=G)
    assert exact.n_split_points_.tolist() == [499, 499]
    assert _total(exact, X, G) >= _total(tree, X, G) - 1e-12


# -------------------------------------------------------------- simulator
def test_simulator_recovers_the_best_depth_two_rule():
    # simulate_multiarm, 3 arms: tau_1 = 0.5 + x0, tau_2 = 1 if x1 > 0 else -0.25. The best
    # policy is the depth-2 tree x1 <= 0: (x0 <= -0.5: control, else arm 1);
    # x1 > 0: (x0 <= 0.5: arm 2, else arm 1).
    sim = ml.datasets.simulate_multiarm(n=4000, seed=0)
    nuis = ml.Nuisance(outcome_model=LinearRegression(), n_folds=2, random_state=0)
    nuis.fit(sim.X, sim.y, sim.w, propensity=sim.propensity)
    tree = PolicyTree(depth=2, min_leaf_size=50, max_split_points=64)
    tree.fit(sim.X, sim.y, sim.w, nuisance=nuis)
    root = tree.nodes_[0]
    assert root.feature == "x1"
    assert abs(root.threshold) < 0.25

    big = ml.datasets.simulate_multiarm(n=200_000, seed=1)
    x0, x1 = big.X[:, 0], big.X[:, 1]
    best = np.where(x1 <= 0, np.where(x0 <= -0.5, 0, 1), np.where(x0 <= 0.5, 2, 1))
    rows = np.arange(len(x0))
    regret = float(np.mean(big.mu[rows, best] - big.mu[rows, tree.predict(big.X)]))
    # Tolerance from the noise of the training scores: the tree maximises the estimated
    # value, so its true regret is of the order of the error of the estimated value
    # difference between it and the best rule, whose standard error is
    # sd(Gamma[best] - Gamma[fitted]) / sqrt(n) on the training rows; allow 3 of them.
    gamma = _aipw(sim, nuis)
    tr = np.arange(len(sim.y))
    tr_best = np.where(
        sim.X[:, 1] <= 0, np.where(sim.X[:, 0] <= -0.5, 0, 1), np.where(sim.X[:, 0] <= 0.5, 2, 1)
    )
    diff = gamma[tr, tr_best] - gamma[tr, tree.predict(sim.X)]
    tol = 3 * diff.std() / np.sqrt(len(diff))
    assert 0 <= regret < tol, (regret, tol)


def _aipw(sim, nuis):
    from metalearn._core.formulas import aipw_potential_outcomes, clip_propensity

    e = clip_propensity(nuis.oof_propensity_, 0.05)
    return aipw_potential_outcomes(sim.y, sim.w, nuis.oof_outcomes_[..., 0], e)


# ------------------------------------------------------------- the inputs
@pytest.fixture(scope="module")
def nie_wager():
    sim = ml.datasets.simulate_nie_wager("A", n=600, seed=0)
    dr = ml.DRLearner(
        outcome_model=LinearRegression(),
        propensity_model=LogisticRegression(),
        effect_model=LinearRegression(),
        n_folds=2,
        random_state=0,
    ).fit(sim.to_frame(), sim.y, sim.w)
    return sim, dr


def test_learner_pseudo_outcomes_and_its_nuisance_give_one_tree(nie_wager):
    sim, dr = nie_wager
    X = sim.to_frame()
    a = PolicyTree(depth=2, max_split_points=32).fit(X, learner=dr)
    b = PolicyTree(depth=2, max_split_points=32).fit(X, sim.y, sim.w, learner=dr)
    c = PolicyTree(depth=2, max_split_points=32).fit(X, sim.y, sim.w, nuisance=dr.nuisance_)
    assert _structure(a) == _structure(b) == _structure(c)
    assert len(a.nodes_) > 1
    assert a.variants_.tolist() == [0, 1] and a.control_ == 0


def test_predict_returns_the_variant_labels():
    rng = np.random.default_rng(0)
    n = 600
    X = pd.DataFrame({"age": rng.uniform(20, 70, n), "score": rng.standard_normal(n)})
    w = rng.choice(np.array(["ctl", "email", "sms"]), n)
    tau = {"ctl": 0.0, "email": 1.0 * (X["age"] > 45), "sms": 1.0 * (X["age"] <= 45)}
    y = rng.standard_normal(n) + np.select([w == k for k in tau], [tau[k] for k in tau])
    nuis = ml.Nuisance(outcome_model=LinearRegression(), n_folds=2, random_state=0)
    nuis.fit(X, y, w, propensity=np.full((n, 3), 1 / 3))
    tree = PolicyTree(depth=1, control="ctl").fit(X, y, w, nuisance=nuis)
    pred = tree.predict(X)
    assert pred.dtype == nuis.variants_.dtype
    assert set(pred.tolist()) <= {"ctl", "email", "sms"}
    assert tree.control_ == "ctl"
    frame = tree.predict_frame(X.set_index(X.index + 10))
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["policy", "leaf"]
    assert frame.index[0] == 10
    text = tree.export_text()
    assert "age <=" in text and "age >" in text
    assert "-> sms" in text and "-> email" in text


def test_reward_frame_names_the_variants_and_categories_are_shown():
    X = pd.DataFrame({"plan": pd.Categorical(["basic", "pro", "team", "basic", "pro", "team"] * 5)})
    gain = X["plan"].map({"basic": -1.0, "pro": 1.0, "team": 2.0}).to_numpy()
    rewards = pd.DataFrame({"none": np.zeros(30), "offer": gain})
    tree = PolicyTree(depth=1, control="none").fit(X, rewards=rewards)
    assert tree.predict(X[:3]).tolist() == ["none", "offer", "offer"]
    text = tree.export_text()
    assert "plan in {basic}" in text and "plan in {pro, team}" in text


# ------------------------------------------------------------ costs, budget
def test_costs_shift_the_actions():
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, (300, 1))
    G = np.column_stack([np.zeros(300), X[:, 0] + 1.0, np.full(300, 0.5)])
    free = PolicyTree(depth=1).fit(X, rewards=G)
    assert set(free.predict(X).tolist()) == {1, 2}
    dear = PolicyTree(depth=1, costs=[0.0, 10.0]).fit(X, rewards=G)
    assert 2 not in dear.predict(X).tolist()
    assert PolicyTree(depth=1, costs={1: 5.0, 2: 5.0}).fit(X, rewards=G).nodes_[0].action == 0
    assert dear.costs_.tolist() == [0.0, 0.0, 10.0]
    # Leaf gains are net of costs.
    one = PolicyTree(depth=1, costs=0.25).fit(X, rewards=G)
    leaf = [nd for nd in one.nodes_ if nd.is_leaf and nd.action == 2]
    assert all(nd.gain == pytest.approx(0.25) for nd in leaf)


def test_budget_is_respected():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((400, 2))
    G = np.column_stack([np.zeros(400), 1.0 + X[:, 0] + 0.3 * rng.standard_normal(400)])
    free = PolicyTree(depth=2).fit(X, rewards=G)
    assert free.share_treated_ > 0.6 and free.penalty_ == 0.0
    tree = PolicyTree(depth=2, budget=0.3).fit(X, rewards=G)
    assert tree.share_treated_ <= 0.3
    assert tree.share_treated_ > 0.2  # the constraint binds: little is left unused
    assert tree.penalty_ > 0
    assert np.mean(tree.predict(X) != 0) == pytest.approx(tree.share_treated_)
    loose = PolicyTree(depth=2, budget=1.0).fit(X, rewards=G)
    assert _structure(loose) == _structure(free)


def test_value_on_held_out_rows():
    train = ml.datasets.simulate_nie_wager("A", n=1000, seed=0)
    test = ml.datasets.simulate_nie_wager("A", n=2000, seed=1)
    tree = PolicyTree(depth=1, costs=0.5).fit(train.X, rewards=train.mu)
    v = tree.value(test.X, test.y, test.w, propensity=test.propensity, mu=test.mu)
    assert v.method == "AIPW"
    same = ml.evaluation.policy_value(
        None,
        test.y,
        test.w,
        policy=tree.predict(test.X),
        cost=0.5,
        propensity=test.propensity,
        mu=test.mu,
    )
    assert v.estimate == same.estimate and v.std_error == same.std_error
    assert v.gain_over_none > 0


def test_plot_and_sklearn_conventions():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from sklearn.base import clone

    rng = np.random.default_rng(5)
    X = rng.standard_normal((80, 2))
    G = np.column_stack([np.zeros(80), X[:, 0], X[:, 1]])
    tree = PolicyTree(depth=2).fit(X, rewards=G)
    ax = plot_policy_tree(tree)
    assert any("x0" in t.get_text() or "x1" in t.get_text() for t in ax.texts)
    assert clone(tree).get_params() == tree.get_params()
    assert not hasattr(clone(tree), "nodes_")


# -------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"depth": 0}, "`depth`"),
        ({"depth": 4}, "`depth`"),
        ({"depth": True}, "`depth`"),
        ({"min_leaf_size": 0}, "`min_leaf_size`"),
        ({"max_split_points": 0}, "`max_split_points`"),
        ({"budget": 0.0}, "`budget`"),
        ({"budget": 1.5}, "`budget`"),
        ({"costs": [1.0, 2.0]}, "`costs`"),
        ({"costs": {"z": 1.0}}, "`costs`"),
        ({"costs": {0: 1.0}}, "`costs`"),
        ({"propensity_clip": 0.7}, "`propensity_clip`"),
    ],
)
def test_bad_parameters(params, match):
    X = np.arange(10.0).reshape(-1, 1)
    G = np.zeros((10, 2))
    with pytest.raises(ValueError, match=match):
        PolicyTree(**params).fit(X, rewards=G)


def test_bad_inputs(nie_wager):
    sim, dr = nie_wager
    X = np.arange(10.0).reshape(-1, 1)
    with pytest.raises(ValueError, match="`rewards`"):
        PolicyTree().fit(X, rewards=np.zeros((9, 2)))
    with pytest.raises(ValueError, match="`rewards`"):
        PolicyTree().fit(X, rewards=np.zeros(10))
    bad = np.zeros((10, 2))
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="`rewards` holds 1 NaN"):
        PolicyTree().fit(X, rewards=bad)
    with pytest.raises(ValueError, match="exactly one source"):
        PolicyTree().fit(X)
    with pytest.raises(ValueError, match="exactly one source"):
        PolicyTree().fit(sim.X, learner=dr, rewards=np.zeros((600, 2)))
    with pytest.raises(ValueError, match=r"`learner`.*not a fitted"):
        PolicyTree().fit(X, learner=ml.DRLearner())
    s = ml.SLearner(outcome_model=LinearRegression()).fit(sim.X, sim.y, sim.w)
    with pytest.raises(ValueError, match="`learner` \\(SLearner\\)"):
        PolicyTree().fit(sim.X, learner=s)
    with pytest.raises(ValueError, match="`learner` \\(SLearner\\)"):
        PolicyTree().fit(sim.X, sim.y, sim.w, learner=s)
    with pytest.raises(ValueError, match="`X` has 10 rows"):
        PolicyTree().fit(X, learner=dr)
    with pytest.raises(ValueError, match="`nuisance` is not fitted"):
        PolicyTree().fit(X, np.zeros(10), np.arange(10) % 2, nuisance=ml.Nuisance())
    with pytest.raises(ValueError, match="`y` and variants `w`"):
        PolicyTree().fit(sim.X, nuisance=dr.nuisance_)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="`X` holds NaN"):
        PolicyTree().fit(Xn, rewards=np.zeros((10, 2)))
    with pytest.raises(ValueError, match="no `y` or `w`"):
        PolicyTree().fit(X, np.zeros(10), rewards=np.zeros((10, 2)))
