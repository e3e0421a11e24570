"""Average treatment effects by classical estimators, with confidence intervals.

* :func:`difference_in_means`: for randomized experiments, with the Neyman
  (HC2) standard error;
* :func:`ipw`: inverse propensity weighting, Horvitz-Thompson or stabilised
  (Hajek), with clipping and trimming;
* :func:`aipw`: augmented IPW (doubly robust), cross-fitted, with the
  influence-function standard error; reuses a learner's or a
  :class:`~metalearn.Nuisance`'s fitted nuisance stage;
* :func:`matching`: propensity-score matching (1:k, caliper, with or
  without replacement) with the Abadie-Imbens standard error.

Every estimator compares each non-control variant with the control
(``control=``; default ``0`` if present, else the first variant in sorted
order) and returns an :class:`~metalearn.AverageEffect` (a subclass carrying
weights where there are any) for two variants, or a tuple of them, one per
treated variant, for more. ``estimand="ATT"`` gives the effect on the rows
that received the treated variant instead of the whole population.

All functions share the signature ``(X, y, w, **options)``, so that any of
them (through :func:`functools.partial`) can be handed to the refutation
checks in :mod:`metalearn.refute`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from sklearn.base import clone

from metalearn._core.data import prepare_data
from metalearn._core.design import (
    Design,
    check_no_extreme,
    clip_bounds,
    design_with_propensity,
    pair_score,
    prepare_design,
    trim_mask,
    warn_once,
)
from metalearn._core.effects import aipw_effects, one_or_tuple
from metalearn._core.formulas import clip_propensity
from metalearn._core.positivity import warn_overlap
from metalearn._core.results import AverageEffect, mean_std_error
from metalearn._core.validation import control_index
from metalearn.learners.nuisance import Nuisance

__all__ = [
    "WeightedEffect",
    "MatchingEffect",
    "difference_in_means",
    "ipw",
    "aipw",
    "matching",
]

_TIE_TOL = 1e-12


@dataclass(frozen=True, repr=False, eq=False)
class WeightedEffect(AverageEffect):
    """An :class:`~metalearn.AverageEffect` of a weighting estimator.

    Attributes
    ----------
    estimand : str
        ``"ATE"`` or ``"ATT"``.
    weights : ndarray of shape (n_samples,)
        Weight of every row in the contrast (0 for rows of other variants
        and for trimmed rows); pass them to
        :func:`metalearn.diagnostics.balance_table` as ``weights=``.

    The other fields are those of :class:`~metalearn.AverageEffect`.

    Examples
    --------
    >>> import metalearn as ml
    >>> sim = ml.datasets.simulate_confounded(n=2000, seed=0)
    >>> effect = ml.ate.ipw(None, sim.y, sim.w, propensity=sim.propensity)
    >>> type(effect).__name__, effect.estimand, effect.method, effect.weights.shape
    ('WeightedEffect', 'ATE', 'IPW (stabilised, ATE; propensity given)', (2000,))
    >>> bool(effect.ci_low < 1.5 < effect.ci_high)  # the true ATE is 1.5
    True
    """

    estimand: str
    weights: np.ndarray


@dataclass(frozen=True, repr=False, eq=False)
class MatchingEffect(AverageEffect):
    """An :class:`~metalearn.AverageEffect` of a matching estimator.

    Attributes
    ----------
    estimand : str
        ``"ATE"`` or ``"ATT"``.
    weights : ndarray of shape (n_samples,)
        How much each row counts in the matched sample: 1 for each matched
        target row plus the share of matches it supplies to other rows; 0 for
        unmatched rows and rows of other variants. Pass them to
        :func:`metalearn.diagnostics.balance_table` as ``weights=``.
    n_unmatched : int
        Target rows without a match inside the caliper (left out).
    mean_distance, max_distance : float
        Mean and maximum, over matched target rows, of the distance to the
        farthest match used.

    The other fields are those of :class:`~metalearn.AverageEffect`.

    Examples
    --------
    >>> import metalearn as ml
    >>> sim = ml.datasets.simulate_confounded(n=2000, seed=0)
    >>> att = ml.ate.matching(sim.X, sim.y, sim.w, propensity=sim.propensity)
    >>> type(att).__name__, att.estimand, att.n_unmatched
    ('MatchingEffect', 'ATT', 0)
    >>> bool(att.max_distance >= att.mean_distance >= 0)
    True
    """

    estimand: str
    weights: np.ndarray
    n_unmatched: int
    mean_distance: float
    max_distance: float


def _build(cls: type, base: AverageEffect, **extra: Any) -> Any:
    values = {f.name: getattr(base, f.name) for f in fields(AverageEffect)}
    return cls(**values, **extra)


def _effect(
    design: Design,
    k: int,
    est: Any,
    se: Any,
    *,
    method: str,
    n: int,
    level: float,
    cls: type | None = None,
    **extra: Any,
) -> Any:
    base = AverageEffect.from_estimate(
        variant=design.label(k),
        control=design.label(design.control),
        estimate=est,
        std_error=se,
        method=method,
        n=n,
        level=level,
    )
    return base if cls is None else _build(cls, base, **extra)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must be in (0, 1), e.g. 0.95; got {level!r}.")


def _check_estimand(estimand: str, allowed: tuple[str, ...] = ("ATE", "ATT")) -> None:
    if estimand not in allowed:
        raise ValueError(f"`estimand` must be one of {list(allowed)}; got {estimand!r}.")


# ----------------------------------------------------------- difference in means
def difference_in_means(
    X: Any,
    y: Any,
    w: Any,
    *,
    control: Any = None,
    level: float = 0.95,
) -> Any:
    r"""Difference in mean outcomes between each variant and the control.

    .. math::
        \hat\tau_k = \bar Y_k - \bar Y_c, \qquad
        \widehat{\mathrm{se}} = \sqrt{s_k^2 / n_k + s_c^2 / n_c},

    with sample variances (``ddof=1``). This is Neyman's conservative
    variance for a completely randomized experiment, and equals the
    heteroskedasticity-robust HC2 variance of the coefficient of the
    treatment indicator in a regression of :math:`Y` on it (Imbens and
    Kolesar 2016). It estimates the ATE (and the ATT) only when the
    treatment was randomized.

    Parameters
    ----------
    X : ignored
        Not used (may be ``None``); present so that every estimator of this
        module has the signature ``(X, y, w)``.
    y : array-like of shape (n_samples,)
        Numeric outcome.
    w : array-like of shape (n_samples,)
        Treatment variant of each row.
    control : object, default=None
        The reference variant; ``None`` means ``0`` if present, else the
        first variant in sorted order.
    level : float, default=0.95
        Confidence level of the interval.

    Returns
    -------
    AverageEffect or tuple of AverageEffect
        One per treated variant.

    References
    ----------
    .. [1] Neyman, J. (1923, transl. 1990). On the application of probability
       theory to agricultural experiments. Statistical Science 5(4), 465-472.
    .. [2] Imbens, G. W. and Kolesar, M. (2016). Robust standard errors in
       small samples: some practical advice. Review of Economics and
       Statistics 98(4), 701-712.
    .. [3] Imbens, G. W. and Rubin, D. B. (2015). Causal Inference for
       Statistics, Social, and Biomedical Sciences. Cambridge University
       Press, chapter 6.

    Examples
    --------
    >>> import metalearn as ml
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)  # randomized
    >>> effect = ml.ate.difference_in_means(None, sim.y, sim.w)
    >>> bool(effect.ci_low < sim.tau.mean() < effect.ci_high)
    True
    """
    _check_level(level)
    design = prepare_design(None, y, w, control=control, need_X=False, need_y=True)
    assert design.y is not None
    c = design.control
    out = []
    for k in design.treated:
        yk, yc = design.y[design.w == k], design.y[design.w == c]
        if len(yk) < 2 or len(yc) < 2:
            raise ValueError(
                f"Variants {design.label(k)!r} and {design.label(c)!r} need at least two rows "
                f"each for a standard error; got {len(yk)} and {len(yc)}."
            )
        est = yk.mean() - yc.mean()
        se = np.sqrt(yk.var(ddof=1) / len(yk) + yc.var(ddof=1) / len(yc))
        out.append(
            _effect(
                design, k, est, se, method="difference in means", n=len(yk) + len(yc), level=level
            )
        )
    return one_or_tuple(out)


# --------------------------------------------------------------------------- IPW
def ipw(
    X: Any,
    y: Any,
    w: Any,
    *,
    propensity: Any = None,
    propensity_model: Any = None,
    estimand: str = "ATE",
    stabilized: bool = True,
    clip: float | tuple[float, float] | None = 0.01,
    trim: Any = None,
    n_folds: int | None = 5,
    control: Any = None,
    level: float = 0.95,
    random_state: int | None = None,
    n_jobs: int | None = None,
) -> Any:
    r"""Inverse propensity weighting estimate of the ATE or ATT.

    For a treated variant :math:`k`, the control :math:`c`, propensities
    :math:`e_k(x)` clipped to ``clip``, and indicators :math:`D_{gi} =
    1\{W_i = g\}`, the ATE estimators are

    .. math::
        \hat\tau^{HT} = \frac1n \sum_i \Big(\frac{D_{ki} Y_i}{e_k(X_i)}
        - \frac{D_{ci} Y_i}{e_c(X_i)}\Big), \qquad
        \hat\tau^{stab} = \frac{\sum_i D_{ki} Y_i / e_k(X_i)}{\sum_i D_{ki} / e_k(X_i)}
        - \frac{\sum_i D_{ci} Y_i / e_c(X_i)}{\sum_i D_{ci} / e_c(X_i)}.

    The stabilised (Hajek) estimator normalises the weights within each
    variant; it is what is computed with stabilised weights
    :math:`\hat P(W = g) / e_g(X_i)` (Robins, Hernan and Brumback 2000), and
    multiplying the weights by any constant per variant leaves it unchanged.
    For the ATT, rows of :math:`k` get weight 1 and control rows the odds
    :math:`e_k/e_c` (Hirano, Imbens and Ridder 2003).

    The standard error is that of the estimator's influence function with
    the propensities treated as known (for the stabilised ATE:
    :math:`\psi_i = D_{ki}(Y_i - \hat m_k)/e_k(X_i)/\bar a_k - D_{ci}(Y_i -
    \hat m_c)/e_c(X_i)/\bar a_c`, with :math:`\bar a_g` the mean of
    :math:`D_{gi}/e_g(X_i)`). For the ATE with propensities estimated by
    maximum likelihood it is conservative (Lunceford and Davidian 2004).

    Parameters
    ----------
    X : DataFrame or array-like of shape (n_samples, n_features)
        Features for the propensity model; may be ``None`` with
        ``propensity``.
    y : array-like of shape (n_samples,)
        Numeric outcome.
    w : array-like of shape (n_samples,)
        Treatment variant of each row.
    propensity : array-like, optional
        Given propensities: a vector of ``P(W = variants[1])`` for two
        variants, or ``(n, K)`` with one column per sorted variant.
    propensity_model : classifier, default=None
        ``None`` means ``LGBMClassifier(verbose=-1)``.
    estimand : {"ATE", "ATT"}, default="ATE"
    stabilized : bool, default=True
        Stabilised (Hajek, normalised) estimator; ``False``:
        Horvitz-Thompson.
    clip : float, (float, float) or None, default=0.01
        Propensities are clipped to ``[clip, 1 - clip]`` (or ``(low,
        high)``). ``None`` does not clip; a propensity of exactly 0 for a
        row's own variant then raises.
    trim : None, "crump" or (float, float), default=None
        Drop rows whose pairwise score ``e_k / (e_k + e_c)`` lies outside
        the bounds (``"crump"``: the rule of Crump et al. 2009, see
        :func:`metalearn.diagnostics.overlap`) before estimating; the
        estimand becomes the effect on the kept population.
    n_folds : int or None, default=5
        Cross-fitting folds of the propensity model; ``None`` fits it on all
        rows and predicts the same rows (the textbook recipe).
    control : object, default=None
        The reference variant.
    level : float, default=0.95
        Confidence level.
    random_state : int, default=None
        Seeds folds and the propensity model.
    n_jobs : int, default=None
        Joblib workers.

    Returns
    -------
    WeightedEffect or tuple of WeightedEffect
        One per treated variant, with the row weights (stabilised weights
        for ``stabilized=True``).

    References
    ----------
    .. [1] Horvitz, D. G. and Thompson, D. J. (1952). A generalization of
       sampling without replacement from a finite universe. JASA 47(260),
       663-685.
    .. [2] Robins, J. M., Hernan, M. A. and Brumback, B. (2000). Marginal
       structural models and causal inference in epidemiology. Epidemiology
       11(5), 550-560.
    .. [3] Hirano, K., Imbens, G. W. and Ridder, G. (2003). Efficient
       estimation of average treatment effects using the estimated
       propensity score. Econometrica 71(4), 1161-1189.
    .. [4] Lunceford, J. K. and Davidian, M. (2004). Stratification and
       weighting via the propensity score in estimation of causal treatment
       effects: a comparative study. Statistics in Medicine 23(19),
       2937-2960.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LogisticRegression
    >>> sim = ml.datasets.simulate_confounded(n=4000, seed=0)
    >>> effect = ml.ate.ipw(sim.X, sim.y, sim.w, propensity_model=LogisticRegression(),
    ...                     random_state=0)
    >>> bool(effect.ci_low < 1.5 < effect.ci_high)  # the true ATE is 1.5
    True
    """
    _check_level(level)
    _check_estimand(estimand)
    design, e, how = design_with_propensity(
        X,
        y,
        w,
        control=control,
        need_y=True,
        propensity=propensity,
        propensity_model=propensity_model,
        n_folds=n_folds,
        random_state=random_state,
        n_jobs=n_jobs,
    )
    lo, hi = clip_bounds(clip)
    y_ = design.y
    assert y_ is not None
    c = design.control
    out = []
    for k in design.treated:
        keep, _ = trim_mask(e, design, k, trim)
        ec = clip_propensity(e, (lo, hi))
        check_no_extreme(ec, design, [c] if estimand == "ATT" else [k, c], keep)
        warn_overlap(
            design.w,
            design.label,
            c,
            [k],
            e,
            where="`metalearn.ate.ipw`",
            bounds=(lo, hi),
            sample_weight=keep.astype(np.float64),
        )
        dk = ((design.w == k) & keep).astype(np.float64)
        dc = ((design.w == c) & keep).astype(np.float64)
        n = int(keep.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            if estimand == "ATE":
                wk = np.where(dk > 0, dk / ec[:, k], 0.0)
                wc = np.where(dc > 0, dc / ec[:, c], 0.0)
            else:
                wk = dk
                wc = np.where(dc > 0, dc * ec[:, k] / ec[:, c], 0.0)
        yk_sum, yc_sum = np.sum(wk * y_), np.sum(wc * y_)
        if stabilized:
            ak, ac = wk.sum() / n, wc.sum() / n
            mk, mc = yk_sum / wk.sum(), yc_sum / wc.sum()
            est = mk - mc
            psi = wk * (y_ - mk) / ak - wc * (y_ - mc) / ac
            # Stabilised ATE weights: share of the variant over its propensity.
            stab = (dk.sum() / n, dc.sum() / n) if estimand == "ATE" else (1.0, 1.0)
            weights = wk * stab[0] + wc * stab[1]
        else:
            if estimand == "ATE":
                est = (yk_sum - yc_sum) / n
                psi = wk * y_ - wc * y_ - est * keep
            else:
                pk = dk.sum() / n
                est = (yk_sum - yc_sum) / dk.sum()
                psi = (wk * y_ - wc * y_ - dk * est) / pk
            weights = wk + wc
        se = mean_std_error(psi[keep])
        kind = "stabilised" if stabilized else "Horvitz-Thompson"
        out.append(
            _effect(
                design,
                k,
                est,
                se,
                method=f"IPW ({kind}, {estimand}; propensity {how})",
                n=n,
                level=level,
                cls=WeightedEffect,
                estimand=estimand,
                weights=weights,
            )
        )
    return one_or_tuple(out)


# -------------------------------------------------------------------------- AIPW
def aipw(
    X: Any,
    y: Any,
    w: Any,
    *,
    outcome_model: Any = None,
    propensity_model: Any = None,
    learner: Any = None,
    nuisance: Nuisance | None = None,
    propensity: Any = None,
    sample_weight: Any = None,
    estimand: str = "ATE",
    clip: float | tuple[float, float] | str | None = "auto",
    trim: Any = None,
    n_folds: int = 5,
    control: Any = None,
    level: float = 0.95,
    random_state: int | None = None,
    n_jobs: int | None = None,
    groups: Any = None,
) -> Any:
    r"""Augmented inverse propensity weighting (doubly robust) estimate, cross-fitted.

    With out-of-fold outcome models :math:`\hat\mu_g(x) = E[Y \mid X=x, W=g]`
    and propensities :math:`\hat e_g(x)` (clipped to ``clip``), the ATE of
    variant :math:`k` against the control :math:`c` is the mean of

    .. math::
        \varphi_i = \hat\mu_k(X_i) - \hat\mu_c(X_i)
        + \frac{D_{ki}(Y_i - \hat\mu_k(X_i))}{\hat e_k(X_i)}
        - \frac{D_{ci}(Y_i - \hat\mu_c(X_i))}{\hat e_c(X_i)},

    with standard error :math:`\mathrm{sd}(\varphi)/\sqrt n`, the
    influence-function standard error of the cross-fitted estimator, valid
    when both nuisances converge at rates whose product is
    :math:`o(n^{-1/2})` (Chernozhukov et al. 2018). The ATT is

    .. math::
        \hat\tau^{ATT} = \frac{\sum_i \big[D_{ki} - D_{ci}\,\hat e_k(X_i)/\hat e_c(X_i)\big]
        (Y_i - \hat\mu_c(X_i))}{\sum_i D_{ki}},

    with influence values :math:`(\text{numerator}_i - D_{ki}\hat\tau) /
    \hat p_k` (Hahn 1998; Chernozhukov et al. 2018, Section 5.1).

    The nuisance stage is a :class:`~metalearn.Nuisance`: a fitted one
    (``nuisance=``, or the ``nuisance_`` of a fitted learner via
    ``learner=``) is reused without refitting when it was fitted on the same
    ``X, y, w`` (models it lacks, such as the propensity model of a
    T-learner, are fitted once and kept in it); otherwise one is fitted from
    ``outcome_model`` and ``propensity_model``. A classifier outcome model
    gives effects on the class probabilities (an array over classes for more
    than two classes).

    Parameters
    ----------
    X : DataFrame or array-like of shape (n_samples, n_features)
        Features.
    y : array-like of shape (n_samples,)
        Outcome (numeric, or class labels with a classifier outcome model).
    w : array-like of shape (n_samples,)
        Treatment variant of each row.
    outcome_model : estimator, default=None
        Regressor (or classifier); ``None`` means ``LGBMRegressor(verbose=-1)``.
    propensity_model : classifier, default=None
        ``None`` means ``LGBMClassifier(verbose=-1)``.
    learner : fitted metalearner, default=None
        A fitted T-, X-, R- or DR-learner whose nuisance stage is reused; its
        ``control_`` is the default control.
    nuisance : Nuisance, default=None
        A (fitted) nuisance stage to reuse.
    propensity : array-like, optional
        Known propensities (randomized designs), passed to the nuisance
        stage; must match those it was fitted with.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (weighted means); must match those of a fitted nuisance.
    estimand : {"ATE", "ATT"}, default="ATE"
    clip : float, (float, float), None or "auto", default="auto"
        Each arm's propensity is clipped to ``[clip, 1 - clip]`` (or ``(low,
        high)``) on its own, the rule of :mod:`metalearn._core.formulas`; ``None``
        does not clip. ``"auto"``: the ``propensity_clip`` of ``learner``
        when one is given (so that ``aipw(X, y, w, learner=dr)`` is
        ``dr.ate()``), else 0.01. The clip of an average effect need not be
        that of a CATE learner: clipping biases the mean, so where overlap
        is poor pass a small clip here (e.g. 0.01) rather than the
        DR-learner's default 0.05, which is tuned for its CATE regression.
    trim : None, "crump" or (float, float), default=None
        Drop rows whose pairwise score lies outside the bounds; the effect is
        then on the kept population.
    n_folds : int, default=5
        Cross-fitting folds of a nuisance stage fitted here.
    control : object, default=None
        The reference variant.
    level : float, default=0.95
        Confidence level.
    random_state : int, default=None
        Seeds folds and nuisance models fitted here.
    n_jobs : int, default=None
        Joblib workers.
    groups : array-like of shape (n_samples,), optional
        Cluster labels (schools, customers): a nuisance stage fitted here
        keeps each group in one fold (a fitted one must have been fitted with
        the same groups), and the standard error is cluster-robust.

    Returns
    -------
    AverageEffect or tuple of AverageEffect
        One per treated variant.

    References
    ----------
    .. [1] Robins, J. M., Rotnitzky, A. and Zhao, L. P. (1994). Estimation of
       regression coefficients when some regressors are not always observed.
       JASA 89(427), 846-866.
    .. [2] Hahn, J. (1998). On the role of the propensity score in efficient
       semiparametric estimation of average treatment effects. Econometrica
       66(2), 315-331.
    .. [3] Chernozhukov, V., Chetverikov, D., Demirer, M., Duflo, E., Hansen,
       C., Newey, W. and Robins, J. (2018). Double/debiased machine learning
       for treatment and structural parameters. Econometrics Journal 21(1),
       C1-C68.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression
    >>> sim = ml.datasets.simulate_confounded(n=4000, seed=0)
    >>> effect = ml.ate.aipw(sim.X, sim.y, sim.w, outcome_model=LinearRegression(),
    ...                      propensity_model=LogisticRegression(), random_state=0)
    >>> bool(effect.ci_low < 1.5 < effect.ci_high)  # the true ATE is 1.5
    True
    """
    _check_level(level)
    _check_estimand(estimand)
    if learner is not None and nuisance is not None:
        raise ValueError(
            "Pass either `learner` or `nuisance`, not both: a learner brings its own "
            "nuisance stage."
        )
    shared = learner is not None or nuisance is not None
    if shared and (outcome_model is not None or propensity_model is not None):
        raise ValueError(
            "`outcome_model` and `propensity_model` are not used when a fitted `learner` or "
            "`nuisance` is given; pass one or the other."
        )
    if learner is not None:
        if not hasattr(learner, "variants_"):
            raise ValueError(
                f"`learner` ({type(learner).__name__}) is not fitted: call "
                "`learner.fit(X, y, w)` first, or pass `outcome_model` and `propensity_model`."
            )
        nuis = getattr(learner, "nuisance_", None)
        if not isinstance(nuis, Nuisance):
            raise TypeError(
                f"`learner` ({type(learner).__name__}) has no nuisance stage to reuse; pass a "
                "T-, X-, R- or DR-learner, or `outcome_model` and `propensity_model`."
            )
        if control is None:
            control = learner.control_
    elif nuisance is not None:
        if not isinstance(nuisance, Nuisance):
            raise TypeError(
                f"`nuisance` must be a metalearn.Nuisance; got {type(nuisance).__name__}."
            )
        nuis = nuisance if hasattr(nuisance, "fingerprint_") else clone(nuisance)
    else:
        nuis = Nuisance(
            outcome_model=outcome_model,
            propensity_model=propensity_model,
            n_folds=n_folds,
            n_jobs=n_jobs,
            random_state=random_state,
        )
    data = prepare_data(
        X,
        y,
        w,
        classification=nuis.is_classification,
        sample_weight=sample_weight,
        propensity=propensity,
        groups=groups,
    )
    nuis.ensure(data, {"mu", "e"})
    if isinstance(clip, str) and clip == "auto":
        clip = getattr(learner, "propensity_clip", 0.01) if learner is not None else 0.01
    out = aipw_effects(
        data,
        nuis.oof_["mu"],
        nuis.oof_["e"],
        control=control_index(data.variants, control),
        clip=clip,
        trim=trim,
        estimand=estimand,
        level=level,
        where="`metalearn.ate.aipw`",
    )
    return one_or_tuple(out)


# ---------------------------------------------------------------------- matching
def _score(q: np.ndarray, distance: str) -> np.ndarray:
    if distance == "propensity":
        return q
    if np.any((q <= 0) | (q >= 1)):
        raise ValueError(
            "`distance='logit'` needs pairwise propensities strictly between 0 and 1; some "
            "are exactly 0 or 1. Use `distance='propensity'` or clip the propensities."
        )
    return np.log(q) - np.log1p(-q)


def _match_with_replacement(
    src: np.ndarray, dst: np.ndarray, M: int, radius_cap: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest ``M`` of ``dst`` for every ``src`` value, all ties at the M-th distance kept.

    Returns the sort order of ``dst`` and, per source, the half-open range
    ``[lo, hi)`` of matches in sorted order, the number matched and the
    distance to the farthest match used (``nan`` when unmatched).
    """
    order = np.argsort(dst, kind="stable")
    s = dst[order]
    n_dst = len(s)
    m = min(M, n_dst)
    pos = np.searchsorted(s, src, side="left")
    offsets = np.arange(-m, m)
    cand = pos[:, None] + offsets[None, :]
    valid = (cand >= 0) & (cand < n_dst)
    dist = np.where(valid, np.abs(s[np.clip(cand, 0, n_dst - 1)] - src[:, None]), np.inf)
    d_m = np.sort(dist, axis=1)[:, m - 1]
    radius = np.minimum(d_m, radius_cap)
    tol = _TIE_TOL * np.maximum(1.0, np.abs(src))
    lo = np.searchsorted(s, src - radius - tol, side="left")
    hi = np.searchsorted(s, src + radius + tol, side="right")
    count = hi - lo
    ok = count > 0
    first = np.abs(s[np.clip(lo, 0, n_dst - 1)] - src)
    last = np.abs(s[np.clip(hi - 1, 0, n_dst - 1)] - src)
    used = np.where(ok, np.maximum(first, last), np.nan)
    return order, lo, hi, count, used


def _match_without_replacement(
    src: np.ndarray, dst: np.ndarray, M: int, radius_cap: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy matching without replacement; returns pairs ``(src_pos, dst_pos)`` and distances.

    Sources are processed from the largest score down; each takes its ``M``
    nearest still-available destinations within the caliper, ties broken by
    the lower row position.
    """
    order = np.argsort(dst, kind="stable")  # by (score, position)
    s = dst[order]
    n = len(s)
    # Two union-find structures over sorted positions. right: the root of i is the next
    # available position at or after i (n: none). left, shifted by one: the root of
    # i + 1, minus one, is the previous available position at or before i (-1: none).
    right = np.arange(n + 1)
    left = np.arange(n + 1)

    def find(parent: np.ndarray, i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def next_right(i: int) -> int:
        return find(right, i) if i < n else n

    def next_left(i: int) -> int:
        return find(left, i + 1) - 1 if i >= 0 else -1

    def remove(i: int) -> None:
        right[i] = i + 1
        left[i + 1] = i

    src_order = np.lexsort((np.arange(len(src)), -src))
    pairs_src: list[int] = []
    pairs_dst: list[int] = []
    dists: list[float] = []
    for i in src_order:
        x = src[i]
        pos = int(np.searchsorted(s, x, side="left"))
        for _ in range(M):
            r = next_right(pos)
            lft = next_left(pos - 1)
            if lft >= 0:
                # The first available of its tie group: lowest row position among equals.
                start = int(np.searchsorted(s, s[lft], side="left"))
                lft = next_right(start)
            best = -1
            best_d = np.inf
            for cand in (lft, r):
                if 0 <= cand < n:
                    d = abs(s[cand] - x)
                    if d < best_d or (d == best_d and order[cand] < order[best]):
                        best, best_d = cand, d
            if best < 0 or best_d > radius_cap:
                break
            pairs_src.append(int(i))
            pairs_dst.append(int(order[best]))
            dists.append(float(best_d))
            remove(best)
    return (
        np.asarray(pairs_src, dtype=np.intp),
        np.asarray(pairs_dst, dtype=np.intp),
        np.asarray(dists, dtype=np.float64),
    )


def _same_arm_variance(score: np.ndarray, y: np.ndarray, J: int) -> np.ndarray:
    r"""Abadie-Imbens conditional variance :math:`\frac{J}{J+1}(Y_i - \bar Y_{J(i)})^2`.

    :math:`J(i)` are the ``J`` rows of the same arm nearest in score.
    """
    n = len(score)
    if n < 2:
        return np.zeros(n)
    J = min(J, n - 1)
    order = np.argsort(score, kind="stable")
    s, ys = score[order], y[order]
    offsets = np.concatenate([np.arange(-J, 0), np.arange(1, J + 1)])
    cand = np.arange(n)[:, None] + offsets[None, :]
    valid = (cand >= 0) & (cand < n)
    cc = np.clip(cand, 0, n - 1)
    dist = np.where(valid, np.abs(s[cc] - s[:, None]), np.inf)
    pick = np.argsort(dist, axis=1, kind="stable")[:, :J]
    nbr = np.take_along_axis(cc, pick, axis=1)
    var_sorted = J / (J + 1.0) * (ys - ys[nbr].mean(axis=1)) ** 2
    out = np.empty(n)
    out[order] = var_sorted
    return out


def matching(
    X: Any,
    y: Any,
    w: Any,
    *,
    propensity: Any = None,
    propensity_model: Any = None,
    estimand: str = "ATT",
    n_neighbors: int = 1,
    caliper: float | None = None,
    replace: bool = True,
    distance: str = "propensity",
    variance_neighbors: int = 2,
    n_folds: int | None = 5,
    control: Any = None,
    level: float = 0.95,
    random_state: int | None = None,
    n_jobs: int | None = None,
) -> Any:
    r"""Propensity-score matching estimate of the ATT or ATE, with the Abadie-Imbens error.

    Every target row :math:`i` (for the ATT, each row of the treated variant
    :math:`k`; for the ATE, each row of :math:`k` or the control :math:`c`)
    is matched to the ``n_neighbors`` (:math:`M`) rows of the other group
    nearest in the pairwise score :math:`q = e_k/(e_k + e_c)` (or its logit),
    and its missing potential outcome is imputed by their mean:

    .. math::
        \hat\tau^{ATT} = \frac{1}{N_k}\sum_{W_i = k}\Big(Y_i
        - \sum_{j \in \mathcal J(i)} \omega_{ij} Y_j\Big), \qquad
        \omega_{ij} = 1/|\mathcal J(i)|.

    **Ties.** With replacement, :math:`\mathcal J(i)` holds every row whose
    distance is at most the :math:`M`-th smallest distance (up to a relative
    1e-12), each with equal weight, as in Abadie and Imbens (2006): no row
    wins a tie by its position, so the estimate does not depend on row order.
    Without replacement, target rows are matched greedily from the largest
    score down, each taking its nearest still-unused rows; ties are then
    broken by the lower row position.

    **Caliper.** Matches farther than ``caliper`` standard deviations of the
    score (computed over the rows of :math:`k` and :math:`c`) are not used
    (Austin 2011 suggests 0.2 on the logit scale); target rows left without
    any match are dropped, with a warning, and the estimate is for the
    matched rows. If no row has a match, a :class:`ValueError` is raised.

    **Standard error** (Abadie and Imbens 2006, with the matched weights
    :math:`K_j = \sum_i \omega_{ij}` and :math:`S_j = \sum_i
    \omega_{ij}^2`): for the ATT

    .. math::
        \hat V = \frac{1}{N_k^2}\Big[\sum_{W_i = k}\big(Y_i - \hat Y_i(c)
        - \hat\tau\big)^2 + \sum_{W_j = c}(K_j^2 - S_j)\,\hat\sigma^2_j\Big],

    and for the ATE the first sum runs over all target rows and the second
    gains :math:`2K_j` per matched target row. :math:`\hat\sigma^2_j` is
    estimated by matching within the same arm on ``variance_neighbors``
    (:math:`J`) rows: :math:`\frac{J}{J+1}(Y_j - \bar Y_{J(j)})^2`. The
    propensity is treated as known; with an estimated propensity the error
    is conservative for the ATE and may go either way for the ATT (Abadie
    and Imbens 2016). The bootstrap is not offered: it is invalid for
    matching with replacement (Abadie and Imbens 2008).

    With more than two variants the ATE is that of the population of rows
    receiving :math:`k` or :math:`c` (Lechner 2001).

    Parameters
    ----------
    X : DataFrame or array-like of shape (n_samples, n_features)
        Features of the propensity model; may be ``None`` with
        ``propensity``.
    y : array-like of shape (n_samples,)
        Numeric outcome.
    w : array-like of shape (n_samples,)
        Treatment variant of each row.
    propensity : array-like, optional
        Given propensities (vector for two variants, or ``(n, K)``).
    propensity_model : classifier, default=None
        ``None`` means ``LGBMClassifier(verbose=-1)``.
    estimand : {"ATT", "ATE"}, default="ATT"
    n_neighbors : int, default=1
        Matches per target row (1:k matching).
    caliper : float, default=None
        Maximum distance in standard deviations of the score.
    replace : bool, default=True
        Whether a row may serve as a match more than once.
    distance : {"propensity", "logit"}, default="propensity"
        Scale of the score matched on.
    variance_neighbors : int, default=2
        Same-arm neighbours for the conditional variances.
    n_folds : int or None, default=5
        Cross-fitting folds of the propensity model (``None``: in-sample).
    control : object, default=None
        The reference variant.
    level : float, default=0.95
        Confidence level.
    random_state : int, default=None
        Seeds folds and the propensity model.
    n_jobs : int, default=None
        Joblib workers.

    Returns
    -------
    MatchingEffect or tuple of MatchingEffect
        One per treated variant.

    References
    ----------
    .. [1] Rosenbaum, P. R. and Rubin, D. B. (1985). Constructing a control
       group using multivariate matched sampling methods that incorporate
       the propensity score. The American Statistician 39(1), 33-38.
    .. [2] Abadie, A. and Imbens, G. W. (2006). Large sample properties of
       matching estimators for average treatment effects. Econometrica
       74(1), 235-267.
    .. [3] Abadie, A. and Imbens, G. W. (2008). On the failure of the
       bootstrap for matching estimators. Econometrica 76(6), 1537-1557.
    .. [4] Abadie, A. and Imbens, G. W. (2016). Matching on the estimated
       propensity score. Econometrica 84(2), 781-807.
    .. [5] Austin, P. C. (2011). Optimal caliper widths for propensity-score
       matching when estimating differences in means and differences in
       proportions in observational studies. Pharmaceutical Statistics
       10(2), 150-161.
    .. [6] Lechner, M. (2001). Identification and estimation of causal
       effects of multiple treatments under the conditional independence
       assumption. In Econometric Evaluation of Labour Market Policies,
       43-58. Physica.

    Examples
    --------
    >>> import metalearn as ml
    >>> sim = ml.datasets.simulate_confounded(n=3000, seed=0)
    >>> att = ml.ate.matching(sim.X, sim.y, sim.w, propensity=sim.propensity)
    >>> true_att = sim.tau[sim.w == 1].mean()
    >>> bool(abs(att.estimate - true_att) < 3 * att.std_error)
    True
    """
    _check_level(level)
    _check_estimand(estimand)
    if (
        isinstance(n_neighbors, bool)
        or not isinstance(n_neighbors, int | np.integer)
        or (n_neighbors < 1)
    ):
        raise ValueError(f"`n_neighbors` must be a positive integer; got {n_neighbors!r}.")
    if (
        isinstance(variance_neighbors, bool)
        or not isinstance(variance_neighbors, int | np.integer)
        or variance_neighbors < 1
    ):
        raise ValueError(
            f"`variance_neighbors` must be a positive integer; got {variance_neighbors!r}."
        )
    if caliper is not None and not (np.isfinite(caliper) and caliper > 0):
        raise ValueError(
            f"`caliper` must be a positive number of standard deviations or None; got {caliper!r}."
        )
    if distance not in ("propensity", "logit"):
        raise ValueError(f"`distance` must be 'propensity' or 'logit'; got {distance!r}.")
    design, e, how = design_with_propensity(
        X,
        y,
        w,
        control=control,
        need_y=True,
        propensity=propensity,
        propensity_model=propensity_model,
        n_folds=n_folds,
        random_state=random_state,
        n_jobs=n_jobs,
    )
    y_ = design.y
    assert y_ is not None
    c = design.control
    out = []
    for k in design.treated:
        warn_overlap(design.w, design.label, c, [k], e, where="`metalearn.ate.matching`")
        rows_k = np.flatnonzero(design.w == k)
        rows_c = np.flatnonzero(design.w == c)
        score = _score(pair_score(e, k, c), distance)
        sd = float(np.std(score[np.concatenate([rows_k, rows_c])]))
        cap = np.inf if caliper is None else caliper * sd
        directions = [(rows_k, rows_c)]
        if estimand == "ATE":
            directions.append((rows_c, rows_k))
        imputed = np.full(design.n, np.nan)  # the other arm's mean for matched target rows
        K = np.zeros(design.n)  # sum_i omega_ij
        S = np.zeros(design.n)  # sum_i omega_ij^2
        used = np.full(design.n, np.nan)  # distance to the farthest match used
        for src_rows, dst_rows in directions:
            src, dst = score[src_rows], score[dst_rows]
            if replace:
                order, lo, hi, count, dist = _match_with_replacement(src, dst, n_neighbors, cap)
                ok = count > 0
                ys = y_[dst_rows][order]
                csum = np.concatenate([[0.0], np.cumsum(ys)])
                mean = np.where(ok, (csum[hi] - csum[lo]) / np.maximum(count, 1), np.nan)
                imputed[src_rows] = mean
                used[src_rows] = dist
                inv = np.where(ok, 1.0 / np.maximum(count, 1), 0.0)
                diff_k = np.zeros(len(dst) + 1)
                diff_s = np.zeros(len(dst) + 1)
                np.add.at(diff_k, lo, inv)
                np.add.at(diff_k, hi, -inv)
                np.add.at(diff_s, lo, inv**2)
                np.add.at(diff_s, hi, -(inv**2))
                K[dst_rows[order]] += np.cumsum(diff_k)[:-1]
                S[dst_rows[order]] += np.cumsum(diff_s)[:-1]
            else:
                ps, pd_, dist = _match_without_replacement(src, dst, n_neighbors, cap)
                count = np.bincount(ps, minlength=len(src))
                sums = np.bincount(ps, weights=y_[dst_rows][pd_], minlength=len(src))
                ok = count > 0
                imputed[src_rows] = np.where(ok, sums / np.maximum(count, 1), np.nan)
                far = np.full(len(src), np.nan)
                if len(ps):
                    far_ok = np.zeros(len(src))
                    np.maximum.at(far_ok, ps, dist)
                    far = np.where(ok, far_ok, np.nan)
                used[src_rows] = far
                omega = 1.0 / count[ps]
                np.add.at(K, dst_rows[pd_], omega)
                np.add.at(S, dst_rows[pd_], omega**2)
        target = rows_k if estimand == "ATT" else np.concatenate([rows_k, rows_c])
        matched = target[np.isfinite(imputed[target])]
        n_unmatched = len(target) - len(matched)
        if len(matched) == 0:
            raise ValueError(
                f"No row of {'the treated variant' if estimand == 'ATT' else 'either group'} "
                f"({design.label(k)!r} vs {design.label(c)!r}) has a match within the caliper "
                f"of {caliper} standard deviations ({cap:.4g} on the {distance} scale). Widen "
                "`caliper` or pass `caliper=None`."
            )
        if n_unmatched:
            warn_once(
                f"{n_unmatched} of {len(target)} target rows ({design.label(k)!r} vs "
                f"{design.label(c)!r}) have no match (within the caliper, or left unused "
                "when matching without replacement) and are left out: the "
                f"estimate is the {estimand} of the {len(matched)} matched rows."
            )
        treated_row = design.w[matched] == k
        effect_i = np.where(
            treated_row, y_[matched] - imputed[matched], imputed[matched] - y_[matched]
        )
        est = float(effect_i.mean())
        sigma2 = np.zeros(design.n)
        for rows in (rows_k, rows_c):
            sigma2[rows] = _same_arm_variance(score[rows], y_[rows], variance_neighbors)
        is_target = np.zeros(design.n, dtype=bool)
        is_target[matched] = True
        extra = K**2 - S + (2.0 * K * is_target if estimand == "ATE" else 0.0)
        n_m = len(matched)
        var = (np.sum((effect_i - est) ** 2) + np.sum(extra * sigma2)) / n_m**2
        weights = is_target.astype(np.float64) + K
        dist_m = used[matched]
        out.append(
            _effect(
                design,
                k,
                est,
                float(np.sqrt(var)),
                method=f"PS matching 1:{n_neighbors} ({estimand}; propensity {how})",
                n=n_m,
                level=level,
                cls=MatchingEffect,
                estimand=estimand,
                weights=weights,
                n_unmatched=n_unmatched,
                mean_distance=float(np.mean(dist_m)),
                max_distance=float(np.max(dist_m)),
            )
        )
    return one_or_tuple(out)
