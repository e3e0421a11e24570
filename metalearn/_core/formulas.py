r"""The estimating formulas of the library, written once: AIPW scores, the R-loss, clipping.

Every learner, loss, scorer and average-effect estimator that divides by a
propensity or forms a doubly robust score calls these functions, so that
one question gets one answer. The module is pure NumPy and imports nothing
of :mod:`metalearn`.

Notation: ``n`` rows, ``K`` variants coded ``0..K-1`` (``w``), the control
``c``, outcome targets of width ``D`` (1 for a numeric or binary outcome,
the number of classes for class indicators), out-of-fold outcome
predictions :math:`\hat\mu_g(x) = E[Y \mid X=x, W=g]` of shape
``(n, K, D)`` and propensities :math:`\hat e_g(x) = P(W=g \mid X=x)` of
shape ``(n, K)``.

**The clip rule.** ``propensity_clip`` (and the ``clip`` of
:mod:`metalearn.ate`) has one meaning everywhere: each propensity that a
formula divides by is clipped to ``[lo, hi]`` on its own, with no
renormalisation: ``np.clip(e, lo, hi)``. A float ``c`` means
``[c, 1 - c]``, a pair ``(lo, hi)`` is used as given and ``None`` means no
clipping (``[0, 1]``). Every inverse-propensity weight is then at most
``1 / lo``, whatever the number of variants. The propensities clipped are

* each arm's :math:`\hat e_g` in the AIPW scores (DR-learner, DR-loss,
  :func:`metalearn.ate.aipw`, :func:`metalearn.ate.ipw`) and in the
  X-learner's blend weight;
* the pair propensity :math:`p = \hat e_k / (\hat e_k + \hat e_c)` in the
  R-learner and the R-loss (formed from the unclipped propensities, then
  clipped: it is the propensity of ``k`` within the pair). With two
  variants it is :math:`\hat e_k` itself, so both readings agree.

Where rows of ``e`` must remain a probability distribution (the
propensities stored in a :class:`~metalearn.scoring.ScoringNuisance`, which
are handed on to the evaluation functions and scored as a classifier's
predictions), the clipped rows are renormalised to sum to one for more than
two variants; an arm can then end slightly below ``lo`` (by a factor of at
most ``1 / (1 + (K - 1) lo)``).

The average effect's clip is separate from a CATE learner's on purpose:
clipping biases a mean by a first-order amount (it changes the estimand),
while for a CATE regression it trades a little bias for a large cut in the
variance of row-level pseudo-outcomes. Hence the DR-learner's default of
0.05 (tuned for its final-stage regression) and the 0.01 of
:mod:`metalearn.ate`. When a fitted learner is handed to
:func:`metalearn.ate.aipw`, its own clip is used unless ``clip`` is given,
so that ``aipw(X, y, w, learner=dr)`` and ``dr.ate()`` answer the same
question with the same numbers.

**Zero pair propensities.** Where :math:`\hat e_k + \hat e_c = 0` (both
propensities of a pair are 0, e.g. estimated by a tree or clipped with
``lo = 0``), the pair propensity is taken to be 1/2: the data say nothing
about ``k`` against ``c`` there, and 1/2 is the limit of clipping both arms
to the same floor. It is then clipped like any other (the R-learner's row
gets the weight :math:`(T - 1/2)^2 = 1/4`).

References
----------
.. [1] Robins, J. M., Rotnitzky, A. and Zhao, L. P. (1994). Estimation of
   regression coefficients when some regressors are not always observed.
   JASA 89(427), 846-866.
.. [2] Nie, X. and Wager, S. (2021). Quasi-oracle estimation of
   heterogeneous treatment effects. Biometrika 108(2), 299-319.
.. [3] Kennedy, E. H. (2023). Towards optimal doubly robust estimation of
   heterogeneous causal effects. Electronic Journal of Statistics 17(2),
   3008-3049.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "clip_bounds",
    "clip_propensity",
    "clip_distribution",
    "pair_propensity",
    "aipw_potential_outcomes",
    "aipw_scores",
    "aipw_att_terms",
    "r_residuals",
    "r_pseudo_outcome",
    "r_loss_terms",
    "weighted_mean",
]

#: Stand-in for a treatment residual of exactly 0 in the R-learner's pseudo-outcome.
R_RESIDUAL_FLOOR = 1e-12


# ------------------------------------------------------------------- clipping
def clip_bounds(clip: Any) -> tuple[float, float]:
    """The ``(lo, hi)`` bounds of a ``propensity_clip`` / ``clip`` setting.

    Parameters
    ----------
    clip : None, float or (float, float)
        ``None``: no clipping, ``(0, 1)``; a float ``c``: ``(c, 1 - c)``;
        a pair: as given. Not validated here (callers word their own errors).

    Returns
    -------
    (float, float)

    Examples
    --------
    >>> clip_bounds(0.05), clip_bounds((0.01, 0.9)), clip_bounds(None)
    ((0.05, 0.95), (0.01, 0.9), (0.0, 1.0))
    """
    if clip is None:
        return 0.0, 1.0
    if np.ndim(clip) == 0:
        return float(clip), 1.0 - float(clip)
    lo, hi = clip
    return float(lo), float(hi)


def clip_propensity(e: np.ndarray, clip: Any) -> np.ndarray:
    """Clip every propensity to ``[lo, hi]`` on its own (the library's clip rule).

    Parameters
    ----------
    e : ndarray
        Propensities of any shape: ``(n, K)`` per-arm, or ``(n,)`` pair ones.
    clip : None, float or (float, float)
        See :func:`clip_bounds`.

    Returns
    -------
    ndarray
        ``np.clip(e, lo, hi)``, not renormalised.

    Examples
    --------
    >>> clip_propensity(np.array([[0.001, 0.3, 0.699]]), 0.01).tolist()
    [[0.01, 0.3, 0.699]]
    """
    lo, hi = clip_bounds(clip)
    return np.clip(e, lo, hi)


def clip_distribution(e: np.ndarray, clip: Any) -> np.ndarray:
    """The clip rule for propensities stored as a distribution over ``K`` variants.

    Each propensity is clipped by :func:`clip_propensity`; with more than
    two variants the rows are then renormalised to sum to one. With two
    variants (and a symmetric clip) the clipped rows already sum to one.

    Parameters
    ----------
    e : ndarray of shape (n, K)
    clip : None, float or (float, float)

    Returns
    -------
    ndarray of shape (n, K)

    Examples
    --------
    >>> clip_distribution(np.array([[0.0, 0.5, 0.5]]), 0.2).round(4).tolist()
    [[0.1667, 0.4167, 0.4167]]
    """
    out = clip_propensity(e, clip)
    if out.shape[1] > 2:
        out = out / out.sum(axis=1, keepdims=True)
    return out


def pair_propensity(e: np.ndarray, k: int, c: int) -> np.ndarray:
    r"""Propensity of ``k`` within the pair ``{c, k}``: :math:`e_k / (e_k + e_c)`.

    Rows where :math:`e_k + e_c = 0` get 1/2 (see the module notes); no
    clipping is applied here.

    Parameters
    ----------
    e : ndarray of shape (n, K)
    k, c : int
        Treated variant and control.

    Returns
    -------
    ndarray of shape (n,)

    Examples
    --------
    >>> pair_propensity(np.array([[0.2, 0.6, 0.2], [1.0, 0.0, 0.0]]), 2, 1).tolist()
    [0.25, 0.5]
    """
    ek, ec = e[:, k], e[:, c]
    den = ek + ec
    zero = den == 0
    if not zero.any():
        return np.asarray(ek / den)
    return np.where(zero, 0.5, ek / np.where(zero, 1.0, den))


# ----------------------------------------------------------------------- AIPW
def _as_nkd(y: Any, mu: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """``y`` (n,) or (n, D) and ``mu`` (n, K) or (n, K, D) -> (n, D), (n, K, D), squeeze."""
    Y = np.asarray(y, dtype=np.float64)
    M = np.asarray(mu, dtype=np.float64)
    flat = M.ndim == 2
    if flat:
        M = M[:, :, None]
    if Y.ndim == 1:
        Y = Y[:, None]
    return Y, M, flat


def _correction(Y: np.ndarray, is_g: np.ndarray, mu_g: np.ndarray, e_g: np.ndarray) -> np.ndarray:
    """:math:`1\\{W=g\\}(Y - \\mu_g)/e_g`, 0 on other arms' rows even where ``e_g = 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(is_g[:, None], (Y - mu_g) / e_g[:, None], 0.0)


def aipw_potential_outcomes(y: Any, w: np.ndarray, mu: Any, e: np.ndarray) -> np.ndarray:
    r"""AIPW scores of every arm's mean outcome (Robins et al. 1994).

    .. math:: \Gamma_{g,i} = \hat\mu_g(X_i) + \frac{1\{W_i = g\}(Y_i - \hat\mu_g(X_i))}
              {\hat e_g(X_i)}

    Their mean estimates :math:`E[Y(g)]`; differences give the scores of
    :func:`aipw_scores`. ``mu = 0`` gives the inverse-propensity weighted
    outcomes. ``e`` is used as given (clip it first with
    :func:`clip_propensity`).

    Parameters
    ----------
    y : ndarray of shape (n,) or (n, D)
    w : ndarray of shape (n,)
        Variant codes.
    mu : ndarray of shape (n, K) or (n, K, D)
    e : ndarray of shape (n, K)

    Returns
    -------
    ndarray of the shape of ``mu``

    Examples
    --------
    >>> aipw_potential_outcomes([3.0, 1.0], np.array([1, 0]), np.array([[0.0, 2.0], [1.5, 2.0]]),
    ...                         np.full((2, 2), 0.5)).tolist()
    [[0.0, 4.0], [0.5, 2.0]]
    """
    Y, M, flat = _as_nkd(y, mu)
    out = np.empty_like(M)
    for g in range(M.shape[1]):
        out[:, g, :] = M[:, g, :] + _correction(Y, w == g, M[:, g, :], e[:, g])
    return out[:, :, 0] if flat else out


def aipw_scores(
    y: Any, w: np.ndarray, mu: Any, e: np.ndarray, treated: Sequence[int], control: int
) -> np.ndarray:
    r"""AIPW scores (DR pseudo-outcomes) of each treated variant against the control.

    .. math::
        \varphi_{k,i} = \hat\mu_k(X_i) - \hat\mu_c(X_i)
        + \frac{1\{W_i = k\}(Y_i - \hat\mu_k(X_i))}{\hat e_k(X_i)}
        - \frac{1\{W_i = c\}(Y_i - \hat\mu_c(X_i))}{\hat e_c(X_i)}

    The per-row influence scores of the AIPW estimator of the average effect
    (Robins et al. 1994) and the pseudo-outcomes of the DR-learner (Kennedy
    2023). ``e`` is used as given (clip it first with
    :func:`clip_propensity`); a row of another arm contributes no correction
    term even where its ``e`` is 0.

    Parameters
    ----------
    y : ndarray of shape (n,) or (n, D)
    w : ndarray of shape (n,)
        Variant codes.
    mu : ndarray of shape (n, K) or (n, K, D)
    e : ndarray of shape (n, K)
    treated : sequence of int
        Treated variant codes.
    control : int

    Returns
    -------
    ndarray of shape (n, len(treated), D), or (n, len(treated)) for a 2-D ``mu``

    Examples
    --------
    >>> aipw_scores([3.0, 1.0], np.array([1, 0]), np.array([[0.0, 2.0], [1.5, 2.0]]),
    ...             np.full((2, 2), 0.5), [1], 0).tolist()
    [[4.0], [1.5]]
    """
    Y, M, flat = _as_nkd(y, mu)
    c = control
    out = np.empty((Y.shape[0], len(treated), Y.shape[1]))
    corr_c = _correction(Y, w == c, M[:, c, :], e[:, c])
    for j, k in enumerate(treated):
        out[:, j, :] = (
            M[:, k, :] - M[:, c, :] + _correction(Y, w == k, M[:, k, :], e[:, k]) - corr_c
        )
    return out[:, :, 0] if flat else out


def aipw_att_terms(
    y: Any, w: np.ndarray, mu: Any, e: np.ndarray, k: int, c: int
) -> tuple[np.ndarray, np.ndarray]:
    r"""Numerator terms of the AIPW effect on the treated (Hahn 1998).

    .. math:: N_i = \big[1\{W_i = k\} - 1\{W_i = c\}\,\hat e_k(X_i)/\hat e_c(X_i)\big]
              \big(Y_i - \hat\mu_c(X_i)\big)

    The estimate is :math:`\sum_i N_i / \sum_i 1\{W_i = k\}` (weighted
    means under row weights), with influence values
    :math:`(N_i - 1\{W_i = k\}\hat\tau)/\hat P(W = k)`.

    Parameters
    ----------
    y : ndarray of shape (n,) or (n, D)
    w : ndarray of shape (n,)
    mu : ndarray of shape (n, K) or (n, K, D)
    e : ndarray of shape (n, K)
    k, c : int

    Returns
    -------
    num : ndarray of shape (n, D)
    is_k : ndarray of shape (n, 1)
        The indicator of ``k`` as floats.
    """
    Y, M, _ = _as_nkd(y, mu)
    is_k = (w == k)[:, None].astype(np.float64)
    is_c = (w == c)[:, None].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = np.where(is_c[:, 0] > 0, e[:, k] / e[:, c], 0.0)[:, None]
    return (is_k - is_c * odds) * (Y - M[:, c, :]), is_k


# --------------------------------------------------------------------- R-loss
def r_residuals(
    y: Any, treated: np.ndarray, m: Any, p: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r"""Outcome and treatment residuals of the R-loss: :math:`Y - \hat m` and :math:`T - \hat p`.

    Parameters
    ----------
    y : ndarray of shape (n,) or (n, D)
    treated : ndarray of shape (n,)
        :math:`T = 1\{W = k\}` (bool or 0/1).
    m : ndarray of the shape of ``y``
        Out-of-fold marginal outcome of the pair.
    p : ndarray of shape (n,)
        Clipped pair propensity (:func:`pair_propensity`, :func:`clip_propensity`).

    Returns
    -------
    y_res : ndarray of the shape of ``y``
    t_res : ndarray of shape (n,)

    Examples
    --------
    >>> [a.tolist() for a in r_residuals([2.0, 0.0], np.array([1, 0]), [1.0, 1.0],
    ...                                  np.array([0.25, 0.25]))]
    [[1.0, -1.0], [0.75, -0.25]]
    """
    y_res = np.asarray(y, dtype=np.float64) - np.asarray(m, dtype=np.float64)
    t_res = np.asarray(treated, dtype=np.float64) - p
    return y_res, t_res


def r_pseudo_outcome(y_res: np.ndarray, t_res: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""The R-learner's pseudo-outcome :math:`(Y - \hat m)/(T - \hat p)` and its weight.

    The weight is :math:`(T - \hat p)^2`.

    A weighted least-squares fit of the pseudo-outcome on :math:`X` with
    these weights minimises the R-loss of :func:`r_loss_terms` (Nie and
    Wager 2021). A treatment residual of exactly 0 (possible only with
    ``lo = 0`` or ``hi = 1``) is replaced by ``1e-12`` in the division; its
    weight stays 0.

    Parameters
    ----------
    y_res : ndarray of shape (n,) or (n, D)
    t_res : ndarray of shape (n,)

    Returns
    -------
    pseudo : ndarray of the shape of ``y_res``
    weight : ndarray of shape (n,)

    Examples
    --------
    >>> [a.tolist() for a in r_pseudo_outcome(np.array([1.0, -1.0]), np.array([0.5, -0.25]))]
    [[2.0, 4.0], [0.25, 0.0625]]
    """
    safe = np.where(t_res == 0, R_RESIDUAL_FLOOR, t_res)
    pseudo = y_res / (safe if y_res.ndim == 1 else safe[:, None])
    return pseudo, t_res**2


def r_loss_terms(y_res: np.ndarray, t_res: np.ndarray, tau: Any) -> np.ndarray:
    r"""Per-row R-loss :math:`[(Y_i - \hat m(X_i)) - \tau(X_i)(T_i - \hat p(X_i))]^2`.

    Summed over the ``D`` outcome columns for 2-D residuals (Nie and Wager
    2021); the R-loss is the (weighted) mean of the terms over the rows of
    the pair.

    Parameters
    ----------
    y_res : ndarray of shape (n,) or (n, D)
    t_res : ndarray of shape (n,)
    tau : ndarray of the shape of ``y_res``

    Returns
    -------
    ndarray of shape (n,)

    Examples
    --------
    >>> r_loss_terms(np.array([1.0, -1.0]), np.array([0.5, -0.5]), np.array([2.0, 4.0])).tolist()
    [0.0, 1.0]
    """
    t = np.asarray(tau, dtype=np.float64)
    if y_res.ndim == 1:
        return np.asarray((y_res - t * t_res) ** 2)
    return np.sum((y_res - t * t_res[:, None]) ** 2, axis=1)


# ----------------------------------------------------------------------- means
def weighted_mean(psi: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Mean of scores ``psi`` (n, ...) over the rows, weighted by ``weight`` if given.

    The point estimate that goes with
    :func:`metalearn._core.results.mean_std_error` (its standard error).

    Parameters
    ----------
    psi : ndarray of shape (n, ...)
    weight : ndarray of shape (n,), optional

    Returns
    -------
    ndarray of shape psi.shape[1:]

    Examples
    --------
    >>> weighted_mean(np.array([1.0, 3.0]), np.array([3.0, 1.0])).item()
    1.5
    """
    if weight is None:
        return np.asarray(psi.mean(axis=0))
    return np.asarray(np.tensordot(weight / weight.sum(), psi, axes=1))
