"""Scoring nuisances: the cross-fitted yardstick of :mod:`metalearn.scoring`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone

from metalearn._core.data import Data, prepare_data
from metalearn._core.formulas import aipw_scores, clip_distribution
from metalearn._core.validation import control_index
from metalearn.learners.nuisance import Nuisance

__all__ = ["ScoringNuisance", "fit_scoring_nuisance", "check_clip", "fit_scoring"]

#: The clip of estimated propensities in scoring nuisances when none is given.
SCORING_CLIP = 0.01


@dataclass(frozen=True, repr=False, eq=False)
class ScoringNuisance:
    """Cross-fitted nuisances of one evaluation data set: the shared yardstick.

    Made by :func:`fit_scoring_nuisance`. Pass it as ``nuisance=`` to
    :func:`evaluate` (or ``learner.evaluate``) to score several learners
    against the same predictions, and its :attr:`mu` and :attr:`propensity`
    to the functions of :mod:`metalearn.evaluation` for doubly robust
    estimates.

    Attributes
    ----------
    variants : ndarray
        Sorted variants of ``w``.
    control : int
        Position of the control in ``variants``.
    classes : ndarray or None
        Outcome classes for a categorical outcome.
    w : ndarray of shape (n_samples,)
        Variant codes (positions in ``variants``).
    target : ndarray of shape (n_samples, D)
        The outcome, or class indicators (``D`` = 1 for numeric and binary
        outcomes, the number of classes otherwise).
    outcomes : ndarray of shape (n_samples, n_variants, D)
        Out-of-fold predictions of :math:`\\mu_k(x) = E[Y | X=x, W=k]`.
    propensity : ndarray of shape (n_samples, n_variants)
        Known propensities, or out-of-fold ones clipped to
        ``[propensity_clip, 1 - propensity_clip]`` (each on its own, the rule
        of :mod:`metalearn._core.formulas`) and, for more than two variants,
        renormalised to sum to one.
    marginal : dict
        Treated variant code -> out-of-fold :math:`m(x) = E[Y | X=x, W \\in
        \\{c, k\\}]` of shape (n_samples, D), ``nan`` outside the pair's rows.
    folds : ndarray of shape (n_samples,)
        Cross-fitting fold of each row.
    sample_weight : ndarray or None
    known_propensity : bool
        Whether the propensities were given rather than estimated.
    fingerprint : str
        Identifies the data it was fitted on.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> from metalearn.scoring import fit_scoring_nuisance
    >>> sim = ml.datasets.simulate_nie_wager("B", n=1000, seed=0)
    >>> sn = fit_scoring_nuisance(sim.X, sim.y, sim.w, propensity=0.5, nuisance=ml.Nuisance(
    ...     outcome_model=LinearRegression(), n_folds=3, random_state=0))
    >>> sn
    ScoringNuisance(n=1000, variants=[0, 1], control=0, folds=3, propensity=known)
    >>> sn.mu.shape, sn.pseudo_outcomes().shape
    ((1000, 2), (1000, 1, 1))
    """

    variants: np.ndarray
    control: int
    classes: np.ndarray | None
    w: np.ndarray
    target: np.ndarray
    outcomes: np.ndarray
    propensity: np.ndarray
    marginal: dict[int, np.ndarray]
    folds: np.ndarray
    sample_weight: np.ndarray | None
    known_propensity: bool
    fingerprint: str

    @property
    def n(self) -> int:
        return len(self.w)

    @property
    def treated(self) -> list[int]:
        return [k for k in range(len(self.variants)) if k != self.control]

    @property
    def mu(self) -> np.ndarray:
        """Out-of-fold outcome predictions, (n_samples, n_variants) (class axis if any)."""
        return self.outcomes[..., 0] if self.outcomes.shape[2] == 1 else self.outcomes

    def pseudo_outcomes(self) -> np.ndarray:
        """Doubly robust (AIPW) pseudo-outcomes of every treated variant, (n, K-1, D).

        :func:`metalearn._core.formulas.aipw_scores` of the (already clipped)
        :attr:`propensity`.
        """
        return aipw_scores(
            self.target, self.w, self.outcomes, self.propensity, self.treated, self.control
        )

    def __repr__(self) -> str:
        how = "known" if self.known_propensity else "cross-fitted"
        return (
            f"ScoringNuisance(n={self.n}, variants={self.variants.tolist()}, "
            f"control={_py(self.variants[self.control])!r}, folds={int(self.folds.max()) + 1}, "
            f"propensity={how})"
        )


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def check_clip(clip: Any) -> float:
    if clip is None:
        return 0.0
    if isinstance(clip, bool) or not isinstance(clip, float | int) or not 0 <= clip < 0.5:
        raise ValueError(f"`propensity_clip` must be a number in [0, 0.5); got {clip!r}.")
    return float(clip)


def _clip_propensity(e: np.ndarray, clip: float) -> np.ndarray:
    """The stored propensities: :func:`metalearn._core.formulas.clip_distribution`."""
    if clip <= 0:
        return e
    return clip_distribution(e, clip)


def _default_nuisance(data: Data, n_jobs: int | None) -> Nuisance:
    """LightGBM (default settings, one thread), up to 5 folds, seed 0: the default yardstick."""
    from lightgbm import LGBMClassifier, LGBMRegressor

    strata = data.w if data.classes is None else data.w * len(data.classes) + data.y
    smallest = int(np.min(np.unique(strata, return_counts=True)[1]))
    # One thread per model (parallelism comes from the joblib workers): the same
    # yardstick whatever `n_jobs`, and fast on the small data sets scoring sees.
    cls = LGBMRegressor if data.classes is None else LGBMClassifier
    return Nuisance(
        outcome_model=cls(verbose=-1, n_jobs=1),
        propensity_model=LGBMClassifier(verbose=-1, n_jobs=1),
        n_folds=max(2, min(5, smallest)),
        n_jobs=n_jobs,
        random_state=0,
    )


def fit_scoring(
    data: Data, nuisance: Any, control: int, clip: float, n_jobs: int | None
) -> ScoringNuisance:
    if nuisance is None:
        nuis = _default_nuisance(data, n_jobs)
    elif not isinstance(nuisance, Nuisance):
        raise TypeError(
            "`nuisance` must be a metalearn.Nuisance (a template, or one fitted on these "
            f"data) or a ScoringNuisance; got {type(nuisance).__name__}."
        )
    elif hasattr(nuisance, "fingerprint_"):
        if nuisance.fingerprint_ != data.fingerprint:
            raise ValueError(
                "The fitted `nuisance` was fitted on other data than the evaluation data "
                "(X, y, w, sample_weight or propensity differ). Pass an unfitted Nuisance as "
                "a template; it is cross-fitted on the evaluation data."
            )
        nuis = nuisance
    else:
        nuis = clone(nuisance)
    if nuis.is_classification != (data.classes is not None):
        kind = "a classifier" if nuis.is_classification else "a regressor"
        raise ValueError(
            f"The scoring `nuisance` has {kind} as outcome model but the outcome is "
            f"{'categorical' if data.classes is not None else 'numeric'}; use the same kind "
            "of outcome model as the learner."
        )
    pairs = {k: f"m:{min(control, k)}:{max(control, k)}" for k in range(data.n_variants)}
    pairs.pop(control)
    nuis.ensure(data, {"mu", "e", *pairs.values()})
    known = data.propensity is not None
    e = nuis.oof_["e"] if known else _clip_propensity(nuis.oof_["e"], clip)
    return ScoringNuisance(
        variants=data.variants,
        control=control,
        classes=data.classes,
        w=data.w,
        target=data.target_matrix(),
        outcomes=nuis.oof_["mu"],
        propensity=e,
        marginal={k: nuis.oof_[kind] for k, kind in pairs.items()},
        folds=nuis.folds_,
        sample_weight=data.sample_weight,
        known_propensity=known,
        fingerprint=data.fingerprint,
    )


def fit_scoring_nuisance(
    X: Any,
    y: Any,
    w: Any,
    *,
    nuisance: Nuisance | None = None,
    control: Any = None,
    classification: bool | None = None,
    propensity: Any = None,
    sample_weight: Any = None,
    propensity_clip: float = SCORING_CLIP,
    n_jobs: int | None = None,
) -> ScoringNuisance:
    """Cross-fit the scoring nuisances on evaluation data, once for every learner.

    Fits, by cross-fitting on ``(X, y, w)``, the outcome model of every
    variant (:math:`\\mu_k`), the propensity model (:math:`e_k`, unless
    ``propensity`` is known) and the marginal outcome model of each
    control/treated pair (:math:`m_{ck}`, for the R-loss), through
    :meth:`metalearn.Nuisance.ensure`.

    Parameters
    ----------
    X : frame or array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    w : array-like of shape (n_samples,)
        Variant of each row.
    nuisance : Nuisance, optional
        The models: an unfitted :class:`~metalearn.Nuisance` (a template,
        cloned) or one already fitted on exactly these data (reused; the
        missing pair models are added to it). Default: LightGBM with default
        settings and one thread per model (``n_jobs`` spreads the fits over
        workers), 5 folds (fewer if a variant has fewer rows) and
        ``random_state=0``: the same yardstick for every learner.
    control : object, optional
        The control variant (default: ``0`` if present, else the first).
    classification : bool, optional
        Whether ``y`` is categorical; default: whether ``nuisance`` has a
        classifier outcome model (``False`` without ``nuisance``).
    propensity : float or array-like, optional
        Known propensities (randomized designs), as in ``fit``.
    sample_weight : array-like of shape (n_samples,), optional
    propensity_clip : float, default=0.01
        Estimated propensities are clipped to ``[clip, 1 - clip]``, each on
        its own (the rule of :mod:`metalearn._core.formulas`); for more than two
        variants the rows are then renormalised to sum to one, as the stored
        propensities are a distribution handed on to other functions.
    n_jobs : int, optional
        Joblib workers for the default nuisance.

    Returns
    -------
    ScoringNuisance

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression
    >>> from metalearn.scoring import fit_scoring_nuisance
    >>> from metalearn.evaluation import qini_coefficient
    >>> sim = ml.datasets.simulate_confounded(n=2000, seed=0)
    >>> template = ml.Nuisance(outcome_model=LinearRegression(),
    ...                        propensity_model=LogisticRegression(), n_folds=3,
    ...                        random_state=0)
    >>> sn = fit_scoring_nuisance(sim.X, sim.y, sim.w, nuisance=template)
    >>> sn.mu.shape, sn.propensity.shape
    ((2000, 2), (2000, 2))
    >>> q = qini_coefficient(sim.tau, sim.y, sim.w, mu=sn.mu, propensity=sn.propensity)
    >>> q.method, bool(q.estimate > 0)
    ('AIPW', True)
    """
    clip = check_clip(propensity_clip)
    if nuisance is not None and not isinstance(nuisance, Nuisance):
        raise TypeError(
            "`nuisance` must be a metalearn.Nuisance (a template, or one fitted on these "
            f"data); got {type(nuisance).__name__}."
        )
    if classification is None:
        classification = bool(nuisance.is_classification) if nuisance is not None else False
    data = prepare_data(
        X,
        y,
        w,
        classification=bool(classification),
        sample_weight=sample_weight,
        propensity=propensity,
    )
    c = control_index(data.variants, control)
    return fit_scoring(data, nuisance, c, clip, n_jobs)
