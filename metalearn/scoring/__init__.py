"""Losses for CATE models that need no ground truth, and scorers for model selection.

The losses are computed from *scoring nuisances*: outcome, pair-marginal
outcome and propensity predictions cross-fitted on the evaluation data
(:func:`fit_scoring_nuisance`), so that every learner, whatever its own
nuisance models, is judged on the same yardstick.

* :func:`r_loss` and :func:`dr_loss` are the plain formulas;
* :func:`cate_losses` computes the R-loss, the DR-loss and a plug-in
  T-learner loss of predicted effects for every treated variant, each beside
  the loss of the best constant effect (the ATE for everyone);
* :func:`evaluate` (and ``learner.evaluate(X, y, w)``) adds the losses of
  the learner's own base models;
* :class:`CATEScorer` (:func:`make_cate_scorer`) plugs a loss into
  scikit-learn's model selection, with ``w`` routed as metadata; it is also
  what ``learner.score(X, y, w)`` uses.
"""

from __future__ import annotations

import inspect
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.utils.metadata_routing import MetadataRequest
from sklearn.utils.validation import check_is_fitted

from metalearn._core.data import Data, prepare_data
from metalearn._core.formulas import clip_propensity, pair_propensity, r_loss_terms, r_residuals
from metalearn._core.frames import encode_features, native_backend, to_native_frame
from metalearn._core.results import TableResult, frame_backend_of, frame_rows
from metalearn._core.validation import control_index
from metalearn.evaluation._ranking import linear_se
from metalearn.learners.nuisance import Nuisance
from metalearn.scoring import _losses as _nuisance_losses
from metalearn.scoring._nuisance import (
    ScoringNuisance,
    _py,
    check_clip,
    fit_scoring,
    fit_scoring_nuisance,
)

__all__ = [
    "r_loss",
    "dr_loss",
    "ScoringNuisance",
    "fit_scoring_nuisance",
    "cate_losses",
    "Evaluation",
    "evaluate",
    "CATEScorer",
    "make_cate_scorer",
    "TreatmentNotRoutedError",
]


def _as_float(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-dimensional; got shape {arr.shape}.")
    return arr


def r_loss(
    y: Any,
    treated: Any,
    tau: Any,
    *,
    outcome: Any,
    propensity: Any,
    sample_weight: Any = None,
) -> float:
    r"""R-loss of Nie and Wager (2021) for one treated variant against the control.

    .. math:: \frac{1}{n}\sum_i \big[(Y_i - \hat m(X_i)) - \tau(X_i)(T_i - \hat p(X_i))\big]^2

    Lower is better. Its value also contains the irreducible noise of ``Y``,
    so compare learners on the same data, not against zero.

    Parameters
    ----------
    y : array-like of shape (n,)
        Outcomes of the rows of the control and the treated variant.
    treated : array-like of shape (n,)
        1 for rows of the treated variant, 0 for control rows.
    tau : array-like of shape (n,)
        Predicted effects.
    outcome : array-like of shape (n,)
        Out-of-fold predictions of ``m(x) = E[Y | X=x]`` on these rows.
    propensity : array-like of shape (n,)
        Out-of-fold (or known) ``P(T=1 | X=x)`` on these rows.
    sample_weight : array-like of shape (n,), optional

    Returns
    -------
    float

    References
    ----------
    .. [1] Nie, X. and Wager, S. (2021). Quasi-oracle estimation of
       heterogeneous treatment effects. Biometrika 108(2), 299-319.

    Examples
    --------
    >>> from metalearn.scoring import r_loss
    >>> r_loss([1.0, 3.0], [0, 1], [2.0, 2.0], outcome=[2.0, 2.0], propensity=[0.5, 0.5])
    0.0
    """
    arrays = [
        _as_float(v, n)
        for v, n in (
            (y, "y"),
            (treated, "treated"),
            (tau, "tau"),
            (outcome, "outcome"),
            (propensity, "propensity"),
        )
    ]
    y_, t_, tau_, m_, p_ = arrays
    if len({len(a) for a in arrays}) != 1:
        raise ValueError(
            "`y`, `treated`, `tau`, `outcome` and `propensity` must have equal length."
        )
    y_res, t_res = r_residuals(y_, t_, m_, p_)
    return float(np.average(r_loss_terms(y_res, t_res, tau_), weights=sample_weight))


def dr_loss(pseudo_outcome: Any, tau: Any, *, sample_weight: Any = None) -> float:
    r"""Doubly robust tau-risk: mean squared distance of ``tau`` to AIPW pseudo-outcomes.

    .. math:: \frac{1}{n}\sum_i (\varphi_i - \tau(X_i))^2

    where :math:`\varphi_i` is the doubly robust pseudo-outcome of row ``i``
    computed from scoring nuisances. Lower is better; differences between
    learners estimate differences in their mean squared error against the
    true CATE (up to the nuisances' error).

    Parameters
    ----------
    pseudo_outcome : array-like of shape (n,)
        Doubly robust pseudo-outcomes :math:`\varphi_i` of the rows, built from
        out-of-fold (or known) nuisances, e.g.
        ``sn.pseudo_outcomes()[:, 0, 0]`` of a
        :class:`ScoringNuisance` ``sn`` of two variants.
    tau : array-like of shape (n,)
        Predicted effects.
    sample_weight : array-like of shape (n,), optional

    Returns
    -------
    float

    References
    ----------
    .. [1] Saito, Y. and Yasui, S. (2020). Counterfactual cross-validation:
       stable model selection procedure for causal inference models. ICML.
    .. [2] Kennedy, E. H. (2023). Towards optimal doubly robust estimation of
       heterogeneous causal effects. Electronic Journal of Statistics 17(2).

    Examples
    --------
    >>> from metalearn.scoring import dr_loss
    >>> dr_loss([1.0, 3.0], [2.0, 2.0])
    1.0
    """
    phi = _as_float(pseudo_outcome, "pseudo_outcome")
    t = _as_float(tau, "tau")
    if len(phi) != len(t):
        raise ValueError("`pseudo_outcome` and `tau` must have equal length.")
    return float(np.average((phi - t) ** 2, weights=sample_weight))


LOSSES = ("r_loss", "dr_loss", "plugin")


# ------------------------------------------------------------------ CATE losses
def _tau3(tau: Any, n: int, k1: int, d: int) -> np.ndarray:
    """Predicted effects in any public shape -> (n, K-1, D)."""
    t = np.asarray(tau, dtype=np.float64)
    if t.ndim == 1 and k1 == 1 and d == 1:
        t = t[:, None, None]
    elif t.ndim == 2 and d == 1:
        t = t[:, :, None]
    elif t.ndim == 2 and k1 == 1:
        t = t[:, None, :]
    if t.shape != (n, k1, d):
        dims = [str(n)] + [str(v) for v in (k1, d) if v > 1]
        shape = f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"
        raise ValueError(
            f"`tau` must have shape {shape}: one predicted effect per row, treated variant "
            f"({k1}) and outcome class ({d} column(s)); got shape {np.shape(tau)}."
        )
    if not np.all(np.isfinite(t)):
        raise ValueError("`tau` holds NaN or infinite values; every prediction must be finite.")
    return t


def _row_losses(tau3: np.ndarray, sn: ScoringNuisance, clip: float) -> list[dict[str, Any]]:
    """Per treated variant and loss: value, baseline and their per-row terms."""
    Y, e = sn.target, sn.propensity
    sw = np.ones(sn.n) if sn.sample_weight is None else sn.sample_weight
    phi = sn.pseudo_outcomes()
    c = sn.control
    out = []
    for j, k in enumerate(sn.treated):
        tau = tau3[:, j, :]
        pair = np.flatnonzero((sn.w == k) | (sn.w == c))
        p = pair_propensity(e[pair], k, c)
        if not sn.known_propensity:
            p = clip_propensity(p, clip)
        ry, rt = r_residuals(Y[pair], sn.w[pair] == k, sn.marginal[k][pair], p)
        om = sw[pair] / sw[pair].sum()
        const = (om * rt) @ ry / np.sum(om * rt**2)
        r_terms = r_loss_terms(ry, rt, tau[pair])
        r_base = r_loss_terms(ry, rt, np.broadcast_to(const[None, :], ry.shape))
        out.append(_loss_entry(sn, k, "r_loss", om, r_terms, r_base, const, pair))
        om_all = sw / sw.sum()
        for name, target in (
            ("dr_loss", phi[:, j, :]),
            ("plugin", sn.outcomes[:, k, :] - sn.outcomes[:, c, :]),
        ):
            const = om_all @ target
            terms = np.sum((target - tau) ** 2, axis=1)
            base = np.sum((target - const[None, :]) ** 2, axis=1)
            out.append(_loss_entry(sn, k, name, om_all, terms, base, const, None))
    return out


def _loss_entry(
    sn: ScoringNuisance,
    k: int,
    name: str,
    om: np.ndarray,
    terms: np.ndarray,
    base: np.ndarray,
    const: np.ndarray,
    rows: np.ndarray | None,
) -> dict[str, Any]:
    """One loss of one treated variant. Besides the table's columns, the entry keeps its
    rows (``None``: all), their weights ``om`` (summing to 1) and the per-row terms of the
    predictions and of the constant baseline, from which the search's selection check
    (:mod:`metalearn.tuning._selection`) takes paired standard errors."""
    value, baseline = float(om @ terms), float(om @ base)
    return {
        "rows": rows,
        "om": om,
        "terms": terms,
        "base_terms": base,
        "variant": str(sn.variants[k]),
        "control": str(sn.variants[sn.control]),
        "loss": name,
        "value": value,
        "baseline": baseline,
        "gain": baseline - value,
        "gain_std_error": linear_se(om, base - terms, baseline - value),
        "baseline_effect": float(const[0]) if len(const) == 1 else float("nan"),
        "n": int(np.count_nonzero(om)),
    }


def _columns(rows: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {k: np.asarray([r[k] for r in rows]) for k in names}


_LOSS_COLUMNS = (
    "variant",
    "control",
    "loss",
    "value",
    "baseline",
    "gain",
    "gain_std_error",
    "baseline_effect",
    "n",
)


def cate_losses(
    tau: Any, scoring: ScoringNuisance, *, propensity_clip: float = 0.01, backend: Any = None
) -> Any:
    r"""R-loss, DR-loss and plug-in loss of predicted effects, beside a constant baseline.

    For each treated variant ``k`` against the control ``c`` (out-of-fold
    scoring nuisances, weights :math:`\omega_i` normalised to sum to one):

    * ``r_loss`` (Nie and Wager 2021), on the rows of the pair, with
      :math:`T = 1\{W = k\}` and :math:`p = e_k / (e_k + e_c)`:
      :math:`\sum_i \omega_i [(Y_i - \hat m(X_i)) - \tau(X_i)(T_i - \hat p(X_i))]^2`;
    * ``dr_loss`` (tau-risk with doubly robust pseudo-outcomes
      :math:`\varphi`, as in :class:`~metalearn.DRLearner`):
      :math:`\sum_i \omega_i (\varphi_i - \tau(X_i))^2`;
    * ``plugin`` (a T-learner yardstick):
      :math:`\sum_i \omega_i (\hat\mu_k(X_i) - \hat\mu_c(X_i) - \tau(X_i))^2`.

    Multi-class outcomes sum the loss over the classes. Lower is better;
    the values contain noise that no model removes, so compare models on the
    same data. ``baseline`` is the loss of the best constant effect (the ATE
    for everyone, in the loss's own weighting: the overlap-weighted effect
    for the R-loss, the AIPW ATE for the DR-loss), ``baseline_effect`` that
    constant; ``gain = baseline - value`` is positive when the predictions
    beat the constant, with the standard error of the mean paired difference.

    Parameters
    ----------
    tau : array-like of shape (n_samples,), (n_samples, n_variants - 1) or with a class axis
        Predicted effects of the rows of ``scoring``.
    scoring : ScoringNuisance
        From :func:`fit_scoring_nuisance` on the same rows.
    propensity_clip : float, default=0.01
        Estimated pair propensities are clipped to ``[clip, 1 - clip]`` in
        the R-loss (the rule of :mod:`metalearn._core.formulas`); the DR-loss uses
        the propensities of ``scoring``, clipped when it was fitted.
    backend : narwhals implementation, optional
        Frame type of the result (default Polars).

    Returns
    -------
    frame
        One row per (``variant``, ``loss``): ``variant``, ``control``,
        ``loss``, ``value``, ``baseline``, ``gain``, ``gain_std_error``,
        ``baseline_effect``, ``n``.

    References
    ----------
    .. [1] Nie, X. and Wager, S. (2021). Quasi-oracle estimation of
       heterogeneous treatment effects. Biometrika 108(2), 299-319.
    .. [2] Saito, Y. and Yasui, S. (2020). Counterfactual cross-validation:
       stable model selection procedure for causal inference models. ICML.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> from metalearn.scoring import cate_losses, fit_scoring_nuisance
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> sn = fit_scoring_nuisance(sim.X, sim.y, sim.w, propensity=0.5, nuisance=ml.Nuisance(
    ...     outcome_model=LinearRegression(), n_folds=3, random_state=0))
    >>> table = cate_losses(sim.tau, sn)
    >>> table["loss"].to_list()
    ['r_loss', 'dr_loss', 'plugin']
    >>> bool((table["gain"] > 0).all())
    True
    """
    if not isinstance(scoring, ScoringNuisance):
        raise TypeError(
            "`scoring` must be a ScoringNuisance from `fit_scoring_nuisance`; got "
            f"{type(scoring).__name__}."
        )
    clip = check_clip(propensity_clip)
    t = _tau3(tau, scoring.n, len(scoring.treated), scoring.target.shape[1])
    rows = _row_losses(t, scoring, clip)
    return to_native_frame(_columns(rows, _LOSS_COLUMNS), backend)


# ------------------------------------------------------------------- evaluate
@dataclass(frozen=True, repr=False, eq=False)
class Evaluation(TableResult):
    """Losses of a fitted learner on evaluation data (:func:`evaluate`).

    Attributes
    ----------
    losses : frame
        The CATE losses of :func:`cate_losses`: one row per (variant, loss)
        with the constant-effect baseline beside each.
    nuisance_losses : frame
        One row per base model and fold: ``source`` (``"learner"`` for the
        learner's own models, ``"scoring"`` for the scoring nuisances),
        ``model`` (``"outcome"``, ``"marginal"``, ``"propensity"``),
        ``variant``, ``fold`` (a fold number, ``"mean"`` for the
        fold-averaged prediction, ``"all"`` for a model fitted on all training
        rows, ``"oof"`` for the out-of-fold predictions of the scoring
        nuisances), ``metric``, ``value``, ``n``.
    scores : dict of str to float
        A flat summary, averaged over the treated variants: ``r_loss``,
        ``r_loss_baseline``, ``r_loss_gain``, the same for ``dr_loss`` and
        ``plugin``, and ``<model>_<metric>`` for the learner's base models
        (their ``"mean"`` or ``"all"`` prediction, averaged over variants).
    control : str
        The control variant.
    variants : tuple of str
        All variants.
    n : int
        Number of evaluation rows.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> train = ml.datasets.simulate_nie_wager("B", n=1000, seed=0)
    >>> test = ml.datasets.simulate_nie_wager("B", n=1000, seed=1)
    >>> t = ml.TLearner(outcome_model=LinearRegression()).fit(train.X, train.y, train.w)
    >>> ev = t.evaluate(test.X, test.y, test.w, propensity=0.5, nuisance=ml.Nuisance(
    ...     outcome_model=LinearRegression(), n_folds=3, random_state=0))
    >>> ev.n, ev.variants, ev.control
    (1000, ('0', '1'), '0')
    >>> ev.losses["loss"].to_list()
    ['r_loss', 'dr_loss', 'plugin']
    >>> bool(ev.scores["r_loss_gain"] > 0)  # beats the constant effect
    True
    """

    losses: Any
    nuisance_losses: Any
    scores: dict[str, float]
    control: str
    variants: tuple[str, ...]
    n: int

    def _summary_rows(self) -> list[dict[str, Any]]:
        """The rows of :attr:`losses`."""
        return frame_rows(self.losses)

    def _summary_backend(self) -> Any:
        return frame_backend_of(self.losses)

    def __repr__(self) -> str:
        head = f"Evaluation(n={self.n}, variants={list(self.variants)}, control={self.control!r})"
        lines = [head]
        frame = to_native_frame(dict(_native_columns(self.losses)))
        for r in frame.iter_rows(named=True):
            lines.append(
                f"  {r['variant']} vs {r['control']} {r['loss']:<8} {r['value']:.4g} "
                f"(constant effect {r['baseline']:.4g}; gain {r['gain']:.4g} "
                f"se {r['gain_std_error']:.2g})"
            )
        extra = {k: v for k, v in self.scores.items() if not k.startswith(LOSSES)}
        if extra:
            lines.append("  base models: " + ", ".join(f"{k} {v:.4g}" for k, v in extra.items()))
        return "\n".join(lines)


def _native_columns(frame: Any) -> dict[str, np.ndarray]:
    import narwhals.stable.v2 as nw

    df = nw.from_native(frame)
    return {c: df.get_column(c).to_numpy() for c in df.columns}


def _learner_tau(est: Any, X: Any, propensity: Any) -> tuple[np.ndarray, np.ndarray]:
    """A fitted learner's (n, K-1, D) effects on ``X`` and the encoded ``X``."""
    check_is_fitted(est, "variants_")
    Xa, _ = encode_features(X, est.schema_)
    return _encoded_tau(est, Xa, propensity), Xa


def _encoded_tau(est: Any, Xa: np.ndarray, propensity: Any) -> np.ndarray:
    """A fitted learner's (n, K-1, D) effects on rows encoded with its schema."""
    est._check_predict_rows(Xa)
    params = inspect.signature(est._predict_tau).parameters
    if "propensity" in params and propensity is not None:
        return np.asarray(est._predict_tau(Xa, propensity=propensity))
    return np.asarray(est._predict_tau(Xa))


def _check_design(est: Any, data: Data) -> None:
    fitted = np.asarray(est.variants_)
    if len(fitted) != len(data.variants) or not np.array_equal(fitted, data.variants):
        raise ValueError(
            f"`w` holds the variants {data.variants.tolist()} but the learner was fitted on "
            f"{fitted.tolist()}; the evaluation data need rows of every fitted variant."
        )
    if est.classes_ is not None and not np.array_equal(
        np.asarray(est.classes_), np.asarray(data.classes)
    ):
        raise ValueError(
            f"`y` holds the classes {np.asarray(data.classes).tolist()} but the learner was "
            f"fitted on {np.asarray(est.classes_).tolist()}; the evaluation data need every "
            "class."
        )


def _summary(loss_rows: list[dict[str, Any]], nuis_rows: list[dict[str, Any]]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for name in LOSSES:
        sel = [r for r in loss_rows if r["loss"] == name]
        for suffix, col in (("", "value"), ("_baseline", "baseline"), ("_gain", "gain")):
            scores[name + suffix] = float(np.mean([r[col] for r in sel]))
    groups: dict[str, list[float]] = {}
    for r in nuis_rows:
        if r["source"] == "learner" and r["fold"] in ("mean", "all"):
            groups.setdefault(f"{r['model']}_{r['metric']}", []).append(r["value"])
    scores.update({k: float(np.nanmean(v)) for k, v in groups.items()})
    return scores


_NUISANCE_COLUMNS = ("source", "model", "variant", "fold", "metric", "value", "n")


def evaluate(
    estimator: Any,
    X: Any,
    y: Any,
    w: Any = None,
    *,
    nuisance: Any = None,
    propensity: Any = None,
    sample_weight: Any = None,
    metric: Any = None,
    propensity_clip: float = 0.01,
) -> Evaluation:
    """Score a fitted learner on evaluation data: base-model losses and CATE losses.

    The CATE losses (:func:`cate_losses`: R-loss, DR-loss, plug-in loss,
    each beside the constant-effect baseline) are computed against scoring
    nuisances cross-fitted on the evaluation data, the same for every
    learner scored with the same ``nuisance``. The learner's own outcome,
    marginal-outcome and propensity models are scored per variant and fold
    on the evaluation rows of their variant(s).

    Use held-out rows: on the training rows a learner's predictions are
    in-sample and its losses optimistic.

    Parameters
    ----------
    estimator : fitted learner
        An S-, T-, X-, R- or DR-learner.
    X : frame or array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    w : array-like of shape (n_samples,)
        Variant of each row; every fitted variant must occur.
    nuisance : Nuisance or ScoringNuisance, optional
        The yardstick: a :class:`ScoringNuisance` fitted on these rows (shared
        between learners), a :class:`~metalearn.Nuisance` template to
        cross-fit here, or ``None`` for the default of
        :func:`fit_scoring_nuisance` (cached per data set, so scoring several
        learners on the same rows fits it once).
    propensity : float or array-like, optional
        Known propensities of the evaluation rows.
    sample_weight : array-like of shape (n_samples,), optional
    metric : str, callable or dict, optional
        Base-model metric: ``"rmse"`` (default for numeric outcomes),
        ``"mse"``, ``"mae"``, ``"r2"``, ``"log_loss"`` (default for classes and
        propensities), ``"roc_auc"``, ``"accuracy"`` (scikit-learn names such
        as ``"neg_root_mean_squared_error"`` work too), a callable
        ``f(y_true, y_pred)`` receiving predictions or class probabilities,
        or ``{"outcome": ..., "propensity": ...}``.
    propensity_clip : float, default=0.01
        Estimated scoring propensities (and pair propensities in the R-loss)
        are clipped to ``[clip, 1 - clip]``, each on its own (the rule of
        :mod:`metalearn._core.formulas`).

    Returns
    -------
    Evaluation

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> train = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)
    >>> test = ml.datasets.simulate_nie_wager("B", n=2000, seed=1)
    >>> t = ml.TLearner(outcome_model=LinearRegression()).fit(train.X, train.y, train.w)
    >>> ev = t.evaluate(test.X, test.y, test.w, propensity=0.5, nuisance=ml.Nuisance(
    ...     outcome_model=LinearRegression(), n_folds=3, random_state=0))
    >>> sorted(ev.scores)[:3]
    ['dr_loss', 'dr_loss_baseline', 'dr_loss_gain']
    >>> ev.scores["r_loss_gain"] > 0
    True
    """
    clip = check_clip(propensity_clip)
    check_is_fitted(estimator, "variants_")
    classification = estimator.classes_ is not None
    # One conversion: the rows encoded with the learner's schema are the scoring data too.
    data = prepare_data(
        X,
        y,
        w,
        classification=classification,
        sample_weight=sample_weight,
        propensity=propensity,
        schema=estimator.schema_,
    )
    Xa = data.X
    tau3 = _encoded_tau(estimator, Xa, propensity)
    _check_design(estimator, data)
    c = control_index(data.variants, estimator.control_)
    sn = _DEFAULT_SCORER.scoring_for(data, c, nuisance, n_jobs=estimator.n_jobs, clip=clip)
    loss_rows = _row_losses(tau3, sn, clip)
    metrics = _nuisance_losses.resolve_metrics(metric, classification=classification)
    nuis_rows = _nuisance_losses.learner_rows(estimator, X, Xa, data, c, metrics)
    nuis_rows += _nuisance_losses.scoring_rows(sn, data, metrics)
    backend = native_backend(X)
    return Evaluation(
        losses=to_native_frame(_columns(loss_rows, _LOSS_COLUMNS), backend),
        nuisance_losses=to_native_frame(_columns(nuis_rows, _NUISANCE_COLUMNS), backend),
        scores=_summary(loss_rows, nuis_rows),
        control=str(data.variants[c]),
        variants=tuple(str(v) for v in data.variants),
        n=data.n,
    )


# --------------------------------------------------------------------- scorer
_ROUTING_FIX = "sklearn.set_config(enable_metadata_routing=True)"


class TreatmentNotRoutedError(BaseException):
    """A CATE score was asked for inside a scikit-learn search without the treatment ``w``.

    Raised by :class:`CATEScorer` (and so by ``learner.score``) when it is
    called from scikit-learn's model selection (``GridSearchCV``,
    ``cross_validate``, ...) and ``w`` did not reach it, most often because
    metadata routing is off: the search then passes ``w`` to the learner's
    ``fit`` but not to the scorer. The message names the fix,
    ``sklearn.set_config(enable_metadata_routing=True)``.

    It derives from :class:`BaseException`, not :class:`Exception`, on
    purpose: scikit-learn turns an ``Exception`` raised by a scorer into a
    warning and a NaN score (``error_score=np.nan``, its default), and the
    search would then return normally with every score NaN and the first
    candidate as the "best". Outside a search the scorer raises a plain
    :class:`ValueError` with the same message.

    Examples
    --------
    >>> import numpy as np
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> from sklearn.model_selection import cross_val_score
    >>> from metalearn.scoring import TreatmentNotRoutedError
    >>> sim = ml.datasets.simulate_nie_wager("B", n=200, seed=0)
    >>> learner = ml.TLearner(outcome_model=LinearRegression(), n_folds=2)
    >>> try:  # metadata routing is off: w reaches fit, not score
    ...     cross_val_score(learner, sim.X, sim.y, cv=2, params={"w": sim.w})
    ... except TreatmentNotRoutedError as err:
    ...     print("enable_metadata_routing=True" in str(err))
    True
    """


def _inside_model_selection() -> bool:
    """Whether the call comes from scikit-learn's model selection (a search or CV loop)."""
    frame: Any = sys._getframe(1)
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith("sklearn.model_selection"):
            return True
        frame = frame.f_back
    return False


def _raise_missing_w() -> None:
    """Raise the error of a score without the treatment ``w``, with the fix in it."""
    import sklearn

    if not sklearn.get_config()["enable_metadata_routing"]:
        message = (
            "Scoring a CATE model needs the treatment `w` of the scored rows, and none came: "
            "scikit-learn's metadata routing is off, so a model search or `cross_validate` "
            "passes `w` to the learner's `fit` but not to its scorer (every score would be "
            f"NaN). Fix: enable metadata routing, `{_ROUTING_FIX}`, before the search and "
            "pass `w=w` to its `fit` (`params={'w': w}` for `cross_validate`). Called "
            "directly, use `score(X, y, w)` or `scorer(estimator, X, y, w)`."
        )
    else:
        message = (
            "Scoring a CATE model needs the treatment `w` of the scored rows, and none came "
            "although metadata routing is on: pass `w=w` to the search's `fit` (`params="
            "{'w': w}` for `cross_validate`, `score(X, y, w=w)` for a Pipeline) and keep the "
            "scorer's request for it (`set_score_request(w=True)`, the default)."
        )
    if _inside_model_selection():
        raise TreatmentNotRoutedError(message)
    raise ValueError(message)


_UNCHANGED = object()


class CATEScorer:
    """Scorer for scikit-learn model selection: minus a CATE loss (greater is better).

    ``scorer(estimator, X, y, w)`` fits (or takes from its cache) the scoring
    nuisances of ``(X, y, w)`` and returns minus the mean over treated
    variants of the chosen loss of :func:`cate_losses`. Every candidate
    scored on the same rows meets the same scoring nuisances, so it works as
    ``scoring=`` in :class:`~sklearn.model_selection.GridSearchCV`,
    :func:`~sklearn.model_selection.cross_validate` and the like.

    The treatment ``w`` reaches the scorer through scikit-learn's metadata
    routing: enable it with ``sklearn.set_config(enable_metadata_routing=True)``
    and pass ``w=w`` to the search's ``fit``. The scorer requests ``w`` and
    ``propensity`` by default; request ``sample_weight`` with
    :meth:`set_score_request`. Called by a search without ``w`` (routing off),
    it raises :class:`TreatmentNotRoutedError`, which the search does not
    turn into NaN scores; called directly without ``w``, a ``ValueError``.

    Parameters
    ----------
    loss : {"r_loss", "dr_loss", "plugin"}, default="r_loss"
        The loss of :func:`cate_losses`.
    nuisance : Nuisance, optional
        Template of the scoring models, cross-fitted on each data set scored.
        Default: see :func:`fit_scoring_nuisance`.
    propensity_clip : float, default=0.01
        Estimated scoring propensities (and pair propensities in the R-loss)
        are clipped to ``[clip, 1 - clip]``, each on its own (the rule of
        :mod:`metalearn._core.formulas`).
    cache_size : int, default=8
        Scoring nuisances kept (one per data set, e.g. per CV split).

    See Also
    --------
    make_cate_scorer : The same, as a function.

    References
    ----------
    .. [1] Nie, X. and Wager, S. (2021). Quasi-oracle estimation of
       heterogeneous treatment effects. Biometrika 108(2), 299-319.

    Examples
    --------
    >>> import sklearn
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> from sklearn.model_selection import cross_val_score
    >>> from metalearn.scoring import CATEScorer
    >>> sim = ml.datasets.simulate_nie_wager("B", n=1000, seed=0)
    >>> scorer = CATEScorer("r_loss", nuisance=ml.Nuisance(
    ...     outcome_model=LinearRegression(), n_folds=2, random_state=0))
    >>> learner = ml.TLearner(outcome_model=LinearRegression(), n_folds=2)
    >>> with sklearn.config_context(enable_metadata_routing=True):
    ...     scores = cross_val_score(learner, sim.X, sim.y, cv=2, scoring=scorer,
    ...                              params={"w": sim.w, "propensity": sim.propensity})
    >>> scores.shape, bool((scores < 0).all())
    ((2,), True)
    """

    def __init__(
        self,
        loss: str = "r_loss",
        *,
        nuisance: Nuisance | None = None,
        propensity_clip: float = 0.01,
        cache_size: int = 8,
    ) -> None:
        if loss not in LOSSES:
            raise ValueError(f"`loss` must be one of {list(LOSSES)}; got {loss!r}.")
        if nuisance is not None and not isinstance(nuisance, Nuisance):
            raise TypeError(
                f"`nuisance` must be a metalearn.Nuisance template; got {type(nuisance).__name__}."
            )
        self.loss = loss
        self.nuisance = nuisance
        self.propensity_clip = check_clip(propensity_clip)
        self.cache_size = int(cache_size)
        self._requests: dict[str, Any] = {"w": True, "propensity": True, "sample_weight": None}
        self._cache: OrderedDict[tuple[Any, ...], ScoringNuisance] = OrderedDict()
        self._lock = threading.Lock()

    # -- scikit-learn's metadata routing
    def get_metadata_routing(self) -> MetadataRequest:
        """The metadata this scorer requests: ``w`` and ``propensity`` by default."""
        request = MetadataRequest(owner=type(self).__name__)
        for param, alias in self._requests.items():
            request.score.add_request(param=param, alias=alias)
        return request

    def set_score_request(
        self, *, w: Any = _UNCHANGED, propensity: Any = _UNCHANGED, sample_weight: Any = _UNCHANGED
    ) -> CATEScorer:
        """Request (``True``), refuse (``False``) or alias (a str) routed metadata."""
        given = {"w": w, "propensity": propensity, "sample_weight": sample_weight}
        for param, value in given.items():
            if value is not _UNCHANGED:
                self._requests[param] = value
        return self

    # -- pickling: the cache and the lock stay behind
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CATEScorer(loss={self.loss!r}, nuisance={self.nuisance!r})"

    # -- scoring
    def scoring_for(
        self,
        data: Data,
        control: int,
        nuisance: Any = None,
        *,
        n_jobs: int | None = None,
        clip: float | None = None,
    ) -> ScoringNuisance:
        """The scoring nuisances of ``data`` (from the cache when fitted before)."""
        clip = self.propensity_clip if clip is None else clip
        if isinstance(nuisance, ScoringNuisance):
            if nuisance.known_propensity != (data.propensity is not None):
                given, missing = (
                    ("was fitted with known `propensity=`", "pass the same `propensity=` here")
                    if nuisance.known_propensity
                    else ("estimated its propensities", "leave `propensity=` out here")
                )
                raise ValueError(
                    f"The ScoringNuisance {given} but this evaluation "
                    f"{'has none' if nuisance.known_propensity else 'passes them'}: {missing}."
                )
            if nuisance.fingerprint != data.fingerprint:
                raise ValueError(
                    "The ScoringNuisance was fitted on other data than the evaluation data; "
                    "fit one with `fit_scoring_nuisance` on exactly these rows."
                )
            if nuisance.control != control:
                raise ValueError(
                    "The ScoringNuisance uses the control "
                    f"{_py(nuisance.variants[nuisance.control])!r} but the learner uses "
                    f"{_py(data.variants[control])!r}; fit it with "
                    "`control=` the learner's control."
                )
            return nuisance
        template = self.nuisance if nuisance is None else nuisance
        if template is not None and not isinstance(template, Nuisance):
            raise TypeError(
                "`nuisance` must be a metalearn.Nuisance (a template, or one fitted on these "
                f"data) or a ScoringNuisance; got {type(template).__name__}."
            )
        if template is not None and hasattr(template, "fingerprint_"):
            return fit_scoring(data, template, control, clip, n_jobs)
        key = (data.fingerprint, control, data.classes is not None, clip, _template_key(template))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        sn = fit_scoring(data, template, control, clip, n_jobs)
        with self._lock:
            self._cache[key] = sn
            while len(self._cache) > max(self.cache_size, 0):
                self._cache.popitem(last=False)
        return sn

    def __call__(
        self,
        estimator: Any,
        X: Any,
        y_true: Any,
        w: Any = None,
        *,
        propensity: Any = None,
        sample_weight: Any = None,
    ) -> float:
        """Minus the mean loss over treated variants of ``estimator`` on ``(X, y_true, w)``."""
        return -float(
            np.mean(
                [
                    r["value"]
                    for r in self._rows(estimator, X, y_true, w, propensity, sample_weight)
                    if r["loss"] == self.loss
                ]
            )
        )

    def _rows(
        self, estimator: Any, X: Any, y: Any, w: Any, propensity: Any, sample_weight: Any
    ) -> list[dict[str, Any]]:
        if w is None:
            _raise_missing_w()
        final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
        if hasattr(estimator, "_predict_tau"):
            tau, _ = _learner_tau(estimator, X, propensity)
        else:
            tau = np.asarray(estimator.predict(X), dtype=np.float64)
        classes = getattr(final, "classes_", None)
        data = prepare_data(
            X,
            y,
            w,
            classification=classes is not None,
            sample_weight=sample_weight,
            propensity=propensity,
        )
        c = control_index(data.variants, getattr(final, "control_", None))
        if hasattr(final, "variants_"):
            _check_design(final, data)
        sn = self.scoring_for(data, c, n_jobs=getattr(final, "n_jobs", None))
        t = _tau3(tau, sn.n, len(sn.treated), sn.target.shape[1])
        return _row_losses(t, sn, self.propensity_clip)


def make_cate_scorer(
    loss: str = "r_loss", *, nuisance: Nuisance | None = None, propensity_clip: float = 0.01
) -> CATEScorer:
    """A scorer for scikit-learn model selection: minus a CATE loss.

    See :class:`CATEScorer` for the details and metadata routing of ``w``.

    Parameters
    ----------
    loss : {"r_loss", "dr_loss", "plugin"}, default="r_loss"
    nuisance : Nuisance, optional
        Template of the scoring models.
    propensity_clip : float, default=0.01

    Returns
    -------
    CATEScorer

    Examples
    --------
    >>> from metalearn.scoring import make_cate_scorer
    >>> make_cate_scorer("dr_loss")
    CATEScorer(loss='dr_loss', nuisance=None)
    """
    return CATEScorer(loss, nuisance=nuisance, propensity_clip=propensity_clip)


def _template_key(template: Any) -> Any:
    """A hashable summary of a Nuisance template's parameters (None: the default)."""
    if template is None:
        return None
    params = template.get_params(deep=True)
    return type(template).__name__, tuple(sorted((k, repr(v)) for k, v in params.items()))


_DEFAULT_SCORER = CATEScorer("r_loss")


def score_learner(
    estimator: Any, X: Any, y: Any, w: Any, *, propensity: Any = None, sample_weight: Any = None
) -> float:
    """``learner.score``: minus the R-loss against the default scoring nuisances."""
    return _DEFAULT_SCORER(estimator, X, y, w, propensity=propensity, sample_weight=sample_weight)


for _obj in (ScoringNuisance, fit_scoring_nuisance):
    _obj.__module__ = __name__  # documented and pickled under the public module
del _obj
