"""The arithmetic behind the ranking-based estimators of :mod:`metalearn.evaluation`.

Notation. Rows carry a *ranking key* (a predicted effect: higher means
"treat first"), a normalised weight ``omega`` (the sample weights divided
by their sum; ``1/n`` without weights) and a *score* ``Gamma`` whose mean
over any fixed set of rows estimates the mean effect of those rows (an IPW
or AIPW score). Rows are sorted by decreasing key; the cumulative weight
share after sorted row ``i`` is ``s_i`` and ``Delta_i = omega_i``.

Ties. Rows with the same key cannot be ordered, so every quantity is the
average over the random orderings of each tie block: curves interpolate
linearly across a block and the rank weights of the rows of a block are
averaged. An estimator is then invariant to the order of tied rows, and a
constant prediction targets exactly as well as random targeting.

Every estimator here is linear in the scores, ``theta = sum_i omega_i
Gamma_i c_i`` with coefficients ``c_i`` fixed by the ranking and the
weights. Conditionally on the rows' features (hence on the ranking) its
variance is estimated by ``m/(m-1) * sum_i omega_i^2 (Gamma_i c_i -
theta)^2`` (``m`` rows of positive weight), which also contains the
variance of the true effects across rows, so it is conservative for the
effect on these rows (the estimand the truth-based checks compare with).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Ranking",
    "Curve",
    "rank",
    "rank_coefficients",
    "linear_se",
    "curve",
    "rate_estimate",
    "bootstrap_rate",
]


@dataclass(frozen=True)
class Ranking:
    """Rows sorted by decreasing key, and the tie blocks of the sorted keys.

    Attributes
    ----------
    order : ndarray of int, shape (n,)
        Row indices by decreasing key (stable: ties keep row order).
    starts : ndarray of int
        Position (in sorted order) where each tie block starts.
    block : ndarray of int, shape (n,)
        Block of each sorted position.
    keys : ndarray, shape (n,)
        The sorted keys.
    """

    order: np.ndarray
    starts: np.ndarray
    block: np.ndarray
    keys: np.ndarray


def rank(key: np.ndarray) -> Ranking:
    """Sort rows by decreasing ``key`` and find its tie blocks."""
    order = np.argsort(-key, kind="stable")
    keys = key[order]
    new = np.ones(len(keys), dtype=bool)
    new[1:] = keys[1:] != keys[:-1]
    return Ranking(order=order, starts=np.flatnonzero(new), block=np.cumsum(new) - 1, keys=keys)


def _block_mean(r: Ranking, om: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Weighted mean of ``c`` over each tie block, broadcast back to the rows.

    ``om`` and ``c`` are in sorted order, shape (n,) or (B, n).
    """
    wb = np.add.reduceat(om, r.starts, axis=-1)
    sums = np.add.reduceat(om * c, r.starts, axis=-1)
    first = np.take(c, r.starts, axis=-1)
    mean = np.where(wb > 0, sums / np.where(wb > 0, wb, 1.0), first)
    return np.take(mean, r.block, axis=-1)


def rank_coefficients(r: Ranking, om: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tie-averaged rank coefficients, in sorted order.

    With the cumulative shares ``s_i`` and widths ``Delta_i = omega_i``:

    * ``A_i = sum_{j >= i} Delta_j / s_j``: the AUTOC weight. The discrete
      AUTOC ``sum_j Delta_j TOC(s_j)`` with ``TOC(s) = (1/s) sum_{i: s_i <= s}
      omega_i Gamma_i - ATE`` equals ``sum_i omega_i Gamma_i (A_i - 1)``.
    * ``B_i = sum_{j >= i} Delta_j = 1 - s_{i-1}``: the area weight. The
      area under the gain curve ``sum_j Delta_j g(s_j)`` equals ``sum_i
      omega_i Gamma_i B_i``.
    * ``R = sum_j Delta_j s_j``: area under the random-targeting line per
      unit of ATE (``(n + 1) / (2n)`` for unit weights).

    ``om`` is (n,) or (B, n) in sorted order; returns ``A``, ``B`` (same
    shape) and ``R`` (scalar or (B,)).
    """
    if len(r.starts) == 1:  # one tie block: exactly random targeting
        ones = np.ones_like(om)
        big_r = (1.0 + np.sum(om**2, axis=-1)) / 2
        return ones, ones * np.expand_dims(big_r, -1), big_r
    s = np.cumsum(om, axis=-1)
    safe = np.where(s > 0, s, 1.0)
    ratio = np.where(om > 0, om / safe, 0.0)
    a = np.flip(np.cumsum(np.flip(ratio, axis=-1), axis=-1), axis=-1)
    b = 1.0 - (s - om)
    big_r = np.sum(om * s, axis=-1)
    return _block_mean(r, om, a), _block_mean(r, om, b), big_r


def linear_se(om: np.ndarray, z: np.ndarray, theta: float) -> float:
    """Standard error of ``theta = sum_i om_i z_i`` (``sum om = 1``), rows fixed."""
    m = int(np.count_nonzero(om))
    if m < 2:
        return float("nan")
    var = float(np.sum(om**2 * (z - theta) ** 2)) * m / (m - 1)
    return float(np.sqrt(max(var, 0.0)))


@dataclass(frozen=True)
class Curve:
    """A targeting curve on a grid of shares (see :func:`curve`)."""

    estimate: np.ndarray
    std_error: np.ndarray
    n_targeted: np.ndarray
    threshold: np.ndarray


def curve(
    r: Ranking,
    omega: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    shares: np.ndarray,
) -> Curve:
    """``theta(q) = sum_i omega_i (a_i + b_i rho_i(q))`` and its standard error.

    ``rho_i(q)`` is the share of row ``i`` among the targeted when the top
    ``q`` share of the weight is targeted: 1 for rows of the tie blocks
    entirely above the cutoff, ``f`` (the fraction of its block's weight
    below ``q``) for the block straddling it, 0 below. ``a``, ``b`` and
    ``omega`` are in row order; ``shares`` are the ``q``.

    The standard error is that of a linear estimator with fixed rows (see the
    module docstring), computed with cumulative sums over the tie blocks, so
    the grid costs ``O(n + len(shares))`` after sorting.
    """
    om, a_s, b_s = omega[r.order], a[r.order], b[r.order]
    wb = np.add.reduceat(om, r.starts)
    ends = np.cumsum(wb)
    begins = ends - wb
    nb = len(wb)
    blk = np.minimum(np.searchsorted(ends, shares - 1e-12, side="left"), nb - 1)
    f = np.where(
        wb[blk] > 0, np.clip((shares - begins[blk]) / np.where(wb > 0, wb, 1)[blk], 0, 1), 0
    )

    def t(c: np.ndarray, power: int) -> np.ndarray:
        sums = np.add.reduceat(c, r.starts)
        before = np.cumsum(sums) - sums
        return before[blk] + f**power * sums[blk]

    om2 = om**2
    theta = float(np.sum(om * a_s)) + t(om * b_s, 1)
    second = (
        float(np.sum(om2 * a_s**2))
        + 2 * t(om2 * a_s * b_s, 1)
        + t(om2 * b_s**2, 2)
        - 2 * theta * (float(np.sum(om2 * a_s)) + t(om2 * b_s, 1))
        + theta**2 * float(np.sum(om2))
    )
    m = int(np.count_nonzero(om))
    var = np.maximum(second, 0.0) * (m / (m - 1) if m > 1 else np.nan)
    counts = np.add.reduceat(np.ones_like(om), r.starts)
    n_targeted = (np.cumsum(counts) - counts)[blk] + f * counts[blk]
    threshold = np.where(shares > 0, r.keys[r.starts][blk], np.nan)
    return Curve(estimate=theta, std_error=np.sqrt(var), n_targeted=n_targeted, threshold=threshold)


def rate_estimate(
    r: Ranking, om_sorted: np.ndarray, gamma_sorted: np.ndarray, target: str
) -> np.ndarray:
    """RATE of the sorted rows for weights ``om_sorted`` of shape (n,) or (B, n).

    ``sum_i omega_i Gamma_i (c_i - const)`` with the tie-averaged rank
    coefficients of :func:`rank_coefficients` (``c = A, const = 1`` for the
    AUTOC, ``c = B, const = R`` for the Qini), summed per tie block so that a
    replicate costs a few passes over the rows.
    """
    om = om_sorted
    og = om * gamma_sorted
    ate = np.sum(og, axis=-1)
    if len(r.starts) == 1:  # one tie block: exactly random targeting
        return np.zeros_like(ate)
    s = np.cumsum(om, axis=-1)
    if target == "AUTOC":
        ratio = np.where(om > 0, om / np.where(s > 0, s, 1.0), 0.0)
        coef = np.flip(np.cumsum(np.flip(ratio, axis=-1), axis=-1), axis=-1)
        const = np.ones_like(ate)
    else:
        coef = 1.0 - (s - om)
        const = np.sum(om * s, axis=-1)
    if len(r.starts) == om.shape[-1]:  # no ties
        return np.sum(og * coef, axis=-1) - const * ate
    wb = np.add.reduceat(om, r.starts, axis=-1)
    cb = np.add.reduceat(om * coef, r.starts, axis=-1)
    gb = np.add.reduceat(og, r.starts, axis=-1)
    mean_coef = np.where(wb > 0, cb / np.where(wb > 0, wb, 1.0), 0.0)
    return np.sum(gb * mean_coef, axis=-1) - const * ate


def bootstrap_rate(
    r: Ranking,
    weight: np.ndarray,
    gamma: np.ndarray,
    target: str,
    n_bootstrap: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Nonparametric bootstrap replicates of the RATE (rows resampled, ranks recomputed).

    A replicate draws ``n`` rows with replacement (Efron's bootstrap),
    multiplies the sample weights by how often each row was drawn and
    recomputes the estimate, ranks and shares included, with those weights (a
    row drawn ``c`` times weighs ``c``; rows not drawn drop out). The scores
    (hence the cross-fitted nuisances) are held fixed.
    """
    n = len(gamma)
    w_sorted = weight[r.order]
    g_sorted = gamma[r.order]
    out = np.empty(n_bootstrap)
    chunk = max(1, min(n_bootstrap, 5_000_000 // max(n, 1)))
    done = 0
    while done < n_bootstrap:
        size = min(chunk, n_bootstrap - done)
        draws = rng.integers(0, n, size=(size, n))
        counts = np.stack([np.bincount(d, minlength=n) for d in draws])[:, r.order]
        v = counts * w_sorted[None, :]
        om = v / v.sum(axis=1, keepdims=True)
        out[done : done + size] = rate_estimate(r, om, g_sorted, target)
        done += size
    return out
