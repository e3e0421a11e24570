"""Explaining CATE models: SHAP values, feature importance, an honest summary tree.

* :class:`Explainer` (also ``learner.explainer()``) turns a fitted learner
  into :class:`shap.Explanation` objects, one per treated variant (and class),
  that ``shap.plots.beeswarm``, ``bar`` and ``waterfall`` accept. Each comes
  with an :class:`ExplanationInfo` that says what was explained, how, and
  whether base value plus SHAP values add up to ``learner.predict``.
* :func:`feature_importance`: mean absolute SHAP value per feature and effect.
* :func:`permutation_importance`: increase of a CATE loss (DR- or R-loss)
  when one feature is scrambled.
* :func:`summarize_cate`: a shallow tree on the CATE estimates with honest,
  doubly robust leaf effects and confidence intervals.

``shap`` and ``matplotlib`` are imported only when needed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from sklearn.utils.validation import check_is_fitted

from metalearn._core.frames import encode_features
from metalearn._core.results import TableResult
from metalearn._core.tasks import TaskBuilder
from metalearn._core.validation import check_has_rows
from metalearn.explain._importance import feature_importance, permutation_importance
from metalearn.explain._shapley import (
    Unsupported,
    interventional_shapley,
    model_shap,
    require_shap,
)
from metalearn.explain._summary import (
    CATETree,
    LeafEffect,
    effect_key_names,
    summarize_cate,
)
from metalearn.learners.base import MetaLearner, PlanTerm

__all__ = [
    "CATETree",
    "Explainer",
    "ExplanationInfo",
    "LeafEffect",
    "feature_importance",
    "permutation_importance",
    "summarize_cate",
]

_METHODS = ("auto", "models", "agnostic", "surrogate")
_GAMES = ("auto", "tree_path_dependent", "interventional")
_CHECK_ROWS = 64


@dataclass(frozen=True, repr=False)
class ExplanationInfo(TableResult):
    """How the SHAP values of one effect were computed, and what they add up to.

    Attributes
    ----------
    effect : str
        Name of the effect, as in ``predict_frame``: ``tau_<variant>_vs_<control>``
        (with ``_<class>`` for a multi-class outcome).
    variant, control : object
        The compared variants.
    outcome_class : object or None
        The outcome class (multi-class outcomes only).
    method : str
        ``"models"`` (the learner's fitted models, combined by linearity),
        ``"agnostic"`` (the CATE function itself, model-agnostic) or
        ``"surrogate"`` (a model fitted to CATE estimates).
    algorithm : str
        The explainer that produced the values.
    feature_perturbation : str
        The game: ``"tree_path_dependent"`` (each tree model's own training
        distribution, through its node covers) or ``"interventional"``
        (features outside a coalition drawn from the background rows).
    exact : bool
        Whether the values are the exact Shapley values of that game (not a
        Monte Carlo estimate). For ``"surrogate"``: exact for the surrogate.
    additive : bool
        Whether base value plus the sum of the values equals the learner's
        CATE prediction (to float tolerance). ``False`` only for surrogates.
    n_models : int
        Number of fitted models combined (0 for the model-agnostic method).
    n_background : int or None
        Number of background rows of the interventional game.
    max_additivity_error : float
        Largest ``|base + sum(values) - target|`` measured on the checked rows,
        where target is the CATE prediction (surrogate: the surrogate's).
    fidelity_r2 : float or None
        Surrogates only: out-of-fold R^2 of the surrogate against the CATE
        estimates it was fitted to.
    note : str
        Anything else worth knowing, in words.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> sim = ml.datasets.simulate_nie_wager("B", n=400, seed=0)
    >>> dr = ml.DRLearner(outcome_model=LinearRegression(), effect_model=LinearRegression(),
    ...                   n_folds=2, random_state=0).fit(sim.X, sim.y, sim.w, propensity=0.5)
    >>> explainer = dr.explainer(random_state=0)
    >>> _ = explainer(sim.X[:20])
    >>> info = explainer.info_["tau_1_vs_0"]
    >>> info.method, info.algorithm, info.feature_perturbation
    ('models', 'linear SHAP (closed form)', 'interventional')
    >>> info.exact, info.additive, info.n_models, info.n_background  # 2 fold models
    (True, True, 2, 20)
    """

    effect: str
    variant: Any
    control: Any
    outcome_class: Any
    method: str
    algorithm: str
    feature_perturbation: str
    exact: bool
    additive: bool
    n_models: int
    n_background: int | None
    max_additivity_error: float
    fidelity_r2: float | None
    note: str

    _repr_columns: ClassVar[tuple[str, ...] | None] = (
        "effect",
        "method",
        "algorithm",
        "feature_perturbation",
        "exact",
        "additive",
        "max_additivity_error",
    )


class Explainer:
    r"""SHAP explainer of a fitted meta-learner's CATE, one explanation per effect.

    Calling it on rows ``X`` returns :class:`shap.Explanation` objects whose
    values, features and base value describe the estimated effect of each
    treated variant against the control. With ``method="auto"``:

    * R- and DR-learners: exact SHAP values of the final-stage effect models
      (the mean of the fold models when the final stage is cross-fitted, as
      by default and always after ``fit_predict``). Tree models use
      path-dependent TreeSHAP; for LightGBM through its own
      ``predict(..., pred_contrib=True)``, which gives the values of SHAP's
      TreeExplainer. Linear models use the closed form against a background.
    * T-learner: by linearity of Shapley values, the SHAP values of the
      treated variant's outcome models minus those of the control's, all in
      one interventional game against the same background rows, exact for
      the CATE. For a binary outcome the probability of class 1 is explained
      (not the log-odds margin), which SHAP's interventional TreeSHAP does
      exactly.
    * S-learner: likewise from its one model evaluated with each variant's
      indicator columns, which are held equal in the background so that they
      take no share.
    * X-learner: exact by linearity when the blend weight is constant (known,
      constant propensities); otherwise the CATE function
      :math:`g(x)\hat\tau^0(x) + (1-g(x))\hat\tau^1(x)` is explained model-agnostically.
    * Whenever no exact per-model explainer applies (another model type,
      multi-class probabilities, LightGBM categorical splits in an
      interventional game), the CATE function itself is explained
      model-agnostically: exact Shapley values of the interventional game by
      enumerating all coalitions when there are few features, else an
      estimate from antithetic permutations, additive in both cases.

    :attr:`info_` records, per effect, which of these was used.

    Parameters
    ----------
    learner : fitted SLearner, TLearner, XLearner, RLearner or DRLearner
    method : {"auto", "models", "agnostic", "surrogate"}, default="auto"
        ``"models"``: the learner's fitted models combined by linearity
        (raises when the CATE is not a linear combination of models with an
        exact explainer). ``"agnostic"``: the CATE function, model-agnostic.
        ``"surrogate"``: a ``surrogate_model`` fitted to CATE estimates (pass
        them as ``tau=``, e.g. honest out-of-fold ones from ``fit_predict``;
        default ``learner.predict(X)``); its SHAP values are exact for the
        surrogate but do not add up to the learner's CATE.
    feature_perturbation : {"auto", "tree_path_dependent", "interventional"}, default="auto"
        The game of the per-model explainers. ``"auto"``: path-dependent for
        R/DR final stages (fitted on all rows), interventional for T/S/X
        (models fitted on different variants' rows, so only one shared
        background makes their combination one game); path-dependent when
        interventional TreeSHAP is unavailable for a T/X model.
    background : frame or array-like, default=None
        Reference rows of the interventional game (features as in ``fit``).
        ``None``: ``n_background`` rows sampled from the rows explained.
    n_background : int, default=100
        Size of the sampled background. The cost of interventional and
        model-agnostic values grows linearly with it; path-dependent TreeSHAP
        needs no background.
    n_permutations : int, default=16
        Permutations of the model-agnostic estimate (in antithetic pairs).
        All ``2**p`` coalitions are enumerated instead, exactly, when that
        costs no more.
    surrogate_model : regressor, default=None
        Model of ``method="surrogate"``. ``None``: a small LightGBM regressor.
    random_state : int, default=None
        Seeds the background sample, permutations and surrogate.

    Attributes
    ----------
    info_ : dict of str to ExplanationInfo
        After a call: how each effect was explained.

    See Also
    --------
    feature_importance : Mean absolute SHAP value per feature.
    summarize_cate : An honest, shallow tree of the CATE.

    References
    ----------
    .. [1] Lundberg, S. M. and Lee, S.-I. (2017). A unified approach to
       interpreting model predictions. Advances in Neural Information
       Processing Systems 30.
    .. [2] Lundberg, S. M., Erion, G., Chen, H., DeGrave, A., Prutkin, J. M.,
       Nair, B., Katz, R., Himmelfarb, J., Bansal, N. and Lee, S.-I. (2020).
       From local explanations to global understanding with explainable AI
       for trees. Nature Machine Intelligence 2, 56-67.
    .. [3] Strumbelj, E. and Kononenko, I. (2014). Explaining prediction
       models and individual predictions with feature contributions.
       Knowledge and Information Systems 41(3), 647-665.
    .. [4] Mitchell, R., Cooper, J., Frank, E. and Holmes, G. (2022). Sampling
       permutations for Shapley value estimation. Journal of Machine Learning
       Research 23(43), 1-46.
    .. [5] Janzing, D., Minorics, L. and Bloebaum, P. (2020). Feature relevance
       quantification in explainable AI: a causal problem. AISTATS.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression, LogisticRegression
    >>> sim = ml.datasets.simulate_nie_wager("B", n=400, seed=0)
    >>> dr = ml.DRLearner(outcome_model=LinearRegression(),
    ...                   propensity_model=LogisticRegression(),
    ...                   effect_model=LinearRegression(), n_folds=2,
    ...                   random_state=0).fit(sim.X, sim.y, sim.w)
    >>> explanation = dr.explainer(random_state=0)(sim.X[:50])
    >>> explanation.values.shape
    (50, 6)
    >>> bool(abs(explanation.base_values + explanation.values.sum(1) - dr.predict(sim.X[:50])).max()
    ...      < 1e-8)
    True
    """

    def __init__(
        self,
        learner: Any,
        *,
        method: str = "auto",
        feature_perturbation: str = "auto",
        background: Any = None,
        n_background: int = 100,
        n_permutations: int = 16,
        surrogate_model: Any = None,
        random_state: int | None = None,
    ) -> None:
        if not isinstance(learner, MetaLearner):
            raise TypeError(
                "`learner` must be a fitted metalearn learner (SLearner, TLearner, XLearner, "
                f"RLearner, DRLearner, ...); got {type(learner).__name__}."
            )
        check_is_fitted(learner, "variants_")
        if method not in _METHODS:
            raise ValueError(f"`method` must be one of {_METHODS}; got {method!r}.")
        if feature_perturbation not in _GAMES:
            raise ValueError(
                f"`feature_perturbation` must be one of {_GAMES}; got {feature_perturbation!r}."
            )
        for name, value in (("n_background", n_background), ("n_permutations", n_permutations)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
        self.learner = learner
        self.method = method
        self.feature_perturbation = feature_perturbation
        self.background = background
        self.n_background = int(n_background)
        self.n_permutations = int(n_permutations)
        self.surrogate_model = surrogate_model
        self.random_state = random_state
        self._background = (
            None
            if background is None
            else encode_features(background, learner.schema_, name="background")[0]
        )
        if self._background is not None:
            learner._check_predict_rows(self._background, name="background")

    # ----------------------------------------------------------------- public
    def __call__(self, X: Any, *, tau: Any = None) -> Any:
        """Explain the CATE on rows ``X``.

        Parameters
        ----------
        X : frame or array-like of shape (n_samples, n_features)
        tau : array-like, optional
            CATE estimates of the rows of ``X`` (shaped as ``learner.predict``
            returns them) for ``method="surrogate"`` only.

        Returns
        -------
        shap.Explanation
            When the learner has one effect (two variants, a regression or
            binary outcome). Otherwise a dict from effect name
            (``tau_<variant>_vs_<control>[_<class>]``) to ``shap.Explanation``,
            which ``shap.plots.bar`` also accepts as a whole.

        Raises
        ------
        ValueError
            For an ``X`` (or ``background``) without rows, with infinite
            values, or with NaN where a base model cannot take it: the checks
            of the learner's ``predict``.
        """
        out = self.explain(X, tau=tau)
        return next(iter(out.values())) if len(out) == 1 else out

    def explain(self, X: Any, *, tau: Any = None) -> dict[str, Any]:
        """:meth:`__call__`, always as a dict from effect name to ``shap.Explanation``."""
        shap = require_shap()
        learner = self.learner
        Xa, _ = encode_features(X, learner.schema_)
        check_has_rows(Xa, action="explain")
        learner._check_predict_rows(Xa)  # infinities and NaN: the rules of `predict`
        if tau is not None and self.method != "surrogate":
            raise ValueError(
                "`tau` is used only by method='surrogate'; the other methods explain the "
                f"learner's own CATE (this explainer has method={self.method!r})."
            )
        rng = np.random.default_rng(self.random_state)
        background = self._background_rows(Xa, rng)
        if self.method == "surrogate":
            results = self._surrogate(Xa, tau, rng)
        else:
            results = self._exact_or_agnostic(Xa, background, rng)
        names = learner.schema_.output_names()
        display = _display_data(Xa, learner.schema_)
        explanations: dict[str, Any] = {}
        self.info_: dict[str, ExplanationInfo] = {}
        for name, (values, base, info) in results.items():
            explanations[name] = shap.Explanation(
                values=values,
                base_values=np.full(Xa.shape[0], base),
                data=Xa,
                display_data=display,
                feature_names=names,
            )
            self.info_[name] = info
        return explanations

    def feature_importance(self, X: Any) -> Any:
        """Mean absolute SHAP value of each feature for each effect, on rows ``X``.

        Returns a frame of the type of ``X`` (Polars for arrays); see
        :func:`feature_importance`.
        """
        return feature_importance(self.explain(X), like=X)

    # ---------------------------------------------------------------- routes
    def _background_rows(self, Xa: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self._background is not None:
            if self._background.shape[0] == 0:
                raise ValueError("`background` has no rows.")
            return self._background
        if Xa.shape[0] <= self.n_background:
            return Xa
        return Xa[np.sort(rng.choice(Xa.shape[0], self.n_background, replace=False))]

    def _games(self, plans: dict[tuple[int, int], list[PlanTerm]]) -> list[str]:
        learner = self.learner
        # Models with treatment indicator columns (S, pooled T) and models whose
        # probabilities are explained (a link of the trees' margin) have no exact
        # path-dependent explanation: both show in the plan's terms.
        terms = [t for group in plans.values() for t in group]
        indicators = any(t.variant is not None for t in terms)
        proba = any(t.column is not None for t in terms)
        if self.feature_perturbation == "tree_path_dependent":
            if indicators or proba:
                what = (
                    "the treatment indicator columns of its outcome model would take a share "
                    "of every effect"
                    if indicators
                    else "it explains the log-odds margin, not the outcome probabilities the "
                    "CATE is on"
                )
                raise ValueError(
                    "feature_perturbation='tree_path_dependent' cannot give exact SHAP values of "
                    f"this {type(learner).__name__}'s CATE: {what}. Use 'interventional' or "
                    "'auto'."
                )
            return ["tree_path_dependent"]
        if self.feature_perturbation == "interventional":
            return ["interventional"]
        if indicators or proba:
            return ["interventional"]
        if learner._final_stage_on_X:
            return ["tree_path_dependent", "interventional"]
        return ["interventional", "tree_path_dependent"]

    def _exact_or_agnostic(
        self, Xa: np.ndarray, background: np.ndarray, rng: np.random.Generator
    ) -> dict[str, tuple[np.ndarray, float, ExplanationInfo]]:
        learner = self.learner
        learner._check_predictable()
        reason = ""
        if self.method in ("auto", "models"):
            plans, reason = learner._explanation_plan()
            if plans is not None:
                games = self._games(plans)
                reasons = []
                for game in games:
                    try:
                        return self._models(plans, Xa, background, game)
                    except Unsupported as exc:
                        reasons.append(f"{game}: {exc}")
                reason = "; ".join(reasons)
            if self.method == "models" or self.feature_perturbation == "tree_path_dependent":
                raise ValueError(
                    f"This {type(learner).__name__}'s CATE has no exact per-model SHAP "
                    f"explanation ({reason}). Use method='agnostic' to explain the CATE "
                    "function model-agnostically, or method='surrogate'."
                )
        return self._agnostic(Xa, background, rng, reason)

    def _models(
        self, plans: dict[tuple[int, int], list[PlanTerm]], Xa: np.ndarray, B: np.ndarray, game: str
    ) -> dict[str, tuple[np.ndarray, float, ExplanationInfo]]:
        learner = self.learner
        p = Xa.shape[1]
        cache: dict[tuple[int, int | None, int | None], tuple[np.ndarray, float, str]] = {}
        combined: dict[tuple[int, int], tuple[np.ndarray, float]] = {}
        algorithms: set[str] = set()
        for key, terms in plans.items():
            values = np.zeros(Xa.shape)
            base = 0.0
            for term in terms:
                if term.model is None:  # a constant term (a stack's intercept)
                    base += term.coef
                    continue
                ck = (id(term.model), term.variant, term.column)
                if ck not in cache:
                    Z, Bz = Xa, B
                    if term.variant is not None:
                        ind = term.indicators
                        Z = np.hstack([Xa, ind(np.full(Xa.shape[0], term.variant))])
                        Bz = np.hstack([B, ind(np.full(B.shape[0], term.variant))])
                    cache[ck] = model_shap(
                        term.model, Z, game=game, background=Bz, column=term.column
                    )
                phi, b, algorithm = cache[ck]
                algorithms.add(algorithm)
                if len(terms) == 1 and term.coef == 1.0:
                    values = phi[:, :p]
                else:
                    values += term.coef * phi[:, :p]
                base += term.coef * b
            combined[key] = (values, base)
        # Check the exactness claim on a few rows against the learner's own prediction.
        rows = np.unique(np.linspace(0, Xa.shape[0] - 1, min(_CHECK_ROWS, Xa.shape[0])).astype(int))
        pred = learner._predict_tau(Xa[rows])
        errors = {
            key: float(np.max(np.abs(b + v[rows].sum(axis=1) - pred[:, key[0], key[1]])))
            for key, (v, b) in combined.items()
        }
        scale = max(1.0, float(np.max(np.abs(pred))))
        worst = max(errors.values())
        if not worst <= 1e-6 * scale:
            if self.method == "models":
                raise ValueError(
                    "The per-model SHAP values do not add up to the learner's CATE (largest "
                    f"error {worst:.3g} in game {game!r}); use method='agnostic'."
                )
            warnings.warn(
                f"Per-model SHAP values ({', '.join(sorted(algorithms))}) did not add up to the "
                f"CATE (largest error {worst:.3g}); explaining the CATE model-agnostically "
                "instead.",
                UserWarning,
                stacklevel=4,
            )
            raise Unsupported(f"additivity check failed (error {worst:.3g})")
        # Linear models are always explained in the interventional game.
        game_used = "interventional" if "linear SHAP (closed form)" in algorithms else game
        requested = self.feature_perturbation == "tree_path_dependent"
        note = _game_note(learner, game_used, B.shape[0], requested=requested)
        out = {}
        for key, (values, base) in combined.items():
            info = self._info(
                key,
                method="models",
                algorithm=" + ".join(sorted(algorithms)),
                game=game_used,
                exact=True,
                additive=True,
                n_models=len({id(t.model) for t in plans[key]}),
                n_background=None if game_used == "tree_path_dependent" else B.shape[0],
                error=errors[key],
                fidelity=None,
                note=note,
            )
            out[info.effect] = (values, base, info)
        return out

    def _agnostic(
        self, Xa: np.ndarray, B: np.ndarray, rng: np.random.Generator, reason: str
    ) -> dict[str, tuple[np.ndarray, float, ExplanationInfo]]:
        learner = self.learner
        n_eff = len(learner._treated_codes)

        def cate(Z: np.ndarray) -> np.ndarray:
            return np.asarray(learner._predict_tau(Z), dtype=np.float64).reshape(Z.shape[0], -1)

        values, base, fx, exact = interventional_shapley(
            cate, Xa, B, n_permutations=self.n_permutations, rng=rng
        )
        p = Xa.shape[1]
        algorithm = (
            f"exact enumeration of all 2^{p} coalitions"
            if exact
            else f"{self.n_permutations} antithetic permutations (Monte Carlo estimate)"
        )
        note = "Model-agnostic Shapley values of the CATE function against the background rows."
        if reason:
            note += f" No exact per-model explanation: {reason}."
        out = {}
        D = learner._out_dim
        for j in range(n_eff):
            for d in range(D):
                e = j * D + d
                error = float(np.max(np.abs(base[e] + values[:, :, e].sum(axis=1) - fx[:, e])))
                info = self._info(
                    (j, d),
                    method="agnostic",
                    algorithm=algorithm,
                    game="interventional",
                    exact=exact,
                    additive=True,
                    n_models=0,
                    n_background=B.shape[0],
                    error=error,
                    fidelity=None,
                    note=note,
                )
                out[info.effect] = (np.ascontiguousarray(values[:, :, e]), float(base[e]), info)
        return out

    def _surrogate(
        self, Xa: np.ndarray, tau: Any, rng: np.random.Generator
    ) -> dict[str, tuple[np.ndarray, float, ExplanationInfo]]:
        learner = self.learner
        n, K1, D = Xa.shape[0], len(learner._treated_codes), learner._out_dim
        if tau is None:
            learner._check_predictable()
            target = learner._predict_tau(Xa)
            source = "learner.predict(X)"
        else:
            arr = np.asarray(tau, dtype=np.float64)
            if arr.size != n * K1 * D or arr.shape[0] != n:
                raise ValueError(
                    f"`tau` must hold the CATE estimates of the {n} rows of `X`, shaped as "
                    f"`learner.predict(X)` returns them ({n * K1 * D // n} value(s) a row); got "
                    f"shape {arr.shape}."
                )
            target = arr.reshape(n, K1, D)
            source = "the given `tau`"
        if not np.all(np.isfinite(target)):
            raise ValueError("`tau` (the surrogate's target) holds NaN or infinite values.")
        template = self.surrogate_model
        if template is None:
            from lightgbm import LGBMRegressor

            template = LGBMRegressor(
                n_estimators=200, learning_rate=0.05, num_leaves=15, verbose=-1
            )
        models, fidelities = _fit_surrogates(
            template, Xa, target, learner.schema_.categorical_indices, rng
        )
        out = {}
        for j in range(K1):
            for d in range(D):
                model, fidelity = models[(j, d)], fidelities[(j, d)]
                values = None
                for game in ("tree_path_dependent", "interventional"):
                    try:
                        values, base, algorithm = model_shap(
                            model,
                            Xa,
                            game=game,
                            background=self._background_rows(Xa, rng),
                            column=None,
                        )
                        break
                    except Unsupported:
                        continue
                if values is None:
                    raise ValueError(
                        f"`surrogate_model` ({type(template).__name__}) must be a tree model "
                        "SHAP's TreeExplainer knows, or a linear regressor."
                    )
                pred = np.asarray(model.predict(Xa), dtype=np.float64)
                error = float(np.max(np.abs(base + values.sum(axis=1) - pred)))
                info = self._info(
                    (j, d),
                    method="surrogate",
                    algorithm=f"{type(model).__name__} surrogate, {algorithm}",
                    game=game,
                    exact=True,
                    additive=False,
                    n_models=1,
                    n_background=None,
                    error=error,
                    fidelity=fidelity,
                    note=(
                        f"SHAP values of a surrogate fitted to {source}; they add up to the "
                        "surrogate's prediction, not to the learner's CATE. fidelity_r2 is its "
                        "3-fold out-of-fold R^2 against that target."
                    ),
                )
                out[info.effect] = (values, base, info)
        return out

    def _info(self, key: tuple[int, int], **kw: Any) -> ExplanationInfo:
        learner: Any = self.learner
        j, d = key
        k = learner._treated_codes[j]
        return ExplanationInfo(
            effect=effect_key_names(learner)[key],
            variant=_py(learner.variants_[k]),
            control=_py(learner.control_),
            outcome_class=None if learner._out_dim == 1 else _py(learner.classes_[d]),
            method=kw["method"],
            algorithm=kw["algorithm"],
            feature_perturbation=kw["game"],
            exact=kw["exact"],
            additive=kw["additive"],
            n_models=kw["n_models"],
            n_background=kw["n_background"],
            max_additivity_error=kw["error"],
            fidelity_r2=kw["fidelity"],
            note=kw["note"],
        )


def _game_note(learner: Any, game: str, n_background: int | None, *, requested: bool) -> str:
    if game == "interventional":
        return (
            f"Exact by linearity of Shapley values: all models explained in one interventional "
            f"game against the same {n_background} background rows."
        )
    if not learner._final_stage_on_X:
        return (
            "Exact by linearity, but path-dependent TreeSHAP takes each model's own training "
            "rows as reference (different variants' rows here), so the values are the CATE's "
            "Shapley values only where those rows share one covariate distribution "
            "(randomized designs). "
            + (
                "Chosen by feature_perturbation='tree_path_dependent'."
                if requested
                else "Interventional TreeSHAP was not available for these models."
            )
        )
    return "Exact TreeSHAP of the final-stage model(s), averaged over fold models by linearity."


def _fit_surrogates(
    template: Any, Xa: np.ndarray, target: np.ndarray, cats: list[int], rng: np.random.Generator
) -> tuple[dict[tuple[int, int], Any], dict[tuple[int, int], float]]:
    """One surrogate per effect ``(j, d)`` on all rows, and its 3-fold out-of-fold R^2.

    All fits (3 folds + 1 full model per effect) go through one task batch.
    """
    from sklearn.model_selection import KFold

    seed = int(rng.integers(2**31 - 1))
    n, K1, D = target.shape
    splits = list(KFold(3, shuffle=True, random_state=seed).split(Xa))
    builder = TaskBuilder(Xa, cats, n_jobs=1, random_state=seed)
    for j in range(K1):
        for d in range(D):
            y_s = np.ascontiguousarray(target[:, j, d])
            for f, (train, test) in enumerate(splits):
                builder.add(
                    template,
                    train,
                    y_s,
                    key=(j, d, f + 1),
                    role="surrogate_model",
                    predict_rows=test,
                )
            builder.add(template, np.arange(n), y_s, key=(j, d, 0), role="surrogate_model")
    results = builder.run("surrogate models")
    models, fidelities = {}, {}
    i = 0
    for j in range(K1):
        for d in range(D):
            y_s = target[:, j, d]
            pred = np.empty(n)
            for _train, test in splits:
                preds = results[i][1]
                assert preds is not None
                pred[test] = preds[0]
                i += 1
            models[(j, d)] = results[i][0]
            i += 1
            sst = float(np.sum((y_s - y_s.mean()) ** 2))
            fidelities[(j, d)] = (
                float("nan") if sst == 0 else 1.0 - float(np.sum((y_s - pred) ** 2)) / sst
            )
    return models, fidelities


def _display_data(Xa: np.ndarray, schema: Any) -> np.ndarray | None:
    if not schema.categories:
        return None
    display = Xa.astype(object)
    for j, cats in schema.categories.items():
        codes = Xa[:, j]
        ok = ~np.isnan(codes)
        col = np.full(Xa.shape[0], None, dtype=object)
        col[ok] = np.asarray(cats, dtype=object)[codes[ok].astype(np.intp)]
        display[:, j] = col
    return display


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
