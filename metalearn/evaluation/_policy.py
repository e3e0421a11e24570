"""Policy values and budget curves.

Part of :mod:`metalearn.evaluation`, where the scores and the normalisation
of the curves are defined.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from metalearn._core.validation import encode_treatment
from metalearn.evaluation import _ranking
from metalearn.evaluation._common import (
    PolicyValue,
    _arms,
    _check_level,
    _check_shares,
    _costs,
    _Design,
    _design,
    _frame,
    _p,
    _prepare,
    _tau_matrix,
    _z,
    fill_doc,
)


@fill_doc
def policy_value(
    tau: Any,
    y: Any,
    w: Any,
    *,
    policy: Any = None,
    share: float | None = None,
    cost: Any = 0.0,
    propensity: Any = None,
    mu: Any = None,
    control: Any = None,
    sample_weight: Any = None,
    level: float = 0.95,
) -> PolicyValue:
    r"""Value of a treatment policy, by IPW or doubly robust (AIPW) estimation.

    A policy :math:`\pi` assigns one variant to each row. Its value (mean
    outcome per row, net of costs) is estimated by

    .. math:: \hat V(\pi) = \sum_i \omega_i \big(\Gamma_{\pi(X_i), i} - c_{\pi(X_i), i}\big),

    with the per-variant scores :math:`\Gamma_{k,i} = 1\{W_i=k\}Y_i/e_k(X_i)`
    (IPW) or :math:`\hat\mu_k(X_i) + 1\{W_i=k\}(Y_i-\hat\mu_k(X_i))/\hat
    e_k(X_i)` (AIPW, Athey and Wager 2021; Zhou, Athey and Wager 2023 for
    several variants) and the cost :math:`c_k` of variant ``k`` (zero for the
    control). The policy is

    * ``policy`` when given (one variant label per row);
    * otherwise, from the predictions: each row gets the treated variant with
      the largest predicted net effect :math:`\hat\tau_k - c_k` when that is
      positive, else the control ("treat if CATE > cost", the best variant
      per unit); with ``share``, at most that share of the rows (of the
      weight) is treated, those with the largest predicted net effect (a
      budget; whole rows only, ties broken by row order).

    The result also holds treating no one and treating everyone with the
    single best variant, and the gains over both with paired standard errors.

    Parameters
    ----------
    %(scores)s
    policy : array-like of shape (n_samples,), optional
        An explicit assignment of variants (labels as in ``w``); ``tau`` is
        then not used and may be ``None``.
    share : float in (0, 1], optional
        Budget: the largest share of rows to treat.
    cost : float, sequence, dict or array, default=0.0
        Cost of each treated variant in outcome units: one number for all,
        one per treated variant, ``{variant: cost}``, or per row
        ``(n_samples, n_variants - 1)``.
    level : float, default=0.95

    Returns
    -------
    PolicyValue

    Raises
    ------
    ValueError
        If the policy treats no row (its value is then ``treat_none``).

    References
    ----------
    .. [1] Athey, S. and Wager, S. (2021). Policy learning with observational
       data. Econometrica 89(1), 133-161.
    .. [2] Zhou, Z., Athey, S. and Wager, S. (2023). Offline multi-action
       policy learning: generalization and optimization. Operations Research
       71(1), 148-183.

    Examples
    --------
    >>> import metalearn as ml
    >>> from metalearn.evaluation import policy_value
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> v = policy_value(sim.tau, sim.y, sim.w, propensity=0.5, cost=0.5)
    >>> bool(v.gain_over_none > 0), bool(v.gain_over_all > 0)
    (True, True)
    >>> top = policy_value(sim.tau, sim.y, sim.w, propensity=0.5, share=0.3)
    >>> round(top.share_treated, 2)
    0.3
    """
    level = _check_level(level)
    d = _design(
        y,
        w,
        propensity=propensity,
        mu=mu,
        control=control,
        sample_weight=sample_weight,
        backend_from=(tau, y, w),
    )
    z = _z(level)
    costs = _costs(cost, d)
    full_cost = np.zeros((d.n, len(d.variants)))
    full_cost[:, d.treated] = costs
    if policy is not None:
        if share is not None:
            raise ValueError("Pass either `policy` or `share`, not both: `share` builds a policy.")
        assign = encode_treatment(policy, d.n, d.variants, name="policy").codes
    else:
        t = _tau_matrix(tau, d)
        assign = _policy_from_effects(d, t - costs, share)
    rows = np.arange(d.n)
    treated = assign != d.control
    if not treated.any():
        raise ValueError(
            "The policy treats no row: every row gets the control, so its value is that of "
            "treating no one. Lower `cost`, raise `share`, or check `policy`."
        )
    net = d.pot - full_cost
    zv = net[rows, assign]
    none = net[:, d.control]
    est = float(np.sum(d.omega * zv))
    v_none = float(np.sum(d.omega * none))
    all_values = [float(np.sum(d.omega * net[:, k])) for k in d.treated]
    best_all = d.treated[int(np.argmax(all_values))]
    v_all = max(all_values)
    se = _ranking.linear_se(d.omega, zv, est)
    g_none = zv - none
    g_all = zv - net[:, best_all]
    se_none = _ranking.linear_se(d.omega, g_none, est - v_none)
    se_all = _ranking.linear_se(d.omega, g_all, est - v_all)
    return PolicyValue(
        estimate=est,
        std_error=se,
        ci_low=est - z * se,
        ci_high=est + z * se,
        p_value=_p(est - v_none, se_none),
        treat_none=v_none,
        treat_all=v_all,
        treat_all_variant=d.label(best_all),
        gain_over_none=est - v_none,
        gain_over_none_std_error=se_none,
        gain_over_all=est - v_all,
        gain_over_all_std_error=se_all,
        share_treated=float(np.sum(d.omega[treated])),
        control=d.control_label,
        level=level,
        method=d.method,
        n=d.n,
    )


def _policy_from_effects(d: _Design, net: np.ndarray, share: float | None) -> np.ndarray:
    best = np.argmax(net, axis=1)
    gain = net[np.arange(d.n), best]
    assign = np.where(gain > 0, np.asarray(d.treated)[best], d.control)
    if share is None:
        return assign
    if isinstance(share, bool) or not isinstance(share, float | int) or not 0 < share <= 1:
        raise ValueError(
            f"`share` must be a number in (0, 1], the largest share of rows to treat; got "
            f"{share!r}."
        )
    order = np.argsort(-gain, kind="stable")
    within = np.cumsum(d.omega[order]) <= share + 1e-12
    keep = np.zeros(d.n, dtype=bool)
    keep[order[within]] = True
    return np.where(keep, assign, d.control)


@fill_doc
def budget_curve(
    tau: Any,
    y: Any,
    w: Any,
    *,
    cost: Any = 0.0,
    shares: Any = None,
    propensity: Any = None,
    mu: Any = None,
    control: Any = None,
    sample_weight: Any = None,
    level: float = 0.95,
) -> Any:
    r"""Policy value against the share treated, with costs (a budget curve).

    For each share ``q`` the top ``q`` of the rows by predicted net effect
    :math:`\hat\tau_k - c_k` are treated (with variant ``k``, or each with
    its best predicted variant for ``"best"``) and the others get the
    control. The value per row, net of costs, is

    .. math:: V(q) = \sum_i \omega_i \big(\Gamma_{c,i}
       + \rho_i(q)(\Gamma_{k,i} - c_{k,i} - \Gamma_{c,i})\big),

    with the per-variant scores of :func:`policy_value` and the targeted part
    :math:`\rho_i(q)` of :func:`qini_curve`, which treats part of the row at the
    boundary, so :math:`V(q)` interpolates linearly between whole rows
    (``policy_value(share=q)`` treats whole rows only and may differ by that
    one row's contribution). ``q = 0`` is treating no one,
    ``q = 1`` treating everyone; the maximum shows the best budget. The line
    ``random`` treats a random ``q`` share (Imai and Li 2023 evaluate such
    budget-constrained rules in experiments).

    Parameters
    ----------
    %(scores)s
    cost : float, sequence, dict or array, default=0.0
        Cost of each treated variant (see :func:`policy_value`).
    shares : array-like, optional
        Shares treated, in [0, 1] (default: 0, 0.01, ..., 1).
    level : float, default=0.95

    Returns
    -------
    frame
        Columns ``variant``, ``control``, ``share``, ``n_treated``,
        ``threshold`` (predicted net effect at the cutoff), ``value``,
        ``std_error``, ``ci_low``, ``ci_high``, ``gain`` (value minus treating
        no one), ``gain_std_error``, ``random``.

    References
    ----------
    .. [1] Athey, S. and Wager, S. (2021). Policy learning with observational
       data. Econometrica 89(1), 133-161.
    .. [2] Imai, K. and Li, M. L. (2023). Experimental evaluation of
       individualized treatment rules. JASA 118(541), 242-256.

    Examples
    --------
    >>> import metalearn as ml
    >>> from metalearn.evaluation import budget_curve
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> curve = budget_curve(sim.tau, sim.y, sim.w, propensity=0.5, cost=0.5,
    ...                      shares=[0.0, 0.5, 1.0])
    >>> bool(curve["value"][1] > max(curve["value"][0], curve["value"][2]))
    True
    """
    d, t, level = _prepare(tau, y, w, propensity, mu, control, sample_weight, level)
    q = _check_shares(shares, positive=False)
    costs = _costs(cost, d)
    z = _z(level)
    names = (
        "variant",
        "control",
        "share",
        "n_treated",
        "threshold",
        "value",
        "std_error",
        "ci_low",
        "ci_high",
        "gain",
        "gain_std_error",
        "random",
    )
    cols: dict[str, list[Any]] = {k: [] for k in names}
    base = d.pot[:, d.control]
    v_none = float(np.sum(d.omega * base))
    for arm in _arms(d, t, costs):
        r = _ranking.rank(arm.key)
        value = _ranking.curve(r, d.omega, base, arm.gamma, q)
        gain = _ranking.curve(r, d.omega, np.zeros(d.n), arm.gamma, q)
        cols["variant"].extend([arm.label] * len(q))
        cols["control"].extend([d.control_label] * len(q))
        cols["share"].extend(q)
        cols["n_treated"].extend(np.rint(value.n_targeted).astype(np.int64))
        cols["threshold"].extend(value.threshold)
        cols["value"].extend(value.estimate)
        cols["std_error"].extend(value.std_error)
        cols["ci_low"].extend(value.estimate - z * value.std_error)
        cols["ci_high"].extend(value.estimate + z * value.std_error)
        cols["gain"].extend(gain.estimate)
        cols["gain_std_error"].extend(gain.std_error)
        cols["random"].extend(v_none + q * float(np.sum(d.omega * arm.gamma)))
    return _frame(d, cols)
