"""Figures of the diagnostics and evaluations, drawn with matplotlib (an optional extra).

One function per figure. Each takes the output of the metalearn function
that computes it (a result object or a table, pandas or Polars), draws on
``ax`` when given (else on a new figure) and returns the matplotlib
``Axes`` (a ``Figure`` where one panel per treated variant is drawn):

==========================  ===============================================
:func:`overlap`             propensity histograms of each treated variant
                            and the control (:func:`metalearn.diagnostics.overlap`)
:func:`balance`             love plot of standardized mean differences
                            (:func:`metalearn.diagnostics.balance_table`)
:func:`cate_distribution`   histogram of predicted effects per variant
:func:`uplift_curve`        uplift curve with the random-targeting line
                            (:func:`metalearn.evaluation.uplift_curve`)
:func:`qini_curve`          Qini (gain) curve with the random-targeting line
                            (:func:`metalearn.evaluation.qini_curve`)
:func:`calibration`         GATES by quantile group against the prediction
                            (:func:`metalearn.evaluation.calibration_table`)
:func:`budget_curve`        policy value against the share treated
                            (:func:`metalearn.evaluation.budget_curve`)
==========================  ===============================================

matplotlib is imported when a figure is drawn, not with :mod:`metalearn`;
install it with ``pip install "metalearn[plot]"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import narwhals.stable.v2 as nw
import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "overlap",
    "balance",
    "cate_distribution",
    "uplift_curve",
    "qini_curve",
    "calibration",
    "budget_curve",
]

_SMD_LABELS = {
    "raw": "unweighted",
    "ipw": "IPW",
    "overlap": "overlap weights",
    "weighted": "given weights",
}


# ------------------------------------------------------------------ helpers
def _pyplot() -> Any:
    """Import ``matplotlib.pyplot`` or say how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "metalearn.plotting needs matplotlib, which is not installed. Install it with "
            '`pip install "metalearn[plot]"` (or `pip install matplotlib`).'
        ) from exc
    return plt


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = (6.0, 4.0)) -> Axes:
    if ax is not None:
        return ax
    _, new = _pyplot().subplots(figsize=figsize)
    return new


def _table(table: Any, required: Sequence[str], producer: str) -> dict[str, np.ndarray]:
    """The columns of a pandas/Polars table as numpy arrays, checking that they exist."""
    obj = nw.from_native(table, pass_through=True, eager_only=True)
    if not isinstance(obj, nw.DataFrame):
        raise TypeError(
            f"Expected the table returned by {producer} (a pandas or Polars DataFrame); "
            f"got {type(table).__name__}."
        )
    missing = [c for c in required if c not in obj.columns]
    if missing:
        raise ValueError(
            f"The table lacks the column(s) {missing}; pass the table returned by {producer} "
            f"(its columns are {list(obj.columns)})."
        )
    return {name: obj.get_column(name).to_numpy() for name in obj.columns}


def _variants(cols: dict[str, np.ndarray], variant: Any, *, single: bool = False) -> list[str]:
    """The variants to draw (as strings, in order of appearance), checking ``variant``."""
    labels = cols["variant"].astype(str)
    present = list(dict.fromkeys(labels.tolist()))
    if variant is not None:
        if str(variant) not in present:
            raise ValueError(f"`variant`={variant!r} is not in the table; it holds {present}.")
        return [str(variant)]
    if single and len(present) > 1:
        raise ValueError(
            f"The table compares several variants with the control ({present}); choose one "
            "with `variant=`."
        )
    return present


def _control(cols: dict[str, np.ndarray], mask: np.ndarray) -> str:
    return str(cols["control"][mask][0]) if "control" in cols else "control"


# ------------------------------------------------------------------ overlap
def overlap(
    propensity: Any,
    w: Any,
    *,
    control: Any = None,
    bins: int = 30,
    bounds: tuple[float, float] | None = None,
    ax: Axes | Sequence[Axes] | None = None,
) -> Axes | Figure:
    r"""Histograms of the propensity in the control and in each treated variant.

    For each treated variant :math:`k` the pairwise score
    :math:`e_k(x) / (e_k(x) + e_c(x))` (the propensity :math:`e_1(x)` itself
    with two variants) is drawn for the rows that received :math:`k` and the
    rows that received the control :math:`c`, as overlaid density
    histograms. Where one group has mass and the other none, effects rest on
    extrapolation.

    Parameters
    ----------
    propensity : Overlap or array-like
        The result of :func:`metalearn.diagnostics.overlap` (its propensity
        matrix, variants, control and bounds are used), or given
        propensities: a vector of ``P(W = variants[1])`` for two variants,
        or an array ``(n_samples, n_variants)`` with one column per variant
        in sorted order.
    w : array-like of shape (n_samples,)
        Treatment variant of each row (the ``w`` passed to ``overlap``).
    control : object, default=None
        The control variant for array input (default ``0`` if present, else
        the first variant in sorted order); taken from an ``Overlap``.
    bins : int, default=30
        Number of bins over [0, 1].
    bounds : (float, float), optional
        Draw dashed lines at these bounds of the score; default the
        ``bounds`` of an ``Overlap`` input, none for array input.
    ax : Axes or sequence of Axes, optional
        Where to draw: one Axes per treated variant. By default a new figure.

    Returns
    -------
    Axes or Figure
        The Axes with two variants; the Figure holding one Axes per treated
        variant with more.

    See Also
    --------
    metalearn.diagnostics.overlap : The numbers behind the figure.

    References
    ----------
    .. [1] Crump, R. K., Hotz, V. J., Imbens, G. W. and Mitnik, O. A. (2009).
       Dealing with limited overlap in estimation of average treatment
       effects. Biometrika 96(1), 187-199.

    Examples
    --------
    >>> import metalearn as ml
    >>> import metalearn.plotting
    >>> sim = ml.datasets.simulate_confounded(n=1000, seed=0)
    >>> ax = ml.plotting.overlap(sim.propensity, sim.w)
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['0 (control)', '1']
    """
    from metalearn._core.design import as_propensity_matrix, pair_score, prepare_design
    from metalearn.diagnostics import Overlap

    if not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"`bins` must be a positive integer; got {bins!r}.")
    if isinstance(propensity, Overlap):
        design = prepare_design(
            None, None, w, control=propensity.control, need_X=False, need_y=False
        )
        if [design.label(k) for k in range(design.n_variants)] != list(propensity.variants):
            raise ValueError(
                f"`w` holds the variants {[design.label(k) for k in range(design.n_variants)]} "
                f"but the Overlap result was computed for {list(propensity.variants)}; pass the "
                "`w` given to metalearn.diagnostics.overlap."
            )
        if propensity.propensity.shape[0] != design.n:
            raise ValueError(
                f"`w` has {design.n} rows but the Overlap result has "
                f"{propensity.propensity.shape[0]}; pass the `w` given to "
                "metalearn.diagnostics.overlap."
            )
        e = propensity.propensity
        if bounds is None:
            bounds = propensity.bounds
    else:
        design = prepare_design(None, None, w, control=control, need_X=False, need_y=False)
        e = as_propensity_matrix(propensity, design.n, design.n_variants)
    treated = design.treated
    plt = _pyplot()
    fig: Any
    if ax is None:
        fig, grid = plt.subplots(1, len(treated), figsize=(5.0 * len(treated), 3.8), squeeze=False)
        axes = list(grid[0])
    else:
        axes = (
            [ax]
            if not isinstance(ax, Sequence | np.ndarray)
            else list(np.ravel(np.asarray(ax, dtype=object)))
        )
        if len(axes) != len(treated):
            raise ValueError(
                f"`ax` must hold one Axes per treated variant ({len(treated)}); got {len(axes)}."
            )
        fig = axes[0].figure
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    c = design.control
    c_label = design.label(c)
    for a, k in zip(axes, treated, strict=True):
        q = pair_score(e, k, c)
        k_label = design.label(k)
        a.hist(q[design.w == c], bins=edges, density=True, alpha=0.5, label=f"{c_label} (control)")
        a.hist(q[design.w == k], bins=edges, density=True, alpha=0.5, label=str(k_label))
        if bounds is not None:
            for j, b in enumerate(bounds):
                a.axvline(
                    float(b),
                    color="grey",
                    linestyle="--",
                    linewidth=1,
                    label="bounds" if j == 0 else None,
                )
        if design.n_variants == 2:
            a.set_xlabel(f"propensity P(W = {k_label} | X)")
        else:
            a.set_xlabel(f"pairwise propensity of {k_label} vs {c_label}")
        a.set_ylabel("density")
        a.set_title(f"Overlap: {k_label} vs {c_label}")
        a.set_xlim(0.0, 1.0)
        a.legend()
    return axes[0] if len(axes) == 1 else fig


# ------------------------------------------------------------------ balance
def balance(
    table: Any,
    *,
    variant: Any = None,
    threshold: float = 0.1,
    absolute: bool = True,
    ax: Axes | None = None,
) -> Axes:
    """Love plot: standardized mean difference of every covariate, raw and weighted.

    One row per covariate (the most imbalanced before weighting on top), one
    marker series per SMD column of the table (``smd_raw``, ``smd_ipw``,
    ``smd_overlap``, ``smd_weighted``) and dashed lines at ``threshold``.

    Parameters
    ----------
    table : DataFrame
        The table returned by :func:`metalearn.diagnostics.balance_table`.
    variant : object, optional
        The treated variant to show; required when the table compares several.
    threshold : float, default=0.1
        Balance threshold drawn as a dashed line (Austin 2009).
    absolute : bool, default=True
        Plot ``|SMD|`` (else the signed SMD, with lines at ``+-threshold``).
    ax : Axes, optional
        Where to draw; by default a new figure sized to the number of covariates.

    Returns
    -------
    Axes

    References
    ----------
    .. [1] Austin, P. C. (2009). Balance diagnostics for comparing the
       distribution of baseline covariates between treatment groups in
       propensity-score matched samples. Statistics in Medicine 28(25),
       3083-3107.

    Examples
    --------
    >>> import metalearn as ml
    >>> import metalearn.plotting
    >>> sim = ml.datasets.simulate_confounded(n=1000, seed=0)
    >>> table = ml.diagnostics.balance_table(sim.X, sim.w, propensity=sim.propensity)
    >>> ax = ml.plotting.balance(table)
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['unweighted', 'IPW', 'overlap weights', '|SMD| = 0.1']
    """
    cols = _table(table, ("covariate", "variant", "smd_raw"), "balance_table")
    if not threshold > 0:
        raise ValueError(f"`threshold` must be a positive number; got {threshold!r}.")
    (v,) = _variants(cols, variant, single=True)
    mask = cols["variant"].astype(str) == v
    smd_names = [name for name in cols if name.startswith("smd_")]
    raw = np.asarray(cols["smd_raw"][mask], dtype=np.float64)
    order = np.argsort(np.nan_to_num(np.abs(raw), nan=-1.0), kind="stable")
    covariates = cols["covariate"][mask].astype(str)[order]
    n = len(covariates)
    ax = _new_axes(ax, figsize=(6.0, max(3.0, 0.3 * n + 1.2)))
    y = np.arange(n)
    markers = ("o", "s", "^", "D", "v")
    for j, name in enumerate(smd_names):
        vals = np.asarray(cols[name][mask], dtype=np.float64)[order]
        if absolute:
            vals = np.abs(vals)
        kind = name[len("smd_") :]
        ax.plot(
            vals,
            y,
            linestyle="none",
            marker=markers[j % len(markers)],
            label=_SMD_LABELS.get(kind, kind),
        )
    label = f"|SMD| = {threshold:g}"
    ax.axvline(threshold, color="grey", linestyle="--", linewidth=1, label=label)
    if not absolute:
        ax.axvline(-threshold, color="grey", linestyle="--", linewidth=1)
        ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels(covariates)
    ax.set_ylim(-0.5, n - 0.5)
    ax.set_xlabel(
        "absolute standardized mean difference" if absolute else "standardized mean difference"
    )
    ax.set_title(f"Covariate balance: {v} vs {_control(cols, mask)}")
    ax.legend()
    return ax


# ------------------------------------------------------- effect distribution
def cate_distribution(
    tau: Any,
    *,
    labels: Sequence[str] | None = None,
    bins: int = 30,
    ax: Axes | None = None,
) -> Axes:
    """Histogram of the predicted effects, one per treated variant, with a line at zero.

    Parameters
    ----------
    tau : array-like of shape (n_samples,) or (n_samples, n_variants - 1), or DataFrame
        Predicted effects, e.g. from ``learner.fit_predict`` or
        ``learner.predict_frame`` (whose column names become the labels).
    labels : sequence of str, optional
        One label per column; default the frame's column names, ``"effect"``
        for a vector, ``"effect 1"``, ``"effect 2"``, ... for an array.
    bins : int, default=30
        Number of bins, shared by all histograms.
    ax : Axes, optional
        Where to draw; by default a new figure.

    Returns
    -------
    Axes

    Examples
    --------
    >>> import metalearn as ml
    >>> import metalearn.plotting
    >>> sim = ml.datasets.simulate_multiarm(n=1000, seed=0)
    >>> ax = ml.plotting.cate_distribution(sim.tau, labels=["1 vs 0", "2 vs 0"])
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['1 vs 0', '2 vs 0']
    """
    obj = nw.from_native(tau, pass_through=True, eager_only=True, allow_series=True)
    names: list[str]
    if isinstance(obj, nw.DataFrame):
        names = list(obj.columns)
        values = np.column_stack([obj.get_column(c).to_numpy() for c in names])
    elif isinstance(obj, nw.Series):
        names = [obj.name or "effect"]
        values = obj.to_numpy()
    else:
        values = np.asarray(tau)
        names = []
    try:
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"`tau` must hold numbers; got dtype {np.asarray(values).dtype}.") from exc
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(
            f"`tau` must have shape (n,) or (n, n_variants - 1); got {values.shape}. For a "
            "multi-class outcome pick one class, e.g. `tau[..., 1]`."
        )
    if labels is not None:
        names = [str(s) for s in labels]
        if len(names) != values.shape[1]:
            raise ValueError(
                f"`labels` has {len(names)} entries but `tau` has {values.shape[1]} column(s)."
            )
    elif not names:
        names = (
            ["effect"]
            if values.shape[1] == 1
            else [f"effect {j + 1}" for j in range(values.shape[1])]
        )
    if not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"`bins` must be a positive integer; got {bins!r}.")
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError("`tau` holds no finite value to draw.")
    lo, hi = float(finite.min()), float(finite.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, int(bins) + 1)
    ax = _new_axes(ax)
    alpha = 0.8 if values.shape[1] == 1 else 0.5
    for j, name in enumerate(names):
        col = values[:, j]
        ax.hist(col[np.isfinite(col)], bins=edges.tolist(), alpha=alpha, label=name)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("predicted effect")
    ax.set_ylabel("rows")
    ax.set_title("Distribution of predicted effects")
    ax.legend()
    return ax


# ------------------------------------------------------------------- curves
def _curve(
    curve: Any,
    *,
    value: str,
    reference: str,
    producer: str,
    variant: Any,
    ci: bool,
    ax: Axes | None,
    dashed_reference: bool = False,
) -> tuple[Axes, dict[str, np.ndarray], list[tuple[str, np.ndarray, Any]]]:
    """Draw one line (and band) per variant; return what the caller adds references to.

    With ``dashed_reference`` the ``reference`` column is drawn too, dashed in the
    variant's colour, as the random-targeting line.
    """
    cols = _table(curve, ("variant", "share", value, "ci_low", "ci_high", reference), producer)
    shown = _variants(cols, variant)
    ax = _new_axes(ax)
    drawn = []
    labels = cols["variant"].astype(str)
    for v in shown:
        mask = labels == v
        idx = np.flatnonzero(mask)[np.argsort(cols["share"][mask], kind="stable")]
        x = np.asarray(cols["share"][idx], dtype=np.float64)
        (line,) = ax.plot(x, cols[value][idx], label=f"{v} vs {_control(cols, mask)}")
        if ci:
            ax.fill_between(
                x, cols["ci_low"][idx], cols["ci_high"][idx], color=line.get_color(), alpha=0.2
            )
        drawn.append((v, idx, line.get_color()))
    if dashed_reference:
        for v, idx, color in drawn:
            ax.plot(
                cols["share"][idx],
                cols[reference][idx],
                linestyle="--",
                color=color,
                label="random targeting" if len(drawn) == 1 else f"random targeting ({v})",
            )
    ax.set_xlim(0.0, 1.0)
    return ax, cols, drawn


def uplift_curve(
    curve: Any, *, variant: Any = None, ci: bool = True, ax: Axes | None = None
) -> Axes:
    """Uplift curve (mean effect among the top share) with the random-targeting line.

    Draws ``uplift`` against ``share`` for each variant of the table, its
    pointwise confidence band, and the ATE as a dashed line: random targeting
    achieves the ATE at every share.

    Parameters
    ----------
    curve : DataFrame
        The table returned by :func:`metalearn.evaluation.uplift_curve`.
    variant : object, optional
        Draw only this variant (default: every variant in the table).
    ci : bool, default=True
        Shade the pointwise confidence intervals.
    ax : Axes, optional
        Where to draw; by default a new figure.

    Returns
    -------
    Axes

    References
    ----------
    .. [1] Yadlowsky, S., Fleming, S., Shah, N., Brunskill, E. and Wager, S.
       (2025). Evaluating treatment prioritization rules via rank-weighted
       average treatment effects. JASA. arXiv:2111.07966.

    Examples
    --------
    >>> import metalearn as ml
    >>> import metalearn.plotting
    >>> from metalearn.evaluation import uplift_curve
    >>> sim = ml.datasets.simulate_nie_wager("B", n=1000, seed=0)
    >>> ax = ml.plotting.uplift_curve(uplift_curve(sim.tau, sim.y, sim.w, propensity=0.5))
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['1 vs 0', 'random targeting']
    """
    ax, _, _ = _curve(
        curve,
        value="uplift",
        reference="ate",
        producer="metalearn.evaluation.uplift_curve",
        variant=variant,
        ci=ci,
        ax=ax,
        dashed_reference=True,
    )
    ax.set_xlabel("share targeted (by decreasing predicted effect)")
    ax.set_ylabel("mean effect among the targeted")
    ax.set_title("Uplift curve")
    ax.legend()
    return ax


def qini_curve(curve: Any, *, variant: Any = None, ci: bool = True, ax: Axes | None = None) -> Axes:
    """Qini (cumulative gain) curve with the random-targeting line.

    Draws ``gain`` against ``share`` for each variant of the table, its
    pointwise confidence band, and the straight line ``random`` from 0 to
    the ATE that random targeting achieves. The area between them is the
    Qini coefficient.

    Parameters
    ----------
    curve : DataFrame
        The table returned by :func:`metalearn.evaluation.qini_curve`.
    variant : object, optional
        Draw only this variant (default: every variant in the table).
    ci : bool, default=True
        Shade the pointwise confidence intervals.
    ax : Axes, optional
        Where to draw; by default a new figure.

    Returns
    -------
    Axes

    References
    ----------
    .. [1] Radcliffe, N. J. (2007). Using control groups to target on
       predicted lift: building and assessing uplift models. Direct Marketing
       Analytics Journal 1, 14-21.

    Examples
    --------
    >>> import metalearn as ml
    >>> import metalearn.plotting
    >>> from metalearn.evaluation import qini_curve
    >>> sim = ml.datasets.simulate_nie_wager("B", n=1000, seed=0)
    >>> ax = ml.plotting.qini_curve(qini_curve(sim.tau, sim.y, sim.w, propensity=0.5))
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['1 vs 0', 'random targeting']
    """
    ax, _, _ = _curve(
        curve,
        value="gain",
        reference="random",
        producer="metalearn.evaluation.qini_curve",
        variant=variant,
        ci=ci,
        ax=ax,
        dashed_reference=True,
    )
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xlabel("share targeted (by decreasing predicted effect)")
    ax.set_ylabel("gain per row of the population")
    ax.set_title("Qini curve")
    ax.legend()
    return ax


def budget_curve(
    curve: Any, *, variant: Any = None, ci: bool = True, ax: Axes | None = None
) -> Axes:
    """Policy value against the share treated, with treat-none and treat-all references.

    Draws ``value`` against ``share`` for each variant of the table, its
    pointwise confidence band, a dotted line at the value of treating no one
    and a dashed line at the value of treating everyone with the variant.
    Where the curve rises above both, a budget beats both simple policies.

    Parameters
    ----------
    curve : DataFrame
        The table returned by :func:`metalearn.evaluation.budget_curve`.
    variant : object, optional
        Draw only this variant (default: every variant in the table).
    ci : bool, default=True
        Shade the pointwise confidence intervals.
    ax : Axes, optional
        Where to draw; by default a new figure.

    Returns
    -------
    Axes

    References
    ----------
    .. [1] Imai, K. and Li, M. L. (2023). Experimental evaluation of
       individualized treatment rules. JASA 118(541), 242-256.

    Examples
    --------
    >>> import metalearn as ml
    >>> import metalearn.plotting
    >>> from metalearn.evaluation import budget_curve
    >>> sim = ml.datasets.simulate_nie_wager("B", n=1000, seed=0)
    >>> curve = budget_curve(sim.tau, sim.y, sim.w, propensity=0.5, cost=0.5)
    >>> ax = ml.plotting.budget_curve(curve)
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['1 vs 0', 'treat none', 'treat all']
    """
    ax, cols, drawn = _curve(
        curve,
        value="value",
        reference="random",
        producer="metalearn.evaluation.budget_curve",
        variant=variant,
        ci=ci,
        ax=ax,
    )
    if "gain" not in cols:
        raise ValueError(
            "The table lacks the column 'gain'; pass the table returned by "
            "metalearn.evaluation.budget_curve."
        )
    # value - gain is the value of treating no one, the same on every row.
    none = float(np.mean(cols["value"] - cols["gain"]))
    ax.axhline(none, color="black", linestyle=":", linewidth=1.2, label="treat none")
    for v, idx, color in drawn:
        share = np.asarray(cols["share"][idx], dtype=np.float64)
        random = np.asarray(cols["random"][idx], dtype=np.float64)
        last = int(np.argmax(share))
        if share[last] <= 0:
            continue
        # ``random`` runs linearly from treating no one (share 0) to treating all (share 1).
        treat_all = none + (random[last] - none) / share[last]
        ax.axhline(
            treat_all,
            color=color,
            linestyle="--",
            linewidth=1.2,
            label="treat all" if len(drawn) == 1 else f"treat all ({v})",
        )
    ax.set_xlabel("share treated (by decreasing predicted net effect)")
    ax.set_ylabel("value per row, net of costs")
    ax.set_title("Budget curve")
    ax.legend()
    return ax


# -------------------------------------------------------------- calibration
def calibration(table: Any, *, variant: Any = None, ax: Axes | None = None) -> Axes:
    """Calibration by quantile group: GATES with intervals against the mean prediction.

    One point per group of :func:`metalearn.evaluation.calibration_table`:
    the mean predicted effect on the x-axis, the estimated group average
    effect with its confidence interval on the y-axis, and the 45-degree line
    on which a calibrated model's points lie.

    Parameters
    ----------
    table : DataFrame
        The table returned by :func:`metalearn.evaluation.calibration_table`.
    variant : object, optional
        Draw only this variant (default: every variant in the table).
    ax : Axes, optional
        Where to draw; by default a new figure.

    Returns
    -------
    Axes

    References
    ----------
    .. [1] Chernozhukov, V., Demirer, M., Duflo, E. and Fernandez-Val, I.
       (2018). Generic machine learning inference on heterogeneous treatment
       effects in randomized experiments, with an application to immunization
       in India. NBER Working Paper 24678.

    Examples
    --------
    >>> import metalearn as ml
    >>> import metalearn.plotting
    >>> from metalearn.evaluation import calibration_table
    >>> sim = ml.datasets.simulate_nie_wager("B", n=1000, seed=0)
    >>> table = calibration_table(sim.tau, sim.y, sim.w, propensity=0.5, n_groups=5)
    >>> ax = ml.plotting.calibration(table)
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['perfect calibration', '1 vs 0']
    """
    cols = _table(
        table,
        ("variant", "predicted", "estimate", "ci_low", "ci_high"),
        "metalearn.evaluation.calibration_table",
    )
    shown = _variants(cols, variant)
    ax = _new_axes(ax)
    labels = cols["variant"].astype(str)
    keep = np.isin(labels, shown)
    pred = np.asarray(cols["predicted"], dtype=np.float64)
    low = np.asarray(cols["ci_low"], dtype=np.float64)
    high = np.asarray(cols["ci_high"], dtype=np.float64)
    est = np.asarray(cols["estimate"], dtype=np.float64)
    span = np.concatenate([pred[keep], low[keep], high[keep]])
    span = span[np.isfinite(span)]
    lo, hi = (float(span.min()), float(span.max())) if span.size else (0.0, 1.0)
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", label="perfect calibration")
    for v in shown:
        mask = labels == v
        ax.errorbar(
            pred[mask],
            est[mask],
            yerr=np.vstack([est[mask] - low[mask], high[mask] - est[mask]]),
            fmt="o",
            capsize=3,
            label=f"{v} vs {_control(cols, mask)}",
        )
    ax.set_xlabel("mean predicted effect in the group")
    ax.set_ylabel("estimated group effect (GATES)")
    ax.set_title("Calibration by quantile group")
    ax.legend()
    return ax
