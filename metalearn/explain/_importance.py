"""CATE feature importance: mean absolute SHAP values and permutation importance.

Public names are re-exported from :mod:`metalearn.explain`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from metalearn._core.frames import native_backend, to_native_frame
from metalearn.explain._summary import check_predictable, effect_key_names, make_loss, scoring_data

__all__ = ["feature_importance", "permutation_importance"]


def feature_importance(explanations: Any, *, like: Any = None) -> Any:
    """Mean absolute SHAP value of each feature, per effect, as a tidy frame.

    Parameters
    ----------
    explanations : shap.Explanation or dict of str to shap.Explanation
        What :class:`Explainer` returns.
    like : frame, optional
        A pandas or Polars frame whose type the result takes (Polars otherwise).

    Returns
    -------
    frame
        One row per effect and feature, most important first within each
        effect, with columns ``effect``, ``feature``, ``mean_abs_shap``,
        ``mean_shap`` (signed mean: the average push of the feature on the
        effect) and ``rank`` (1 = most important).

    Examples
    --------
    >>> import numpy as np, shap
    >>> from metalearn.explain import feature_importance
    >>> e = shap.Explanation(values=np.array([[1.0, -3.0], [-1.0, 1.0]]),
    ...                      base_values=np.zeros(2), feature_names=["a", "b"])
    >>> feature_importance(e)["feature"].to_list()
    ['b', 'a']
    """
    items = explanations.items() if isinstance(explanations, dict) else [("tau", explanations)]
    cols: dict[str, list[Any]] = {
        k: [] for k in ("effect", "feature", "mean_abs_shap", "mean_shap", "rank")
    }
    for name, exp in items:
        values = np.asarray(exp.values, dtype=np.float64)
        if values.ndim != 2:
            raise ValueError(
                "`explanations` must hold 2-D SHAP values (rows x features), one Explanation "
                f"per effect; got values of shape {values.shape} for {name!r}."
            )
        names = exp.feature_names
        if names is None:
            names = [f"x{j}" for j in range(values.shape[1])]
        mean_abs = np.abs(values).mean(axis=0)
        order = np.argsort(-mean_abs, kind="stable")
        for r, j in enumerate(order, start=1):
            cols["effect"].append(str(name))
            cols["feature"].append(str(names[j]))
            cols["mean_abs_shap"].append(float(mean_abs[j]))
            cols["mean_shap"].append(float(values[:, j].mean()))
            cols["rank"].append(r)
    arrays = {k: np.asarray(v) for k, v in cols.items()}
    arrays["rank"] = arrays["rank"].astype(np.int64)
    return to_native_frame(arrays, native_backend(like) if like is not None else None)


def permutation_importance(
    learner: Any,
    X: Any,
    y: Any,
    w: Any,
    *,
    loss: str = "dr",
    n_repeats: int = 5,
    nuisance: Any = None,
    propensity: Any = None,
    random_state: int | None = None,
) -> Any:
    r"""Permutation importance of each feature for the CATE, against a CATE loss.

    For each effect and feature ``j``, the loss of the learner's CATE on rows
    ``X`` is compared with its loss after the values of column ``j`` are
    shuffled across rows (``n_repeats`` times): the increase measures how much
    the CATE model relies on ``j`` to rank effects correctly (Breiman 2001;
    Fisher, Rudin and Dominici 2019). The loss needs no true effects:

    * ``"dr"``: :math:`\frac1n\sum_i(\varphi_i - \hat\tau(X_i))^2` with doubly
      robust (AIPW) pseudo-outcomes :math:`\varphi_i` ([3]_);
    * ``"r"``: the R-loss of Nie and Wager on the rows of the control and the
      treated variant ([4]_);
    * ``"plugin"``: :math:`\frac1n\sum_i(\hat\mu_k(X_i) - \hat\mu_c(X_i) - \hat\tau(X_i))^2`.

    The losses are those of :func:`metalearn.scoring.cate_losses`, kept per
    outcome class, from cross-fitted scoring nuisances of the rows ``X, y,
    w``. Held-out rows (not used to fit the learner) give the most honest
    picture.

    Parameters
    ----------
    learner : fitted meta-learner
    X : frame or array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    w : array-like of shape (n_samples,)
        Treatment variant of each row.
    loss : {"dr", "r", "plugin"}, default="dr"
    n_repeats : int, default=5
        Shuffles per feature.
    nuisance : ScoringNuisance or Nuisance, optional
        A :class:`~metalearn.scoring.ScoringNuisance` fitted on ``X, y, w``
        (e.g. the one given to :func:`metalearn.scoring.evaluate`), or a
        :class:`~metalearn.Nuisance` (a template, or fitted on these rows).
        Default: the scoring yardstick of :mod:`metalearn.scoring`.
    propensity : float or array-like, optional
        Known propensities of the rows (randomized designs).
    random_state : int, default=None
        Seeds the shuffles.

    Returns
    -------
    frame
        In the type of ``X`` (Polars for arrays): ``effect``, ``feature``,
        ``importance_mean``, ``importance_std`` (over repeats),
        ``baseline_loss`` (the loss without shuffling) and ``rank``, most
        important first per effect.

    References
    ----------
    .. [1] Breiman, L. (2001). Random forests. Machine Learning 45(1), 5-32.
    .. [2] Fisher, A., Rudin, C. and Dominici, F. (2019). All models are wrong,
       but many are useful: learning a variable's importance by studying an
       entire class of prediction models simultaneously. JMLR 20(177), 1-81.
    .. [3] Kennedy, E. H. (2023). Towards optimal doubly robust estimation of
       heterogeneous causal effects. Electronic Journal of Statistics 17(2).
    .. [4] Nie, X. and Wager, S. (2021). Quasi-oracle estimation of
       heterogeneous treatment effects. Biometrika 108(2), 299-319.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression
    >>> from metalearn.explain import permutation_importance
    >>> sim = ml.datasets.simulate_nie_wager("B", n=600, seed=0)
    >>> dr = ml.DRLearner(outcome_model=LinearRegression(),
    ...                   propensity_model=LogisticRegression(),
    ...                   effect_model=LinearRegression(), n_folds=2, random_state=0)
    >>> dr = dr.fit(sim.X, sim.y, sim.w)
    >>> table = permutation_importance(dr, sim.X, sim.y, sim.w, random_state=0)
    >>> table.columns
    ['effect', 'feature', 'importance_mean', 'importance_std', 'baseline_loss', 'rank']
    """
    check_is_fitted(learner, "variants_")
    if loss not in ("dr", "r", "plugin"):
        raise ValueError(f"`loss` must be 'dr', 'r' or 'plugin'; got {loss!r}.")
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, int | np.integer) or n_repeats < 1:
        raise ValueError(f"`n_repeats` must be a positive integer; got {n_repeats!r}.")
    check_predictable(learner)
    Xa, sn = scoring_data(learner, X, y, w, nuisance=nuisance, propensity=propensity)
    n, p = Xa.shape
    score = make_loss(sn, loss)
    baseline = score(learner._predict_tau(Xa))
    rng = np.random.default_rng(random_state)
    # All shuffled copies in batches of whole features, predicted together.
    per_batch = max(1, 400_000 // max(n, 1))
    jobs = [(j, r) for j in range(p) for r in range(n_repeats)]
    losses = np.empty((p, n_repeats, *baseline.shape))
    perms = [rng.permutation(n) for _ in jobs]
    for start in range(0, len(jobs), per_batch):
        chunk = jobs[start : start + per_batch]
        blocks = []
        for i, (j, _r) in enumerate(chunk):
            Xp = Xa.copy()
            Xp[:, j] = Xa[perms[start + i], j]
            blocks.append(Xp)
        tau = learner._predict_tau(np.concatenate(blocks, axis=0))
        for i, (j, r) in enumerate(chunk):
            losses[j, r] = score(tau[i * n : (i + 1) * n])
    increase = losses - baseline[None, None]
    names = learner.schema_.output_names()
    effect_names = effect_key_names(learner)
    cols: dict[str, list[Any]] = {
        k: []
        for k in ("effect", "feature", "importance_mean", "importance_std", "baseline_loss", "rank")
    }
    for (j, d), name in effect_names.items():
        mean = increase[:, :, j, d].mean(axis=1)
        std = increase[:, :, j, d].std(axis=1, ddof=1) if n_repeats > 1 else np.zeros(p)
        for r, f in enumerate(np.argsort(-mean, kind="stable"), start=1):
            cols["effect"].append(name)
            cols["feature"].append(names[f])
            cols["importance_mean"].append(float(mean[f]))
            cols["importance_std"].append(float(std[f]))
            cols["baseline_loss"].append(float(baseline[j, d]))
            cols["rank"].append(r)
    arrays = {k: np.asarray(v) for k, v in cols.items()}
    arrays["rank"] = arrays["rank"].astype(np.int64)
    return to_native_frame(arrays, native_backend(X))
