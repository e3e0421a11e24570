"""Synthetic data-generating processes with known treatment effects.

Every simulator returns a :class:`Simulation`: the observed data ``(X, w, y)``
together with the ground truth that is unobservable in real data -- the
conditional average treatment effect ``tau``, the true propensity score and
the conditional mean outcome ``mu`` of every variant. This makes the designs
suitable for unit tests, benchmarks and documentation examples of CATE
estimators.

Available designs
-----------------
:func:`simulate_nie_wager`
    The four setups A-D of Nie & Wager (2021), Section 6.
:func:`simulate_retention`
    A randomized customer-retention experiment with descriptive features and
    a treatment effect that is negative for part of the population.
:func:`simulate_multiarm`
    A randomized experiment with three or more arms of unequal size.
:func:`simulate_binary_outcome`
    A randomized experiment with a binary (conversion) outcome.
:func:`simulate_confounded`
    An observational design whose treatment assignment is confounded.

All simulators take a ``seed`` (an ``int``, ``None`` or a
:class:`numpy.random.Generator`) that is passed to
:func:`numpy.random.default_rng`; a fixed integer seed gives identical output.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, cast

import narwhals as nw
import numpy as np

__all__ = [
    "Simulation",
    "simulate_nie_wager",
    "simulate_retention",
    "simulate_multiarm",
    "simulate_binary_outcome",
    "simulate_confounded",
]

SeedLike = int | np.random.Generator | None

_NIE_WAGER_SETUPS = ("A", "B", "C", "D")
_FrameBackend = Literal["polars", "pandas", "pyarrow"]
_FRAME_BACKENDS: tuple[_FrameBackend, ...] = ("polars", "pandas", "pyarrow")


class Simulation(NamedTuple):
    """Simulated data set together with its ground truth.

    Attributes
    ----------
    X : numpy.ndarray of shape (n, p), dtype float64
        Features.
    w : numpy.ndarray of shape (n,), dtype int64
        Observed variant labels ``0 .. K-1``; ``0`` is the control.
    y : numpy.ndarray of shape (n,)
        Observed outcome, float64 (int64 with values 0/1 for a binary
        outcome).
    tau : numpy.ndarray
        True conditional average treatment effect. Shape ``(n,)`` for two
        variants; shape ``(n, K-1)`` for ``K > 2`` variants, where column
        ``j`` is the effect of variant ``j + 1`` relative to the control.
    propensity : numpy.ndarray
        True assignment probabilities: ``P(W = 1 | X)`` with shape ``(n,)``
        for two variants; ``P(W = k | X)`` with shape ``(n, K)`` for
        ``K > 2`` variants (rows sum to one).
    mu : numpy.ndarray of shape (n, K), dtype float64
        True conditional mean outcome ``E[Y | X, W = k]`` of every variant
        (for a binary outcome: ``P(Y = 1 | X, W = k)``). Hence
        ``mu[:, k] - mu[:, 0]`` equals the effect of variant ``k``.
    feature_names : list of str
        Column names of ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> from metalearn.datasets import simulate_nie_wager
    >>> sim = simulate_nie_wager("D", n=500, seed=0)
    >>> sim._fields
    ('X', 'w', 'y', 'tau', 'propensity', 'mu', 'feature_names')
    >>> sim.X.shape, sim.w.shape, sim.tau.shape, sim.mu.shape
    ((500, 6), (500,), (500,), (500, 2))
    >>> bool(np.allclose(sim.mu[:, 1] - sim.mu[:, 0], sim.tau))
    True
    >>> X, w, y = sim.to_frame(), sim.w, sim.y  # features as a Polars frame
    """

    X: np.ndarray
    w: np.ndarray
    y: np.ndarray
    tau: np.ndarray
    propensity: np.ndarray
    mu: np.ndarray
    feature_names: list[str]

    def to_frame(self, backend: str = "polars") -> Any:
        """Return the features ``X`` as a data frame.

        Parameters
        ----------
        backend : {"polars", "pandas", "pyarrow"}, default "polars"
            Data-frame library of the result; the frame is built with
            :func:`narwhals.from_dict`.

        Returns
        -------
        frame : polars.DataFrame, pandas.DataFrame or pyarrow.Table
            One float64 column per feature, named after ``feature_names``.

        Examples
        --------
        >>> from metalearn.datasets import simulate_binary_outcome
        >>> sim = simulate_binary_outcome(n=100, seed=0)
        >>> frame = sim.to_frame()
        >>> frame.shape
        (100, 6)
        >>> list(frame.columns)
        ['x0', 'x1', 'x2', 'x3', 'x4', 'x5']
        """
        if backend not in _FRAME_BACKENDS:
            raise ValueError(f"backend must be one of {_FRAME_BACKENDS}, got {backend!r}.")
        data = {name: self.X[:, j] for j, name in enumerate(self.feature_names)}
        return nw.from_dict(data, backend=cast(_FrameBackend, backend)).to_native()


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _expit(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function ``1 / (1 + exp(-z))``."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}.")
    return int(n)


def _default_names(p: int) -> list[str]:
    return [f"x{j}" for j in range(p)]


def _two_arm(
    X: np.ndarray,
    w: np.ndarray,
    y: np.ndarray,
    mu0: np.ndarray,
    mu1: np.ndarray,
    tau: np.ndarray,
    propensity: np.ndarray,
    feature_names: list[str],
) -> Simulation:
    """Assemble a two-variant :class:`Simulation` with canonical dtypes."""
    return Simulation(
        X=np.ascontiguousarray(X, dtype=np.float64),
        w=np.asarray(w, dtype=np.int64),
        y=y,
        tau=np.asarray(tau, dtype=np.float64),
        propensity=np.asarray(propensity, dtype=np.float64),
        mu=np.column_stack([mu0, mu1]).astype(np.float64),
        feature_names=feature_names,
    )


# ---------------------------------------------------------------------------
# Nie & Wager (2021)
# ---------------------------------------------------------------------------


def simulate_nie_wager(
    setup: str = "A",
    n: int = 1000,
    p: int = 6,
    sigma: float = 1.0,
    seed: SeedLike = None,
) -> Simulation:
    """Simulate one of the setups A-D of Nie & Wager (2021), Section 6.

    Each setup is defined by a baseline main effect ``b(x)``, a propensity
    score ``e(x)`` and a treatment effect ``tau(x)``; the data are generated
    as::

        W | X ~ Bernoulli(e(X))
        Y = b(X) + (W - 1/2) * tau(X) + sigma * eps,   eps ~ N(0, 1)

    as in the paper, so that ``mu0 = b - tau / 2`` and ``mu1 = b + tau / 2``
    (``b`` is the mean of the two potential outcomes, not ``E[Y | X]``
    unless ``e = 1/2``). Writing
    ``x1 .. x5`` for the first five features (as in the paper; these are the
    columns ``x0 .. x4`` of ``X``) and ``trim_eta(z) = max(eta, min(z,
    1 - eta))``:

    * **A** (difficult nuisance, easy effect): ``X ~ U[0, 1]^p``,
      ``b = sin(pi x1 x2) + 2 (x3 - 0.5)^2 + x4 + 0.5 x5``,
      ``e = trim_0.1(sin(pi x1 x2))``, ``tau = (x1 + x2) / 2``.
    * **B** (randomized trial): ``X ~ N(0, I_p)``,
      ``b = max(x1 + x2, x3, 0) + max(x4 + x5, 0)``, ``e = 1/2``,
      ``tau = x1 + log(1 + exp(x2))``.
    * **C** (strong confounding, constant effect): ``X ~ N(0, I_p)``,
      ``b = 2 log(1 + exp(x1 + x2 + x3))``, ``e = 1 / (1 + exp(x2 + x3))``,
      ``tau = 1``.
    * **D** (unrelated arms): ``X ~ N(0, I_p)``,
      ``b = (max(x1 + x2 + x3, 0) + max(x4 + x5, 0)) / 2``,
      ``e = 1 / (1 + exp(-x1) + exp(-x2))``,
      ``tau = max(x1 + x2 + x3, 0) - max(x4 + x5, 0)``.

    Parameters
    ----------
    setup : {"A", "B", "C", "D"}, default "A"
        Which design to simulate.
    n : int, default 1000
        Number of units.
    p : int, default 6
        Number of features; at least 5. Features beyond the fifth are noise.
    sigma : float, default 1.0
        Standard deviation of the additive Gaussian noise; non-negative.
    seed : int, numpy.random.Generator or None, default None
        Seed passed to :func:`numpy.random.default_rng`.

    Returns
    -------
    Simulation
        ``tau`` and ``propensity`` have shape ``(n,)``, ``mu`` has shape
        ``(n, 2)``; the feature names are ``"x0" .. "x{p-1}"``.

    Raises
    ------
    ValueError
        If ``setup`` is not one of ``"A"``-``"D"``, ``p < 5``, ``n < 1`` or
        ``sigma < 0``.

    References
    ----------
    .. [1] X. Nie and S. Wager, "Quasi-oracle estimation of heterogeneous
       treatment effects", Biometrika 108(2), 299-319, 2021.
       https://doi.org/10.1093/biomet/asaa076

    Examples
    --------
    >>> import numpy as np
    >>> from metalearn.datasets import simulate_nie_wager
    >>> sim = simulate_nie_wager("A", n=500, p=6, seed=0)
    >>> sim.X.shape, sim.tau.shape, sim.mu.shape
    ((500, 6), (500,), (500, 2))
    >>> bool(np.allclose(sim.mu[:, 1] - sim.mu[:, 0], sim.tau))
    True
    >>> bool(np.all(simulate_nie_wager("C", n=50, seed=1).tau == 1.0))
    True
    """
    if not isinstance(setup, str) or setup.upper() not in _NIE_WAGER_SETUPS:
        raise ValueError(f"setup must be one of {_NIE_WAGER_SETUPS}, got {setup!r}.")
    setup = setup.upper()
    n = _check_n(n)
    if isinstance(p, bool) or not isinstance(p, int | np.integer) or p < 5:
        raise ValueError(f"p must be an integer >= 5 (setups use five features), got {p!r}.")
    p = int(p)
    if not sigma >= 0:
        raise ValueError(f"sigma must be non-negative, got {sigma!r}.")

    rng = np.random.default_rng(seed)
    # setup A draws uniform features, setups B-D standard normal ones
    X = rng.uniform(0.0, 1.0, size=(n, p)) if setup == "A" else rng.standard_normal(size=(n, p))
    x1, x2, x3, x4, x5 = (X[:, j] for j in range(5))

    if setup == "A":
        s = np.sin(np.pi * x1 * x2)
        b = s + 2.0 * (x3 - 0.5) ** 2 + x4 + 0.5 * x5
        e = np.clip(s, 0.1, 0.9)
        tau = (x1 + x2) / 2.0
    elif setup == "B":
        b = np.maximum(np.maximum(x1 + x2, x3), 0.0) + np.maximum(x4 + x5, 0.0)
        e = np.full(n, 0.5)
        tau = x1 + np.logaddexp(0.0, x2)
    elif setup == "C":
        b = 2.0 * np.logaddexp(0.0, x1 + x2 + x3)
        e = _expit(-(x2 + x3))
        tau = np.ones(n)
    else:  # "D"
        b = (np.maximum(x1 + x2 + x3, 0.0) + np.maximum(x4 + x5, 0.0)) / 2.0
        e = 1.0 / (1.0 + np.exp(-x1) + np.exp(-x2))
        tau = np.maximum(x1 + x2 + x3, 0.0) - np.maximum(x4 + x5, 0.0)

    w = (rng.uniform(size=n) < e).astype(np.int64)
    y = b + (w - 0.5) * tau + sigma * rng.standard_normal(n)
    return _two_arm(X, w, y, b - 0.5 * tau, b + 0.5 * tau, tau, e, _default_names(p))


# ---------------------------------------------------------------------------
# retention experiment
# ---------------------------------------------------------------------------

_RETENTION_FEATURES = [
    "tenure_months",
    "monthly_spend",
    "support_tickets",
    "is_premium",
    "engagement",
    "age",
    "noise_0",
    "noise_1",
]


def simulate_retention(n: int = 10_000, seed: SeedLike = None) -> Simulation:
    """Simulate a randomized customer-retention experiment.

    A retention offer (``W = 1``) is sent to a random half of the customers
    (``P(W = 1) = 0.5`` for everybody). The outcome is the revenue of a
    customer over the following 90 days. The offer pays off for customers at
    risk of churning (low engagement, many support tickets) but costs money
    for premium customers who would have stayed anyway, so that roughly a
    quarter of the customers have a negative treatment effect and targeting
    matters.

    Features::

        tenure_months   = 1 + Exponential(scale=20)
        monthly_spend   = LogNormal(log 50, 0.5)
        support_tickets = Poisson(1.5)
        is_premium      ~ Bernoulli(expit(-1 + 2 log(monthly_spend / 50)))
        engagement      ~ N(0, 1)
        age             ~ U[18, 80]
        noise_0, noise_1 ~ N(0, 1)   (unrelated to the outcome)

    Outcome::

        baseline = 40 + 1.2 monthly_spend + 8 log(1 + tenure_months)
                   + 10 engagement - 3 support_tickets
        tau      = 4 - 3 engagement + 2 min(support_tickets, 5)
                   - is_premium * (8 + 0.1 (monthly_spend - 50))
        y        = baseline + W tau + eps,   eps ~ N(0, 10^2)

    Parameters
    ----------
    n : int, default 10000
        Number of customers.
    seed : int, numpy.random.Generator or None, default None
        Seed passed to :func:`numpy.random.default_rng`.

    Returns
    -------
    Simulation
        Eight features named as above; ``tau`` and ``propensity`` have shape
        ``(n,)`` and ``mu`` has shape ``(n, 2)`` with columns ``baseline``
        and ``baseline + tau``.

    Examples
    --------
    >>> from metalearn.datasets import simulate_retention
    >>> sim = simulate_retention(n=1000, seed=0)
    >>> sim.feature_names[:3]
    ['tenure_months', 'monthly_spend', 'support_tickets']
    >>> sim.X.shape, sim.y.dtype
    ((1000, 8), dtype('float64'))
    >>> 0.15 < float((sim.tau < 0).mean()) < 0.40
    True
    """
    n = _check_n(n)
    rng = np.random.default_rng(seed)

    tenure = 1.0 + rng.exponential(20.0, size=n)
    spend = rng.lognormal(np.log(50.0), 0.5, size=n)
    tickets = rng.poisson(1.5, size=n).astype(np.float64)
    premium = (rng.uniform(size=n) < _expit(-1.0 + 2.0 * np.log(spend / 50.0))).astype(np.float64)
    engagement = rng.standard_normal(n)
    age = rng.uniform(18.0, 80.0, size=n)
    noise = rng.standard_normal(size=(n, 2))
    X = np.column_stack([tenure, spend, tickets, premium, engagement, age, noise])

    baseline = 40.0 + 1.2 * spend + 8.0 * np.log1p(tenure) + 10.0 * engagement - 3.0 * tickets
    tau = (
        4.0
        - 3.0 * engagement
        + 2.0 * np.minimum(tickets, 5.0)
        - premium * (8.0 + 0.1 * (spend - 50.0))
    )
    e = np.full(n, 0.5)
    w = (rng.uniform(size=n) < e).astype(np.int64)
    y = baseline + w * tau + 10.0 * rng.standard_normal(n)
    return _two_arm(X, w, y, baseline, baseline + tau, tau, e, list(_RETENTION_FEATURES))


# ---------------------------------------------------------------------------
# multi-arm experiment
# ---------------------------------------------------------------------------


def _arm_effect(k: int, X: np.ndarray) -> np.ndarray:
    """Treatment effect of arm ``k >= 1`` in :func:`simulate_multiarm`."""
    if k == 1:
        return 0.5 + X[:, 0]
    if k == 2:
        return np.where(X[:, 1] > 0.0, 1.0, -0.25)
    if k == 3:
        return 0.5 * X[:, 2] * X[:, 3]
    if k == 4:
        return np.abs(X[:, 3]) - 0.5
    j = (k - 1) % X.shape[1]
    sign = 1.0 if k % 2 else -1.0
    return 0.1 * k + sign * np.tanh(X[:, j])


def simulate_multiarm(n: int = 10_000, n_variants: int = 3, seed: SeedLike = None) -> Simulation:
    """Simulate a randomized experiment with several arms of unequal size.

    Half of the units are assigned to the control arm ``0``; the other half
    is split over the treatment arms ``1 .. K-1`` in decreasing shares
    proportional to ``K-1, K-2, ..., 1``. For ``K = 3`` the arm shares are
    ``(1/2, 1/3, 1/6)``. Assignment is completely randomized, so the
    propensity of every arm is the same constant for every unit.

    Features are ``X ~ N(0, I_6)`` and the outcome is::

        mu_0(x) = 1 + x0 - 0.5 x1 + sin(x2) + 0.5 x4^2
        mu_k(x) = mu_0(x) + tau_k(x)
        y       = mu_W(x) + eps,   eps ~ N(0, 1)

    with arm-specific effects::

        tau_1(x) = 0.5 + x0                      (linear in x0)
        tau_2(x) = 1 if x1 > 0 else -0.25        (step in x1)
        tau_3(x) = 0.5 x2 x3                     (interaction)
        tau_4(x) = |x3| - 0.5
        tau_k(x) = 0.1 k + s_k tanh(x_j),  j = (k - 1) mod 6,
                   s_k = +1 for odd k, -1 for even k       (k >= 5)

    Parameters
    ----------
    n : int, default 10000
        Number of units.
    n_variants : int, default 3
        Number of arms ``K`` including the control; at least 3.
    seed : int, numpy.random.Generator or None, default None
        Seed passed to :func:`numpy.random.default_rng`.

    Returns
    -------
    Simulation
        ``tau`` has shape ``(n, K-1)`` (column ``j`` is arm ``j + 1`` versus
        control), ``propensity`` and ``mu`` have shape ``(n, K)``.

    Raises
    ------
    ValueError
        If ``n_variants < 3`` (use a two-arm simulator instead) or ``n < 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from metalearn.datasets import simulate_multiarm
    >>> sim = simulate_multiarm(n=600, n_variants=3, seed=0)
    >>> sim.tau.shape, sim.propensity.shape, sim.mu.shape
    ((600, 2), (600, 3), (600, 3))
    >>> np.round(sim.propensity[0], 3).tolist()
    [0.5, 0.333, 0.167]
    """
    n = _check_n(n)
    if isinstance(n_variants, bool) or not isinstance(n_variants, int | np.integer):
        raise ValueError(f"n_variants must be an integer >= 3, got {n_variants!r}.")
    if n_variants < 3:
        raise ValueError(
            f"n_variants must be >= 3, got {n_variants!r}; "
            "use simulate_retention or simulate_nie_wager for two variants."
        )
    K = int(n_variants)
    rng = np.random.default_rng(seed)

    weights = np.arange(K - 1, 0, -1, dtype=np.float64)
    shares = np.concatenate([[0.5], 0.5 * weights / weights.sum()])

    X = rng.standard_normal(size=(n, 6))
    w = rng.choice(K, size=n, p=shares).astype(np.int64)
    mu0 = 1.0 + X[:, 0] - 0.5 * X[:, 1] + np.sin(X[:, 2]) + 0.5 * X[:, 4] ** 2
    tau = np.column_stack([_arm_effect(k, X) for k in range(1, K)]).astype(np.float64)
    mu = np.column_stack([mu0, mu0[:, None] + tau])
    y = mu[np.arange(n), w] + rng.standard_normal(n)
    return Simulation(
        X=X,
        w=w,
        y=y,
        tau=tau,
        propensity=np.tile(shares, (n, 1)),
        mu=mu,
        feature_names=_default_names(6),
    )


# ---------------------------------------------------------------------------
# binary outcome
# ---------------------------------------------------------------------------


def simulate_binary_outcome(n: int = 10_000, seed: SeedLike = None) -> Simulation:
    """Simulate a randomized experiment with a binary (conversion) outcome.

    Features are ``X ~ N(0, I_6)``, treatment is assigned with probability
    ``1/2`` and the outcome follows a logistic model::

        a(x) = -1 + 0.8 x0 - 0.5 x1 + 0.3 x2 x3
        g(x) = 0.5 + 0.6 x1 - 0.6 * 1{x4 > 0}
        P(Y = 1 | X = x, W = w) = expit(a(x) + w g(x))

    The treatment effect is the difference in conversion probabilities,
    ``tau(x) = expit(a(x) + g(x)) - expit(a(x))``.

    Parameters
    ----------
    n : int, default 10000
        Number of units.
    seed : int, numpy.random.Generator or None, default None
        Seed passed to :func:`numpy.random.default_rng`.

    Returns
    -------
    Simulation
        ``y`` is int64 with values 0/1; ``mu`` holds the two conversion
        probabilities ``(expit(a), expit(a + g))``; ``tau`` and
        ``propensity`` have shape ``(n,)``.

    Examples
    --------
    >>> import numpy as np
    >>> from metalearn.datasets import simulate_binary_outcome
    >>> sim = simulate_binary_outcome(n=1000, seed=0)
    >>> sim.y.dtype, sorted(np.unique(sim.y).tolist())
    (dtype('int64'), [0, 1])
    >>> bool(np.all((-1 < sim.tau) & (sim.tau < 1)))
    True
    """
    n = _check_n(n)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal(size=(n, 6))
    a = -1.0 + 0.8 * X[:, 0] - 0.5 * X[:, 1] + 0.3 * X[:, 2] * X[:, 3]
    g = 0.5 + 0.6 * X[:, 1] - 0.6 * (X[:, 4] > 0.0)
    mu0 = _expit(a)
    mu1 = _expit(a + g)
    e = np.full(n, 0.5)
    w = (rng.uniform(size=n) < e).astype(np.int64)
    p_obs = np.where(w == 1, mu1, mu0)
    y = (rng.uniform(size=n) < p_obs).astype(np.int64)
    return _two_arm(X, w, y, mu0, mu1, mu1 - mu0, e, _default_names(6))


# ---------------------------------------------------------------------------
# confounded observational design
# ---------------------------------------------------------------------------


def simulate_confounded(n: int = 10_000, seed: SeedLike = None) -> Simulation:
    """Simulate an observational study with confounded treatment assignment.

    The features that drive treatment assignment also drive the outcome, so
    the naive difference in means between treated and control units is a
    biased estimate of the average treatment effect; weighting by the true
    propensity removes the bias. Features are independent, uniform with mean
    zero and unit variance, ``x_j ~ U[-sqrt(3), sqrt(3)]`` for
    ``j = 0 .. 5``, and::

        e(x)    = expit(0.8 x0 - 0.5 x1 + 0.3 x2)
        mu_0(x) = 1 + 2 x0 - 1.5 x1 + x2 + 0.5 x4
        tau(x)  = 1 + 0.5 x0 + 1{x3 > 0}
        W | X ~ Bernoulli(e(X)),   y = mu_0(X) + W tau(X) + eps,  eps ~ N(0, 1)

    The bounded features guarantee overlap: ``e(x)`` lies in
    ``[expit(-1.6 sqrt(3)), expit(1.6 sqrt(3))] = [0.059, 0.941]``. The
    population average treatment effect is 1.5.

    Parameters
    ----------
    n : int, default 10000
        Number of units.
    seed : int, numpy.random.Generator or None, default None
        Seed passed to :func:`numpy.random.default_rng`.

    Returns
    -------
    Simulation
        ``tau`` and ``propensity`` have shape ``(n,)``, ``mu`` has shape
        ``(n, 2)``.

    Examples
    --------
    >>> import numpy as np
    >>> from metalearn.datasets import simulate_confounded
    >>> sim = simulate_confounded(n=20_000, seed=0)
    >>> naive = sim.y[sim.w == 1].mean() - sim.y[sim.w == 0].mean()
    >>> bool(naive - sim.tau.mean() > 1.0)  # strongly biased upwards
    True
    >>> bool((sim.propensity.min() > 0.05) and (sim.propensity.max() < 0.95))
    True
    """
    n = _check_n(n)
    rng = np.random.default_rng(seed)
    half_width = np.sqrt(3.0)
    X = rng.uniform(-half_width, half_width, size=(n, 6))
    e = _expit(0.8 * X[:, 0] - 0.5 * X[:, 1] + 0.3 * X[:, 2])
    mu0 = 1.0 + 2.0 * X[:, 0] - 1.5 * X[:, 1] + X[:, 2] + 0.5 * X[:, 4]
    tau = 1.0 + 0.5 * X[:, 0] + (X[:, 3] > 0.0)
    w = (rng.uniform(size=n) < e).astype(np.int64)
    y = mu0 + w * tau + rng.standard_normal(n)
    return _two_arm(X, w, y, mu0, mu0 + tau, tau, e, _default_names(6))
