"""Confidence intervals for CATE estimates.

* :func:`bootstrap_cate`: percentile (or normal) bootstrap intervals for the
  predictions of any learner, the replicates fitted in parallel through
  joblib with seeds that do not depend on ``n_jobs``;
* :func:`linear_dr_inference`: for a DR-learner with a linear final stage,
  heteroskedasticity-robust (sandwich) standard errors of the coefficients
  of the best linear approximation of the CATE, and pointwise intervals for
  its predictions.

Every learner reaches them through its own
:meth:`~metalearn.learners.base.MetaLearner.predict_interval`: analytic for a
DR-learner with a linear final stage (kept by ``fit``, so no training data are
needed), else the bootstrap on the training data it is given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats
from sklearn.base import clone
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_is_fitted

from metalearn._core import progress as _progress
from metalearn._core.data import Data
from metalearn._core.design import frame_backend
from metalearn._core.frames import encode_features
from metalearn._core.intervals import (
    CATEIntervals,
    LinearCATEInference,
    _linear_stage_inference,
    _linear_stage_problem,
)
from metalearn._core.tasks import n_workers, share_threads
from metalearn.learners.nuisance import Nuisance

__all__ = ["CATEIntervals", "LinearCATEInference", "bootstrap_cate", "linear_dr_inference"]


def _replicate_learner(learner: Any, seed: int) -> Any:
    """A fresh copy of ``learner`` for one replicate: one worker, refits everything.

    Base models left at ``None`` stay ``None``, so that each replicate gets
    the learner's own defaults (some depend on the number of rows); threads
    come from the replicate's share of the budget (:func:`_one_replicate`).
    """
    model = clone(learner)
    params = model.get_params(deep=False)
    updates: dict[str, Any] = {}
    nuis = params.get("nuisance")
    if nuis is not None:
        # A shared fitted Nuisance belongs to the original rows: refit it from its settings.
        nparams = nuis.get_params(deep=False)
        nparams["n_jobs"] = 1
        if nparams.get("random_state") is None:
            nparams["random_state"] = seed
        updates["nuisance"] = Nuisance(**nparams)
    if "n_jobs" in params:
        updates["n_jobs"] = 1
    if "random_state" in params and params["random_state"] is None:
        updates["random_state"] = seed
    model.set_params(**updates)
    return model


def _one_replicate(
    learner: Any, data: Data, Xa_new: np.ndarray, rows: np.ndarray, workers: int
) -> np.ndarray:
    # The replicate's rows are slices of the converted data; the original row of each
    # draw is its group, so every copy of a row lies in one cross-fitting fold and no
    # "out-of-fold" prediction comes from a model that saw an exact copy of its row.
    with share_threads(workers):  # one of `workers` replicates fitted side by side
        learner._fit_data(data.take(rows, groups=rows), honest=False)
        return learner._shape(learner._predict_tau(Xa_new))


def bootstrap_cate(
    learner: Any,
    X: Any,
    y: Any,
    w: Any,
    *,
    X_new: Any = None,
    n_boot: int = 200,
    level: float = 0.95,
    method: str = "percentile",
    n_jobs: int | None = None,
    random_state: int | None = None,
) -> CATEIntervals:
    r"""Bootstrap confidence intervals for a learner's CATE predictions.

    The learner is fitted on all rows for the point estimate
    :math:`\hat\tau(x)`, and on ``n_boot`` bootstrap samples, drawn with
    replacement within each variant (so every replicate keeps the variant
    counts), for replicates :math:`\hat\tau^{*}_b(x)`. Intervals are

    * ``"percentile"``: the :math:`\alpha/2` and :math:`1-\alpha/2`
      quantiles of :math:`\hat\tau^{*}_b(x)` (Efron and Tibshirani 1993);
    * ``"normal"``: :math:`\hat\tau(x) \pm z_{1-\alpha/2}\,
      \mathrm{sd}_b(\hat\tau^{*}_b(x))`.

    Replicates are fitted in one joblib batch (``n_jobs``), each with one
    worker and base-model threads capped as in the learners (see
    :mod:`metalearn._core.tasks`); replicate ``b`` draws its rows and seeds
    its learner from ``SeedSequence(random_state).spawn`` so results do not
    depend on ``n_jobs``. A learner holding a fitted
    :class:`~metalearn.Nuisance` is refitted from that nuisance's settings in
    each replicate. The data are converted once; replicates slice the
    converted arrays (so the category lists are the full data's), and every
    copy of a resampled row lies in one cross-fitting fold (the original row
    is its group), so no out-of-fold prediction comes from a model that saw
    a copy of its row. Intervals reflect the learner's variability, not its
    bias.

    Parameters
    ----------
    learner : metalearn learner
        Fitted or not; it is cloned.
    X, y, w : frame or array-like
        Training data.
    X_new : frame or array-like, default=None
        Rows to predict; ``None`` means ``X``.
    n_boot : int, default=200
        Number of bootstrap replicates.
    level : float, default=0.95
        Confidence level.
    method : {"percentile", "normal"}, default="percentile"
    n_jobs : int, default=None
        Joblib workers for the replicates.
    random_state : int, default=None
        Seeds the resampling and unset learner seeds.

    Returns
    -------
    CATEIntervals

    References
    ----------
    .. [1] Efron, B. and Tibshirani, R. J. (1993). An Introduction to the
       Bootstrap. Chapman & Hall, chapters 12-13.
    .. [2] Kunzel, S. R., Sekhon, J. S., Bickel, P. J. and Yu, B. (2019).
       Metalearners for estimating heterogeneous treatment effects using
       machine learning. PNAS 116(10), 4156-4165 (bootstrap intervals for
       meta-learners).

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> sim = ml.datasets.simulate_nie_wager("B", n=500, seed=0)
    >>> t = ml.TLearner(outcome_model=LinearRegression(), random_state=0)
    >>> ci = ml.inference.bootstrap_cate(t, sim.X, sim.y, sim.w, X_new=sim.X[:5],
    ...                                  n_boot=20, random_state=0)
    >>> ci.ci_low.shape, bool((ci.ci_low <= ci.ci_high).all())
    ((5,), True)
    """
    if not (hasattr(learner, "fit") and hasattr(learner, "predict")):
        raise TypeError(f"`learner` must be a metalearn learner; got {type(learner).__name__}.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 2:
        raise ValueError(f"`n_boot` must be an integer >= 2; got {n_boot!r}.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must be in (0, 1), e.g. 0.95; got {level!r}.")
    if method not in ("percentile", "normal"):
        raise ValueError(f"`method` must be 'percentile' or 'normal'; got {method!r}.")
    X_pred = X if X_new is None else X_new
    full = clone(learner)
    nuis = full.get_params(deep=False).get("nuisance")
    if nuis is not None and hasattr(nuis, "fingerprint_"):
        full.set_params(nuisance=Nuisance(**nuis.get_params(deep=False)))
    full._check_common_params()
    # The one conversion of the user's data: replicates slice these arrays.
    data = full._prepare(X, y, w, None, None, None)
    full._fit_data(data, honest=False)
    Xa_pred, _ = encode_features(X_pred, full.schema_)
    estimate = np.asarray(full._shape(full._predict_tau(Xa_pred)), dtype=np.float64)
    names = list(full._effect_names())
    codes = data.w

    seeds = np.random.SeedSequence(random_state).spawn(int(n_boot))
    groups = [np.flatnonzero(codes == k) for k in range(int(codes.max()) + 1)]
    workers = n_workers(n_jobs)
    outer = _progress.current()
    reporting = outer is not None
    jobs = []
    for ss in seeds:
        rng = np.random.default_rng(ss)
        rows = np.sort(np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups]))
        seed = int(ss.generate_state(1)[0] % (2**31 - 1))
        jobs.append((_replicate_learner(learner, seed), rows))
    with _progress.progress(False):  # one bar for the replicates, none per replicate fit
        if workers == 1:
            runs: Any = (_one_replicate(m, data, Xa_pred, r, 1) for m, r in jobs)
        else:
            runs = Parallel(n_jobs=n_jobs, return_as="generator" if reporting else "list")(
                delayed(_one_replicate)(m, data, Xa_pred, r, workers) for m, r in jobs
            )
        reps = _progress.track(runs, len(jobs), "bootstrap replicates", settings=outer)
    boot = np.stack(reps)
    se = boot.std(axis=0, ddof=1)
    alpha = 1.0 - level
    if method == "percentile":
        lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2], axis=0)
        how = f"percentile bootstrap ({n_boot} replicates)"
    else:
        z = stats.norm.ppf(1 - alpha / 2)
        lo, hi = estimate - z * se, estimate + z * se
        how = f"normal bootstrap ({n_boot} replicates)"
    return CATEIntervals(
        estimate=estimate,
        std_error=se,
        ci_low=lo,
        ci_high=hi,
        level=level,
        method=how,
        names=names,
        n_boot=int(n_boot),
        backend=frame_backend(X_pred),
    )


# ------------------------------------------------------------ linear DR stage
def linear_dr_inference(
    learner: Any, X: Any, *, cov_type: str = "HC1", level: float = 0.95
) -> LinearCATEInference:
    r"""Robust standard errors of a DR-learner's linear final stage.

    The DR-learner regresses its cross-fitted pseudo-outcomes
    :math:`\varphi_k` on the features. With ``effect_model`` a
    :class:`~sklearn.linear_model.LinearRegression`, the final stage is the
    least-squares fit :math:`\hat\beta = (Z^\top Z)^{-1} Z^\top \varphi_k`
    with :math:`Z = (1, X)`, an estimate of the best linear approximation of
    the CATE. Because the pseudo-outcomes are orthogonal scores, the error
    from estimating the nuisances is of second order, and the usual
    heteroskedasticity-robust covariance

    .. math::
        \hat V = c\,(Z^\top Z)^{-1} \Big(\sum_i \hat u_i^2 z_i z_i^\top\Big)
        (Z^\top Z)^{-1}, \qquad \hat u_i = \varphi_{k,i} - z_i^\top\hat\beta,

    (:math:`c = 1` for HC0, :math:`n/(n-p)` for HC1; weighted least squares
    under ``sample_weight``) gives valid intervals for :math:`\beta` and for
    :math:`z^\top\beta` (Semenova and Chernozhukov 2021).

    The coefficients are computed here by least squares on the pseudo-outcomes
    of all training rows. They equal the learner's final model when it was
    fitted with ``final_stage="full"``; with the default cross-fitted final
    stage (and after ``fit_predict``) the learner predicts with the mean of
    fold models, which is asymptotically equivalent but not identical, and the
    intervals are centred on the full-sample fit.

    Parameters
    ----------
    learner : DRLearner
        Fitted, with ``effect_model=LinearRegression()`` (with intercept);
        ``final_stage="full"`` makes its predictions those of this fit.
    X : frame or array-like
        The training features the learner was fitted on.
    cov_type : {"HC1", "HC0"}, default="HC1"
    level : float, default=0.95
        Confidence level.

    Returns
    -------
    LinearCATEInference
        Coefficients, robust covariance, ``coef_table()`` and
        ``predict_interval(X_new)``. The learner's own
        ``dr.predict_interval(X_new, alpha=...)`` gives these HC1 intervals
        without the training features (``fit`` keeps this fit).

    References
    ----------
    .. [1] Semenova, V. and Chernozhukov, V. (2021). Debiased machine
       learning of conditional average treatment effects and other causal
       functions. Econometrics Journal 24(2), 264-289.
    .. [2] White, H. (1980). A heteroskedasticity-consistent covariance
       matrix estimator and a direct test for heteroskedasticity.
       Econometrica 48(4), 817-838.
    .. [3] Kennedy, E. H. (2023). Towards optimal doubly robust estimation of
       heterogeneous causal effects. Electronic Journal of Statistics 17(2),
       3008-3049.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression
    >>> sim = ml.datasets.simulate_confounded(n=3000, seed=0)
    >>> dr = ml.DRLearner(outcome_model=LinearRegression(),
    ...                   propensity_model=LogisticRegression(),
    ...                   effect_model=LinearRegression(), final_stage="full",
    ...                   random_state=0).fit(sim.X, sim.y, sim.w)
    >>> inf = ml.inference.linear_dr_inference(dr, sim.X)
    >>> table = inf.coef_table()
    >>> table["term"].to_list()[:2]
    ['intercept', 'x0']
    >>> bool(table["ci_low"][1] < 0.5 < table["ci_high"][1])  # slope of x0 is 0.5
    True
    """
    if cov_type not in ("HC0", "HC1"):
        raise ValueError(f"`cov_type` must be 'HC0' or 'HC1'; got {cov_type!r}.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must be in (0, 1), e.g. 0.95; got {level!r}.")
    if not hasattr(learner, "pseudo_outcomes"):
        raise TypeError(f"`learner` must be a fitted DRLearner; got {type(learner).__name__}.")
    check_is_fitted(learner, "pseudo_outcomes_")
    phi = np.asarray(learner.pseudo_outcomes_)
    problem = _linear_stage_problem(learner._effect_template(), phi.shape[2])
    if problem is not None:
        kind, reason = problem
        raise kind(f"{reason}. Use `bootstrap_cate` for other final stages and outcomes.")
    Xa, _ = encode_features(X, learner.schema_)
    n = phi.shape[0]
    if Xa.shape[0] != n:
        raise ValueError(
            f"`X` has {Xa.shape[0]} rows but the learner was fitted on {n}; pass the training "
            "features."
        )
    return _linear_stage_inference(
        Xa,
        phi,
        getattr(learner, "_train_weight", None),
        terms=["intercept", *learner.schema_.output_names()],
        effects=learner._effect_names(),
        cov_type=cov_type,
        level=level,
        schema=learner.schema_,
        backend=frame_backend(X),
    )
