"""Calibration of predicted effects: GATES table and the BLP test.

Part of :mod:`metalearn.evaluation`, where the scores and the normalisation
of the curves are defined.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from metalearn.evaluation import _ranking
from metalearn.evaluation._common import (
    BLPResult,
    _frame,
    _one_or_tuple,
    _p,
    _prepare,
    _z,
    fill_doc,
)


@fill_doc
def calibration_table(
    tau: Any,
    y: Any,
    w: Any,
    *,
    n_groups: int = 10,
    propensity: Any = None,
    mu: Any = None,
    control: Any = None,
    sample_weight: Any = None,
    level: float = 0.95,
) -> Any:
    r"""Calibration by quantile groups of the predicted effect (GATES).

    Rows are cut into ``n_groups`` groups of (about) equal weight by their
    predicted effect; the sorted group averages of the effect scores

    .. math:: \hat\gamma_g = \frac{\sum_{i \in G_g} \omega_i \Gamma_i}{\sum_{i \in G_g} \omega_i}

    estimate the group average treatment effects (GATES) of Chernozhukov,
    Demirer, Duflo and Fernandez-Val, which a calibrated model matches with
    its mean prediction per group (column ``predicted``). Rows with tied
    predictions always share a group, so groups can be unequal or fewer with
    many ties. Standard errors are those of a weighted mean within the group
    (the ranking held fixed, one split, unlike the median over splits of the
    paper's variational inference).

    Parameters
    ----------
    %(scores)s
    n_groups : int, default=10
        Number of groups (deciles by default), at least 2.
    level : float, default=0.95

    Returns
    -------
    frame
        One row per (``variant``, ``group``), group 1 holding the lowest
        predictions. Columns ``variant``, ``control``, ``group``, ``n``,
        ``tau_min``, ``tau_max``, ``predicted``, ``estimate``, ``std_error``,
        ``ci_low``, ``ci_high``. Frame type as in :func:`qini_curve`.

    References
    ----------
    .. [1] Chernozhukov, V., Demirer, M., Duflo, E. and Fernandez-Val, I.
       (2018). Generic machine learning inference on heterogeneous treatment
       effects in randomized experiments, with an application to immunization
       in India. NBER Working Paper 24678.

    Examples
    --------
    >>> import metalearn as ml
    >>> from metalearn.evaluation import calibration_table
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> table = calibration_table(sim.tau, sim.y, sim.w, propensity=0.5, n_groups=4)
    >>> table.shape
    (4, 11)
    >>> bool(table["estimate"][3] > table["estimate"][0])
    True
    """
    if not isinstance(n_groups, int | np.integer) or n_groups < 2:
        raise ValueError(f"`n_groups` must be an integer >= 2; got {n_groups!r}.")
    d, t, level = _prepare(tau, y, w, propensity, mu, control, sample_weight, level)
    if n_groups > d.n:
        raise ValueError(f"`n_groups`={n_groups} exceeds the number of rows ({d.n}).")
    z = _z(level)
    names = (
        "variant",
        "control",
        "group",
        "n",
        "tau_min",
        "tau_max",
        "predicted",
        "estimate",
        "std_error",
        "ci_low",
        "ci_high",
    )
    cols: dict[str, list[Any]] = {k: [] for k in names}
    for j, k in enumerate(d.treated):
        pred, gamma = t[:, j], d.effect(k)
        group = _quantile_groups(pred, d.omega, int(n_groups))
        for g in np.unique(group):
            rows = group == g
            om = d.omega[rows] / d.omega[rows].sum()
            est = float(np.sum(om * gamma[rows]))
            se = _ranking.linear_se(om, gamma[rows], est)
            cols["variant"].append(d.label(k))
            cols["control"].append(d.control_label)
            cols["group"].append(int(g))
            cols["n"].append(int(rows.sum()))
            cols["tau_min"].append(float(pred[rows].min()))
            cols["tau_max"].append(float(pred[rows].max()))
            cols["predicted"].append(float(np.sum(om * pred[rows])))
            cols["estimate"].append(est)
            cols["std_error"].append(se)
            cols["ci_low"].append(est - z * se)
            cols["ci_high"].append(est + z * se)
    return _frame(d, cols)


def _quantile_groups(pred: np.ndarray, omega: np.ndarray, n_groups: int) -> np.ndarray:
    """Group 1..G by weighted quantiles of ``pred`` (1 = lowest); ties share a group."""
    r = _ranking.rank(-pred)  # ascending
    om = omega[r.order]
    wb = np.add.reduceat(om, r.starts)
    mid = np.cumsum(wb) - wb / 2
    g_block = np.minimum(np.floor(mid * n_groups).astype(np.int64), n_groups - 1) + 1
    out = np.empty(len(pred), dtype=np.int64)
    out[r.order] = g_block[r.block]
    return out


@fill_doc
def blp_test(
    tau: Any,
    y: Any,
    w: Any,
    *,
    propensity: Any = None,
    mu: Any = None,
    control: Any = None,
    sample_weight: Any = None,
    level: float = 0.95,
) -> Any:
    r"""Best linear predictor (BLP) test of heterogeneity and calibration.

    Following Chernozhukov, Demirer, Duflo and Fernandez-Val, the effect
    scores are regressed (weighted least squares with weights
    :math:`\omega_i`) on the centred prediction,

    .. math:: \Gamma_i = \beta_1 + \beta_2\,(\hat\tau(X_i) - \bar{\hat\tau}) + \varepsilon_i ,

    the score (Horvitz-Thompson) form of their BLP regression. Then
    :math:`\beta_1` is the ATE and
    :math:`\beta_2 = \mathrm{Cov}(\tau, \hat\tau)/\mathrm{Var}(\hat\tau)` the
    heterogeneity loading: :math:`\beta_2 \ne 0` shows that the predictions
    carry information on the effect (detected heterogeneity) and
    :math:`\beta_2 = 1` that they are well calibrated. Standard errors are
    heteroskedasticity-robust (HC1).

    Parameters
    ----------
    %(scores)s
    level : float, default=0.95

    Returns
    -------
    BLPResult, or a tuple of them (one per treated variant) for more than two
    variants.

    References
    ----------
    .. [1] Chernozhukov, V., Demirer, M., Duflo, E. and Fernandez-Val, I.
       (2018). Generic machine learning inference on heterogeneous treatment
       effects in randomized experiments, with an application to immunization
       in India. NBER Working Paper 24678.

    Examples
    --------
    >>> import metalearn as ml
    >>> from metalearn.evaluation import blp_test
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> res = blp_test(sim.tau, sim.y, sim.w, propensity=0.5)
    >>> bool(res.ci_low < 1 < res.ci_high), bool(res.p_value < 0.05)
    (True, True)
    """
    d, t, level = _prepare(tau, y, w, propensity, mu, control, sample_weight, level)
    z = _z(level)
    out = []
    for j, k in enumerate(d.treated):
        b1, b2, se1, se2 = _blp(t[:, j], d.effect(k), d.omega, d.label(k))
        out.append(
            BLPResult(
                variant=d.label(k),
                control=d.control_label,
                ate=b1,
                ate_std_error=se1,
                estimate=b2,
                std_error=se2,
                ci_low=b2 - z * se2,
                ci_high=b2 + z * se2,
                p_value=_p(b2, se2),
                p_value_calibrated=_p(b2 - 1.0, se2),
                level=level,
                method=d.method,
                n=d.n,
            )
        )
    return _one_or_tuple(out)


def _blp(
    pred: np.ndarray, gamma: np.ndarray, omega: np.ndarray, label: str
) -> tuple[float, float, float, float]:
    """WLS of gamma on [1, pred - mean]: coefficients and HC1 standard errors."""
    s = pred - np.sum(omega * pred)
    sxx = float(np.sum(omega * s**2))
    if sxx <= 1e-12 * max(1.0, float(np.sum(omega * pred**2))):
        raise ValueError(
            f"The predicted effects of variant {label!r} are constant; the BLP slope is "
            "undefined. Pass predictions that vary across rows."
        )
    b1 = float(np.sum(omega * gamma))
    b2 = float(np.sum(omega * s * gamma)) / sxx
    resid = gamma - b1 - b2 * s
    m = int(np.count_nonzero(omega))
    dof = m / (m - 2) if m > 2 else np.nan
    var1 = float(np.sum(omega**2 * resid**2)) * dof
    var2 = float(np.sum(omega**2 * s**2 * resid**2)) / sxx**2 * dof
    return b1, b2, float(np.sqrt(var1)), float(np.sqrt(var2))


# ------------------------------------------------------------------ policies
