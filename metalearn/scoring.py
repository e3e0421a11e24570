"""Losses for CATE models that need no ground truth.

Both losses are computed from *scoring nuisances* (outcome and propensity
predictions fitted on the evaluation data by cross-fitting), so that every
learner, whatever its own nuisance models, is judged on the same yardstick.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["r_loss", "dr_loss"]


def _as_float(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-dimensional; got shape {arr.shape}.")
    return arr


def r_loss(
    y: Any,
    treated: Any,
    tau: Any,
    *,
    outcome: Any,
    propensity: Any,
    sample_weight: Any = None,
) -> float:
    r"""R-loss of Nie and Wager (2021) for one treated variant against the control.

    .. math:: \frac{1}{n}\sum_i \big[(Y_i - \hat m(X_i)) - \tau(X_i)(T_i - \hat p(X_i))\big]^2

    Lower is better. Its value also contains the irreducible noise of ``Y``,
    so compare learners on the same data, not against zero.

    Parameters
    ----------
    y : array-like of shape (n,)
        Outcomes of the rows of the control and the treated variant.
    treated : array-like of shape (n,)
        1 for rows of the treated variant, 0 for control rows.
    tau : array-like of shape (n,)
        Predicted effects.
    outcome : array-like of shape (n,)
        Out-of-fold predictions of ``m(x) = E[Y | X=x]`` on these rows.
    propensity : array-like of shape (n,)
        Out-of-fold (or known) ``P(T=1 | X=x)`` on these rows.
    sample_weight : array-like of shape (n,), optional

    Returns
    -------
    float

    References
    ----------
    .. [1] Nie, X. and Wager, S. (2021). Quasi-oracle estimation of
       heterogeneous treatment effects. Biometrika 108(2), 299-319.

    Examples
    --------
    >>> from metalearn.scoring import r_loss
    >>> r_loss([1.0, 3.0], [0, 1], [2.0, 2.0], outcome=[2.0, 2.0], propensity=[0.5, 0.5])
    0.0
    """
    arrays = [
        _as_float(v, n)
        for v, n in (
            (y, "y"),
            (treated, "treated"),
            (tau, "tau"),
            (outcome, "outcome"),
            (propensity, "propensity"),
        )
    ]
    y_, t_, tau_, m_, p_ = arrays
    if len({len(a) for a in arrays}) != 1:
        raise ValueError(
            "`y`, `treated`, `tau`, `outcome` and `propensity` must have equal length."
        )
    resid = (y_ - m_) - tau_ * (t_ - p_)
    return float(np.average(resid**2, weights=sample_weight))


def dr_loss(pseudo_outcome: Any, tau: Any, *, sample_weight: Any = None) -> float:
    r"""Doubly robust tau-risk: mean squared distance of ``tau`` to AIPW pseudo-outcomes.

    .. math:: \frac{1}{n}\sum_i (\varphi_i - \tau(X_i))^2

    where :math:`\varphi_i` is the doubly robust pseudo-outcome of row ``i``
    computed from scoring nuisances. Lower is better; differences between
    learners estimate differences in their mean squared error against the
    true CATE (up to the nuisances' error).

    References
    ----------
    .. [1] Saito, Y. and Yasui, S. (2020). Counterfactual cross-validation:
       stable model selection procedure for causal inference models. ICML.
    .. [2] Kennedy, E. H. (2023). Towards optimal doubly robust estimation of
       heterogeneous causal effects. Electronic Journal of Statistics 17(2).

    Examples
    --------
    >>> from metalearn.scoring import dr_loss
    >>> dr_loss([1.0, 3.0], [2.0, 2.0])
    1.0
    """
    phi = _as_float(pseudo_outcome, "pseudo_outcome")
    t = _as_float(tau, "tau")
    if len(phi) != len(t):
        raise ValueError("`pseudo_outcome` and `tau` must have equal length.")
    return float(np.average((phi - t) ** 2, weights=sample_weight))
