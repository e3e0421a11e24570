"""An honest, shallow tree that summarizes a CATE, and the doubly robust scores behind it.

Public names are re-exported from :mod:`metalearn.explain`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import stats
from sklearn.utils.validation import check_is_fitted

from metalearn._core.data import prepare_data
from metalearn._core.formulas import clip_propensity, pair_propensity, r_residuals
from metalearn._core.frames import FrameSchema, encode_features, native_backend, to_native_frame
from metalearn._core.results import TableResult
from metalearn.explain._shapley import require_matplotlib
from metalearn.scoring._nuisance import SCORING_CLIP, ScoringNuisance, fit_scoring

__all__ = ["CATETree", "LeafEffect", "summarize_cate"]


# ------------------------------------------------------------ shared helpers
def effect_key_names(learner: Any) -> dict[tuple[int, int], str]:
    """``(j, d) -> "tau_<variant>_vs_<control>[_<class>]"``, in ``predict_frame`` order."""
    names = iter(learner._effect_names())
    return {
        (j, d): next(names)
        for j in range(len(learner._treated_codes))
        for d in range(learner._out_dim)
    }


def effect_index(learner: Any, variant: Any, outcome_class: Any) -> tuple[int, int]:
    """Position ``(j, d)`` of the effect of ``variant`` (and ``outcome_class``)."""
    treated = [_py(learner.variants_[k]) for k in learner._treated_codes]
    if variant is None:
        if len(treated) > 1:
            raise ValueError(
                f"The learner has {len(treated)} treated variants {treated}; pass `variant=` to "
                "choose the effect to summarize."
            )
        j = 0
    else:
        matches = [i for i, v in enumerate(treated) if v == variant]
        if not matches:
            hint = " (it is the control)" if variant == _py(learner.control_) else ""
            raise ValueError(
                f"`variant` must be one of the treated variants {treated}; got {variant!r}{hint}."
            )
        j = matches[0]
    classes = learner.classes_
    if learner._out_dim == 1:
        positive = None if classes is None else _py(classes[1])
        if outcome_class is not None and outcome_class != positive:
            raise ValueError(
                "`outcome_class` is only for multi-class outcomes (the effect of a binary "
                f"outcome is on P({positive!r})); got {outcome_class!r}."
            )
        return j, 0
    labels = [_py(c) for c in classes]
    if outcome_class is None or outcome_class not in labels:
        raise ValueError(
            f"The outcome has classes {labels}; pass `outcome_class=` one of them to choose the "
            f"effect (got {outcome_class!r})."
        )
    return j, labels.index(outcome_class)


def scoring_data(
    learner: Any, X: Any, y: Any, w: Any, *, nuisance: Any, propensity: Any
) -> tuple[np.ndarray, ScoringNuisance]:
    """Encode the rows for the learner and get the scoring nuisances of ``(X, y, w)``.

    ``nuisance`` is a :class:`~metalearn.scoring.ScoringNuisance` fitted on
    these rows, a :class:`~metalearn.Nuisance` (template, or fitted on these
    rows), or ``None`` for the default yardstick of :mod:`metalearn.scoring`.
    """
    # One conversion: the rows encoded with the learner's schema are also the scoring data.
    data = prepare_data(
        X,
        y,
        w,
        classification=learner._classification,
        propensity=propensity,
        schema=learner.schema_,
    )
    Xa = data.X
    known = [_py(v) for v in learner.variants_]
    if [_py(v) for v in data.variants] != known:
        raise ValueError(
            f"`w` must hold the learner's variants {known}; got {[_py(v) for v in data.variants]}."
        )
    if learner.classes_ is not None and (
        data.classes is None or not np.array_equal(data.classes, learner.classes_)
    ):
        raise ValueError(
            f"`y` must hold the learner's outcome classes {list(learner.classes_)}; got "
            f"{list(data.classes) if data.classes is not None else None}."
        )
    if isinstance(nuisance, ScoringNuisance):
        if nuisance.fingerprint != data.fingerprint or nuisance.control != learner._control_code:
            raise ValueError(
                "The ScoringNuisance `nuisance` was fitted on other rows (or with another "
                "control or known propensity) than `X, y, w`; fit it with "
                "`metalearn.scoring.fit_scoring_nuisance(X, y, w, ...)` on these rows."
            )
        return Xa, nuisance
    sn = fit_scoring(data, nuisance, learner._control_code, SCORING_CLIP, learner.n_jobs)
    return Xa, sn


def make_loss(sn: ScoringNuisance, loss: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``tau (n, K-1, D) -> loss (K-1, D)``: DR-, R- or plug-in loss per effect.

    The formulas are those of :func:`metalearn.scoring.cate_losses`, kept per
    outcome class.
    """
    sw = np.ones(sn.n) if sn.sample_weight is None else sn.sample_weight
    c = sn.control
    if loss in ("dr", "plugin"):
        target = (
            sn.pseudo_outcomes()
            if loss == "dr"
            else np.stack([sn.outcomes[:, k, :] - sn.outcomes[:, c, :] for k in sn.treated], 1)
        )
        om = sw / sw.sum()
        return lambda tau: np.einsum("i,ijd->jd", om, (target - tau) ** 2)
    e = sn.propensity
    parts = []
    for k in sn.treated:
        rows = np.flatnonzero((sn.w == c) | (sn.w == k))
        p = pair_propensity(e[rows], k, c)
        if not sn.known_propensity:
            p = clip_propensity(p, SCORING_CLIP)
        y_res, t_res = r_residuals(sn.target[rows], sn.w[rows] == k, sn.marginal[k][rows], p)
        parts.append((rows, t_res, y_res, sw[rows] / sw[rows].sum()))

    def r_loss(tau: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                om @ ((y_res - tau[rows, j, :] * t_res[:, None]) ** 2)
                for j, (rows, t_res, y_res, om) in enumerate(parts)
            ]
        )

    return r_loss


def check_predictable(learner: Any) -> None:
    """Raise when the learner's CATE is not a function of X alone (the learner's own hook)."""
    learner._check_predictable()


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


# ------------------------------------------------------------------ results
@dataclass(frozen=True, repr=False)
class LeafEffect(TableResult):
    """The estimated effect in one leaf of a :class:`CATETree` (or on all rows).

    Attributes
    ----------
    leaf : int
        Node id of the leaf in ``CATETree.tree`` (-1 for all rows).
    rule : str
        The leaf's conditions, e.g. ``"engagement <= -0.31 and tickets > 1.5"``.
    n_fit : int
        Rows of the fitting split in the leaf.
    n_estimate : int
        Rows of the estimation split in the leaf.
    cate_fit : float
        Mean CATE estimate of the leaf's fitting rows (what the tree predicts).
    estimate : float
        Mean doubly robust score of the leaf's estimation rows: an honest
        estimate of the leaf's average effect.
    std_error : float
        Its standard error.
    ci_low, ci_high : float
        Normal confidence interval at the tree's ``level``.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> from metalearn.explain import summarize_cate
    >>> sim = ml.datasets.simulate_nie_wager("B", n=1000, seed=0)
    >>> dr = ml.DRLearner(outcome_model=LinearRegression(), effect_model=LinearRegression(),
    ...                   n_folds=2, random_state=0)
    >>> _ = dr.fit_predict(sim.X, sim.y, sim.w, propensity=0.5)
    >>> summary = summarize_cate(dr, sim.X, sim.y, sim.w, propensity=0.5, random_state=0)
    >>> leaf = summary.leaves[0]
    >>> leaf.rule.startswith("x0 <= "), leaf.n_fit + leaf.n_estimate > 0
    (True, True)
    >>> summary.overall.rule, summary.overall.leaf, summary.overall.n_estimate
    ('all rows', -1, 500)
    """

    leaf: int
    rule: str
    n_fit: int
    n_estimate: int
    cate_fit: float
    estimate: float
    std_error: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True, repr=False)
class CATETree(TableResult):
    """An honest, shallow regression tree of the CATE with doubly robust leaf effects.

    Made by :func:`summarize_cate`. ``print(summary)`` shows the tree as
    text with each leaf's effect and confidence interval, then the leaves
    from the largest effect to the smallest; :meth:`table` gives the leaves
    as a frame and :meth:`plot` draws them.

    Attributes
    ----------
    effect : str
        The summarized effect, ``tau_<variant>_vs_<control>[_<class>]``.
    variant, control, outcome_class : object
        What it compares (``outcome_class`` for multi-class outcomes only).
    tree : sklearn.tree.DecisionTreeRegressor
        The tree, fitted on the fitting split.
    leaves : tuple of LeafEffect
        One per leaf, in tree order.
    overall : LeafEffect
        The doubly robust average effect on all estimation rows.
    feature_names : tuple of str
    n_fit, n_estimate : int
        Sizes of the two splits.
    level : float
        Confidence level of the intervals.
    tau_source : str
        What the tree was fitted to: ``"out-of-fold"``, ``"given"`` or
        ``"predict"``.
    schema : FrameSchema
        Internal: how :meth:`apply` encodes the features of new rows.
    nan_features : frozenset of int
        Internal: features with missing values among the fitting rows (their
        rules name the missing values).
    backend : object
        Internal: the frame library of the summarized ``X``, the type of
        :meth:`table`.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> from metalearn.explain import summarize_cate
    >>> sim = ml.datasets.simulate_nie_wager("B", n=1000, seed=0)
    >>> dr = ml.DRLearner(outcome_model=LinearRegression(), effect_model=LinearRegression(),
    ...                   n_folds=2, random_state=0)
    >>> _ = dr.fit_predict(sim.X, sim.y, sim.w, propensity=0.5)
    >>> summary = summarize_cate(dr, sim.X, sim.y, sim.w, propensity=0.5, random_state=0)
    >>> summary.effect, summary.tau_source, summary.n_fit, summary.n_estimate
    ('tau_1_vs_0', 'out-of-fold', 500, 500)
    >>> summary.table().columns[:4]
    ['leaf', 'rule', 'n_fit', 'n_estimate']
    >>> print(summary.text().splitlines()[0])
    Honest CATE tree for tau_1_vs_0: splits fitted to out-of-fold CATE estimates of 500 rows; ...
    """

    effect: str
    variant: Any
    control: Any
    outcome_class: Any
    tree: Any
    leaves: tuple[LeafEffect, ...]
    overall: LeafEffect
    feature_names: tuple[str, ...]
    n_fit: int
    n_estimate: int
    level: float
    tau_source: str
    schema: FrameSchema
    nan_features: frozenset[int]
    backend: Any = None

    def table(self) -> Any:
        """The leaves as a frame (the type of the summarized ``X``; Polars for arrays).

        Columns: ``leaf``, ``rule``, ``n_fit``, ``n_estimate``, ``cate_fit``,
        ``estimate``, ``std_error``, ``ci_low``, ``ci_high``; the largest
        effect first.
        """
        rows = sorted(self.leaves, key=lambda r: -np.nan_to_num(r.estimate, nan=-np.inf))
        cols = {
            name: np.asarray([getattr(r, name) for r in rows])
            for name in LeafEffect.__dataclass_fields__
        }
        cols["rule"] = np.asarray([r.rule for r in rows], dtype=str)
        return to_native_frame(cols, self.backend)

    _repr_columns: ClassVar[tuple[str, ...] | None] = (
        "leaf",
        "rule",
        "n_estimate",
        "estimate",
        "ci_low",
        "ci_high",
    )

    def _summary_rows(self) -> list[dict[str, Any]]:
        """All rows, then the leaves as in :meth:`table` (the largest effect first)."""
        rows = sorted(self.leaves, key=lambda r: -np.nan_to_num(r.estimate, nan=-np.inf))
        return [{"effect": self.effect} | vars(r) for r in (self.overall, *rows)]

    def _repr_title(self, n: int) -> str:
        return (
            f"CATETree of {self.effect} ({len(self.leaves)} leaves; {self.tau_source} CATE, "
            f"n_fit={self.n_fit}, n_estimate={self.n_estimate}; print() draws the tree)"
        )

    def apply(self, X: Any) -> np.ndarray:
        """Leaf (node id) of each row of ``X``."""
        Xa, _ = encode_features(X, self.schema)
        return self.tree.apply(Xa)

    def text(self, digits: int = 3) -> str:
        """The tree and its leaf effects as text."""
        t = self.tree.tree_
        pct = f"{self.level:.0%}"
        lines = [
            f"Honest CATE tree for {self.effect}: splits fitted to {self.tau_source} CATE "
            f"estimates of {self.n_fit} rows; leaf effects are means of doubly robust scores of "
            f"{self.n_estimate} other rows, with {pct} confidence intervals.",
            f"All rows: {_effect_text(self.overall, digits)}",
        ]
        by_leaf = {r.leaf: r for r in self.leaves}

        def walk(node: int, depth: int) -> None:
            if t.children_left[node] == -1:
                return
            for side, child in (("left", t.children_left[node]), ("right", t.children_right[node])):
                cond = self._split_text(node, side == "left", digits)
                prefix = "|   " * depth + "|--- "
                if t.children_left[child] == -1:
                    lines.append(f"{prefix}{cond}: {_effect_text(by_leaf[child], digits)}")
                else:
                    lines.append(f"{prefix}{cond}")
                    walk(child, depth + 1)

        if t.children_left[0] == -1:
            lines.append("(no split: the tree found no subgroup)")
        walk(0, 0)
        lines.append("Leaves, largest effect first:")
        for r in sorted(self.leaves, key=lambda r: -np.nan_to_num(r.estimate, nan=-np.inf)):
            lines.append(f"  {_effect_text(r, digits)}  if {r.rule}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def plot(self, ax: Any = None) -> Any:
        """Leaf effects with confidence intervals, one row per leaf (needs matplotlib).

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Where to draw; a new figure otherwise.

        Returns
        -------
        matplotlib Axes
        """
        plt = require_matplotlib()
        rows = sorted(self.leaves, key=lambda r: np.nan_to_num(r.estimate, nan=np.inf))
        if ax is None:
            _, ax = plt.subplots(figsize=(8, 1.2 + 0.55 * len(rows)))
        pos = np.arange(len(rows))
        est = np.array([r.estimate for r in rows])
        err = np.array(
            [[r.estimate - r.ci_low for r in rows], [r.ci_high - r.estimate for r in rows]]
        )
        ax.errorbar(est, pos, xerr=err, fmt="o", color="#1f5f99", capsize=3)
        ax.set_yticks(pos)
        ax.set_yticklabels(
            [textwrap.fill(f"{r.rule} (n={r.n_estimate})", 48) for r in rows], fontsize=8
        )
        ax.axvline(0.0, color="#888888", linestyle=":", linewidth=1)
        ax.axvline(
            self.overall.estimate, color="#c0392b", linestyle="--", linewidth=1, label="all rows"
        )
        ax.set_xlabel(f"{self.effect}: leaf effect, {self.level:.0%} CI (doubly robust)")
        ax.legend(loc="best", fontsize=8)
        return ax

    # ----------------------------------------------------------- rendering
    def _split_text(self, node: int, left: bool, digits: int) -> str:
        t = self.tree.tree_
        f = int(t.feature[node])
        thr = float(t.threshold[node])
        name = self.feature_names[f]
        missing = self._missing_left(node)
        if f in self.schema.categories:
            cats = self.schema.categories[f]
            chosen = [str(c) for i, c in enumerate(cats) if (i <= thr) == left]
            text = _category_text(name, chosen)
        else:
            text = f"{name} <= {thr:.{digits}g}" if left else f"{name} > {thr:.{digits}g}"
        if f in self.nan_features and missing == left:
            text += " (or missing)"
        return text

    def _missing_left(self, node: int) -> bool:
        t = self.tree.tree_
        flags = getattr(t, "missing_go_to_left", None)
        return bool(flags[node]) if flags is not None else True


def _category_text(name: str, chosen: list[str]) -> str:
    if len(chosen) == 1:
        return f"{name} == {chosen[0]!r}"
    return f"{name} in {{{', '.join(repr(c) for c in chosen)}}}"


def _effect_text(r: LeafEffect, digits: int) -> str:
    if not np.isfinite(r.estimate):
        return f"effect n/a (n={r.n_estimate} estimation rows)"
    return (
        f"effect {r.estimate:.{digits}g} [{r.ci_low:.{digits}g}, {r.ci_high:.{digits}g}] "
        f"(n={r.n_estimate}; tree's estimate {r.cate_fit:.{digits}g})"
    )


def _leaf_rules(
    tree: Any,
    names: tuple[str, ...],
    schema: FrameSchema,
    nan_features: frozenset[int],
    digits: int = 4,
) -> dict[int, str]:
    """Each leaf's path as one condition per feature (intervals, category sets)."""
    t = tree.tree_
    flags = getattr(t, "missing_go_to_left", None)
    rules: dict[int, str] = {}

    def walk(node: int, bounds: dict[int, list[Any]]) -> None:
        if t.children_left[node] == -1:
            rules[node] = _render(bounds, names, schema, nan_features, digits)
            return
        f = int(t.feature[node])
        thr = float(t.threshold[node])
        miss_left = bool(flags[node]) if flags is not None else True
        for left, child in ((True, t.children_left[node]), (False, t.children_right[node])):
            nb = {k: list(v) for k, v in bounds.items()}
            if f in schema.categories:
                allowed, miss = nb.get(f, [set(range(len(schema.categories[f]))), True])
                allowed = {i for i in allowed if (i <= thr) == left}
                nb[f] = [allowed, miss and miss_left == left]
            else:
                lo, hi, miss = nb.get(f, [-np.inf, np.inf, True])
                if left:
                    hi = min(hi, thr)
                else:
                    lo = max(lo, thr)
                nb[f] = [lo, hi, miss and miss_left == left]
            walk(int(child), nb)

    walk(0, {})
    return rules


def _render(
    bounds: dict[int, list[Any]],
    names: tuple[str, ...],
    schema: FrameSchema,
    nan_features: frozenset[int],
    digits: int,
) -> str:
    parts = []
    for f in sorted(bounds):
        name = names[f]
        if f in schema.categories:
            allowed, miss = bounds[f]
            cats = schema.categories[f]
            text = _category_text(name, [str(cats[i]) for i in sorted(allowed)])
        else:
            lo, hi, miss = bounds[f]
            if np.isfinite(lo) and np.isfinite(hi):
                text = f"{lo:.{digits}g} < {name} <= {hi:.{digits}g}"
            elif np.isfinite(hi):
                text = f"{name} <= {hi:.{digits}g}"
            else:
                text = f"{name} > {lo:.{digits}g}"
        if f in nan_features and miss:
            text = f"({text} or {name} missing)"
        parts.append(text)
    return " and ".join(parts) if parts else "all rows"


# --------------------------------------------------------------------- api
def summarize_cate(
    learner: Any,
    X: Any,
    y: Any,
    w: Any,
    *,
    variant: Any = None,
    outcome_class: Any = None,
    tau: Any = None,
    max_depth: int = 2,
    min_samples_leaf: int | float = 0.1,
    fit_fraction: float = 0.5,
    level: float = 0.95,
    nuisance: Any = None,
    propensity: Any = None,
    random_state: int | None = None,
) -> CATETree:
    r"""Summarize a CATE by a shallow tree with honest, doubly robust leaf effects.

    The rows are split in two, stratified by variant. On the *fitting* split
    a regression tree of depth ``max_depth`` is fitted to the CATE estimates
    (by default the learner's out-of-fold estimates). On the other,
    *estimation* split, each leaf's average effect is estimated as the mean
    of the doubly robust (AIPW) scores

    .. math:: \varphi_i = \hat\mu_k(X_i) - \hat\mu_c(X_i)
       + \frac{1\{W_i=k\}(Y_i - \hat\mu_k(X_i))}{\hat e_k(X_i)}
       - \frac{1\{W_i=c\}(Y_i - \hat\mu_c(X_i))}{\hat e_c(X_i)}

    of its rows, with the standard error :math:`\mathrm{sd}(\varphi)/\sqrt{n}`
    and a normal confidence interval. The leaf estimates do not reuse the
    rows that chose the splits (honesty, Athey and Imbens 2016), so they are
    not inflated by the search for subgroups; the scores come from
    cross-fitted nuisance models (Chernozhukov et al. 2018), propensities
    clipped at 0.01 as in :mod:`metalearn.scoring`. The remaining
    dependence, through nuisance and CATE models fitted on all rows, is the
    usual one of cross-fitting and vanishes asymptotically.

    Parameters
    ----------
    learner : fitted meta-learner
    X : frame or array-like of shape (n_samples, n_features)
        Rows to summarize: the training rows after ``fit_predict`` (then the
        learner's out-of-fold CATE is used), or held-out rows.
    y : array-like of shape (n_samples,)
    w : array-like of shape (n_samples,)
    variant : object, optional
        The treated variant whose effect is summarized; required with more
        than two variants.
    outcome_class : object, optional
        The class whose probability effect is summarized (multi-class only).
    tau : array-like, optional
        CATE estimates of the rows (shaped as ``learner.predict``), e.g. the
        output of ``fit_predict``. Default: the learner's out-of-fold
        estimates when it was fitted on exactly ``X, y, w`` (checked through
        its nuisance stage), else ``learner.predict(X)``.
    max_depth : int, default=2
    min_samples_leaf : int or float, default=0.1
        Smallest leaf, in rows or as a fraction of the fitting rows.
    fit_fraction : float, default=0.5
        Share of the rows that fit the tree.
    level : float, default=0.95
        Confidence level.
    nuisance : ScoringNuisance or Nuisance, optional
        Where the doubly robust scores come from: a
        :class:`~metalearn.scoring.ScoringNuisance` fitted on ``X, y, w``
        (shared with :func:`metalearn.scoring.evaluate`), or a
        :class:`~metalearn.Nuisance` (a template, or fitted on these rows).
        Default: the scoring yardstick of :mod:`metalearn.scoring` (LightGBM,
        up to 5 folds, seed 0), cross-fitted on these rows.
    propensity : float or array-like, optional
        Known propensities (randomized designs).
    random_state : int, default=None
        Seeds the split and the tree.

    Returns
    -------
    CATETree

    References
    ----------
    .. [1] Athey, S. and Imbens, G. (2016). Recursive partitioning for
       heterogeneous causal effects. PNAS 113(27), 7353-7360.
    .. [2] Chernozhukov, V., Chetverikov, D., Demirer, M., Duflo, E., Hansen, C.,
       Newey, W. and Robins, J. (2018). Double/debiased machine learning for
       treatment and structural parameters. The Econometrics Journal 21(1).
    .. [3] Robins, J. M., Rotnitzky, A. and Zhao, L. P. (1994). Estimation of
       regression coefficients when some regressors are not always observed.
       JASA 89(427), 846-866.
    .. [4] Breiman, L., Friedman, J., Olshen, R. and Stone, C. (1984).
       Classification and Regression Trees. Wadsworth.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression
    >>> from metalearn.explain import summarize_cate
    >>> sim = ml.datasets.simulate_nie_wager("B", n=1000, seed=0)
    >>> dr = ml.DRLearner(outcome_model=LinearRegression(),
    ...                   propensity_model=LogisticRegression(),
    ...                   effect_model=LinearRegression(), n_folds=2, random_state=0)
    >>> _ = dr.fit_predict(sim.X, sim.y, sim.w)
    >>> summary = summarize_cate(dr, sim.X, sim.y, sim.w, random_state=0)
    >>> summary.tau_source, len(summary.leaves)
    ('out-of-fold', 4)
    """
    from sklearn.model_selection import train_test_split
    from sklearn.tree import DecisionTreeRegressor

    check_is_fitted(learner, "variants_")
    if isinstance(max_depth, bool) or not isinstance(max_depth, int | np.integer) or max_depth < 1:
        raise ValueError(f"`max_depth` must be a positive integer; got {max_depth!r}.")
    if not 0.0 < float(fit_fraction) < 1.0:
        raise ValueError(f"`fit_fraction` must be in (0, 1); got {fit_fraction!r}.")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"`level` must be in (0, 1); got {level!r}.")
    j, d = effect_index(learner, variant, outcome_class)
    Xa, sn = scoring_data(learner, X, y, w, nuisance=nuisance, propensity=propensity)
    n = Xa.shape[0]
    K1, D = len(learner._treated_codes), learner._out_dim
    if tau is not None:
        arr = np.asarray(tau, dtype=np.float64)
        if arr.shape[0] != n or arr.size != n * K1 * D:
            raise ValueError(
                f"`tau` must hold the CATE estimates of the {n} rows of `X`, shaped as "
                f"`learner.predict(X)` returns them; got shape {arr.shape}."
            )
        tau_all, source = arr.reshape(n, K1, D), "given"
    elif (
        getattr(learner, "oof_tau_", None) is not None
        and getattr(getattr(learner, "nuisance_", None), "fingerprint_", None) == sn.fingerprint
    ):
        tau_all, source = np.asarray(learner.oof_tau_), "out-of-fold"
    else:
        tau_all, source = learner._predict_tau(Xa), "predict"
    target = tau_all[:, j, d]
    if not np.all(np.isfinite(target)):
        raise ValueError("The CATE estimates to summarize hold NaN or infinite values.")
    try:
        fit_rows, est_rows = train_test_split(
            np.arange(n), train_size=float(fit_fraction), stratify=sn.w, random_state=random_state
        )
    except ValueError as exc:
        raise ValueError(
            f"Cannot split the {n} rows into fitting and estimation parts stratified by variant "
            f"with fit_fraction={fit_fraction}: {exc}"
        ) from exc
    fit_rows, est_rows = np.sort(fit_rows), np.sort(est_rows)
    tree = DecisionTreeRegressor(
        max_depth=int(max_depth), min_samples_leaf=min_samples_leaf, random_state=random_state
    ).fit(Xa[fit_rows], target[fit_rows])
    phi = sn.pseudo_outcomes()[:, j, d]
    z = float(stats.norm.ppf(0.5 + level / 2))
    names = tuple(learner.schema_.output_names())
    nan_features = frozenset(int(f) for f in np.flatnonzero(np.isnan(Xa[fit_rows]).any(axis=0)))
    rules = _leaf_rules(tree, names, learner.schema_, nan_features)
    est_leaf = tree.apply(Xa[est_rows])
    t = tree.tree_
    leaves = []
    for leaf in np.flatnonzero(t.children_left == -1):
        scores = phi[est_rows[est_leaf == leaf]]
        leaves.append(
            _leaf_effect(
                int(leaf),
                rules[int(leaf)],
                int(t.n_node_samples[leaf]),
                float(t.value[leaf].ravel()[0]),
                scores,
                z,
            )
        )
    overall = _leaf_effect(
        -1, "all rows", len(fit_rows), float(target[fit_rows].mean()), phi[est_rows], z
    )
    k = learner._treated_codes[j]
    return CATETree(
        effect=effect_key_names(learner)[(j, d)],
        variant=_py(learner.variants_[k]),
        control=_py(learner.control_),
        outcome_class=None if D == 1 else _py(learner.classes_[d]),
        tree=tree,
        leaves=tuple(leaves),
        overall=overall,
        feature_names=names,
        n_fit=len(fit_rows),
        n_estimate=len(est_rows),
        level=float(level),
        tau_source=source,
        schema=learner.schema_,
        nan_features=nan_features,
        backend=native_backend(X),
    )


def _leaf_effect(
    leaf: int, rule: str, n_fit: int, cate_fit: float, scores: np.ndarray, z: float
) -> LeafEffect:
    m = len(scores)
    if m < 2:
        est = se = float("nan")
    else:
        est = float(scores.mean())
        se = float(scores.std(ddof=1) / np.sqrt(m))
    return LeafEffect(
        leaf=leaf,
        rule=rule,
        n_fit=n_fit,
        n_estimate=m,
        cate_fit=cate_fit,
        estimate=est,
        std_error=se,
        ci_low=est - z * se,
        ci_high=est + z * se,
    )
