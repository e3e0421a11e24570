"""Positivity (overlap): the one place that decides what is an error and what a warning.

An effect of variant ``k`` against the control ``c`` at ``x`` is identified
only where both can be received: ``0 < e_k(x), e_c(x)``. Estimators that
divide by propensities (IPW, AIPW, the DR-, R- and X-learners, policy values,
the R- and DR-losses) lean on a few huge weights where they are small, and
outcome models extrapolate where an arm has no rows. The rules:

**Errors** (the estimate would be undefined or meaningless):

- a *given* propensity outside the open interval ``(0, 1)``, or not finite
  (:func:`check_propensity_values`: one message everywhere);
- an arm whose rows all have weight zero, or all weights zero
  (:func:`check_arm_weights`).

**Warnings** (:class:`OverlapWarning`, the estimate exists but may be far
off; :func:`overlap_problems` lists them, :func:`warn_overlap` emits one
warning per call with every problem and the remedies):

- an arm with fewer than :data:`TINY_ARM` rows;
- propensities piled up at the clip bounds (or, unclipped, beyond
  :data:`EXTREME`): more than :data:`PILE_SHARE` of the pair's rows, and at
  least :data:`PILE_MIN` rows, lie at or beyond a bound, so their weights are
  set by the clip rather than by the data;
- the propensity model separates the arms: the AUC of the pairwise
  propensity between the arms is at least :data:`SEPARATION_AUC`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from metalearn._core.formulas import pair_propensity

__all__ = [
    "EXTREME",
    "PILE_MIN",
    "PILE_SHARE",
    "SEPARATION_AUC",
    "TINY_ARM",
    "OverlapWarning",
    "check_arm_weights",
    "check_propensity_values",
    "overlap_problems",
    "warn_overlap",
]

#: An arm with fewer rows than this gets an :class:`OverlapWarning`.
TINY_ARM = 30
#: Share of a pair's rows at or beyond a propensity bound above which the clip decides.
PILE_SHARE = 0.05
#: ... and the least number of such rows for a warning.
PILE_MIN = 10
#: Bounds used for the pile-up rule when the estimator does not clip.
EXTREME = 0.01
#: Rank AUC of the pairwise propensity between the arms from which they count as separated.
SEPARATION_AUC = 0.99

REMEDIES = (
    "Estimates there rest on extrapolation or on a few huge weights. Options: restrict to "
    "the region of overlap (`trim='crump'`, the rule of Crump et al. 2009, in "
    "`learner.ate` and `metalearn.ate`), change the estimand (ATT: `metalearn.ate.aipw(..., "
    "estimand='ATT')`), collect data where the arms overlap, or regularise the "
    "propensity model; `metalearn.diagnostics.overlap` shows the propensities by arm."
)


class OverlapWarning(UserWarning):
    """Poor overlap between treatment variants: an estimate that may be far off.

    Raised as a warning (never an error) by every estimator that reads
    propensities when an arm is tiny, when propensities pile up at the clip
    bounds, or when the propensity model separates the arms. The message
    says how many rows, which bound, and what to do. Silence it with
    ``warnings.simplefilter("ignore", metalearn.OverlapWarning)`` once you
    have looked.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 2))
    >>> w = (X[:, 0] > 0).astype(int)  # treatment decided by one feature
    >>> y = X[:, 0] + w + rng.normal(size=500)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = ml.ate.ipw(X, y, w, random_state=0)
    >>> any(issubclass(c.category, ml.OverlapWarning) for c in caught)
    True
    """


def check_propensity_values(p: np.ndarray, name: str = "propensity") -> None:
    """Raise unless every value of ``p`` is finite and strictly between 0 and 1."""
    p = np.asarray(p, dtype=np.float64)
    finite = np.isfinite(p)
    if finite.all() and (p > 0).all() and (p < 1).all():
        return
    rows = p.reshape(p.shape[0], -1) if p.ndim else p.reshape(1, 1)
    if not finite.all():
        bad = int((~np.isfinite(rows)).any(axis=1).sum())
        detail = f"{bad} row(s) hold NaN or infinite values"
    else:
        bad = int(((rows <= 0) | (rows >= 1)).any(axis=1).sum())
        detail = f"{bad} row(s) hold values <= 0 or >= 1 (min {p.min():.4g}, max {p.max():.4g})"
    raise ValueError(
        f"`{name}` values must lie strictly between 0 and 1; {detail}. A variant that a row "
        "can never (or must always) receive violates positivity: its effect is not identified "
        "there and inverse-propensity weights are infinite. Drop those rows or the impossible "
        "variant, or give the design's true assignment probabilities."
    )


def check_arm_weights(
    sample_weight: np.ndarray | None, w: np.ndarray, label: Callable[[int], Any], n_variants: int
) -> None:
    """Raise when all weights, or all weights of one arm, are zero."""
    if sample_weight is None:
        return
    if not np.any(sample_weight > 0):
        raise ValueError(
            "`sample_weight` is zero on every row: there is nothing to fit. Pass positive "
            "weights (or none)."
        )
    totals = np.bincount(w, weights=sample_weight, minlength=n_variants)
    for code in np.flatnonzero(totals <= 0):
        raise ValueError(
            f"`sample_weight` is zero on every row of variant {label(int(code))!r} "
            f"({int(np.sum(w == code))} rows): that arm carries no information, so no effect "
            "against it can be estimated. Give its rows positive weight, or drop the variant."
        )


def overlap_problems(
    w: np.ndarray,
    label: Callable[[int], Any],
    control: int,
    treated: Sequence[int],
    e: np.ndarray | None = None,
    *,
    bounds: tuple[float, float] | None = None,
    sample_weight: np.ndarray | None = None,
) -> list[str]:
    """The overlap problems of a design, one sentence each (empty when there are none).

    Parameters
    ----------
    w : ndarray of int codes
    label : callable mapping a code to the user's variant label
    control, treated : codes of the control and of the treated variants
    e : (n, K) propensities before clipping, or None (only the arm sizes are checked)
    bounds : the estimator's clip bounds; ``None`` or ``(0, 1)`` reads :data:`EXTREME`
    sample_weight : rows of weight zero do not count
    """
    rows = np.ones(w.shape[0], dtype=bool) if sample_weight is None else sample_weight > 0
    n = int(rows.sum())
    problems = []
    for code in [control, *treated]:
        count = int(np.sum(rows & (w == code)))
        if 0 < count < TINY_ARM:
            problems.append(
                f"variant {label(code)!r} has only {count} row(s) ({count / max(n, 1):.2%} of "
                f"{n}): its outcome model and propensities rest on very few rows"
            )
    if e is None:
        return problems
    lo, hi = (0.0, 1.0) if bounds is None else bounds
    lo = lo if lo > 0 else EXTREME  # unclipped: the pile-up rule reads EXTREME
    hi = hi if hi < 1 else 1.0 - EXTREME
    for k in treated:
        pair = rows & np.isin(w, [k, control])
        if not pair.any():
            continue
        q = e[pair, k] if e.shape[1] == 2 else pair_propensity(e[pair], k, control)
        is_k = w[pair] == k
        n_pair = int(pair.sum())
        low, high = int(np.sum(q <= lo)), int(np.sum(q >= hi))
        for count, where in ((low, f"at or below {lo:.4g}"), (high, f"at or above {hi:.4g}")):
            if count >= PILE_MIN and count > PILE_SHARE * n_pair:
                problems.append(
                    f"{count} of {n_pair} rows ({count / n_pair:.1%}) of {label(k)!r} vs "
                    f"{label(control)!r} have a propensity of {label(k)!r} {where}, the "
                    "clip bound: their weights are set by the clip, not by the data"
                )
        auc = float(roc_auc_score(is_k, q)) if 0 < is_k.sum() < is_k.size else 0.5
        if auc >= SEPARATION_AUC:
            problems.append(
                f"the propensity model separates {label(k)!r} from {label(control)!r} "
                f"(AUC {auc:.3f}): treatment is (almost) decided by the features, so the "
                "arms barely share covariate values"
            )
    return problems


def warn_overlap(
    w: np.ndarray,
    label: Callable[[int], Any],
    control: int,
    treated: Sequence[int],
    e: np.ndarray | None = None,
    *,
    where: str,
    bounds: tuple[float, float] | None = None,
    sample_weight: np.ndarray | None = None,
    stacklevel: int = 3,
) -> list[str]:
    """Emit one :class:`OverlapWarning` listing :func:`overlap_problems`; return them."""
    problems = overlap_problems(
        w, label, control, treated, e, bounds=bounds, sample_weight=sample_weight
    )
    if problems:
        warnings.warn(
            f"Poor overlap in {where}: " + "; ".join(problems) + ". " + REMEDIES,
            OverlapWarning,
            stacklevel=stacklevel,
        )
    return problems
