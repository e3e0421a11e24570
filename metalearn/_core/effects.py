"""The AIPW average effect from cross-fitted nuisances: one implementation.

:func:`metalearn.ate.aipw` and every learner's ``ate()`` call
:func:`aipw_effects`, so that the two agree by construction (trimming,
clipping, cluster-robust standard errors, the overlap warning).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from metalearn._core.data import Data
from metalearn._core.design import Design, check_no_extreme, clip_bounds, trim_mask
from metalearn._core.formulas import aipw_att_terms, aipw_scores, clip_propensity, weighted_mean
from metalearn._core.positivity import warn_overlap
from metalearn._core.results import AverageEffect, mean_std_error

__all__ = ["aipw_effects", "one_or_tuple"]


def aipw_effects(
    data: Data,
    mu: np.ndarray,
    e_raw: np.ndarray,
    *,
    control: int,
    clip: Any,
    trim: Any = None,
    estimand: str = "ATE",
    level: float = 0.95,
    where: str = "the AIPW estimate",
    stacklevel: int = 4,
) -> list[AverageEffect]:
    """AIPW effects of each treated variant against ``control`` (codes), one per variant.

    ``mu`` and ``e_raw`` are out-of-fold outcome predictions ``(n, K[, D])``
    and unclipped propensities ``(n, K)`` on the rows of ``data``; ``clip``
    is checked and applied per arm (the rule of
    :mod:`metalearn._core.formulas`); ``trim`` (``None``, ``"crump"`` or a
    pair) drops rows by the pairwise propensity before averaging. An
    :class:`~metalearn._core.positivity.OverlapWarning` reports poor overlap on
    the rows that are averaged.
    """
    design = Design(data=data, control=control, backend=None, has_X=False, has_y=False)
    lo, hi = clip_bounds(clip)
    e = clip_propensity(e_raw, (lo, hi))
    Y = data.target_matrix()
    sw = data.sample_weight
    g = data.groups
    cluster = "" if g is None else f", clustered by {int(g.max()) + 1} groups"
    out = []
    for k in design.treated:
        keep, _ = trim_mask(e_raw, design, k, trim)
        check_no_extreme(e, design, [control] if estimand == "ATT" else [k, control], keep)
        kept_w = keep if sw is None else keep * sw
        warn_overlap(
            data.w,
            design.label,
            control,
            [k],
            e_raw,
            where=where,
            bounds=(lo, hi),
            sample_weight=kept_w.astype(np.float64),
            stacklevel=stacklevel,
        )
        wt = None if sw is None else sw[keep]
        gk = None if g is None else g[keep]
        if estimand == "ATE":
            phi = aipw_scores(Y, data.w, mu, e, [k], control)[keep, 0, :]
            est = weighted_mean(phi, wt)
            se = mean_std_error(phi, wt, gk)
        else:
            num, is_k = aipw_att_terms(Y, data.w, mu, e, k, control)
            num, dk = num[keep], is_k[keep]
            pk = weighted_mean(dk[:, 0], wt)
            est = weighted_mean(num, wt) / pk
            psi = (num - dk * est) / pk
            se = mean_std_error(psi, wt, gk)
        out.append(
            AverageEffect.from_estimate(
                variant=design.label(k),
                control=design.label(control),
                estimate=est[0] if est.shape[0] == 1 else est,
                std_error=se[0] if se.shape[0] == 1 else se,
                method=f"AIPW ({estimand}){cluster}",
                n=int(keep.sum()),
                level=level,
            )
        )
    return out


def one_or_tuple(effects: list[Any]) -> Any:
    """One effect for two variants, a tuple of them (one per treated variant) for more."""
    return effects[0] if len(effects) == 1 else tuple(effects)
