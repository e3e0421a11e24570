"""Interval results and the sandwich inference of a linear final stage.

The result classes of :mod:`metalearn.inference` and the one implementation
of the least-squares sandwich behind :func:`metalearn.inference.linear_dr_inference`
and the DR-learner's analytic ``predict_interval``. They live in the core so
that the learners, which keep the fitted sandwich, import nothing above them;
:mod:`metalearn.inference` re-exports the public classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from metalearn._core.design import frame_backend
from metalearn._core.frames import encode_features, to_native_frame
from metalearn._core.results import TableResult, frame_rows

__all__ = ["CATEIntervals", "LinearCATEInference"]


@dataclass(frozen=True, repr=False, eq=False)
class CATEIntervals(TableResult):
    """Pointwise confidence intervals for CATE predictions.

    Arrays have the shape of the learner's ``predict`` output: ``(n,)`` for
    two variants, ``(n, K-1)`` for more.

    Attributes
    ----------
    estimate : ndarray
        The point estimates (the learner fitted on all rows).
    std_error : ndarray
        Standard errors (bootstrap standard deviation, or analytic).
    ci_low, ci_high : ndarray
        Interval bounds.
    level : float
        Confidence level.
    method : str
        How the intervals were computed.
    names : list of str
        Effect names ``tau_<variant>_vs_<control>``, one per column.
    n_boot : int
        Number of bootstrap replicates (0 for analytic intervals).
    backend : object
        Frame library of the rows the intervals are for (internal: the type
        :meth:`to_frame` returns).

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> sim = ml.datasets.simulate_nie_wager("B", n=500, seed=0)
    >>> t = ml.TLearner(outcome_model=LinearRegression(), random_state=0)
    >>> ci = ml.inference.bootstrap_cate(t, sim.X, sim.y, sim.w, X_new=sim.X[:3],
    ...                                  n_boot=20, random_state=0)
    >>> ci.names, ci.n_boot, ci.level, ci.estimate.shape
    (['tau_1_vs_0'], 20, 0.95, (3,))
    >>> ci.to_frame().columns
    ['tau_1_vs_0', 'tau_1_vs_0_se', 'tau_1_vs_0_low', 'tau_1_vs_0_high']
    """

    estimate: np.ndarray
    std_error: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    level: float
    method: str
    names: list[str]
    n_boot: int
    backend: Any = None

    def __repr__(self) -> str:
        width = float(np.mean(self.ci_high - self.ci_low))
        return (
            f"CATEIntervals({len(self.estimate)} rows x {len(self.names)} effect(s), "
            f"{self.level:.0%} intervals by {self.method}, mean width {width:.4g})"
        )

    def _summary_rows(self) -> list[dict[str, Any]]:
        """Per effect: the mean estimate, standard error and width over the rows."""
        k = len(self.names)
        est, se, lo, hi = (
            np.asarray(a, dtype=float).reshape(len(self.estimate), k)
            for a in (self.estimate, self.std_error, self.ci_low, self.ci_high)
        )
        return [
            {
                "effect": name,
                "n_rows": len(est),
                "estimate_mean": float(np.mean(est[:, j])),
                "std_error_mean": float(np.mean(se[:, j])),
                "width_mean": float(np.mean(hi[:, j] - lo[:, j])),
                "share_excluding_zero": float(np.mean((lo[:, j] > 0) | (hi[:, j] < 0))),
                "level": self.level,
                "method": self.method,
                "n_boot": self.n_boot,
            }
            for j, name in enumerate(self.names)
        ]

    def to_frame(self) -> Any:
        """The intervals as a frame: ``<name>``, ``<name>_se``, ``<name>_low``, ``<name>_high``.

        pandas when the rows were given as pandas, else Polars.
        """
        cols: dict[str, np.ndarray] = {}
        est = self.estimate.reshape(len(self.estimate), -1)
        parts = [a.reshape(len(a), -1) for a in (self.std_error, self.ci_low, self.ci_high)]
        for j, name in enumerate(self.names):
            cols[name] = est[:, j]
            for suffix, arr in zip(("_se", "_low", "_high"), parts, strict=True):
                cols[name + suffix] = arr[:, j]
        return to_native_frame(cols, self.backend)


# ------------------------------------------------------------------- bootstrap
@dataclass(frozen=True, repr=False, eq=False)
class LinearCATEInference(TableResult):
    """Sandwich inference for the linear final stage of a DR-learner.

    Attributes
    ----------
    coef : ndarray of shape (n_variants - 1, n_features + 1)
        Intercept and slopes of the best linear approximation of each
        variant's CATE.
    std_error : ndarray of shape (n_variants - 1, n_features + 1)
        Their heteroskedasticity-robust standard errors.
    cov : ndarray of shape (n_variants - 1, n_features + 1, n_features + 1)
        Their covariance matrices.
    terms : list of str
        ``"intercept"`` and the feature names.
    effects : list of str
        ``tau_<variant>_vs_<control>`` per row of ``coef``.
    cov_type : str
        ``"HC0"`` or ``"HC1"``.
    level : float
        Confidence level of tables and intervals.
    n : int
        Number of training rows.
    schema : FrameSchema
        Internal: how the features of new rows are encoded for
        :meth:`predict_interval`.
    backend : object
        Internal: the frame library of the training rows, the type of the
        returned tables.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> sim = ml.datasets.simulate_confounded(n=2000, seed=0)
    >>> dr = ml.DRLearner(outcome_model=LinearRegression(), effect_model=LinearRegression(),
    ...                   final_stage="full", random_state=0)
    >>> dr = dr.fit(sim.X, sim.y, sim.w, propensity=sim.propensity)
    >>> inf = ml.inference.linear_dr_inference(dr, sim.X)
    >>> inf.effects, inf.terms[:3], inf.coef.shape
    (['tau_1_vs_0'], ['intercept', 'x0', 'x1'], (1, 7))
    >>> bool(abs(inf.coef[0, 1] - 0.5) < 3 * inf.std_error[0, 1])  # slope of x0 is 0.5
    True
    """

    coef: np.ndarray
    std_error: np.ndarray
    cov: np.ndarray
    terms: list[str]
    effects: list[str]
    cov_type: str
    level: float
    n: int
    schema: Any = None
    backend: Any = None

    def __repr__(self) -> str:
        return (
            f"LinearCATEInference({len(self.effects)} effect(s) x {len(self.terms)} terms, "
            f"{self.cov_type} standard errors, n={self.n})"
        )

    def _summary_rows(self) -> list[dict[str, Any]]:
        """The rows of :meth:`coef_table`."""
        return frame_rows(self.coef_table())

    def coef_table(self) -> Any:
        """Coefficients with standard errors, z statistics, p-values and intervals, as a frame.

        Columns: ``effect``, ``term``, ``estimate``, ``std_error``, ``z``,
        ``p_value``, ``ci_low``, ``ci_high``; pandas for pandas training
        input, else Polars.
        """
        z_crit = stats.norm.ppf(0.5 + self.level / 2)
        eff = np.repeat(np.asarray(self.effects, dtype=object), len(self.terms))
        term = np.tile(np.asarray(self.terms, dtype=object), len(self.effects))
        est = self.coef.ravel()
        se = self.std_error.ravel()
        with np.errstate(divide="ignore", invalid="ignore"):
            z = est / se
        return to_native_frame(
            {
                "effect": np.asarray(eff.tolist()),
                "term": np.asarray(term.tolist()),
                "estimate": est,
                "std_error": se,
                "z": z,
                "p_value": 2 * stats.norm.sf(np.abs(z)),
                "ci_low": est - z_crit * se,
                "ci_high": est + z_crit * se,
            },
            self.backend,
        )

    def predict_interval(self, X: Any) -> CATEIntervals:
        r"""Pointwise intervals :math:`z^\top\hat\beta \pm z_{1-\alpha/2}\sqrt{z^\top \hat V z}`.

        ``z = (1, x)``; shapes as the learner's ``predict``.
        """
        Xa, _ = encode_features(X, self.schema)
        return self._intervals(Xa, frame_backend(X), self.level)

    def _intervals(self, Xa: np.ndarray, backend: Any, level: float) -> CATEIntervals:
        """The intervals at ``level`` for encoded rows ``Xa`` (also the learner's analytic path)."""
        Z = np.column_stack([np.ones(Xa.shape[0]), Xa])
        est = Z @ self.coef.T
        se = np.sqrt(np.einsum("ip,kpq,iq->ik", Z, self.cov, Z))
        z_crit = stats.norm.ppf(0.5 + level / 2)
        squeeze = est.shape[1] == 1
        pick = (lambda a: a[:, 0]) if squeeze else (lambda a: a)
        return CATEIntervals(
            estimate=pick(est),
            std_error=pick(se),
            ci_low=pick(est - z_crit * se),
            ci_high=pick(est + z_crit * se),
            level=level,
            method=f"linear final stage, {self.cov_type}",
            names=list(self.effects),
            n_boot=0,
            backend=backend,
        )


def _linear_stage_problem(
    template: Any, out_dim: int, learner: str = "DRLearner"
) -> tuple[type[Exception], str] | None:
    """Why a linear final stage has no analytic intervals: ``(error type, reason)``, or ``None``.

    They need ordinary least squares with an intercept
    (:class:`~sklearn.linear_model.LinearRegression`, not ``positive=True``)
    and one outcome dimension (a regression or binary outcome).
    """
    from sklearn.linear_model import LinearRegression

    if (
        not isinstance(template, LinearRegression)
        or not template.fit_intercept
        or getattr(template, "positive", False)
    ):
        return TypeError, (
            f"Analytic intervals need a linear final stage: fit the {learner} with "
            "`effect_model=LinearRegression()` (with intercept); got "
            f"{type(template).__name__}"
        )
    if out_dim != 1:
        return ValueError, (
            "Analytic intervals support regression and binary outcomes; this learner has a "
            f"multi-class outcome ({out_dim} classes)"
        )
    return None


def stack_linear_stages(stages: list[LinearCATEInference], *, n: int) -> LinearCATEInference:
    """One inference of several effects fitted apart (the R-learner's one pair per variant)."""
    first = stages[0]
    return LinearCATEInference(
        coef=np.concatenate([s.coef for s in stages]),
        std_error=np.concatenate([s.std_error for s in stages]),
        cov=np.concatenate([s.cov for s in stages]),
        terms=list(first.terms),
        effects=[e for s in stages for e in s.effects],
        cov_type=first.cov_type,
        level=first.level,
        n=n,
        schema=first.schema,
        backend=first.backend,
    )


def _linear_stage_inference(
    Xa: np.ndarray,
    phi: np.ndarray,
    sample_weight: np.ndarray | None,
    *,
    terms: list[str],
    effects: list[str],
    cov_type: str,
    level: float,
    schema: Any,
    backend: Any,
) -> LinearCATEInference:
    """Least squares of each pseudo-outcome column on ``(1, Xa)``, with its sandwich covariance.

    The one implementation of the formula of :func:`linear_dr_inference`,
    also run by :meth:`DRLearner.fit <metalearn.DRLearner.fit>` for the
    learner's own ``predict_interval``. ``phi`` is ``(n, K-1, 1)``.
    """
    n = phi.shape[0]
    Z = np.column_stack([np.ones(n), Xa])
    p = Z.shape[1]
    wt = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    Zw = Z * wt[:, None]
    bread = np.linalg.pinv(Z.T @ Zw)
    factor = n / (n - p) if cov_type == "HC1" else 1.0
    coefs, covs = [], []
    for j in range(phi.shape[1]):
        target = phi[:, j, 0]
        beta = bread @ (Zw.T @ target)
        resid = target - Z @ beta
        meat = (Zw * resid[:, None] ** 2).T @ (Z * wt[:, None])
        covs.append(factor * bread @ meat @ bread)
        coefs.append(beta)
    coef = np.asarray(coefs)
    cov = np.asarray(covs)
    return LinearCATEInference(
        coef=coef,
        std_error=np.sqrt(np.einsum("kpp->kp", cov)),
        cov=cov,
        terms=terms,
        effects=effects,
        cov_type=cov_type,
        level=level,
        n=n,
        schema=schema,
        backend=backend,
    )
