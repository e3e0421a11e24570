"""Tests for the simulated data sets in :mod:`metalearn.datasets`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from metalearn.datasets import (
    Simulation,
    simulate_binary_outcome,
    simulate_confounded,
    simulate_multiarm,
    simulate_nie_wager,
    simulate_retention,
)

Factory = Callable[..., Simulation]

# (id, factory taking n and seed, number of variants K, number of features p, binary outcome)
CASES: list[tuple[str, Factory, int, int, bool]] = [
    ("nw_A", lambda n, seed: simulate_nie_wager("A", n=n, seed=seed), 2, 6, False),
    ("nw_B", lambda n, seed: simulate_nie_wager("B", n=n, p=8, seed=seed), 2, 8, False),
    ("nw_C", lambda n, seed: simulate_nie_wager("C", n=n, p=5, seed=seed), 2, 5, False),
    ("nw_D", lambda n, seed: simulate_nie_wager("D", n=n, sigma=0.5, seed=seed), 2, 6, False),
    ("retention", lambda n, seed: simulate_retention(n=n, seed=seed), 2, 8, False),
    ("multiarm3", lambda n, seed: simulate_multiarm(n=n, seed=seed), 3, 6, False),
    ("multiarm6", lambda n, seed: simulate_multiarm(n=n, n_variants=6, seed=seed), 6, 6, False),
    ("binary", lambda n, seed: simulate_binary_outcome(n=n, seed=seed), 2, 6, True),
    ("confounded", lambda n, seed: simulate_confounded(n=n, seed=seed), 2, 6, False),
]
IDS = [case[0] for case in CASES]
ARRAY_FIELDS = ("X", "w", "y", "tau", "propensity", "mu")


@pytest.fixture(scope="module")
def large() -> dict[str, Simulation]:
    """One large draw (n = 20000) per design, shared by the statistical tests."""
    return {name: factory(20_000, 12345) for name, factory, *_ in CASES}


def _case(name: str) -> tuple[str, Factory, int, int, bool]:
    return next(case for case in CASES if case[0] == name)


def _propensity_matrix(sim: Simulation) -> np.ndarray:
    """Propensities as an (n, K) matrix for two-arm and multi-arm designs."""
    if sim.propensity.ndim == 1:
        return np.column_stack([1.0 - sim.propensity, sim.propensity])
    return sim.propensity


def _tau_matrix(sim: Simulation) -> np.ndarray:
    return sim.tau.reshape(len(sim.tau), -1)


# ---------------------------------------------------------------------------
# structure
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "factory", "K", "p", "binary"), CASES, ids=IDS)
def test_shapes_and_dtypes(name: str, factory: Factory, K: int, p: int, binary: bool) -> None:
    n = 257
    sim = factory(n, 0)
    assert isinstance(sim, Simulation)
    assert sim.X.shape == (n, p)
    assert sim.X.dtype == np.float64
    assert sim.w.shape == (n,)
    assert sim.w.dtype == np.int64
    assert set(np.unique(sim.w)) <= set(range(K))
    assert sim.y.shape == (n,)
    assert sim.y.dtype == (np.int64 if binary else np.float64)
    assert sim.mu.shape == (n, K)
    assert sim.mu.dtype == np.float64
    assert sim.tau.dtype == np.float64
    assert sim.propensity.dtype == np.float64
    if K == 2:
        assert sim.tau.shape == (n,)
        assert sim.propensity.shape == (n,)
    else:
        assert sim.tau.shape == (n, K - 1)
        assert sim.propensity.shape == (n, K)
    assert len(sim.feature_names) == p
    assert len(set(sim.feature_names)) == p
    assert all(isinstance(f, str) for f in sim.feature_names)
    for field in ARRAY_FIELDS:
        assert np.all(np.isfinite(getattr(sim, field))), field


@pytest.mark.parametrize(("name", "factory", "K", "p", "binary"), CASES, ids=IDS)
def test_determinism(name: str, factory: Factory, K: int, p: int, binary: bool) -> None:
    a, b, c = factory(300, 7), factory(300, 7), factory(300, 8)
    for field in ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.feature_names == b.feature_names
    assert not np.array_equal(a.X, c.X)
    assert not np.array_equal(a.y, c.y)
    # a Generator is accepted and consumed like the equivalent integer seed
    d = factory(300, np.random.default_rng(7))
    np.testing.assert_array_equal(a.X, d.X)
    np.testing.assert_array_equal(a.y, d.y)


def test_default_feature_names() -> None:
    assert simulate_nie_wager(n=10, p=7, seed=0).feature_names == [f"x{j}" for j in range(7)]
    assert simulate_multiarm(n=10, seed=0).feature_names == [f"x{j}" for j in range(6)]
    assert simulate_retention(n=10, seed=0).feature_names == [
        "tenure_months",
        "monthly_spend",
        "support_tickets",
        "is_premium",
        "engagement",
        "age",
        "noise_0",
        "noise_1",
    ]


# ---------------------------------------------------------------------------
# ground-truth identities
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "factory", "K", "p", "binary"), CASES, ids=IDS)
def test_mu_difference_is_tau(name: str, factory: Factory, K: int, p: int, binary: bool) -> None:
    sim = factory(1000, 3)
    tau = _tau_matrix(sim)
    for k in range(1, K):
        np.testing.assert_allclose(sim.mu[:, k] - sim.mu[:, 0], tau[:, k - 1], atol=1e-10)


@pytest.mark.parametrize("name", IDS)
def test_outcome_mean_matches_mu(name: str, large: dict[str, Simulation]) -> None:
    sim = large[name]
    n = len(sim.y)
    mu_obs = sim.mu[np.arange(n), sim.w]
    resid = sim.y - mu_obs
    # residual mean is zero within every arm ...
    for k in np.unique(sim.w):
        r = resid[sim.w == k]
        se = r.std(ddof=1) / np.sqrt(len(r))
        assert abs(r.mean()) < 4 * se, (k, r.mean(), se)
    # ... and does not trend with the true conditional mean (OLS of resid on mu)
    design = np.column_stack([np.ones(n), mu_obs])
    coef, *_ = np.linalg.lstsq(design, resid, rcond=None)
    sigma2 = np.sum((resid - design @ coef) ** 2) / (n - 2)
    se = np.sqrt(np.diag(sigma2 * np.linalg.inv(design.T @ design)))
    assert np.all(np.abs(coef) < 4 * se), (coef, se)


@pytest.mark.parametrize("name", IDS)
def test_propensity_valid(name: str, large: dict[str, Simulation]) -> None:
    sim = large[name]
    assert np.all(sim.propensity > 0)
    assert np.all(sim.propensity < 1)
    if sim.propensity.ndim == 2:
        np.testing.assert_allclose(sim.propensity.sum(axis=1), 1.0)


@pytest.mark.parametrize("name", IDS)
def test_treatment_shares_match_propensity(name: str, large: dict[str, Simulation]) -> None:
    sim = large[name]
    e = _propensity_matrix(sim)
    for k in range(e.shape[1]):
        observed = np.sum(sim.w == k)
        expected = e[:, k].sum()
        se = np.sqrt(np.sum(e[:, k] * (1.0 - e[:, k])))
        assert abs(observed - expected) < 4 * se, (k, observed, expected, se)


# ---------------------------------------------------------------------------
# Nie & Wager
# ---------------------------------------------------------------------------


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(z))


@pytest.mark.parametrize("setup", ["A", "B", "C", "D"])
def test_nie_wager_formulas(setup: str) -> None:
    sim = simulate_nie_wager(setup, n=2000, p=6, sigma=0.0, seed=11)
    x1, x2, x3, x4, x5 = sim.X[:, :5].T
    if setup == "A":
        assert sim.X.min() >= 0.0 and sim.X.max() <= 1.0
        s = np.sin(np.pi * x1 * x2)
        b = s + 2 * (x3 - 0.5) ** 2 + x4 + 0.5 * x5
        e = np.maximum(0.1, np.minimum(s, 0.9))
        tau = (x1 + x2) / 2
    elif setup == "B":
        b = np.maximum.reduce([x1 + x2, x3, np.zeros_like(x1)]) + np.maximum(x4 + x5, 0)
        e = np.full_like(x1, 0.5)
        tau = x1 + _softplus(x2)
    elif setup == "C":
        b = 2 * _softplus(x1 + x2 + x3)
        e = 1 / (1 + np.exp(x2 + x3))
        tau = np.ones_like(x1)
    else:
        b = (np.maximum(x1 + x2 + x3, 0) + np.maximum(x4 + x5, 0)) / 2
        e = 1 / (1 + np.exp(-x1) + np.exp(-x2))
        tau = np.maximum(x1 + x2 + x3, 0) - np.maximum(x4 + x5, 0)
    np.testing.assert_allclose(sim.propensity, e, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sim.tau, tau, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sim.mu[:, 0], b - tau / 2, atol=1e-10)
    np.testing.assert_allclose(sim.mu[:, 1], b + tau / 2, atol=1e-10)
    # sigma = 0: the outcome is exactly the paper's b + (W - 1/2) tau
    np.testing.assert_allclose(sim.y, b + (sim.w - 0.5) * tau, atol=1e-10)


def test_nie_wager_setup_c_constant_effect() -> None:
    sim = simulate_nie_wager("C", n=5000, seed=0)
    assert np.all(sim.tau == 1.0)


def test_nie_wager_noise_scale() -> None:
    sim = simulate_nie_wager("B", n=20_000, sigma=2.0, seed=1)
    resid = sim.y - sim.mu[np.arange(len(sim.y)), sim.w]
    assert resid.std() == pytest.approx(2.0, rel=0.03)


def test_nie_wager_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="setup"):
        simulate_nie_wager("E")
    with pytest.raises(ValueError, match="'A', 'B', 'C', 'D'"):
        simulate_nie_wager("Z")
    with pytest.raises(ValueError, match="p must be"):
        simulate_nie_wager("A", p=4)
    with pytest.raises(ValueError, match="sigma"):
        simulate_nie_wager("A", sigma=-1.0)
    with pytest.raises(ValueError, match="n must be"):
        simulate_nie_wager("A", n=0)


# ---------------------------------------------------------------------------
# retention
# ---------------------------------------------------------------------------


def test_retention_features_and_effects(large: dict[str, Simulation]) -> None:
    sim = large["retention"]
    cols = dict(zip(sim.feature_names, sim.X.T, strict=True))
    assert np.all(cols["tenure_months"] > 0)
    assert np.all(cols["monthly_spend"] > 0)
    tickets = cols["support_tickets"]
    assert np.all(tickets >= 0) and np.array_equal(tickets, np.round(tickets))
    assert set(np.unique(cols["is_premium"])) == {0.0, 1.0}
    assert cols["age"].min() >= 18 and cols["age"].max() <= 80
    np.testing.assert_array_equal(sim.propensity, 0.5)
    # targeting matters: a sizeable minority is harmed by the offer
    share_negative = np.mean(sim.tau < 0)
    assert 0.20 <= share_negative <= 0.35
    # larger effects for low engagement and many tickets; premium customers lose
    low_eng = cols["engagement"] < 0
    assert sim.tau[low_eng].mean() > sim.tau[~low_eng].mean()
    many = tickets >= 3
    assert sim.tau[many].mean() > sim.tau[~many].mean()
    premium = cols["is_premium"] == 1
    assert np.mean(sim.tau[premium] < 0) > np.mean(sim.tau[~premium] < 0)
    # noise columns carry no signal
    for noise in ("noise_0", "noise_1"):
        assert abs(np.corrcoef(cols[noise], sim.tau)[0, 1]) < 0.05
        assert abs(np.corrcoef(cols[noise], sim.mu[:, 0])[0, 1]) < 0.05


# ---------------------------------------------------------------------------
# multi-arm
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("K", [3, 4, 7])
def test_multiarm_unequal_arms(K: int) -> None:
    sim = simulate_multiarm(n=3000, n_variants=K, seed=5)
    shares = sim.propensity[0]
    assert np.all(sim.propensity == shares)  # constant per arm
    assert shares[0] == pytest.approx(0.5)
    assert np.all(np.diff(shares[1:]) < 0)  # strictly decreasing treatment arms
    assert set(np.unique(sim.w)) == set(range(K))
    # every arm has its own effect function
    tau = sim.tau
    for j in range(K - 1):
        for k in range(j + 1, K - 1):
            assert not np.allclose(tau[:, j], tau[:, k])


def test_multiarm_invalid_variants() -> None:
    with pytest.raises(ValueError, match="n_variants"):
        simulate_multiarm(n_variants=2)
    with pytest.raises(ValueError, match="n_variants"):
        simulate_multiarm(n_variants=1)


# ---------------------------------------------------------------------------
# binary outcome
# ---------------------------------------------------------------------------


def test_binary_outcome_values(large: dict[str, Simulation]) -> None:
    sim = large["binary"]
    assert set(np.unique(sim.y)) == {0, 1}
    assert np.all((sim.mu > 0) & (sim.mu < 1))
    assert np.all((sim.tau > -1) & (sim.tau < 1))
    assert np.any(sim.tau > 0) and np.any(sim.tau < 0)
    np.testing.assert_array_equal(sim.propensity, 0.5)


# ---------------------------------------------------------------------------
# confounded design
# ---------------------------------------------------------------------------


def test_confounded_naive_biased_ipw_unbiased(large: dict[str, Simulation]) -> None:
    sim = large["confounded"]
    w, y, e = sim.w, sim.y, sim.propensity
    ate = sim.tau.mean()
    assert e.min() >= 0.05 and e.max() <= 0.95

    y1, y0 = y[w == 1], y[w == 0]
    naive = y1.mean() - y0.mean()
    naive_se = np.sqrt(y1.var(ddof=1) / len(y1) + y0.var(ddof=1) / len(y0))
    assert abs(naive - ate) > 5 * naive_se

    psi = w * y / e - (1 - w) * y / (1 - e)
    ipw_se = psi.std(ddof=1) / np.sqrt(len(psi))
    assert abs(psi.mean() - ate) < 4 * ipw_se


def test_confounded_design_effect() -> None:
    sim = simulate_confounded(n=500, seed=2)
    x0, x3 = sim.X[:, 0], sim.X[:, 3]
    np.testing.assert_allclose(sim.tau, 1 + 0.5 * x0 + (x3 > 0))
    z = 0.8 * sim.X[:, 0] - 0.5 * sim.X[:, 1] + 0.3 * sim.X[:, 2]
    np.testing.assert_allclose(sim.propensity, 1 / (1 + np.exp(-z)))


# ---------------------------------------------------------------------------
# misc
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: simulate_retention(n=0),
        lambda: simulate_multiarm(n=-5),
        lambda: simulate_binary_outcome(n=0),
        lambda: simulate_confounded(n=0),
    ],
)
def test_invalid_n(call: Callable[[], Simulation]) -> None:
    with pytest.raises(ValueError, match="n must be"):
        call()


@pytest.mark.parametrize("name", ["nw_A", "retention", "multiarm3"])
def test_to_frame_polars(name: str) -> None:
    pl = pytest.importorskip("polars")
    sim = _case(name)[1](50, 0)
    frame = sim.to_frame()
    assert isinstance(frame, pl.DataFrame)
    assert frame.columns == sim.feature_names
    np.testing.assert_array_equal(frame.to_numpy(), sim.X)


@pytest.mark.parametrize("name", ["nw_A", "retention", "multiarm3"])
def test_to_frame_pandas(name: str) -> None:
    pd = pytest.importorskip("pandas")
    sim = _case(name)[1](50, 0)
    frame = sim.to_frame(backend="pandas")
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == sim.feature_names
    np.testing.assert_array_equal(frame.to_numpy(), sim.X)


def test_to_frame_invalid_backend() -> None:
    sim = simulate_binary_outcome(n=10, seed=0)
    with pytest.raises(ValueError, match="backend"):
        sim.to_frame(backend="excel")
