"""Checks to run before trusting an effect estimate: overlap and covariate balance.

:func:`overlap` estimates (or takes) the propensity of every variant and
reports how well the treated variants and the control overlap: the AUC of the
propensity (0.5 is a randomized experiment, 1 is no overlap at all), the
share of rows outside chosen bounds, the trimming bounds of Crump et al.
(2009) and per-variant summaries. :func:`balance_table` gives standardized
mean differences of every covariate, raw and after inverse-propensity and
overlap weighting, with the usual 0.1 rule flagged.

Every function takes pandas, Polars or numpy input and compares each
non-control variant with the control (``control=``; default ``0`` if present,
else the first variant in sorted order). Tables come back in the caller's
frame type (pandas in, pandas out; numpy in, Polars out).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from metalearn._core.design import (
    Design,
    clip_bounds,
    crump_alpha,
    design_with_propensity,
    estimate_propensity,
    frame_backend,
    pair_score,
    prepare_design,
    py,
)
from metalearn._core.formulas import clip_propensity
from metalearn._core.frames import to_1d_array, to_native_frame
from metalearn._core.results import TableRepr, frame_backend_of

__all__ = ["Overlap", "overlap", "balance_table"]

_QUANTILES = (0.01, 0.05, 0.5, 0.95, 0.99)


def _fmt_bounds(b: tuple[float, float]) -> str:
    return f"[{b[0]:.3g}, {b[1]:.3g}]"


@dataclass(frozen=True, repr=False)
class Overlap(TableRepr):
    """Overlap of the treated variants with the control, from :func:`overlap`.

    Scalars are floats for two variants and tuples (one entry per treated
    variant, in ``variants`` order) for more.

    Attributes
    ----------
    variants : tuple
        All variants, sorted; the columns of ``propensity``.
    control : object
        The control variant.
    propensity : ndarray of shape (n_samples, n_variants)
        Estimated (or given) ``P(W = k | X)`` for every row and variant.
    auc : float or tuple of float
        Area under the ROC curve of the pairwise score ``e_k / (e_k + e_c)``
        separating rows of variant ``k`` from control rows: 0.5 means the
        features do not predict the variant (as in a randomized experiment),
        values near 1 mean little overlap.
    bounds : tuple of float
        The bounds ``(low, high)`` that ``share_outside`` refers to.
    share_outside : float or tuple of float
        Share of the rows of ``k`` and the control whose pairwise score lies
        outside ``bounds``.
    suggested_bounds : tuple or tuple of tuples
        Trimming bounds ``(alpha, 1 - alpha)`` from the rule of Crump et al.
        (2009); ``(0.0, 1.0)`` when no trimming is needed.
    summary : DataFrame
        Per treated variant and per group (rows that received the control or
        the variant): count, mean, min, 1/5/50/95/99 % quantiles and max of the
        pairwise score.
    n : int
        Number of rows.
    method : str
        Where the propensities came from (``"cross-fitted (5 folds)"``,
        ``"in-sample"`` or ``"given"``).

    Examples
    --------
    >>> import metalearn as ml
    >>> sim = ml.datasets.simulate_confounded(n=2000, seed=0)
    >>> ov = ml.diagnostics.overlap(sim.X, sim.w, propensity=sim.propensity)
    >>> ov.variants, ov.control, ov.method, ov.propensity.shape
    ((0, 1), 0, 'given', (2000, 2))
    >>> ov.bounds, bool(0.5 < ov.auc < 0.9)
    ((0.1, 0.9), True)
    """

    variants: tuple[Any, ...]
    control: Any
    propensity: np.ndarray
    auc: Any
    bounds: tuple[float, float]
    share_outside: Any
    suggested_bounds: Any
    summary: Any
    n: int
    method: str

    def __repr__(self) -> str:
        treated = [v for v in self.variants if v != self.control]
        parts = []
        for j, v in enumerate(treated):
            auc = self.auc if len(treated) == 1 else self.auc[j]
            out = self.share_outside if len(treated) == 1 else self.share_outside[j]
            sb = self.suggested_bounds if len(treated) == 1 else self.suggested_bounds[j]
            parts.append(
                f"{v!r} vs {self.control!r}: AUC {auc:.4g}, {out:.1%} outside "
                f"{_fmt_bounds(self.bounds)}, suggested trim {_fmt_bounds(sb)}"
            )
        return f"Overlap({'; '.join(parts)}; propensity {self.method}, n={self.n})"

    def _summary_rows(self) -> list[dict[str, Any]]:
        """One row per treated variant (notebooks show it; ``summary`` is the score table)."""
        treated = [v for v in self.variants if v != self.control]
        one = len(treated) == 1
        rows = []
        for j, v in enumerate(treated):
            sb = self.suggested_bounds if one else self.suggested_bounds[j]
            rows.append(
                {
                    "variant": v,
                    "control": self.control,
                    "auc": self.auc if one else self.auc[j],
                    "share_outside": self.share_outside if one else self.share_outside[j],
                    "bounds": _fmt_bounds(self.bounds),
                    "suggested_bounds": _fmt_bounds(sb),
                    "method": self.method,
                    "n": self.n,
                }
            )
        return rows

    def _summary_backend(self) -> Any:
        return frame_backend_of(self.summary)


def _unwrap(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else tuple(values)


def overlap(
    X: Any,
    w: Any,
    *,
    propensity: Any = None,
    propensity_model: Any = None,
    n_folds: int | None = 5,
    bounds: float | tuple[float, float] = 0.1,
    extreme: float = 0.01,
    control: Any = None,
    random_state: int | None = None,
    n_jobs: int | None = None,
) -> Overlap:
    r"""Overlap (positivity) diagnostics of every treated variant against the control.

    The propensity :math:`e_k(x) = P(W = k \mid X = x)` of every variant is
    estimated by cross-fitting a classifier (each row predicted by the model
    fitted on the other folds), or taken as given. The contrast of variant
    :math:`k` with the control :math:`c` is judged on the pairwise score

    .. math:: q_k(x) = \frac{e_k(x)}{e_k(x) + e_c(x)},

    the propensity of :math:`k` among rows that received :math:`k` or
    :math:`c` (Lechner 2001); for two variants it is :math:`e_1(x)`.
    Reported are its AUC against the received variant, the share of rows
    outside ``bounds``, and the trimming bounds :math:`(\alpha, 1-\alpha)` of
    Crump et al. (2009): with :math:`g = 1/(q(1-q))`, :math:`\alpha = 0` if
    :math:`\max g \le 2 E[g]`, otherwise :math:`\alpha` solves
    :math:`\frac{1}{\alpha(1-\alpha)} = 2 E\left[g \mid g \le
    \frac{1}{\alpha(1-\alpha)}\right]`; keeping rows with
    :math:`\alpha \le q \le 1 - \alpha` minimises the variance of the
    efficient ATE estimator on the kept population.

    A :class:`UserWarning` is emitted when a pairwise score is below
    ``extreme`` or above ``1 - extreme`` (and says how many rows are exactly
    0 or 1: there, weighting estimators divide by zero).

    Parameters
    ----------
    X : DataFrame or array-like of shape (n_samples, n_features), or None
        Features (pandas, Polars or numpy). May be ``None`` when
        ``propensity`` is given.
    w : array-like of shape (n_samples,)
        Treatment variant of each row (ints, strings or categories).
    propensity : array-like, optional
        Given propensities instead of a model: a vector of
        ``P(W = variants[1])`` for two variants, or an array ``(n, K)`` with
        one column per variant in sorted order.
    propensity_model : classifier, default=None
        Classifier with ``predict_proba``; ``None`` means
        ``LGBMClassifier(verbose=-1)``.
    n_folds : int or None, default=5
        Cross-fitting folds, stratified by variant. ``None`` fits the model on
        all rows and predicts the same rows (in-sample, as most textbook
        recipes do; optimistic for flexible models).
    bounds : float or (float, float), default=0.1
        Bounds of the pairwise score for ``share_outside``; a float ``a``
        means ``(a, 1 - a)``.
    extreme : float, default=0.01
        Scores below ``extreme`` or above ``1 - extreme`` trigger a warning.
    control : object, default=None
        The reference variant; ``None`` means ``0`` if present, else the first
        variant in sorted order.
    random_state : int, default=None
        Seeds the folds and the propensity model.
    n_jobs : int, default=None
        Joblib workers for the fold fits.

    Returns
    -------
    Overlap
        AUC, share outside the bounds, suggested trimming bounds, the
        propensity matrix and a summary table in the caller's frame type.

    See Also
    --------
    balance_table : Standardized mean differences before and after weighting.
    metalearn.ate.ipw, metalearn.ate.aipw : Take ``trim=`` bounds.

    References
    ----------
    .. [1] Crump, R. K., Hotz, V. J., Imbens, G. W. and Mitnik, O. A. (2009).
       Dealing with limited overlap in estimation of average treatment
       effects. Biometrika 96(1), 187-199.
    .. [2] Lechner, M. (2001). Identification and estimation of causal effects
       of multiple treatments under the conditional independence assumption.
       In Econometric Evaluation of Labour Market Policies, 43-58. Physica.
    .. [3] Rosenbaum, P. R. and Rubin, D. B. (1983). The central role of the
       propensity score in observational studies for causal effects.
       Biometrika 70(1), 41-55.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LogisticRegression
    >>> sim = ml.datasets.simulate_confounded(n=2000, seed=0)
    >>> ov = ml.diagnostics.overlap(sim.X, sim.w, propensity_model=LogisticRegression(),
    ...                             random_state=0)
    >>> 0.6 < ov.auc < 0.9
    True
    >>> ov.summary.columns[:4]
    ['variant', 'control', 'group', 'n']
    """
    lo, hi = clip_bounds(bounds, name="bounds")
    if not 0.0 <= extreme < 0.5:
        raise ValueError(f"`extreme` must be a float in [0, 0.5); got {extreme!r}.")
    design, e, how = design_with_propensity(
        X,
        None,
        w,
        control=control,
        need_y=False,
        propensity=propensity,
        propensity_model=propensity_model,
        n_folds=n_folds,
        random_state=random_state,
        n_jobs=n_jobs,
    )
    c = design.control
    aucs, outside, suggested = [], [], []
    table: dict[str, list[Any]] = {
        k: [] for k in ("variant", "control", "group", "n", "mean", "min")
    }
    for qq in _QUANTILES:
        table[f"p{round(qq * 100):02d}"] = []
    table["max"] = []
    for k in design.treated:
        pair = np.isin(design.w, [k, c])
        q = pair_score(e, k, c)[pair]
        is_k = design.w[pair] == k
        aucs.append(float(roc_auc_score(is_k, q)))
        outside.append(float(np.mean((q < lo) | (q > hi))))
        a = crump_alpha(q)
        suggested.append((a, 1.0 - a))
        for code, mask in ((c, ~is_k), (k, is_k)):
            vals = q[mask]
            table["variant"].append(design.label(k))
            table["control"].append(design.label(c))
            table["group"].append(design.label(code))
            table["n"].append(int(vals.size))
            table["mean"].append(float(vals.mean()))
            table["min"].append(float(vals.min()))
            for qq, v in zip(_QUANTILES, np.quantile(vals, _QUANTILES), strict=True):
                table[f"p{round(qq * 100):02d}"].append(float(v))
            table["max"].append(float(vals.max()))
        n_extreme = int(np.sum((q < extreme) | (q > 1.0 - extreme)))
        if n_extreme:
            exact = int(np.sum((q <= 0.0) | (q >= 1.0)))
            # The Crump bounds can keep the flagged rows (when most rows are extreme their
            # rule trims almost nothing); then suggest bounds that drop them.
            bounds = suggested[-1] if suggested[-1][0] >= extreme else (extreme, 1 - extreme)
            warnings.warn(
                f"{n_extreme} row(s) of {design.label(k)!r} and {design.label(c)!r} have a "
                f"pairwise propensity below {extreme} or above {1 - extreme} ({exact} exactly 0 "
                "or 1): inverse-propensity weights there are huge or infinite. Trim them "
                f"(e.g. `trim={_fmt_bounds(bounds)}` in metalearn.ate), clip the "
                "propensities, or drop features that determine the treatment.",
                UserWarning,
                stacklevel=2,
            )
    columns = {
        name: _plain(np.asarray(vals, dtype=object))
        if name in ("variant", "control", "group")
        else np.asarray(vals)
        for name, vals in table.items()
    }
    return Overlap(
        variants=tuple(py(v) for v in design.variants),
        control=design.label(c),
        propensity=e,
        auc=_unwrap(aucs),
        bounds=(lo, hi),
        share_outside=_unwrap(outside),
        suggested_bounds=_unwrap(suggested),
        summary=to_native_frame(columns, design.backend),
        n=design.n,
        method=how,
    )


def _plain(values: np.ndarray) -> np.ndarray:
    """Object arrays of labels -> a plain dtype when the labels share one type."""
    if values.dtype != object:
        return values
    kinds = {type(v) for v in values}
    if len(kinds) == 1:
        return np.asarray(values.tolist())
    return values.astype(str)


# ---------------------------------------------------------------------- balance
def _smd(
    x: np.ndarray,
    in_k: np.ndarray,
    in_c: np.ndarray,
    weight: np.ndarray | None,
    denominator: str,
) -> float:
    """Standardized mean difference of ``x`` between two groups (see balance_table)."""
    ok = np.isfinite(x)
    a, b = x[in_k & ok], x[in_c & ok]
    if a.size < 2 or b.size < 2:
        return float("nan")
    raw_var = 0.5 * (a.var(ddof=1) + b.var(ddof=1))
    if weight is None:
        diff, pooled = a.mean() - b.mean(), raw_var
    else:
        wa, wb = weight[in_k & ok], weight[in_c & ok]
        if wa.sum() <= 0 or wb.sum() <= 0:
            return float("nan")
        ma, mb = np.average(a, weights=wa), np.average(b, weights=wb)
        diff = ma - mb
        if denominator == "raw":
            pooled = raw_var
        else:
            va = np.average((a - ma) ** 2, weights=wa)
            vb = np.average((b - mb) ** 2, weights=wb)
            pooled = 0.5 * (va + vb)
    if pooled <= 0:
        return 0.0 if abs(diff) < 1e-12 else float(np.sign(diff) * np.inf)
    return float(diff / np.sqrt(pooled))


def _covariates(design: Design) -> list[tuple[str, np.ndarray]]:
    """Numeric columns as they are; categorical columns as one indicator per category."""
    assert design.X is not None and design.schema is not None
    names = design.schema.output_names()
    out: list[tuple[str, np.ndarray]] = []
    for j, name in enumerate(names):
        col = design.X[:, j]
        cats = design.schema.categories.get(j)
        if cats is None:
            out.append((name, col))
            continue
        for code, cat in enumerate(cats.tolist()):
            ind = np.where(np.isnan(col), np.nan, (col == code).astype(np.float64))
            out.append((f"{name}={cat}", ind))
    return out


def balance_table(
    X: Any,
    w: Any,
    *,
    propensity: Any = None,
    propensity_model: Any = None,
    weighting: tuple[str, ...] | list[str] = ("ipw", "overlap"),
    weights: Any = None,
    estimand: str = "ATE",
    clip: float | tuple[float, float] | None = 0.01,
    threshold: float = 0.1,
    denominator: str = "weighted",
    n_folds: int | None = 5,
    control: Any = None,
    random_state: int | None = None,
    n_jobs: int | None = None,
) -> Any:
    r"""Standardized mean differences of every covariate, raw and after weighting.

    For a covariate :math:`x`, a treated variant :math:`k` and the control
    :math:`c`,

    .. math::
        \mathrm{SMD} = \frac{\bar x_k - \bar x_c}{\sqrt{(s_k^2 + s_c^2)/2}},

    with sample means and variances (``ddof=1``) for the raw column. A
    weighted column uses weighted means :math:`\bar x_g = \sum_{i \in g} w_i
    x_i / \sum_{i \in g} w_i` and, with ``denominator="weighted"``, weighted
    variances :math:`s_g^2 = \sum_{i \in g} w_i (x_i - \bar x_g)^2 /
    \sum_{i \in g} w_i`; with ``denominator="raw"`` the raw pooled standard
    deviation, so that the column shows the change of the mean difference
    only (Stuart 2010). Weights:

    * ``"ipw"``: inverse propensity of the received variant,
      :math:`1/e_{W_i}(X_i)` for the ATE, or (``estimand="ATT"``) 1 for
      rows of :math:`k` and :math:`e_k/e_c` for control rows, with
      propensities clipped to ``clip``. Stabilising the weights (multiplying
      by the share of the variant) changes neither means nor variances.
    * ``"overlap"``: the (generalised) overlap weights
      :math:`h(X_i)/e_{W_i}(X_i)` with :math:`h = 1/\sum_k 1/e_k`, which is
      :math:`1 - e` for treated and :math:`e` for control rows with two
      variants (Li, Morgan and Zaslavsky 2018; Li and Li 2019). With a
      logistic propensity model fitted in-sample they balance every
      covariate's mean exactly.
    * ``weights``: any user weights, e.g. ``MatchingEffect.weights``.

    ``|SMD| < threshold`` (0.1 by default, Austin 2009) counts as balanced.
    Categorical columns are expanded into one indicator per category
    (``"column=category"``); missing values are left out of each column.

    Parameters
    ----------
    X : DataFrame or array-like of shape (n_samples, n_features)
        The covariates to check (pandas, Polars or numpy).
    w : array-like of shape (n_samples,)
        Treatment variant of each row.
    propensity : array-like, optional
        Given propensities (vector of ``P(W = variants[1])`` for two variants,
        or ``(n, K)``), instead of ``propensity_model``.
    propensity_model : classifier, default=None
        Estimates the propensities when ``weighting`` is not empty and
        ``propensity`` is not given; ``None`` means
        ``LGBMClassifier(verbose=-1)``.
    weighting : sequence of {"ipw", "overlap"}, default=("ipw", "overlap")
        Weighted columns to add. ``()`` gives the raw table and fits no model.
    weights : array-like of shape (n_samples,), optional
        Extra user weights, reported as ``smd_weighted``.
    estimand : {"ATE", "ATT"}, default="ATE"
        Target of the ``"ipw"`` weights.
    clip : float, (float, float) or None, default=0.01
        Propensities are clipped to ``[clip, 1 - clip]`` for the IPW weights.
    threshold : float, default=0.1
        Balance threshold on ``|SMD|``.
    denominator : {"weighted", "raw"}, default="weighted"
        Standard deviation of the weighted columns, see above.
    n_folds : int or None, default=5
        Cross-fitting folds of the propensity model (``None``: in-sample).
    control : object, default=None
        The reference variant.
    random_state : int, default=None
        Seeds the folds and the propensity model.
    n_jobs : int, default=None
        Joblib workers.

    Returns
    -------
    DataFrame
        One row per covariate and treated variant: ``covariate``,
        ``variant``, ``control``, ``mean_variant``, ``mean_control``,
        ``smd_raw``, ``smd_<weighting>`` and a boolean ``balanced_<...>``
        column for each SMD column; pandas for pandas input, else Polars.

    References
    ----------
    .. [1] Austin, P. C. (2009). Balance diagnostics for comparing the
       distribution of baseline covariates between treatment groups in
       propensity-score matched samples. Statistics in Medicine 28(25),
       3083-3107.
    .. [2] Austin, P. C. and Stuart, E. A. (2015). Moving towards best
       practice when using inverse probability of treatment weighting (IPTW)
       using the propensity score to estimate causal treatment effects in
       observational studies. Statistics in Medicine 34(28), 3661-3679.
    .. [3] Li, F., Morgan, K. L. and Zaslavsky, A. M. (2018). Balancing
       covariates via propensity score weighting. JASA 113(521), 390-400.
    .. [4] Li, F. and Li, F. (2019). Propensity score weighting for causal
       inference with multiple treatments. Annals of Applied Statistics
       13(4), 2389-2415.
    .. [5] Stuart, E. A. (2010). Matching methods for causal inference: a
       review and a look forward. Statistical Science 25(1), 1-21.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LogisticRegression
    >>> sim = ml.datasets.simulate_confounded(n=2000, seed=0)
    >>> table = ml.diagnostics.balance_table(sim.X, sim.w, n_folds=None,
    ...                                      propensity_model=LogisticRegression())
    >>> bool(abs(table["smd_raw"][0]) > 0.3), bool(table["balanced_overlap"].all())
    (True, True)
    """
    kinds = tuple(weighting)
    unknown = [k for k in kinds if k not in ("ipw", "overlap")]
    if unknown:
        raise ValueError(
            f"`weighting` entries must be 'ipw' or 'overlap'; got {unknown}. Pass () for the "
            "raw table only."
        )
    if estimand not in ("ATE", "ATT"):
        raise ValueError(f"`estimand` must be 'ATE' or 'ATT'; got {estimand!r}.")
    if denominator not in ("weighted", "raw"):
        raise ValueError(f"`denominator` must be 'weighted' or 'raw'; got {denominator!r}.")
    if not threshold > 0:
        raise ValueError(f"`threshold` must be a positive number; got {threshold!r}.")
    design = prepare_design(X, None, w, control=control, need_X=True, need_y=False)
    lo, hi = clip_bounds(clip)
    e = None
    if kinds:
        e, _ = estimate_propensity(
            design,
            propensity=propensity,
            propensity_model=propensity_model,
            n_folds=n_folds,
            random_state=random_state,
            n_jobs=n_jobs,
        )
    user_w = None
    if weights is not None:
        user_w = np.asarray(to_1d_array(weights, name="weights"), dtype=np.float64)
        if len(user_w) != design.n:
            raise ValueError(f"`weights` has {len(user_w)} entries but `X` has {design.n} rows.")
        if not np.all(np.isfinite(user_w)) or (user_w < 0).any():
            raise ValueError("`weights` must be finite and non-negative.")
    covs = _covariates(design)
    c = design.control
    cols: dict[str, list[Any]] = {
        "covariate": [],
        "variant": [],
        "control": [],
        "mean_variant": [],
        "mean_control": [],
        "smd_raw": [],
    }
    weight_sets: dict[str, np.ndarray] = {}
    for k in design.treated:
        if e is not None:
            ec = clip_propensity(e, (lo, hi))
            rows = np.arange(design.n)
            own = ec[rows, design.w]
            if "ipw" in kinds:
                if estimand == "ATE":
                    weight_sets["ipw"] = 1.0 / own
                else:
                    weight_sets["ipw"] = np.where(design.w == k, 1.0, ec[:, k] / ec[:, c])
            if "overlap" in kinds:
                h = 1.0 / np.sum(1.0 / ec, axis=1)
                weight_sets["overlap"] = h / own
        if user_w is not None:
            weight_sets["weighted"] = user_w
        in_k, in_c = design.w == k, design.w == c
        for name, x in covs:
            cols["covariate"].append(name)
            cols["variant"].append(design.label(k))
            cols["control"].append(design.label(c))
            ok = np.isfinite(x)
            cols["mean_variant"].append(
                float(np.mean(x[in_k & ok])) if np.any(in_k & ok) else np.nan
            )
            cols["mean_control"].append(
                float(np.mean(x[in_c & ok])) if np.any(in_c & ok) else np.nan
            )
            cols["smd_raw"].append(_smd(x, in_k, in_c, None, denominator))
            for kind, wt in weight_sets.items():
                cols.setdefault(f"smd_{kind}", []).append(_smd(x, in_k, in_c, wt, denominator))
    smd_names = [name for name in cols if name.startswith("smd_")]
    out: dict[str, np.ndarray] = {}
    for name, vals in cols.items():
        if name in ("covariate", "variant", "control"):
            out[name] = _plain(np.asarray(vals, dtype=object))
        else:
            out[name] = np.asarray(vals, dtype=np.float64)
    for name in smd_names:
        out["balanced_" + name[4:]] = np.abs(out[name]) < threshold
    return to_native_frame(out, frame_backend(X, w))
