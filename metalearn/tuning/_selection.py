r"""Is the winner of a search better than a constant effect, and than the runner-up?

A search picks the candidate with the lowest CATE loss on the scored rows.
That is a point estimate: the loss of every candidate is a weighted mean
over rows, and with few rows or weak heterogeneity the winner's lead can be
noise. Most CATE fits in practice do no better than the best constant
effect (Yu and Sun 2024 found 80% of 43,200 fits worse than it), so the
searches check their pick against two rivals, on the same rows and the same
scoring nuisances:

* the **constant-effect baseline** of the same loss (the best constant
  effect: the ATE for the R-loss, the AIPW ATE for the DR-loss);
* the **runner-up** (the candidate ranked second).

For a loss :math:`L = \sum_i \omega_i \ell_i` (weights summing to one, per
treated variant; the mean over treated variants for several), the
difference :math:`L_B - L_A` of two predictors scored on the same rows has
the influence terms :math:`\psi_i = \omega_i[(\ell^B_i - L_B) - (\ell^A_i -
L_A)]` (summed over the treated variants a row belongs to, divided by
their number), and its standard error is :math:`\sqrt{m/(m-1)\sum_i
\psi_i^2}` over the ``m`` rows with weight: rows are the unit of
resampling, and the scoring nuisances are held fixed, as in
:func:`metalearn.scoring.cate_loss_table`'s ``gain_std_error``. The pick
*beats* a rival when the 95% interval of the difference lies above zero.

The search warns (:class:`SelectionWarning`) when its pick does not beat
the constant effect. It does not warn when the runner-up is within noise:
then either candidate is as good a choice by the data, and
``selection_`` says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from metalearn._core.results import TableResult

__all__ = [
    "SelectionCheck",
    "SelectionWarning",
    "check_selection",
    "paired_lead",
    "selection_loss",
]

LEVEL = 0.95  # two-sided level of the intervals of the differences


class SelectionWarning(UserWarning):
    """A search's pick is not clearly better than a constant effect for everybody.

    Raised as a warning by :class:`~metalearn.MetaLearnerGridSearch`, the
    randomized search and :class:`~metalearn.MetaLearnerOptunaSearch` when
    the 95% interval of the pick's gain over the constant-effect baseline
    does not lie above zero; ``search.selection_`` holds the numbers.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(600, 3))
    >>> w = rng.integers(0, 2, size=600)
    >>> y = X[:, 0] + w + rng.normal(size=600)  # the same effect, 1, for everybody
    >>> dr = ml.DRLearner(outcome_model=LinearRegression(), propensity_model=LogisticRegression(),
    ...                   effect_model=Ridge(), n_folds=2, random_state=0)
    >>> search = ml.MetaLearnerGridSearch(dr, {"effect_model__alpha": [0.01, 0.1]})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = search.fit(X, y, w)
    >>> any(issubclass(c.category, ml.SelectionWarning) for c in caught)
    True
    >>> search.selection_.beats_constant
    False
    """


def selection_loss(scoring: str) -> str | None:
    """The CATE loss behind a search's ``scoring`` (``None``: not a CATE loss)."""
    for loss in ("r_loss", "dr_loss", "plugin"):
        if scoring in (loss, f"{loss}_gain"):
            return loss
    return None


def _influence(
    rows: list[dict[str, Any]], loss: str, n: int
) -> tuple[np.ndarray, np.ndarray, float, float, np.ndarray]:
    """Per-row influence terms of a candidate's loss and of the constant baseline's."""
    sel = [r for r in rows if r["loss"] == loss]
    psi, psi_base = np.zeros(n), np.zeros(n)
    used = np.zeros(n, dtype=bool)
    for r in sel:
        idx = np.arange(n) if r["rows"] is None else r["rows"]
        psi[idx] += r["om"] * (r["terms"] - r["value"])
        psi_base[idx] += r["om"] * (r["base_terms"] - r["baseline"])
        used[idx] |= r["om"] > 0
    k = len(sel)
    value = float(np.mean([r["value"] for r in sel]))
    baseline = float(np.mean([r["baseline"] for r in sel]))
    return psi / k, psi_base / k, value, baseline, used


def _se(diff: np.ndarray, used: np.ndarray) -> float:
    m = int(np.count_nonzero(used))
    if m < 2:
        return float("nan")
    return float(np.sqrt(m / (m - 1) * np.sum(diff[used] ** 2)))


@dataclass(frozen=True, repr=False)
class SelectionCheck(TableResult):
    """How clearly a search's pick beats the constant effect and the runner-up.

    Attributes
    ----------
    loss : str
        The CATE loss compared (``"r_loss"``, ``"dr_loss"`` or ``"plugin"``).
    winner : int
        The pick: the candidate's row of ``results_`` (grid and randomized
        searches) or the trial number (Optuna).
    winner_loss : float
        Its loss on the scored rows.
    constant_loss : float
        The loss of the best constant effect.
    constant_gain, constant_gain_std_error : float
        ``constant_loss - winner_loss`` (positive: the pick is better) and
        its standard error.
    runner_up : int or None
        The candidate ranked second (``None``: a single candidate).
    runner_up_loss, runner_up_margin, runner_up_margin_std_error : float
        Its loss, ``runner_up_loss - winner_loss`` and the standard error of
        that paired difference (NaN without a runner-up).
    level : float
        Level of the intervals behind ``beats_constant`` and
        ``beats_runner_up``.

    Examples
    --------
    >>> import numpy as np
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(1000, 3))
    >>> w = rng.integers(0, 2, size=1000)
    >>> y = X[:, 1] + w * (1 + X[:, 0]) + rng.normal(size=1000)  # effect 1 + x0
    >>> dr = ml.DRLearner(outcome_model=LinearRegression(), propensity_model=LogisticRegression(),
    ...                   effect_model=Ridge(), n_folds=2, random_state=0)
    >>> search = ml.MetaLearnerGridSearch(dr, {"effect_model__alpha": [0.1, 1e6]}).fit(X, y, w)
    >>> check = search.selection_
    >>> check.beats_constant, check.beats_runner_up
    (True, True)
    >>> check.summary()["rival"].to_list()
    ['constant effect', 'runner-up (1)']
    """

    loss: str
    winner: int
    winner_loss: float
    constant_loss: float
    constant_gain: float
    constant_gain_std_error: float
    runner_up: int | None
    runner_up_loss: float
    runner_up_margin: float
    runner_up_margin_std_error: float
    level: float = LEVEL
    #: The pick's per-row loss terms, for paired comparisons with other estimates of the same
    #: rows (:func:`paired_lead`); not part of the report.
    _winner_rows: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def _z(self) -> float:
        return float(stats.norm.ppf(0.5 + self.level / 2))

    @property
    def beats_constant(self) -> bool:
        """The interval of ``constant_gain`` lies above zero."""
        return bool(self.constant_gain - self._z * self.constant_gain_std_error > 0)

    @property
    def beats_runner_up(self) -> bool:
        """The interval of ``runner_up_margin`` lies above zero (False without a runner-up)."""
        return bool(self.runner_up_margin - self._z * self.runner_up_margin_std_error > 0)

    def _verdict(self, diff: float, se: float) -> str:
        if not np.isfinite(diff):
            return "-"
        if diff - self._z * se > 0:
            return "pick is better"
        if diff + self._z * se < 0:
            return "pick is worse"
        return "within noise"

    def _summary_rows(self) -> list[dict[str, Any]]:
        z = self._z
        rows = [("constant effect", self.constant_gain, self.constant_gain_std_error)]
        if self.runner_up is not None:
            margin, se = self.runner_up_margin, self.runner_up_margin_std_error
            rows.append((f"runner-up ({self.runner_up})", margin, se))
        return [
            {
                "rival": name,
                "loss": self.loss,
                "pick": self.winner,
                "lead": diff,
                "std_error": se,
                "ci_lower": diff - z * se,
                "ci_upper": diff + z * se,
                "verdict": self._verdict(diff, se),
            }
            for name, diff, se in rows
        ]

    def _repr_title(self, n: int) -> str:
        return f"SelectionCheck of {self.loss}: the pick's lead over each rival"


def check_selection(
    loss: str,
    winner: tuple[int, list[dict[str, Any]]],
    runner_up: tuple[int, list[dict[str, Any]]] | None,
    n: int,
    *,
    what: str,
    warn: bool = True,
) -> SelectionCheck:
    """The :class:`SelectionCheck` of a pick from the per-row loss terms of it and its runner-up.

    ``winner`` and ``runner_up`` are (label, ``Outcome.row_losses``) on the same
    scored rows; ``what`` names the search in the warning.
    """
    label, rows = winner
    psi, psi_base, value, baseline, used = _influence(rows, loss, n)
    gain_se = _se(psi_base - psi, used)
    r_label: int | None = None
    r_value = margin = margin_se = float("nan")
    if runner_up is not None:
        r_label, r_rows = runner_up
        r_psi, _, r_value, _, r_used = _influence(r_rows, loss, n)
        margin = r_value - value
        margin_se = _se(r_psi - psi, used | r_used)
    check = SelectionCheck(
        loss=loss,
        winner=label,
        winner_loss=value,
        constant_loss=baseline,
        constant_gain=baseline - value,
        constant_gain_std_error=gain_se,
        runner_up=r_label,
        runner_up_loss=r_value,
        runner_up_margin=margin,
        runner_up_margin_std_error=margin_se,
    )
    object.__setattr__(check, "_winner_rows", rows)  # frozen: set once, here
    if warn and not check.beats_constant:
        warnings.warn(
            f"The pick of {what} (candidate {label}) is not clearly better than a constant "
            f"effect for everybody: its {loss} is {value:.4g} against the constant's "
            f"{baseline:.4g}, a lead of {check.constant_gain:.3g} (standard error "
            f"{gain_se:.3g}). Its effects may be noise around one average effect: report the "
            "ATE instead, or collect more data before targeting. See `selection_`.",
            SelectionWarning,
            stacklevel=4,  # the user's call of the search's fit
        )
    return check


def paired_lead(
    loss: str, rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]], n: int
) -> tuple[float, float]:
    """``loss(b) - loss(a)`` of two estimates scored on the same rows, and its standard error."""
    psi_a, _, value_a, _, used_a = _influence(rows_a, loss, n)
    psi_b, _, value_b, _, used_b = _influence(rows_b, loss, n)
    return value_b - value_a, _se(psi_b - psi_a, used_a | used_b)


def constant_gain(loss: str, rows: list[dict[str, Any]], n: int) -> tuple[float, float]:
    """The best constant's loss minus an estimate's, from its per-row loss terms, and its SE.

    The ``constant_gain`` and ``constant_gain_std_error`` of :class:`SelectionCheck`, for
    an estimate scored outside a search (``auto_cate``'s stack).
    """
    psi, psi_base, value, baseline, used = _influence(rows, loss, n)
    return baseline - value, _se(psi_base - psi, used)
