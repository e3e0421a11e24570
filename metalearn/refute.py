"""Refutation checks: does an effect estimate behave as a causal estimate should?

Each check re-runs an estimator on altered data and compares the new
estimate with what a sound estimate must give:

* :func:`placebo`: the treatment is replaced by a random permutation of
  itself, so that it has no effect; the estimate must vanish.
* :func:`random_common_cause`: an independent noise column is added to the
  features; a valid adjustment must not move.
* :func:`subset`: the estimate is recomputed on random subsets (halves by
  default); it must stay within sampling error of the full-data estimate.

Each returns a :class:`Refutation` (a tuple of them, one per treated variant,
with more than two variants) holding the statistic, its expected value, the
tolerance, the rule in words and ``passed``.

The *estimator* is either a metalearn learner (cloned and refitted; its
``ate()`` is used: AIPW with a standard error for the DR-learner, the
plug-in mean of out-of-fold estimates otherwise) or any callable
``estimator(X, y, w)`` returning an :class:`~metalearn.AverageEffect`, a
tuple of them or plain numbers, e.g.
``functools.partial(metalearn.ate.aipw, outcome_model=..., propensity_model=...)``.

What these checks cannot see: a treatment that is itself caused by the
outcome (reverse causation) or confounding by an unmeasured variable moves
none of them. A permuted treatment is independent of everything whatever the
data, and noise is irrelevant whatever the data; they catch *estimators* that
find effects where there are none, or that are unstable, not wrong causal
assumptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from sklearn.base import clone
from sklearn.utils import check_random_state

from metalearn._core.design import add_column, py, take_rows
from metalearn._core.frames import encode_features, to_1d_array
from metalearn._core.results import AverageEffect, TableResult, scalar_fields
from metalearn._core.validation import control_index, encode_treatment

__all__ = ["Refutation", "placebo", "random_common_cause", "subset"]


@dataclass(frozen=True, repr=False, eq=False)
class Refutation(TableResult):
    """Outcome of one refutation check for one treated variant.

    Attributes
    ----------
    check : str
        ``"placebo"``, ``"random common cause"`` or ``"subset"``.
    variant, control : object
        The compared variants.
    estimate : float
        The estimate on the original data.
    std_error : float
        Its standard error (``nan`` when the estimator gives none).
    statistic : float
        The mean of the re-estimates on the altered data.
    expected : float
        What ``statistic`` should be: 0 for the placebo, ``estimate`` for the
        others.
    tolerance : float
        The largest ``|statistic - expected|`` that passes.
    passed : bool
        Whether ``|statistic - expected| <= tolerance``.
    rule : str
        The rule, in words.
    statistics : ndarray of shape (n_repeats,)
        The re-estimates, one per repetition.

    ``summary()`` gives the result as a one-row frame (the scalar attributes
    and ``n_repeats``; not the re-estimates), which notebooks show as a
    table.

    Examples
    --------
    >>> import metalearn as ml
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)  # randomized
    >>> res = ml.refute.subset(ml.ate.difference_in_means, sim.X, sim.y, sim.w,
    ...                        n_repeats=3, random_state=0)
    >>> res.check, res.variant, res.control, res.n_repeats, res.passed
    ('subset', 1, 0, 3, True)
    >>> bool(abs(res.statistic - res.expected) <= res.tolerance)
    True
    >>> res.summary().columns[:4], res.summary()["n_repeats"][0]
    (['check', 'variant', 'control', 'estimate'], 3)
    """

    check: str
    variant: Any
    control: Any
    estimate: float
    std_error: float
    statistic: float
    expected: float
    tolerance: float
    passed: bool
    rule: str
    statistics: np.ndarray

    @property
    def n_repeats(self) -> int:
        return len(self.statistics)

    def _summary_rows(self) -> list[dict[str, Any]]:
        return [scalar_fields(self) | {"n_repeats": self.n_repeats}]

    def __repr__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"Refutation({self.check}, {self.variant!r} vs {self.control!r}: {verdict}; "
            f"statistic {self.statistic:.4g}, expected {self.expected:.4g}, tolerance "
            f"{self.tolerance:.4g}; estimate {self.estimate:.4g} (se {self.std_error:.4g}), "
            f"{self.n_repeats} repeat(s). Rule: {self.rule})"
        )


# ------------------------------------------------------------------- estimators
def _is_learner(estimator: Any) -> bool:
    return (
        hasattr(estimator, "fit") and hasattr(estimator, "ate") and hasattr(estimator, "get_params")
    )


def _check_estimator(estimator: Any) -> None:
    if not (_is_learner(estimator) or callable(estimator)):
        raise TypeError(
            "`estimator` must be a metalearn learner or a callable `estimator(X, y, w)` "
            f"returning an AverageEffect (or numbers); got {type(estimator).__name__}."
        )


def _fresh(learner: Any) -> Any:
    """A clone that refits everything, including a shared fitted Nuisance."""
    est = clone(learner)
    nuis = est.get_params(deep=False).get("nuisance")
    if nuis is not None and hasattr(nuis, "fingerprint_"):
        est.set_params(nuisance=type(nuis)(**nuis.get_params(deep=False)))
    return est


def _run(
    estimator: Any, X: Any, y: Any, w: Any
) -> tuple[np.ndarray, np.ndarray, tuple[list[Any], Any] | None]:
    """Estimates, standard errors and (when known) labels, one per treated variant."""
    if _is_learner(estimator):
        model = _fresh(estimator)
        model.fit_predict(X, y, w)
        # AIPW from the learner's own cross-fitted nuisances (plug-in for the S-learner).
        result: Any = model.ate(X, y, w) if model._uses_nuisance else model.ate()
    else:
        result = estimator(X, y, w)
    items = list(result) if isinstance(result, tuple | list) else [result]
    if not items:
        raise ValueError("`estimator` returned no estimate.")
    est, se = [], []
    labels: tuple[list[Any], Any] | None = None
    if all(isinstance(item, AverageEffect) for item in items):
        labels = ([item.variant for item in items], items[0].control)
    for item in items:
        if isinstance(item, AverageEffect):
            value, err = item.estimate, item.std_error
        else:
            value, err = item, np.nan
        if np.ndim(value) != 0:
            raise ValueError(
                "The refutation checks need one number per treated variant; the estimator "
                f"returned an array of shape {np.shape(value)} (a multi-class outcome?). Wrap "
                "it to return the effect on one class."
            )
        est.append(float(value))
        se.append(float(err) if err is not None else np.nan)
    return np.asarray(est), np.asarray(se), labels


def _labels(
    w: Any, n: int, control: Any, found: tuple[list[Any], Any] | None
) -> tuple[list[Any], Any]:
    """Labels from the estimator's own results, else from ``w`` and ``control``."""
    if found is not None and control is None:
        return found
    treatment = encode_treatment(w, n)
    ci = control_index(treatment.variants, control)
    treated = [py(v) for i, v in enumerate(treatment.variants) if i != ci]
    return treated, py(treatment.variants[ci])


def _n_rows(X: Any, y: Any) -> int:
    if X is not None:
        return encode_features(X)[0].shape[0]
    return len(to_1d_array(y, name="y"))


def _check_common(n_repeats: int, level: float) -> None:
    if (
        isinstance(n_repeats, bool)
        or not isinstance(n_repeats, int | np.integer)
        or (n_repeats < 1)
    ):
        raise ValueError(f"`n_repeats` must be a positive integer; got {n_repeats!r}.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must be in (0, 1), e.g. 0.95; got {level!r}.")


def _assemble(
    check: str,
    labels: tuple[list[Any], Any],
    est: np.ndarray,
    se: np.ndarray,
    reps: np.ndarray,
    expected: np.ndarray,
    tolerance: np.ndarray,
    rule: str,
) -> Any:
    treated, control = labels
    if len(treated) != len(est):
        treated = list(range(1, len(est) + 1))
    out = []
    for j, variant in enumerate(treated):
        stat = float(np.mean(reps[:, j]))
        out.append(
            Refutation(
                check=check,
                variant=variant,
                control=control,
                estimate=float(est[j]),
                std_error=float(se[j]),
                statistic=stat,
                expected=float(expected[j]),
                tolerance=float(tolerance[j]),
                passed=bool(abs(stat - expected[j]) <= tolerance[j]),
                rule=rule,
                statistics=reps[:, j].copy(),
            )
        )
    return out[0] if len(out) == 1 else tuple(out)


# ----------------------------------------------------------------------- checks
def placebo(
    estimator: Any,
    X: Any,
    y: Any,
    w: Any,
    *,
    n_repeats: int = 1,
    level: float = 0.95,
    control: Any = None,
    random_state: Any = None,
) -> Any:
    r"""Placebo treatment: permute ``w`` at random; the estimated effect must vanish.

    A permuted treatment is independent of the features and the outcome, so
    its true effect is 0. With :math:`R` permutations giving estimates
    :math:`\hat\tau_r` with standard errors :math:`s_r`, the statistic is
    :math:`\bar\tau = \frac1R\sum_r \hat\tau_r`, the expected value 0, and
    the check passes when

    .. math::
        |\bar\tau| \le z_{1-\alpha/2}\, \frac{\sqrt{\sum_r s_r^2}}{R},

    i.e. when 0 lies in the level :math:`1 - \alpha` confidence interval of
    the mean placebo estimate (the permutations are independent, so the
    variance of the mean is the sum of variances over :math:`R^2`). For an
    estimator that gives no standard error, :math:`\sqrt{\sum_r s_r^2}/R` is
    replaced by the standard deviation of the :math:`\hat\tau_r` over
    :math:`\sqrt R` (needs ``n_repeats >= 2``). A sound estimator fails with
    probability about :math:`\alpha`.

    Parameters
    ----------
    estimator : learner or callable
        A metalearn learner or ``estimator(X, y, w) -> AverageEffect``.
    X, y, w : frame or array-like
        The data, as for the estimator.
    n_repeats : int, default=1
        Number of independent permutations.
    level : float, default=0.95
        Confidence level of the rule.
    control : object, default=None
        The control variant, used to label the results (the estimator uses
        its own ``control``).
    random_state : int, RandomState or None, default=None
        Seeds the permutations (``numpy.random.RandomState``; an instance is
        used as is, so successive checks can share one stream).

    Returns
    -------
    Refutation or tuple of Refutation
        One per treated variant.

    References
    ----------
    .. [1] Sharma, A. and Kiciman, E. (2020). DoWhy: an end-to-end library
       for causal inference. arXiv:2011.04216.
    .. [2] Athey, S. and Imbens, G. W. (2017). The state of applied
       econometrics: causality and policy evaluation. Journal of Economic
       Perspectives 31(2), 3-32 (placebo analyses).

    Examples
    --------
    >>> from functools import partial
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression
    >>> sim = ml.datasets.simulate_confounded(n=2000, seed=0)
    >>> est = partial(ml.ate.aipw, outcome_model=LinearRegression(),
    ...               propensity_model=LogisticRegression(), random_state=0)
    >>> ml.refute.placebo(est, sim.X, sim.y, sim.w, random_state=0).passed
    True
    """
    _check_estimator(estimator)
    _check_common(n_repeats, level)
    rng = check_random_state(random_state)
    n = _n_rows(X, y)
    w_arr = to_1d_array(w, name="w")
    est, se, found = _run(estimator, X, y, w_arr)
    labels = _labels(w_arr, n, control, found)
    reps, errs = [], []
    for _ in range(n_repeats):
        w_perm = w_arr[rng.permutation(n)]
        r_est, r_se, _ = _run(estimator, X, y, w_perm)
        reps.append(r_est)
        errs.append(r_se)
    reps_a, errs_a = np.asarray(reps), np.asarray(errs)
    z = stats.norm.ppf(0.5 + level / 2)
    if np.all(np.isfinite(errs_a)):
        spread = np.sqrt(np.sum(errs_a**2, axis=0)) / n_repeats
        how = "the placebo estimates' standard errors"
    else:
        if n_repeats < 2:
            raise ValueError(
                "The estimator gives no standard error, so the placebo check needs the spread "
                "of several placebo estimates: pass `n_repeats >= 2` (e.g. 20), or use an "
                "estimator with a standard error (a DRLearner or metalearn.ate.aipw)."
            )
        spread = np.std(reps_a, axis=0, ddof=1) / np.sqrt(n_repeats)
        how = "the spread of the placebo estimates"
    rule = (
        f"passes if |mean placebo estimate| <= {z:.3g} x its standard error (from {how}), "
        f"i.e. 0 lies in its {level:.0%} confidence interval"
    )
    return _assemble("placebo", labels, est, se, reps_a, np.zeros_like(est), z * spread, rule)


def random_common_cause(
    estimator: Any,
    X: Any,
    y: Any,
    w: Any,
    *,
    n_repeats: int = 1,
    tolerance: float = 0.5,
    abs_tolerance: float | None = None,
    control: Any = None,
    random_state: Any = None,
) -> Any:
    r"""Random common cause: add an independent noise feature; the estimate must not move.

    A column :math:`U \sim N(0, 1)`, independent of everything, is added to
    ``X`` (named ``"random_common_cause"``) and the effect re-estimated,
    ``n_repeats`` times with fresh noise. :math:`U` is not a confounder, so a
    valid adjustment is unchanged up to the small variation that one more
    irrelevant covariate brings. The statistic is the mean re-estimate
    :math:`\bar\tau`, its expected value the original estimate
    :math:`\hat\tau`, and the check passes when

    .. math:: |\bar\tau - \hat\tau| \le \text{tolerance} \times \widehat{\mathrm{se}}(\hat\tau)

    (``abs_tolerance``, when given, replaces the right-hand side). For an
    efficient estimator, adding an irrelevant covariate changes the estimate
    by much less than one standard error (the difference of two estimators
    of the same quantity has variance equal to the difference of their
    variances, Hausman 1978), so half a standard error is a generous bound
    for a stable estimator and a tight one for an unstable one.

    Parameters
    ----------
    estimator : learner or callable
        A metalearn learner or ``estimator(X, y, w) -> AverageEffect``.
    X, y, w : frame or array-like
        The data; ``X`` keeps its frame type with one more column.
    n_repeats : int, default=1
        Number of noise draws.
    tolerance : float, default=0.5
        Allowed shift in standard errors of the original estimate.
    abs_tolerance : float, optional
        Allowed shift in outcome units; required when the estimator gives no
        standard error.
    control : object, default=None
        The control variant, for labels.
    random_state : int, RandomState or None, default=None
        Seeds the noise.

    Returns
    -------
    Refutation or tuple of Refutation
        One per treated variant.

    References
    ----------
    .. [1] Sharma, A. and Kiciman, E. (2020). DoWhy: an end-to-end library
       for causal inference. arXiv:2011.04216.
    .. [2] Hausman, J. A. (1978). Specification tests in econometrics.
       Econometrica 46(6), 1251-1271.

    Examples
    --------
    >>> from functools import partial
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression
    >>> sim = ml.datasets.simulate_confounded(n=2000, seed=0)
    >>> est = partial(ml.ate.aipw, outcome_model=LinearRegression(),
    ...               propensity_model=LogisticRegression(), random_state=0)
    >>> ml.refute.random_common_cause(est, sim.X, sim.y, sim.w, random_state=0).passed
    True
    """
    _check_estimator(estimator)
    _check_common(n_repeats, 0.95)
    if X is None:
        raise ValueError("`X` is required: the check adds a noise column to the features.")
    if not tolerance > 0:
        raise ValueError(f"`tolerance` must be positive; got {tolerance!r}.")
    if abs_tolerance is not None and not abs_tolerance > 0:
        raise ValueError(f"`abs_tolerance` must be positive or None; got {abs_tolerance!r}.")
    rng = check_random_state(random_state)
    n = _n_rows(X, y)
    w_arr = to_1d_array(w, name="w")
    est, se, found = _run(estimator, X, y, w_arr)
    labels = _labels(w_arr, n, control, found)
    if abs_tolerance is None and not np.all(np.isfinite(se)):
        raise ValueError(
            "The estimator gives no standard error, so the random-common-cause check cannot "
            "scale its tolerance: pass `abs_tolerance=` (in outcome units), or use an "
            "estimator with a standard error (a DRLearner or metalearn.ate.aipw)."
        )
    reps = []
    for _ in range(n_repeats):
        noise = rng.normal(size=n)
        r_est, _, _ = _run(estimator, add_column(X, noise, "random_common_cause"), y, w_arr)
        reps.append(r_est)
    if abs_tolerance is None:
        tol = tolerance * se
        rule = (
            f"passes if |mean estimate with a noise feature - original estimate| <= "
            f"{tolerance:g} x the original standard error"
        )
    else:
        tol = np.full_like(est, float(abs_tolerance))
        rule = (
            f"passes if |mean estimate with a noise feature - original estimate| <= "
            f"{abs_tolerance:g}"
        )
    return _assemble("random common cause", labels, est, se, np.asarray(reps), est, tol, rule)


def subset(
    estimator: Any,
    X: Any,
    y: Any,
    w: Any,
    *,
    fraction: float = 0.5,
    n_repeats: int = 5,
    level: float = 0.95,
    control: Any = None,
    random_state: Any = None,
) -> Any:
    r"""Data subsets: re-estimate on random subsets; the estimate must stay within sampling error.

    Each repetition draws a fraction :math:`f` of the rows of every variant
    without replacement (stratified, so every variant keeps its share) and
    re-estimates. For an asymptotically linear estimator with standard error
    :math:`s` on the full data, the difference between a subset estimate and
    the full-data estimate has variance :math:`s^2 (1/f - 1)`, and the
    differences of independent subsets are uncorrelated, so the mean
    :math:`\bar\tau` of :math:`R` subset estimates passes when

    .. math:: |\bar\tau - \hat\tau| \le z_{1-\alpha/2}\, s \sqrt{(1/f - 1)/R}.

    A stable estimator fails with probability about :math:`\alpha`; one
    whose estimate depends on a few rows, or drifts with sample size
    (overfitting nuisances), fails more often. Without a standard error,
    :math:`s\sqrt{1/f - 1}` is replaced by the spread of the subset
    estimates (needs ``n_repeats >= 2``).

    Parameters
    ----------
    estimator : learner or callable
        A metalearn learner or ``estimator(X, y, w) -> AverageEffect``.
    X, y, w : frame or array-like
        The data.
    fraction : float, default=0.5
        Share of the rows of each variant in a subset (random halves by
        default).
    n_repeats : int, default=5
        Number of subsets.
    level : float, default=0.95
        Confidence level of the rule.
    control : object, default=None
        The control variant, for labels.
    random_state : int, RandomState or None, default=None
        Seeds the subsets.

    Returns
    -------
    Refutation or tuple of Refutation
        One per treated variant.

    References
    ----------
    .. [1] Sharma, A. and Kiciman, E. (2020). DoWhy: an end-to-end library
       for causal inference. arXiv:2011.04216.
    .. [2] Politis, D. N., Romano, J. P. and Wolf, M. (1999). Subsampling.
       Springer.

    Examples
    --------
    >>> from functools import partial
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression
    >>> sim = ml.datasets.simulate_confounded(n=2000, seed=0)
    >>> est = partial(ml.ate.aipw, outcome_model=LinearRegression(),
    ...               propensity_model=LogisticRegression(), random_state=0)
    >>> ml.refute.subset(est, sim.X, sim.y, sim.w, n_repeats=3, random_state=0).passed
    True
    """
    _check_estimator(estimator)
    _check_common(n_repeats, level)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"`fraction` must be in (0, 1), e.g. 0.5; got {fraction!r}.")
    rng = check_random_state(random_state)
    n = _n_rows(X, y)
    w_arr = to_1d_array(w, name="w")
    y_arr = to_1d_array(y, name="y")
    treatment = encode_treatment(w_arr, n)
    est, se, found = _run(estimator, X, y, w_arr)
    labels = _labels(w_arr, n, control, found)
    reps = []
    for _ in range(n_repeats):
        rows = []
        for code in range(treatment.n_variants):
            members = np.flatnonzero(treatment.codes == code)
            size = max(1, round(fraction * len(members)))
            rows.append(rng.choice(members, size=size, replace=False))
        idx = np.sort(np.concatenate(rows))
        X_sub = None if X is None else take_rows(X, idx)
        r_est, _, _ = _run(estimator, X_sub, y_arr[idx], w_arr[idx])
        reps.append(r_est)
    reps_a = np.asarray(reps)
    z = stats.norm.ppf(0.5 + level / 2)
    if np.all(np.isfinite(se)):
        tol = z * se * np.sqrt((1.0 / fraction - 1.0) / n_repeats)
        how = "the full-data standard error s"
        bound = f"{z:.3g} x s x sqrt((1/{fraction:g} - 1)/{n_repeats})"
    else:
        if n_repeats < 2:
            raise ValueError(
                "The estimator gives no standard error, so the subset check needs the spread "
                "of several subset estimates: pass `n_repeats >= 2`."
            )
        tol = z * np.std(reps_a, axis=0, ddof=1) / np.sqrt(n_repeats)
        how = "the spread of the subset estimates"
        bound = f"{z:.3g} x sd(subset estimates) / sqrt({n_repeats})"
    rule = (
        f"passes if |mean subset estimate - full-data estimate| <= {bound} (from {how}), "
        f"the {level:.0%} bound of its sampling error"
    )
    return _assemble("subset", labels, est, se, reps_a, est, tol, rule)
