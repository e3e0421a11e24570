"""Small frozen result objects with named fields and a readable ``repr``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["AverageEffect"]


def _fmt(v: Any) -> str:
    arr = np.asarray(v)
    if arr.ndim == 0:
        return f"{float(arr):.4g}"
    return "[" + ", ".join(f"{x:.4g}" for x in arr.ravel()) + "]"


@dataclass(frozen=True)
class AverageEffect:
    """An average treatment effect of one variant against the control.

    Attributes
    ----------
    variant, control : object
        The compared variants.
    estimate : float or ndarray
        The point estimate (an array over classes for a multi-class outcome).
    std_error : float or ndarray
        Its standard error (``nan`` where the method gives none).
    ci_low, ci_high : float or ndarray
        Bounds of the ``level`` confidence interval (normal approximation).
    level : float
        Confidence level of the interval.
    method : str
        How it was computed (e.g. ``"AIPW"``, ``"plug-in"``).
    n : int
        Number of rows used.

    See Also
    --------
    metalearn.ate : Estimators that return it (difference in means, IPW, AIPW,
        matching).

    Examples
    --------
    >>> import metalearn as ml
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)  # randomized
    >>> effect = ml.ate.difference_in_means(None, sim.y, sim.w)
    >>> type(effect).__name__, effect.variant, effect.control, effect.n
    ('AverageEffect', 1, 0, 2000)
    >>> bool(effect.ci_low < sim.tau.mean() < effect.ci_high)
    True
    >>> bool(effect.p_value < 0.05)  # an average effect of about 0.8
    True
    """

    variant: Any
    control: Any
    estimate: Any
    std_error: Any
    ci_low: Any
    ci_high: Any
    level: float
    method: str
    n: int

    @classmethod
    def from_estimate(
        cls,
        *,
        variant: Any,
        control: Any,
        estimate: Any,
        std_error: Any,
        method: str,
        n: int,
        level: float = 0.95,
    ) -> AverageEffect:
        z = stats.norm.ppf(0.5 + level / 2)
        est = np.asarray(estimate, dtype=float)
        se = np.asarray(std_error, dtype=float)
        lo, hi = est - z * se, est + z * se

        def unwrap(a: np.ndarray) -> Any:
            return float(a) if a.ndim == 0 else a

        return cls(
            variant=variant,
            control=control,
            estimate=unwrap(est),
            std_error=unwrap(se),
            ci_low=unwrap(lo),
            ci_high=unwrap(hi),
            level=level,
            method=method,
            n=n,
        )

    @property
    def p_value(self) -> Any:
        """Two-sided p-value of the null hypothesis of no average effect."""
        z = np.asarray(self.estimate) / np.asarray(self.std_error)
        p = 2 * stats.norm.sf(np.abs(z))
        return float(p) if np.ndim(p) == 0 else p

    def __repr__(self) -> str:
        return (
            f"AverageEffect({self.variant!r} vs {self.control!r}: {_fmt(self.estimate)} "
            f"(se {_fmt(self.std_error)}, {self.level:.0%} CI {_fmt(self.ci_low)} to "
            f"{_fmt(self.ci_high)}), method={self.method!r}, n={self.n})"
        )


def mean_std_error(
    psi: np.ndarray, weight: np.ndarray | None = None, groups: np.ndarray | None = None
) -> np.ndarray:
    """Standard error of the (weighted) mean of influence values ``psi`` (n, ...).

    Rows independent: ``sd / sqrt(n)`` (weighted: the sandwich form with
    ``n / (n - 1)``). With integer ``groups`` codes: cluster-robust,
    ``sqrt(G / (G - 1) * sum_g (sum_{i in g} w_i (psi_i - mean))^2)`` with the
    normalised weights ``w_i`` (``1 / n`` unweighted) over the ``G`` groups.
    """
    n = psi.shape[0]
    if n < 2:
        return np.full(psi.shape[1:], np.nan)
    if weight is None and groups is None:
        return np.asarray(np.std(psi, axis=0, ddof=1) / np.sqrt(n))
    wn = np.full(n, 1.0 / n) if weight is None else weight / weight.sum()
    centre = np.tensordot(wn, psi, axes=1)
    dev = wn.reshape((n,) + (1,) * (psi.ndim - 1)) * (psi - centre)
    if groups is None:
        return np.sqrt(np.sum(dev**2, axis=0) * n / (n - 1))
    _, codes = np.unique(groups, return_inverse=True)
    G = int(codes.max()) + 1
    if G < 2:
        return np.full(psi.shape[1:], np.nan)
    per_group = np.zeros((G, *psi.shape[1:]))
    np.add.at(per_group, codes, dev)
    return np.sqrt(G / (G - 1) * np.sum(per_group**2, axis=0))
