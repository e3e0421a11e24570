"""Targeting curves and their areas: Qini, uplift, AUUC, Qini coefficient, RATE.

Part of :mod:`metalearn.evaluation`, where the scores and the normalisation
of the curves are defined.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from metalearn.evaluation import _ranking
from metalearn.evaluation._common import (
    RATEResult,
    TargetingArea,
    _Arm,
    _arms,
    _check_shares,
    _Design,
    _frame,
    _one_or_tuple,
    _p,
    _prepare,
    _z,
    fill_doc,
)


@fill_doc
def qini_curve(
    tau: Any,
    y: Any,
    w: Any,
    *,
    propensity: Any = None,
    mu: Any = None,
    control: Any = None,
    sample_weight: Any = None,
    shares: Any = None,
    level: float = 0.95,
) -> Any:
    r"""Qini (cumulative gain) curve of a ranking by predicted effect (Radcliffe 2007).

    Rows are ranked by decreasing predicted effect; at share ``q`` the top
    ``q`` of the population is treated and the curve is the incremental
    outcome per unit of the whole population,

    .. math:: g(q) = \sum_{i} \omega_i\, \rho_i(q)\, \Gamma_i ,

    with row weights :math:`\omega_i` (``1/n``), the effect scores
    :math:`\Gamma_i` (IPW or AIPW, see :mod:`metalearn.evaluation`) and
    :math:`\rho_i(q) \in [0, 1]` the part of row ``i`` in the top ``q``
    (fractional only for the tie block at the cutoff). Random targeting gains
    :math:`q \cdot \mathrm{ATE}`, the column ``random``. Radcliffe's
    count-based Qini is :math:`n_T\, g(q)` in an experiment with
    :math:`n_T` treated rows.

    Parameters
    ----------
    %(scores)s
    shares : array-like, optional
        The shares ``q`` in [0, 1] (default: 0, 0.01, ..., 1).
    level : float, default=0.95
        Confidence level of the pointwise intervals.

    Returns
    -------
    frame
        One row per (``variant``, ``share``), in the type of ``tau``, ``y``
        or ``w`` when one is a frame or series, else Polars. Columns:
        ``variant``, ``control``, ``share``, ``n_targeted`` (rows targeted),
        ``threshold`` (predicted effect at the cutoff), ``gain``,
        ``std_error``, ``ci_low``, ``ci_high``, ``random``,
        ``gain_over_random``. Variants are strings; ``"best"`` is the
        best-variant policy (more than two variants).

    See Also
    --------
    qini_coefficient : The area between this curve and the random line.
    uplift_curve : The mean effect among the targeted, ``g(q) / q``.

    References
    ----------
    .. [1] Radcliffe, N. J. (2007). Using control groups to target on
       predicted lift: building and assessing uplift models. Direct Marketing
       Analytics Journal 1, 14-21.

    Examples
    --------
    >>> import metalearn as ml
    >>> from metalearn.evaluation import qini_curve
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> curve = qini_curve(sim.tau, sim.y, sim.w, propensity=0.5, shares=[0, 0.5, 1])
    >>> curve.columns[:4]
    ['variant', 'control', 'share', 'n_targeted']
    >>> bool(curve["gain"][1] > curve["random"][1])
    True
    """
    d, t, level = _prepare(tau, y, w, propensity, mu, control, sample_weight, level)
    q = _check_shares(shares, positive=False)
    z = _z(level)
    cols: dict[str, list[Any]] = {k: [] for k in _CURVE_COLUMNS}
    for arm in _arms(d, t):
        r = _ranking.rank(arm.key)
        cv = _ranking.curve(r, d.omega, np.zeros(d.n), arm.gamma, q)
        ate = float(np.sum(d.omega * arm.gamma))
        random = q * ate
        _extend(cols, arm, d, q, cv)
        cols["gain"].extend(cv.estimate)
        cols["std_error"].extend(cv.std_error)
        cols["ci_low"].extend(cv.estimate - z * cv.std_error)
        cols["ci_high"].extend(cv.estimate + z * cv.std_error)
        cols["random"].extend(random)
        cols["gain_over_random"].extend(cv.estimate - random)
    return _frame(d, cols)


_CURVE_COLUMNS = (
    "variant",
    "control",
    "share",
    "n_targeted",
    "threshold",
    "gain",
    "std_error",
    "ci_low",
    "ci_high",
    "random",
    "gain_over_random",
)


def _extend(
    cols: dict[str, list[Any]], arm: _Arm, d: _Design, q: np.ndarray, cv: _ranking.Curve
) -> None:
    cols["variant"].extend([arm.label] * len(q))
    cols["control"].extend([d.control_label] * len(q))
    cols["share"].extend(q)
    cols["n_targeted"].extend(np.rint(cv.n_targeted).astype(np.int64))
    cols["threshold"].extend(cv.threshold)


@fill_doc
def uplift_curve(
    tau: Any,
    y: Any,
    w: Any,
    *,
    propensity: Any = None,
    mu: Any = None,
    control: Any = None,
    sample_weight: Any = None,
    shares: Any = None,
    level: float = 0.95,
) -> Any:
    r"""Uplift curve: the mean effect among the top ``q`` share by predicted effect.

    .. math:: u(q) = \frac{g(q)}{q} = \frac{\sum_i \omega_i \rho_i(q) \Gamma_i}{q},

    the average treatment effect of the targeted rows, with the gain curve
    :math:`g` of :func:`qini_curve`. It starts at the effect of the rows
    predicted best and ends at the ATE (``q = 1``); random targeting gives the
    ATE at every ``q`` (column ``ate``). A decreasing curve means the ranking
    finds the rows that benefit most. ``u(q) - ATE`` is the targeting
    operator characteristic (TOC) of Yadlowsky et al., whose average is the
    AUTOC of :func:`rate`.

    Parameters
    ----------
    %(scores)s
    shares : array-like, optional
        The shares ``q`` in (0, 1] (default: 0.01, 0.02, ..., 1).
    level : float, default=0.95
        Confidence level of the pointwise intervals.

    Returns
    -------
    frame
        Columns ``variant``, ``control``, ``share``, ``n_targeted``,
        ``threshold``, ``uplift``, ``std_error``, ``ci_low``, ``ci_high``,
        ``ate``; frame type as in :func:`qini_curve`.

    References
    ----------
    .. [1] Rzepakowski, P. and Jaroszewicz, S. (2012). Decision trees for
       uplift modeling with single and multiple treatments. Knowledge and
       Information Systems 32, 303-327.
    .. [2] Yadlowsky, S., Fleming, S., Shah, N., Brunskill, E. and Wager, S.
       (2025). Evaluating treatment prioritization rules via rank-weighted
       average treatment effects. JASA. arXiv:2111.07966.

    Examples
    --------
    >>> import metalearn as ml
    >>> from metalearn.evaluation import uplift_curve
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> curve = uplift_curve(sim.tau, sim.y, sim.w, propensity=0.5, shares=[0.2, 1.0])
    >>> bool(curve["uplift"][0] > curve["uplift"][1])
    True
    """
    d, t, level = _prepare(tau, y, w, propensity, mu, control, sample_weight, level)
    q = _check_shares(shares, positive=True)
    z = _z(level)
    names = (
        "variant",
        "control",
        "share",
        "n_targeted",
        "threshold",
        "uplift",
        "std_error",
        "ci_low",
        "ci_high",
        "ate",
    )
    cols: dict[str, list[Any]] = {k: [] for k in names}
    for arm in _arms(d, t):
        r = _ranking.rank(arm.key)
        cv = _ranking.curve(r, d.omega, np.zeros(d.n), arm.gamma, q)
        u, se = cv.estimate / q, cv.std_error / q
        _extend(cols, arm, d, q, cv)
        cols["uplift"].extend(u)
        cols["std_error"].extend(se)
        cols["ci_low"].extend(u - z * se)
        cols["ci_high"].extend(u + z * se)
        cols["ate"].extend(np.full(len(q), float(np.sum(d.omega * arm.gamma))))
    return _frame(d, cols)


# --------------------------------------------------------------------- areas
def _area(kind: str, tau: Any, y: Any, w: Any, kw: dict[str, Any]) -> Any:
    level = kw.pop("level")
    d, t, level = _prepare(tau, y, w, level=level, **kw)
    z = _z(level)
    out = []
    for arm in _arms(d, t):
        r = _ranking.rank(arm.key)
        om = d.omega[r.order]
        g = arm.gamma[r.order]
        _, b, big_r = _ranking.rank_coefficients(r, om)
        ate = float(np.sum(om * g))
        random = float(big_r) * ate
        if kind == "AUUC":
            zc = g * b
            est = float(np.sum(om * zc))
        else:
            zc = g * (b - big_r)
            est = float(np.sum(om * zc))
            random = 0.0
        se = _ranking.linear_se(om, zc, est)
        # "No better than random" compares the AUUC with random, i.e. tests the Qini.
        diff = g * (b - big_r)
        p = _p(float(np.sum(om * diff)), _ranking.linear_se(om, diff, float(np.sum(om * diff))))
        out.append(
            TargetingArea(
                variant=arm.label,
                control=d.control_label,
                kind=kind,
                estimate=est,
                std_error=se,
                ci_low=est - z * se,
                ci_high=est + z * se,
                p_value=p,
                random=random,
                level=level,
                method=d.method,
                n=d.n,
            )
        )
    return _one_or_tuple(out)


@fill_doc
def auuc(
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
    r"""Area under the uplift (cumulative gain) curve, AUUC.

    The right-endpoint Riemann sum of the gain curve :math:`g` of
    :func:`qini_curve` over the rows' cumulative shares :math:`s_j`:

    .. math:: \mathrm{AUUC} = \sum_j \Delta_j\, g(s_j)
       = \sum_i \omega_i \Gamma_i (1 - s_{i-1}),

    (:math:`\Delta_j = \omega_j`; tie blocks averaged), on the outcome scale
    per unit of population. Random targeting has area
    :math:`\mathrm{ATE} \sum_j \Delta_j s_j = \mathrm{ATE}\,(n+1)/(2n)`
    (field ``random``), so a good ranking has an AUUC well above
    ``random``; the difference is :func:`qini_coefficient`.

    Parameters
    ----------
    %(scores)s
    level : float, default=0.95

    Returns
    -------
    TargetingArea, or a tuple of them (each treated variant, then ``"best"``)
    for more than two variants.

    References
    ----------
    .. [1] Rzepakowski, P. and Jaroszewicz, S. (2012). Decision trees for
       uplift modeling with single and multiple treatments. Knowledge and
       Information Systems 32, 303-327.
    .. [2] Gutierrez, P. and Gerardy, J.-Y. (2017). Causal inference and
       uplift modelling: a review of the literature. Proceedings of Machine
       Learning Research 67, 1-13.

    Examples
    --------
    >>> import metalearn as ml
    >>> from metalearn.evaluation import auuc
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> area = auuc(sim.tau, sim.y, sim.w, propensity=0.5)
    >>> area.kind, bool(area.estimate > area.random)
    ('AUUC', True)
    """
    return _area(
        "AUUC",
        tau,
        y,
        w,
        dict(
            propensity=propensity, mu=mu, control=control, sample_weight=sample_weight, level=level
        ),
    )


@fill_doc
def qini_coefficient(
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
    r"""Qini coefficient: area between the Qini curve and the random-targeting line.

    .. math:: Q = \sum_j \Delta_j \big(g(s_j) - s_j\,\mathrm{ATE}\big)
       = \sum_i \omega_i \Gamma_i \Big(1 - s_{i-1} - \sum_j \Delta_j s_j\Big),

    i.e. ``auuc - random`` (Radcliffe 2007, without his division by the area
    of an optimal curve, which is not identified for continuous outcomes).
    It equals the RATE with Qini weights of Yadlowsky et al. (the estimate
    of ``rate(..., target="QINI")``); here the standard error holds the
    ranking fixed. Zero means no better than random targeting.

    Parameters
    ----------
    %(scores)s
    level : float, default=0.95

    Returns
    -------
    TargetingArea, or a tuple of them for more than two variants.

    References
    ----------
    .. [1] Radcliffe, N. J. (2007). Using control groups to target on
       predicted lift: building and assessing uplift models. Direct Marketing
       Analytics Journal 1, 14-21.
    .. [2] Yadlowsky, S., Fleming, S., Shah, N., Brunskill, E. and Wager, S.
       (2025). Evaluating treatment prioritization rules via rank-weighted
       average treatment effects. JASA. arXiv:2111.07966.

    Examples
    --------
    >>> import numpy as np
    >>> import metalearn as ml
    >>> from metalearn.evaluation import qini_coefficient
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> q = qini_coefficient(sim.tau, sim.y, sim.w, propensity=0.5)
    >>> bool(q.ci_low > 0)
    True
    >>> qini_coefficient(np.zeros(2000), sim.y, sim.w, propensity=0.5).estimate
    0.0
    """
    return _area(
        "Qini coefficient",
        tau,
        y,
        w,
        dict(
            propensity=propensity, mu=mu, control=control, sample_weight=sample_weight, level=level
        ),
    )


# ---------------------------------------------------------------------- RATE
@fill_doc
def rate(
    tau: Any,
    y: Any,
    w: Any,
    *,
    target: str = "AUTOC",
    propensity: Any = None,
    mu: Any = None,
    control: Any = None,
    sample_weight: Any = None,
    n_bootstrap: int = 200,
    random_state: int | None = None,
    level: float = 0.95,
) -> Any:
    r"""Rank-weighted average treatment effect, RATE (Yadlowsky et al.).

    With the targeting operator characteristic
    :math:`\mathrm{TOC}(q) = \frac{1}{q}\sum_i \omega_i \rho_i(q)\Gamma_i - \mathrm{ATE}`
    (mean effect of the top ``q`` minus the ATE), evaluated at the rows'
    cumulative shares :math:`s_j`:

    * ``target="AUTOC"``: :math:`\sum_j \Delta_j\, \mathrm{TOC}(s_j)`, the
      area under the TOC (weights :math:`\sum_{j \ge i}\Delta_j/s_j - 1`,
      about :math:`-\log q - 1`); sensitive to the very top of the ranking.
    * ``target="QINI"``: :math:`\sum_j \Delta_j\, s_j\, \mathrm{TOC}(s_j)`,
      equal to :func:`qini_coefficient`; weighs the whole ranking.

    Both are zero for a ranking no better than random and positive when the
    rows ranked first benefit more. The standard error is the standard
    deviation of ``n_bootstrap`` nonparametric bootstrap replicates (rows
    resampled, ranks and quantiles recomputed, scores held fixed), as
    Yadlowsky et al. recommend; the p-value tests ``RATE == 0``.

    Parameters
    ----------
    %(scores)s
    target : {"AUTOC", "QINI"}, default="AUTOC"
        The weighting of the TOC.
    n_bootstrap : int, default=200
        Bootstrap replicates (at least 2).
    random_state : int, optional
        Seed of the bootstrap.
    level : float, default=0.95

    Returns
    -------
    RATEResult, or a tuple of them (each treated variant, then ``"best"``)
    for more than two variants.

    References
    ----------
    .. [1] Yadlowsky, S., Fleming, S., Shah, N., Brunskill, E. and Wager, S.
       (2025). Evaluating treatment prioritization rules via rank-weighted
       average treatment effects. JASA. arXiv:2111.07966.
    .. [2] Efron, B. and Tibshirani, R. J. (1993). An Introduction to the
       Bootstrap. Chapman & Hall.

    Examples
    --------
    >>> import metalearn as ml
    >>> from metalearn.evaluation import rate
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> res = rate(sim.tau, sim.y, sim.w, propensity=0.5, n_bootstrap=50, random_state=0)
    >>> res.target, bool(res.estimate > 0)
    ('AUTOC', True)
    """
    if target not in ("AUTOC", "QINI"):
        raise ValueError(f"`target` must be 'AUTOC' or 'QINI'; got {target!r}.")
    if not isinstance(n_bootstrap, int | np.integer) or n_bootstrap < 2:
        raise ValueError(f"`n_bootstrap` must be an integer >= 2; got {n_bootstrap!r}.")
    d, t, level = _prepare(tau, y, w, propensity, mu, control, sample_weight, level)
    z = _z(level)
    rng = np.random.default_rng(random_state)
    out = []
    for arm in _arms(d, t):
        r = _ranking.rank(arm.key)
        est = float(_ranking.rate_estimate(r, d.omega[r.order], arm.gamma[r.order], target))
        reps = _ranking.bootstrap_rate(r, d.weight, arm.gamma, target, int(n_bootstrap), rng)
        se = float(np.std(reps, ddof=1))
        out.append(
            RATEResult(
                variant=arm.label,
                control=d.control_label,
                target=target,
                estimate=est,
                std_error=se,
                ci_low=est - z * se,
                ci_high=est + z * se,
                p_value=_p(est, se),
                level=level,
                method=d.method,
                n=d.n,
                n_bootstrap=int(n_bootstrap),
            )
        )
    return _one_or_tuple(out)


# --------------------------------------------------------------- calibration
