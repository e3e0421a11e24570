"""Shared pieces of :mod:`metalearn.evaluation`: checked inputs, effect scores, results.

See :mod:`metalearn.evaluation` for the definitions of the scores and the
normalisation of the curves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import narwhals.stable.v2 as nw
import numpy as np
from scipy import stats

from metalearn._core.data import prepare_data
from metalearn._core.design import py
from metalearn._core.formulas import aipw_potential_outcomes
from metalearn._core.frames import to_1d_array, to_native_frame
from metalearn._core.positivity import check_arm_weights, warn_overlap
from metalearn._core.results import TableResult
from metalearn._core.validation import Treatment, control_index

_BEST = "best"


# ------------------------------------------------------------------ results
def _z(level: float) -> float:
    return float(stats.norm.ppf(0.5 + level / 2))


def _p(estimate: float, se: float) -> float:
    if not np.isfinite(se) or se <= 0:
        return float("nan")
    return float(2 * stats.norm.sf(abs(estimate / se)))


def _g(v: float) -> str:
    return f"{v:.4g}"


@dataclass(frozen=True)
class TargetingArea(TableResult):
    """An area under a targeting curve: :func:`auuc` or :func:`qini_coefficient`.

    Attributes
    ----------
    variant, control : str
        The targeted variant (``"best"`` for the best-variant policy) and the
        control.
    kind : str
        ``"AUUC"`` or ``"Qini coefficient"``.
    estimate : float
        The area, on the outcome scale (see the module's normalisation).
    std_error : float
        Standard error with the ranking held fixed.
    ci_low, ci_high : float
        ``level`` confidence interval.
    p_value : float
        Two-sided p-value of "no better than random targeting"
        (``estimate == random``).
    random : float
        The same area for random targeting (0 for the Qini coefficient).
    level : float
        Confidence level.
    method : str
        ``"IPW"`` or ``"AIPW"``.
    n : int
        Number of rows.

    Examples
    --------
    >>> import metalearn as ml
    >>> from metalearn.evaluation import qini_coefficient
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> q = qini_coefficient(sim.tau, sim.y, sim.w, propensity=0.5)
    >>> q.kind, q.variant, q.control, q.method, q.random
    ('Qini coefficient', '1', '0', 'IPW', 0.0)
    >>> bool(q.ci_low > q.random), bool(q.p_value < 0.05)  # the true CATE targets well
    (True, True)
    """

    variant: str
    control: str
    kind: str
    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    p_value: float
    random: float
    level: float
    method: str
    n: int

    def __repr__(self) -> str:
        return (
            f"TargetingArea({self.kind} of {self.variant!r} vs {self.control!r}: "
            f"{_g(self.estimate)} (se {_g(self.std_error)}, {self.level:.0%} CI "
            f"{_g(self.ci_low)} to {_g(self.ci_high)}), random {_g(self.random)}, "
            f"p={_g(self.p_value)}, method={self.method!r}, n={self.n})"
        )


@dataclass(frozen=True)
class RATEResult(TableResult):
    """A rank-weighted average treatment effect (:func:`rate`).

    Attributes
    ----------
    variant, control : str
        The ranked variant (``"best"``: best-variant policy) and the control.
    target : str
        ``"AUTOC"`` or ``"QINI"``.
    estimate : float
        The RATE.
    std_error : float
        Bootstrap standard error.
    ci_low, ci_high : float
        Normal ``level`` interval with the bootstrap standard error.
    p_value : float
        Two-sided p-value of ``RATE == 0`` (no benefit from the ranking).
    level : float
    method : str
        ``"IPW"`` or ``"AIPW"``.
    n : int
        Number of rows.
    n_bootstrap : int
        Number of bootstrap replicates.

    Examples
    --------
    >>> import metalearn as ml
    >>> from metalearn.evaluation import rate
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> res = rate(sim.tau, sim.y, sim.w, propensity=0.5, n_bootstrap=50, random_state=0)
    >>> res.target, res.method, res.n, res.n_bootstrap
    ('AUTOC', 'IPW', 2000, 50)
    >>> bool(res.ci_low > 0)
    True
    """

    variant: str
    control: str
    target: str
    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    p_value: float
    level: float
    method: str
    n: int
    n_bootstrap: int

    def __repr__(self) -> str:
        return (
            f"RATEResult({self.target} of {self.variant!r} vs {self.control!r}: "
            f"{_g(self.estimate)} (bootstrap se {_g(self.std_error)}, {self.level:.0%} CI "
            f"{_g(self.ci_low)} to {_g(self.ci_high)}), p={_g(self.p_value)}, "
            f"method={self.method!r}, n={self.n})"
        )


@dataclass(frozen=True)
class BLPResult(TableResult):
    """Best linear predictor of the CATE given its prediction (:func:`blp_test`).

    Attributes
    ----------
    variant, control : str
    ate : float
        :math:`\\beta_1`, the average effect.
    ate_std_error : float
    estimate : float
        :math:`\\beta_2`, the heterogeneity loading: 1 for well calibrated
        predictions, 0 when they carry no information on the effect.
    std_error : float
        Heteroskedasticity-robust (HC1) standard error of ``estimate``.
    ci_low, ci_high : float
        ``level`` interval of ``estimate``.
    p_value : float
        Two-sided p-value of :math:`\\beta_2 = 0` (no detected heterogeneity).
    p_value_calibrated : float
        Two-sided p-value of :math:`\\beta_2 = 1` (calibrated predictions).
    level : float
    method : str
        ``"IPW"`` or ``"AIPW"``.
    n : int

    Examples
    --------
    >>> import metalearn as ml
    >>> from metalearn.evaluation import blp_test
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> res = blp_test(sim.tau, sim.y, sim.w, propensity=0.5)
    >>> bool(res.ci_low < 1 < res.ci_high)  # the true CATE is calibrated
    True
    >>> bool(res.p_value < 0.05), bool(res.p_value_calibrated > 0.05)
    (True, True)
    """

    variant: str
    control: str
    ate: float
    ate_std_error: float
    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    p_value: float
    p_value_calibrated: float
    level: float
    method: str
    n: int

    def __repr__(self) -> str:
        return (
            f"BLPResult({self.variant!r} vs {self.control!r}: slope {_g(self.estimate)} "
            f"(se {_g(self.std_error)}, {self.level:.0%} CI {_g(self.ci_low)} to "
            f"{_g(self.ci_high)}), p(slope=0)={_g(self.p_value)}, "
            f"p(slope=1)={_g(self.p_value_calibrated)}; ATE {_g(self.ate)} "
            f"(se {_g(self.ate_std_error)}), method={self.method!r}, n={self.n})"
        )


@dataclass(frozen=True)
class PolicyValue(TableResult):
    """The value of a treatment policy (:func:`policy_value`).

    Values are mean outcomes per row under the policy, net of the costs of
    the variants it assigns.

    Attributes
    ----------
    estimate : float
        Value of the policy.
    std_error : float
    ci_low, ci_high : float
        ``level`` interval of ``estimate``.
    p_value : float
        Two-sided p-value of "no better than treating no one"
        (``gain_over_none == 0``).
    treat_none : float
        Value of giving everyone the control.
    treat_all : float
        Value of giving everyone ``treat_all_variant``.
    treat_all_variant : str
        The treated variant with the highest estimated value when given to
        everyone.
    gain_over_none, gain_over_none_std_error : float
        ``estimate - treat_none`` and its (paired) standard error.
    gain_over_all, gain_over_all_std_error : float
        ``estimate - treat_all`` and its (paired) standard error.
    share_treated : float
        Share of rows (of the weight) that the policy does not give the control.
    control : str
    level : float
    method : str
        ``"IPW"`` or ``"AIPW"``.
    n : int

    Examples
    --------
    >>> import metalearn as ml
    >>> from metalearn.evaluation import policy_value
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> v = policy_value(sim.tau, sim.y, sim.w, propensity=0.5, cost=0.5)
    >>> v.treat_all_variant, v.control, v.method
    ('1', '0', 'IPW')
    >>> bool(0 < v.share_treated < 1), bool(v.gain_over_all > 0)
    (True, True)
    """

    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    p_value: float
    treat_none: float
    treat_all: float
    treat_all_variant: str
    gain_over_none: float
    gain_over_none_std_error: float
    gain_over_all: float
    gain_over_all_std_error: float
    share_treated: float
    control: str
    level: float
    method: str
    n: int

    def __repr__(self) -> str:
        return (
            f"PolicyValue({_g(self.estimate)} (se {_g(self.std_error)}, {self.level:.0%} CI "
            f"{_g(self.ci_low)} to {_g(self.ci_high)}) treating {self.share_treated:.1%}; "
            f"treat none {_g(self.treat_none)}, treat all ({self.treat_all_variant!r}) "
            f"{_g(self.treat_all)}; gain over none {_g(self.gain_over_none)} "
            f"(se {_g(self.gain_over_none_std_error)}), over all {_g(self.gain_over_all)} "
            f"(se {_g(self.gain_over_all_std_error)}), method={self.method!r}, n={self.n})"
        )


# --------------------------------------------------------------- the design
@dataclass
class _Design:
    """Checked inputs and the per-variant potential-outcome scores."""

    variants: np.ndarray
    control: int
    treated: list[int]
    w: np.ndarray
    omega: np.ndarray
    weight: np.ndarray
    pot: np.ndarray  # (n, K): scores of E[Y(k)]
    method: str
    backend: Any

    @property
    def n(self) -> int:
        return len(self.w)

    def label(self, k: int) -> str:
        return str(self.variants[k])

    @property
    def control_label(self) -> str:
        return self.label(self.control)

    def effect(self, k: int) -> np.ndarray:
        return self.pot[:, k] - self.pot[:, self.control]


def _backend(*objs: Any) -> Any:
    for obj in objs:
        native = nw.from_native(obj, pass_through=True, allow_series=True)
        if isinstance(native, nw.DataFrame | nw.LazyFrame | nw.Series):
            return native.implementation
    return None


def _check_level(level: float) -> float:
    if not isinstance(level, float | int) or not 0 < level < 1:
        raise ValueError(f"`level` must be a number strictly between 0 and 1; got {level!r}.")
    return float(level)


def _outcome(y: Any) -> np.ndarray:
    if y is None:
        raise ValueError("`y` (the observed outcome of each row) is required.")
    arr = to_1d_array(y, name="y")
    if arr.dtype == bool:
        arr = arr.astype(np.float64)
    try:
        arr = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            "`y` must be numeric (for a binary outcome pass 0/1); got values like "
            f"{arr[:3].tolist()}."
        ) from exc
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"`y` holds {int((~np.isfinite(arr)).sum())} NaN or infinite values; drop or "
            "impute those rows."
        )
    return arr


def _design(
    y: Any,
    w: Any,
    *,
    propensity: Any,
    mu: Any,
    control: Any,
    sample_weight: Any,
    backend_from: Sequence[Any] = (),
) -> _Design:
    yv = _outcome(y)
    n = len(yv)
    if propensity is None:
        raise ValueError(
            "`propensity` is required: pass the known assignment probabilities of a "
            "randomized experiment (e.g. `propensity=0.5`), or for observational data the "
            "cross-fitted ones of `metalearn.scoring.fit_scoring_nuisance(X, y, w).propensity`"
            " (together with its `.mu`)."
        )
    # The one conversion of the rows (no features here): the prepared-data type's.
    data = prepare_data(
        None,
        yv,
        w,
        classification=False,
        sample_weight=sample_weight,
        propensity=propensity,
        workflow=True,
    )
    treatment = Treatment(codes=data.w, variants=data.variants)
    K = treatment.n_variants
    c = control_index(treatment.variants, control)
    e = data.propensity
    assert e is not None
    sw = data.sample_weight
    weight = np.ones(n) if sw is None else sw
    if weight.sum() <= 0:
        raise ValueError("`sample_weight` must have a positive sum.")
    treated = [k for k in range(K) if k != c]

    def label(code: int) -> Any:
        return py(treatment.variants[code])

    check_arm_weights(sw, data.w, label, K)
    warn_overlap(
        data.w, label, c, treated, e, where="the evaluation's weighted scores", sample_weight=sw
    )
    if mu is None:
        pot = aipw_potential_outcomes(yv, treatment.codes, np.zeros((n, K)), e)
        method = "IPW"
    else:
        m = np.asarray(mu, dtype=np.float64)
        if m.shape != (n, K):
            raise ValueError(
                f"`mu` must hold the predicted outcome of every row under every variant, "
                f"shape (n_samples, n_variants) = ({n}, {K}); got shape {m.shape}."
            )
        if not np.all(np.isfinite(m)):
            raise ValueError("`mu` holds NaN or infinite values; every prediction must be finite.")
        pot = aipw_potential_outcomes(yv, treatment.codes, m, e)
        method = "AIPW"
    return _Design(
        variants=treatment.variants,
        control=c,
        treated=treated,
        w=treatment.codes,
        omega=weight / weight.sum(),
        weight=weight,
        pot=pot,
        method=method,
        backend=_backend(*backend_from),
    )


def _tau_matrix(tau: Any, d: _Design) -> np.ndarray:
    """Predicted effects as an (n, K-1) array in treated-variant order."""
    if tau is None:
        raise ValueError("`tau` (the predicted effect of each row) is required.")
    native = nw.from_native(tau, pass_through=True, allow_series=True)
    if isinstance(native, nw.LazyFrame):
        native = native.collect()
    arr = native.to_numpy() if isinstance(native, nw.DataFrame | nw.Series) else tau
    try:
        t = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`tau` must be numeric; got {type(tau).__name__} ({exc}).") from exc
    n, K = d.n, len(d.variants)
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2 or t.shape != (n, K - 1):
        expected = f"({n},)" if K == 2 else f"({n}, {K - 1})"
        raise ValueError(
            f"`tau` must have shape {expected}: one predicted effect per row and treated "
            f"variant ({K - 1} treated variant(s) besides the control "
            f"{d.control_label!r}); got shape {np.shape(arr)}."
        )
    if not np.all(np.isfinite(t)):
        raise ValueError(
            f"`tau` holds {int((~np.isfinite(t)).sum())} NaN or infinite values; every "
            "predicted effect must be finite."
        )
    return t


def _costs(cost: Any, d: _Design) -> np.ndarray:
    """Costs of each treated variant per row, (n, K-1); the control costs nothing."""
    K1, n = len(d.treated), d.n
    if isinstance(cost, dict):
        labels = [str(v) for v in d.variants]
        unknown = [k for k in cost if str(k) not in labels]
        if unknown:
            raise ValueError(f"`cost` names variants not in `w`: {unknown}; variants are {labels}.")
        by_label = {str(k): float(v) for k, v in cost.items()}
        cost = [by_label.get(d.label(k), 0.0) for k in d.treated]
    c = np.asarray(cost, dtype=np.float64)
    if c.ndim == 0:
        c = np.full((n, K1), float(c))
    elif c.shape == (K1,):
        c = np.broadcast_to(c, (n, K1))
    elif c.shape == (n,) and K1 == 1:
        c = c[:, None]
    if c.shape != (n, K1):
        raise ValueError(
            f"`cost` must be a number, one cost per treated variant ({K1}), a dict "
            f"{{variant: cost}} or an array of shape ({n}, {K1}); got shape {np.shape(cost)}."
        )
    if not np.all(np.isfinite(c)):
        raise ValueError("`cost` must be finite.")
    return np.ascontiguousarray(c)


@dataclass
class _Arm:
    label: str
    key: np.ndarray
    gamma: np.ndarray


def _arms(d: _Design, t: np.ndarray, cost: np.ndarray | None = None) -> list[_Arm]:
    """One ranking per treated variant, plus the best-variant policy for K > 2."""
    net = t if cost is None else t - cost
    c = np.zeros_like(t) if cost is None else cost
    effects = np.column_stack([d.effect(k) for k in d.treated])
    arms = [_Arm(d.label(k), net[:, j], effects[:, j] - c[:, j]) for j, k in enumerate(d.treated)]
    if len(d.treated) > 1:
        best = np.argmax(net, axis=1)
        rows = np.arange(d.n)
        arms.append(_Arm(_BEST, net[rows, best], effects[rows, best] - c[rows, best]))
    return arms


def _check_shares(shares: Any, *, positive: bool) -> np.ndarray:
    if shares is None:
        q = np.linspace(0.0, 1.0, 101)
        return q[1:] if positive else q
    q = np.atleast_1d(np.asarray(shares, dtype=np.float64))
    if q.ndim != 1 or q.size == 0 or not np.all(np.isfinite(q)):
        raise ValueError(f"`shares` must be a non-empty 1-D sequence of numbers; got {shares!r}.")
    low_ok = np.all(q > 0) if positive else np.all(q >= 0)
    if not low_ok or np.any(q > 1):
        bound = "(0, 1]" if positive else "[0, 1]"
        raise ValueError(
            f"`shares` must lie in {bound} (shares of the population targeted); got "
            f"min {q.min():g}, max {q.max():g}."
        )
    return q


def _prepare(
    tau: Any,
    y: Any,
    w: Any,
    propensity: Any,
    mu: Any,
    control: Any,
    sample_weight: Any,
    level: float,
) -> tuple[_Design, np.ndarray, float]:
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
    return d, _tau_matrix(tau, d), level


def _frame(d: _Design, columns: dict[str, Any]) -> Any:
    return to_native_frame(
        {k: np.asarray(v) for k, v in columns.items()},
        d.backend,
    )


def _one_or_tuple(results: list[Any]) -> Any:
    return results[0] if len(results) == 1 else tuple(results)


_SCORE_DOC = """
    tau : array-like of shape (n_samples,) or (n_samples, n_variants - 1), or a frame
        Predicted effects (e.g. ``learner.predict(X)`` or ``predict_frame``),
        one column per treated variant in sorted variant order.
    y : array-like of shape (n_samples,)
        Observed numeric outcomes (0/1 for a binary outcome).
    w : array-like of shape (n_samples,)
        Observed variants (ints, strings or categories).
    propensity : float or array-like
        Assignment probabilities: a scalar P(treated) for two variants, one
        probability per variant, or an array (n_samples, n_variants); known
        ones in an experiment, cross-fitted ones otherwise.
    mu : array-like of shape (n_samples, n_variants), optional
        Cross-fitted outcome predictions under every variant; gives AIPW
        instead of IPW scores.
    control : object, optional
        The control variant (default: ``0`` if present, else the first).
    sample_weight : array-like of shape (n_samples,), optional
        Row weights: every mean and share is weighted."""


# -------------------------------------------------------------------- curves


def fill_doc(func: Callable[..., Any]) -> Callable[..., Any]:
    """Put the shared parameter descriptions into ``func``'s docstring."""
    if func.__doc__:
        func.__doc__ = func.__doc__.replace("    %(scores)s", _SCORE_DOC.strip("\n"))
    func.__module__ = "metalearn.evaluation"
    return func
