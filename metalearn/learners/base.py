"""The learner base class: data conversion, variants, nuisance sharing, output shapes.

A learner module holds only its own algorithm. It declares the nuisance
kinds it needs (``_nuisance_for_fit``), fits its final stage from the
cross-fitted pieces the base class hands it (``_fit_final``) and combines
final-stage predictions for new rows (``_predict_tau``). Everything else
(conversion of frames, checks, folds, parallel fitting, output shapes and
labelled frames) lives here.

Internally a CATE is an array of shape ``(n, K-1, D)``: rows, treated
variants (every variant but the control, in ``variants_`` order), outcome
dimensions (1 for regression and binary outcomes, the number of classes for
multi-class outcomes). Public outputs drop the axes of length one that the
design implies: ``(n,)`` for two variants, ``(n, K-1)`` for more, with a
trailing class axis for multi-class outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.utils.validation import check_is_fitted

from metalearn._core.data import Data, prepare_data
from metalearn._core.defaults import crossfit_final_stage, default_regressor
from metalearn._core.effects import aipw_effects, one_or_tuple
from metalearn._core.formulas import clip_bounds, clip_propensity
from metalearn._core.frames import HANDLE_UNKNOWN, encode_features, native_backend, to_native_frame
from metalearn._core.positivity import check_arm_weights, warn_overlap
from metalearn._core.results import AverageEffect
from metalearn._core.tasks import TaskBuilder, accepts_sample_weight, make_folds, predict_models
from metalearn._core.validation import (
    VersionedPickle,
    allows_nan,
    check_estimator,
    check_finite_X,
    check_has_rows,
    check_n_jobs,
    check_random_state,
    check_regressor,
    control_index,
)
from metalearn.learners.nuisance import Nuisance

__all__ = ["MetaLearner", "PseudoOutcomeLearner", "PlanTerm", "learner_registry"]

#: The propensity clip of ``ate()`` on learners without a ``propensity_clip`` (T, RA),
#: that of :func:`metalearn.ate.aipw`.
DEFAULT_ATE_CLIP = 0.01


class MetaLearner(VersionedPickle, BaseEstimator):
    """Base class of the meta-learners. Not meant to be instantiated.

    A pickled learner records the metalearn version; loading it under another
    version gives an :class:`~metalearn.InconsistentVersionWarning`.
    """

    # Metadata routing: ``w`` (and known propensities) are requested by default
    # so that a Pipeline / GridSearchCV with routing enabled passes them on.
    __metadata_request__fit: ClassVar[dict[str, bool]] = {
        "w": True,
        "propensity": True,
        "groups": True,
    }
    # ``score`` needs the treatment too; requested by default so that
    # ``Pipeline.score`` and model searches route it (see ``score``).
    __metadata_request__score: ClassVar[dict[str, bool]] = {"w": True, "propensity": True}

    _MODEL_PARAMS: ClassVar[tuple[str, ...]] = ("outcome_model", "propensity_model", "effect_model")
    _nuisance_for_fit: frozenset[str] = frozenset()
    _nuisance_for_oof: frozenset[str] = frozenset()
    _uses_nuisance = True

    # Hooks: every question another module asks about a learner is answered here,
    # so that a new learner is one file in ``learners/`` (see ``learner_registry``).
    #: Short name in the registries: ``metalearn fit --learner NAME``, the searches'
    #: ``learner`` choices. A subclass with a short name registers itself.
    short_name: ClassVar[str] = ""
    #: Position in listings of the registry (demo tables, ``--learner`` choices).
    _registry_rank: ClassVar[int] = 100
    #: Whether the CATE is a regression of pseudo-outcomes on X alone (R, DR, RA):
    #: path-dependent TreeSHAP of its models is then the CATE's own explanation.
    _final_stage_on_X: ClassVar[bool] = False
    _registry: ClassVar[dict[str, type[MetaLearner]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("short_name", "")
        if name:
            known = MetaLearner._registry.get(name)
            if known is not None and known.__qualname__ != cls.__qualname__:
                raise TypeError(
                    f"Learner short name {name!r} of {cls.__qualname__} is taken by "
                    f"{known.__qualname__}."
                )
            MetaLearner._registry[name] = cls

    # ------------------------------------------------------------------ public
    def fit(
        self,
        X: Any,
        y: Any,
        w: Any = None,
        *,
        sample_weight: Any = None,
        propensity: Any = None,
        groups: Any = None,
    ) -> MetaLearner:
        """Fit the learner.

        Parameters
        ----------
        X : pandas/Polars DataFrame or array-like of shape (n_samples, n_features)
            Features. Categorical and string columns are encoded (see
            :mod:`metalearn`'s user guide on frames).
        y : array-like of shape (n_samples,)
            Outcome: numeric for a regressor outcome model, class labels for a
            classifier outcome model.
        w : array-like of shape (n_samples,)
            Treatment variant of each row: ints, strings or categories.
        sample_weight : array-like of shape (n_samples,), optional
            Row weights, passed to every base model that accepts them.
        propensity : float or array-like, optional
            Known propensities for a randomized design, used instead of a
            propensity model: a scalar P(treated) with two variants, one
            probability per variant, or an array (n_samples, n_variants).
        groups : array-like of shape (n_samples,), optional
            Group labels for clustered rows (students of one school, several
            rows of one customer). Cross-fitting keeps each group in one fold,
            so no model predicts a row of a group it was trained on, and the
            DR-learner's :meth:`ate` standard error is clustered by group.

        Returns
        -------
        self : object
            The fitted learner.
        """
        self._fit(
            X,
            y,
            w,
            sample_weight=sample_weight,
            propensity=propensity,
            groups=groups,
            honest=False,
        )
        return self

    def fit_predict(
        self,
        X: Any,
        y: Any,
        w: Any = None,
        *,
        sample_weight: Any = None,
        propensity: Any = None,
        groups: Any = None,
    ) -> np.ndarray:
        """Fit, and return honest out-of-fold CATE estimates for the training rows.

        Every final-stage model is cross-fitted on the nuisance folds: the
        estimate of a row comes from models that were not trained on it.
        After ``fit_predict``, :meth:`predict` averages the fold models.

        Parameters are those of :meth:`fit`.

        Returns
        -------
        tau : ndarray of shape (n_samples,) or (n_samples, n_variants - 1)
            With a trailing class axis for a multi-class outcome.
        """
        tau = self._fit(
            X,
            y,
            w,
            sample_weight=sample_weight,
            propensity=propensity,
            groups=groups,
            honest=True,
        )
        assert tau is not None
        return self._shape(tau)

    def predict(self, X: Any) -> np.ndarray:
        """Estimate the CATE of each treated variant against the control for new rows.

        Parameters
        ----------
        X : frame or array-like of shape (n_samples, n_features)

        Returns
        -------
        tau : ndarray of shape (n_samples,) for two variants, (n_samples, n_variants - 1)
            for more, with a trailing class axis for a multi-class outcome.

        Raises
        ------
        ValueError
            For an ``X`` without rows (any number of rows from one works), with
            infinite values, or with NaN where a base model cannot take it (the
            rules of ``fit``). The same holds for :meth:`predict_frame`,
            :meth:`predict_outcomes` and the explainers.
        """
        return self._shape(self._predict_internal(X))

    def predict_frame(self, X: Any) -> Any:
        """:meth:`predict` as a frame with labelled columns ``tau_<variant>_vs_<control>``.

        The frame has the type of ``X`` (pandas or Polars); numpy input gives
        a Polars frame. Multi-class outcomes get one column per class:
        ``tau_<variant>_vs_<control>_<class>``. A pandas frame keeps the row
        index of ``X``, so that it joins back onto ``X``.
        """
        tau = self._predict_internal(X)
        out = to_native_frame(
            dict(zip(self._effect_names(), self._columns(tau), strict=True)),
            native_backend(X),
        )
        index = getattr(X, "index", None)
        if index is not None and type(out).__module__.startswith("pandas"):
            out.index = index
        return out

    def ate(
        self,
        X: Any = None,
        y: Any = None,
        w: Any = None,
        *,
        sample_weight: Any = None,
        propensity: Any = None,
        groups: Any = None,
        trim: Any = None,
        level: float = 0.95,
    ) -> Any:
        r"""Average effect of each treated variant against the control.

        One meaning on every learner with a nuisance stage (T, X, R, DR,
        RA): the cross-fitted **AIPW** estimate (Robins et al. 1994;
        Chernozhukov et al. 2018) from the learner's own out-of-fold outcome
        models and propensities, clipped at the learner's ``propensity_clip``
        (0.01 for learners without one), with the influence-function standard
        error (cluster-robust with ``groups``). It is
        ``metalearn.ate.aipw(X, y, w, learner=self)`` to rounding error.

        - ``ate()``: on the training rows, from the nuisances that ``fit``
          cross-fitted (the DR-learner, and the X-learner with pooled outcome
          models, fit every one they need; the T-, R- and RA-learners and the
          X-learner with ``outcome_pooling="per_variant"`` do not cross-fit both
          the outcome models of every variant and the propensity model, and ask
          for the training data).
        - ``ate(X, y, w)``: on these rows. The training rows reuse the
          fitted nuisances and cross-fit the missing ones once (kept in
          ``nuisance_``); other rows get nuisances cross-fitted on them.
        - ``ate(X)``: the **plug-in** mean of the predicted CATE over ``X``.
          It has no standard error: the interval is reported as missing
          (``nan``, method ``"plug-in"``); pass ``y`` and ``w`` for one.

        The S-learner has no nuisance stage: ``ate()`` (after
        ``fit_predict``) and ``ate(X)`` are plug-in means without an
        interval; use :func:`metalearn.ate.aipw` or
        :func:`metalearn.inference.bootstrap_cate` for one.

        Poor overlap gives an :class:`~metalearn.OverlapWarning`; ``trim``
        (``None``, ``"crump"`` or ``(low, high)``) restricts the AIPW average
        to rows whose pairwise propensity lies in the bounds, as in
        :func:`metalearn.ate.aipw`.

        Returns
        -------
        AverageEffect, or a tuple of them (one per treated variant) when there
        are more than two variants.
        """
        check_is_fitted(self, "variants_")
        if not 0.0 < level < 1.0:
            raise ValueError(f"`level` must be in (0, 1), e.g. 0.95; got {level!r}.")
        name = type(self).__name__
        given = {"y": y, "w": w}
        if any(v is not None for v in given.values()):
            missing = [k for k, v in {"X": X, **given}.items() if v is None]
            if missing:
                raise ValueError(
                    f"`{name}.ate` needs `X`, `y` and `w` together for the AIPW estimate on "
                    f"given rows; {', '.join(f'`{m}`' for m in missing)} missing."
                )
            if not self._uses_nuisance:
                raise ValueError(
                    f"The {name} has no nuisance stage, so `ate(X, y, w)` has no AIPW "
                    "estimate of its own: use `metalearn.ate.aipw(X, y, w)` (or "
                    "`metalearn.inference.bootstrap_cate`) for an interval, or `ate(X)` for "
                    "the plug-in mean."
                )
            data = self._prepare(X, y, w, sample_weight, propensity, groups)
            if list(data.variants) != list(self.variants_):
                raise ValueError(
                    f"`w` holds the variants {data.variants.tolist()}, but the learner was "
                    f"fitted on {self.variants_.tolist()}: pass rows of the same variants."
                )
            nuis = self.nuisance_
            if data.fingerprint != nuis.fingerprint_:
                nuis = clone(nuis)  # new rows: nuisances cross-fitted on them
            nuis.ensure(data, {"mu", "e"})
            return one_or_tuple(self._aipw(data, nuis, trim, level))
        if X is not None or not self._uses_nuisance:
            if trim is not None:
                raise ValueError(
                    "`trim` applies to the AIPW estimate; the plug-in mean of predicted "
                    "effects has no propensities to trim by. Pass `X, y, w`."
                )
            return self._plug_in_ate(X, level)
        kept: Data | None = getattr(self, "_ate_data", None)
        if kept is None:
            raise ValueError(
                f"The {name}'s fit did not cross-fit both the outcome model of every variant "
                "and the propensity model that the AIPW estimate reads. Call "
                "`learner.ate(X, y, w)` with the training data: the missing nuisances are "
                "cross-fitted once and kept. (`ate(X)` gives the plug-in mean of the "
                "predicted effects, without an interval.)"
            )
        return one_or_tuple(self._aipw(kept, self.nuisance_, trim, level))

    def _aipw(self, data: Data, nuis: Nuisance, trim: Any, level: float) -> list[Any]:
        clip = getattr(self, "propensity_clip", DEFAULT_ATE_CLIP)
        return aipw_effects(
            data,
            nuis.oof_["mu"],
            nuis.oof_["e"],
            control=self._control_code,
            clip=clip,
            trim=trim,
            level=level,
            where=f"`{type(self).__name__}.ate`",
        )

    def _plug_in_ate(self, X: Any, level: float) -> Any:
        if X is not None:
            tau = self._predict_internal(X)
        elif getattr(self, "oof_tau_", None) is not None:
            tau = np.asarray(self.oof_tau_)
        else:
            raise ValueError(
                "`ate()` needs rows to average over: pass `X`, or call `fit_predict` first "
                "to average the out-of-fold estimates of the training rows."
            )
        est = tau.mean(axis=0)
        return self._effects(est, np.full_like(est, np.nan), "plug-in", tau.shape[0], level)

    def explainer(self, **kwargs: Any) -> Any:
        """SHAP explainer of the fitted CATE: ``learner.explainer()(X)``.

        Parameters
        ----------
        **kwargs
            Options of :class:`metalearn.explain.Explainer` (``method``,
            ``feature_perturbation``, ``background``, ...).

        Returns
        -------
        metalearn.explain.Explainer
            Called on rows ``X``, it returns a ``shap.Explanation`` per effect.
        """
        from metalearn.explain import Explainer

        return Explainer(self, **kwargs)

    def evaluate(
        self,
        X: Any,
        y: Any,
        w: Any = None,
        *,
        nuisance: Any = None,
        propensity: Any = None,
        sample_weight: Any = None,
        metric: Any = None,
    ) -> Any:
        """Losses on evaluation data: base models, R-loss, DR-loss, constant baseline.

        Delegates to :func:`metalearn.scoring.evaluate`, which documents the
        parameters; pass the same ``nuisance`` (a
        :class:`~metalearn.scoring.ScoringNuisance`) to compare learners on
        one yardstick.

        Returns
        -------
        metalearn.scoring.Evaluation
            ``losses`` and ``nuisance_losses`` frames and a flat ``scores`` dict.

        Examples
        --------
        >>> import metalearn as ml
        >>> from sklearn.linear_model import LinearRegression
        >>> sim = ml.datasets.simulate_nie_wager("B", n=1000, seed=0)
        >>> s = ml.SLearner(outcome_model=LinearRegression()).fit(sim.X, sim.y, sim.w)
        >>> ev = s.evaluate(sim.X, sim.y, sim.w, propensity=0.5, nuisance=ml.Nuisance(
        ...     outcome_model=LinearRegression(), n_folds=2, random_state=0))
        >>> ev.losses["loss"].to_list()
        ['r_loss', 'dr_loss', 'plugin']
        """
        from metalearn.scoring import evaluate

        return evaluate(
            self,
            X,
            y,
            w,
            nuisance=nuisance,
            propensity=propensity,
            sample_weight=sample_weight,
            metric=metric,
        )

    def score(
        self, X: Any, y: Any, w: Any = None, *, sample_weight: Any = None, propensity: Any = None
    ) -> float:
        """Minus the R-loss of the predicted effects on ``(X, y, w)``; greater is better.

        The R-loss (Nie and Wager 2021) is computed against scoring nuisances
        cross-fitted on these rows with a fixed default (LightGBM, up to 5
        folds, ``random_state=0``; see
        :func:`metalearn.scoring.fit_scoring_nuisance`), the same for every
        learner and setting, and cached per data set. ``w`` and
        ``propensity`` are requested for metadata routing, so a Pipeline or
        a model search with routing enabled passes them on. Use
        :func:`metalearn.scoring.make_cate_scorer` for another loss or
        yardstick.

        Returns
        -------
        float
            Minus the mean R-loss over the treated variants.
        """
        from metalearn.scoring import score_learner

        return score_learner(self, X, y, w, propensity=propensity, sample_weight=sample_weight)

    # ----------------------------------------------------------- shared logic
    @property
    def _classification(self) -> bool:
        if self._uses_nuisance and self.nuisance is not None:
            return bool(self.nuisance.is_classification)
        model = getattr(self, "outcome_model", None)
        return model is not None and is_classifier(model)

    def _check_common_params(self) -> None:
        handle = getattr(self, "handle_unknown", "error")
        if handle not in HANDLE_UNKNOWN:
            raise ValueError(
                f"`handle_unknown` must be one of {list(HANDLE_UNKNOWN)}; got {handle!r}. "
                "'error' rejects categories not seen at fit, 'missing' treats them as "
                "missing values."
            )
        if not isinstance(self.n_folds, int | np.integer) or self.n_folds < 2:
            raise ValueError(f"`n_folds` must be an integer >= 2; got {self.n_folds!r}.")
        check_n_jobs(self.n_jobs)
        check_random_state(self.random_state)
        for model in ("outcome_model", "propensity_model"):
            check_estimator(getattr(self, model, None), model)
        clip = getattr(self, "propensity_clip", None)
        if clip is not None:
            try:
                lo, hi = _clip_bounds(clip)
            except (TypeError, ValueError):
                lo, hi = np.nan, np.nan
            if not 0 <= lo < hi <= 1:
                raise ValueError(
                    "`propensity_clip` must be a float in [0, 0.5) or a pair (low, high) with "
                    f"0 <= low < high <= 1; got {clip!r}."
                )
        if self._uses_nuisance and self.nuisance is not None:
            if not isinstance(self.nuisance, Nuisance):
                raise TypeError(
                    f"`nuisance` must be a metalearn.Nuisance; got {type(self.nuisance).__name__}."
                )
            clashing = [
                n
                for n in ("outcome_model", "propensity_model")
                if getattr(self, n, None) is not None
            ]
            if clashing:
                raise ValueError(
                    f"Pass either `nuisance` or {', '.join(f'`{c}`' for c in clashing)}, not "
                    "both: a shared Nuisance brings its own outcome and propensity models."
                )
        effect = getattr(self, "effect_model", None)
        check_regressor(effect, "effect_model")
        stage = getattr(self, "final_stage", "crossfit")
        if stage not in ("crossfit", "full", "auto"):
            raise ValueError(f'`final_stage` must be "crossfit", "full" or "auto"; got {stage!r}.')

    def _prepare(
        self, X: Any, y: Any, w: Any, sample_weight: Any, propensity: Any, groups: Any = None
    ) -> Data:
        return prepare_data(
            X,
            y,
            w,
            classification=self._classification,
            sample_weight=sample_weight,
            propensity=propensity,
            groups=groups,
        )

    def _make_nuisance(self) -> Nuisance:
        if self.nuisance is not None:
            # A fitted Nuisance is shared as is; an unfitted one is a template.
            if hasattr(self.nuisance, "fingerprint_"):
                return self.nuisance
            from sklearn.base import clone

            return clone(self.nuisance)
        return Nuisance(
            outcome_model=self.outcome_model,
            propensity_model=getattr(self, "propensity_model", None),
            n_folds=self.n_folds,
            outcome_pooling=getattr(self, "outcome_pooling", "per_variant"),
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )

    def _fit(
        self,
        X: Any,
        y: Any,
        w: Any,
        *,
        sample_weight: Any,
        propensity: Any,
        honest: bool,
        groups: Any = None,
    ) -> np.ndarray | None:
        self._check_common_params()
        data = self._prepare(X, y, w, sample_weight, propensity, groups)
        return self._fit_data(data, honest=honest)

    def _fit_data(self, data: Data, *, honest: bool) -> np.ndarray | None:
        """Fit on prepared :class:`~metalearn.nuisance.Data` (the one entry after the edge).

        :meth:`fit` converts the user's input once and calls this; the
        package's own subsets (outer folds of a search, bootstrap replicates)
        call it with sliced ``Data``, so nothing is converted twice.
        """
        self._check_common_params()
        self._n_fit = data.n  # the training rows (read by `final_stage="auto"`)
        self.groups_ = data.groups
        ci = control_index(data.variants, self.control)
        self.variants_ = data.variants
        self.control_ = data.variants[ci]
        self._control_code = ci
        self._treated_codes = [k for k in range(data.n_variants) if k != ci]
        self.classes_ = data.classes
        self.schema_ = replace(
            data.schema, owner=type(self).__name__, handle_unknown=self.handle_unknown
        )
        self.n_features_in_ = data.X.shape[1]
        if data.schema.feature_names is not None:
            self.feature_names_in_ = np.asarray(data.schema.feature_names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self._out_dim = data.out_dim
        self.n_model_fits_ = 0
        check_arm_weights(data.sample_weight, data.w, self._label, data.n_variants)
        nuis: Nuisance | None = None
        e_raw: np.ndarray | None = None
        self._ate_data: Data | None = None
        if self._uses_nuisance:
            nuis = self._make_nuisance()
            if hasattr(self, "effect_model"):
                # Check NaN support of the final stage too, before any model is fitted.
                check_finite_X(
                    data.X,
                    {
                        "outcome_model": nuis._outcome_template(),
                        "propensity_model": None
                        if data.propensity is not None
                        else nuis._propensity_template(),
                        "effect_model": self._effect_template(),
                    },
                )
            kinds = set(self._nuisance_for_oof if honest else self._nuisance_for_fit)
            kinds = {k.replace("{c}", str(ci)) for k in kinds}
            kinds = self._expand_kinds(kinds, data)
            before = getattr(nuis, "n_model_fits_", 0)
            nuis.ensure(data, kinds, finite_checked=hasattr(self, "effect_model"))
            self.n_model_fits_ += nuis.n_model_fits_ - before
            self.nuisance_ = nuis
            e_raw = nuis.oof_.get("e")
            # What `ate()` reads on the training rows: every array but X (kept only when the
            # fit cross-fitted both outcome models and propensities).
            if e_raw is not None and "mu" in nuis.oof_:
                self._ate_data = replace(data, X=np.empty((data.n, 0)))
            made = nuis._made_folds()  # None when no cross-fitted kind was needed (T's fit)
            if made is None and hasattr(self, "effect_model") and self._crossfit_final(honest):
                made = nuis.folds_  # a cross-fitted final stage uses the nuisance's folds
            folds = np.zeros(0, dtype=np.intp) if made is None else made
        else:
            check_finite_X(data.X, {"outcome_model": self._outcome_template()})
            # One model on every row for `fit`: no folds (an empty fold array).
            folds = self._own_folds(data) if honest else np.zeros(0, dtype=np.intp)
        warn_overlap(
            data.w,
            self._label,
            ci,
            self._treated_codes,
            e_raw,
            where=f"`{type(self).__name__}.fit`",
            bounds=clip_bounds(getattr(self, "propensity_clip", None)),
            sample_weight=data.sample_weight,
            stacklevel=5,
        )
        self.folds_ = folds if folds.size else None
        tau = self._fit_final(data, nuis, folds, honest)
        self.oof_tau_ = tau if honest else None
        return tau

    def _own_folds(self, data: Data) -> np.ndarray:
        """Cross-fitting folds of a learner without a nuisance stage (the S-learner's
        ``fit_predict``; its ``fit`` is one model on every row and needs none)."""
        strata = data.w if data.classes is None else data.w * len(data.classes) + data.y
        what = "treatment variant" if data.classes is None else "(variant, outcome class) pair"
        return make_folds(
            strata, int(self.n_folds), self.random_state, what=what, groups=data.groups
        )

    def _expand_kinds(self, kinds: set[str], data: Data) -> set[str]:
        out: set[str] = set()
        for k in kinds:
            if k == "m":
                out.update(
                    f"m:{min(self._control_code, t)}:{max(self._control_code, t)}"
                    for t in self._treated_codes
                )
            else:
                out.add(k)
        return out

    def _outcome_template(self) -> Any:
        model = getattr(self, "outcome_model", None)
        return default_regressor() if model is None else model

    def _effect_template(self, n: int | None = None) -> Any:
        """The final-stage template: ``effect_model``, or the default for ``n`` rows.

        With ``effect_model=None``, the learner's ``_default_effect_model(n)``
        hook decides (the DR- and R-learner:
        :func:`metalearn._core.defaults.default_effect_regressor` for ``n`` training
        rows; other learners: :func:`~metalearn.nuisance.default_regressor`).
        ``n=None`` reads the number of rows of the fit in progress
        (``len(self.folds_)``, set before the final stage is fitted); before
        any fit it gives the rule's large-``n`` model (only its type matters
        then, e.g. for the missing-value checks).
        """
        model = getattr(self, "effect_model", None)
        if model is not None:
            return model
        if n is None:
            folds = getattr(self, "folds_", None)
            n = None if folds is None else len(folds)
        return self._default_effect_model(n)

    def _default_effect_model(self, n: int | None) -> Any:
        """Hook: the effect model used when ``effect_model=None``, for ``n`` training rows."""
        return default_regressor()

    def _label(self, code: int) -> Any:
        return _py(self.variants_[code])

    def _clip(self, e: np.ndarray) -> np.ndarray:
        """The clip rule of :mod:`metalearn._core.formulas` with ``propensity_clip``."""
        return clip_propensity(e, getattr(self, "propensity_clip", None))

    def _crossfit_final(self, honest: bool) -> bool:
        """Whether the final stage is fitted per fold (always for ``fit_predict``; with
        ``final_stage="auto"``, from a number of training rows on, see
        :func:`metalearn._core.defaults.crossfit_final_stage`)."""
        stage = getattr(self, "final_stage", "crossfit")
        return honest or crossfit_final_stage(stage, getattr(self, "_n_fit", 0))

    def _predict_internal(self, X: Any) -> np.ndarray:
        return self._predict_tau(self._encode_rows(X))

    def _encode_rows(self, X: Any) -> np.ndarray:
        """New rows, encoded with the fitted schema and checked for the base models."""
        check_is_fitted(self, "variants_")
        Xa, _ = encode_features(X, self.schema_)
        self._check_predict_rows(Xa)
        return Xa

    def predict_outcomes(self, X: Any) -> np.ndarray:
        """Predicted mean outcome under every variant, ``(n, n_variants[, n_classes])``.

        From the learner's outcome models (the mean of the fold models when
        they are cross-fitted). For a binary outcome, the probability of the
        positive class.

        Parameters
        ----------
        X : frame or array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_variants), with a trailing class axis for
        a multi-class outcome.
        """
        mu = self._outcomes(self._encode_rows(X))
        return mu[..., 0] if mu.shape[2] == 1 else mu

    def _has_outcome_models(self) -> bool:
        """Whether the fitted learner holds per-variant outcome models."""
        nuis = getattr(self, "nuisance_", None)
        return nuis is not None and (nuis.has("mu") or nuis.has("mu_full"))

    def _outcomes(self, Xa: np.ndarray) -> np.ndarray:
        """(n, K, D) outcome predictions on encoded rows (the nuisance's outcome models)."""
        nuis = getattr(self, "nuisance_", None)
        if nuis is None or not self._has_outcome_models():
            raise AttributeError(
                f"{type(self).__name__} has no per-variant outcome models to predict outcomes "
                "with (the R-learner models the marginal outcome of each pair only)."
            )
        return nuis.mu_predict(Xa)

    def _check_predict_rows(self, Xa: np.ndarray, name: str = "X") -> None:
        """Rows to predict: at least one, no infinities, NaN only where each base model takes it."""
        check_has_rows(Xa, name=name)
        if np.isfinite(Xa).all():
            return
        params = self.get_params(deep=False)
        models = {n: params[n] for n in self._MODEL_PARAMS if n in params}
        nuis = getattr(self, "nuisance_", None)
        if nuis is not None:
            models["outcome_model"] = nuis._outcome_template()
            models["propensity_model"] = (
                None if nuis.models_.get("e") is None else nuis._propensity_template()
            )
        elif models.get("outcome_model") is None:
            models["outcome_model"] = self._outcome_template()
        if "effect_model" in models:
            models["effect_model"] = self._effect_template()
        check_finite_X(Xa, models, name=name, when="predicting")

    # ------------------------------------------------------- final-stage fits
    def _fit_effects(
        self,
        data: Data,
        specs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
        folds: np.ndarray,
        honest: bool,
        *,
        require_weight: bool = False,
        names: Sequence[str] | None = None,
    ) -> tuple[list[list[Any]], list[np.ndarray] | None]:
        """Fit one effect model per spec ``(rows, target, weight)``.

        ``target`` and ``weight`` are full-length arrays (read at ``rows``).
        With a full final stage (``final_stage="full"`` in ``fit``): one model
        per spec on its rows. Cross-fitted: one model per spec and fold on its
        rows outside the fold. Only for ``honest`` fits (``fit_predict``) do
        the fold models predict the rows of their fold, and the out-of-fold
        predictions (n,) per spec are returned; ``fit`` computes none.
        """
        crossfit = self._crossfit_final(honest)
        template = self._effect_template(data.n)
        if require_weight and not accepts_sample_weight(template):
            raise TypeError(
                f"`effect_model` ({type(template).__name__}) must accept `sample_weight` in "
                "fit: this learner's final stage is a weighted regression."
            )
        builder = TaskBuilder(
            data.X,
            data.schema.categorical_indices,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )
        n_folds = int(folds.max()) + 1 if crossfit else 1
        for s, (rows, target, weight) in enumerate(specs):
            for f in range(n_folds) if crossfit else [None]:
                train = rows if f is None else rows[folds[rows] != f]
                builder.add(
                    template,
                    train,
                    target[train],
                    key=(500 + s, 0 if f is None else f + 1),
                    role="effect_model",
                    where=f"final stage, {names[s] if names else f'effect {s + 1}'}, "
                    + ("all rows" if f is None else f"fold {f}"),
                    sample_weight=None if weight is None else weight[train],
                    predict_rows=(np.flatnonzero(folds == f) if honest and f is not None else None),
                )
        tasks = builder.tasks
        results = builder.run("effect models")
        self.n_model_fits_ += len(tasks)
        per = n_folds if crossfit else 1
        models = [[r[0] for r in results[i * per : (i + 1) * per]] for i in range(len(specs))]
        if not honest:
            return models, None
        oofs = []
        for i in range(len(specs)):
            oof = np.empty(data.n)
            for t, r in zip(
                tasks[i * per : (i + 1) * per], results[i * per : (i + 1) * per], strict=True
            ):
                oof[t.predict_rows] = r[1][0]  # type: ignore[index]
            oofs.append(oof)
        return models, oofs

    def _effect_label(self, k: int, d: int) -> str:
        """``"variant 'B' vs 'A'"`` (with the class for multi-class outcomes), for notes."""
        label = f"variant {_py(self.variants_[k])!r} vs {_py(self.control_)!r}"
        if self._out_dim > 1 and self.classes_ is not None:
            label += f", class {_py(self.classes_[d])!r}"
        return label

    def _stack_effects(self, preds: dict[Any, np.ndarray], n: int) -> np.ndarray:
        """(n, K-1, D) effects from one (n,) array per effect key ``(variant_code, dim)``."""
        tau = np.empty((n, len(self._treated_codes), self._out_dim))
        for j, k in enumerate(self._treated_codes):
            for d in range(self._out_dim):
                tau[:, j, d] = preds[(k, d)]
        return tau

    def _predict_effect_models(self, Xa: np.ndarray) -> np.ndarray:
        """The CATE of a learner whose ``effect_models_[(k, d)]`` are fold models of X alone."""
        keys = list(self.effect_models_)
        out = self._predict_effects([self.effect_models_[k] for k in keys], Xa)
        return self._stack_effects(dict(zip(keys, out, strict=True)), Xa.shape[0])

    def _predict_effects(self, model_groups: list[list[Any]], Xa: np.ndarray) -> list[np.ndarray]:
        """Mean over fold models of each group's prediction on ``Xa``."""
        flat = [(m, "predict", None) for group in model_groups for m in group]
        preds = predict_models(flat, Xa, n_jobs=self.n_jobs)
        out, i = [], 0
        for group in model_groups:
            out.append(np.mean(preds[i : i + len(group)], axis=0))
            i += len(group)
        return out

    # ----------------------------------------------------------- output shape
    def _shape(self, tau: np.ndarray) -> np.ndarray:
        if tau.shape[2] == 1:
            tau = tau[:, :, 0]
            return tau[:, 0] if tau.shape[1] == 1 else tau
        return tau[:, 0, :] if tau.shape[1] == 1 else tau

    def _effect_names(self) -> list[str]:
        names = []
        c = self.control_
        for k in self._treated_codes:
            v = self.variants_[k]
            if self._out_dim == 1:
                names.append(f"tau_{v}_vs_{c}")
            else:
                names.extend(f"tau_{v}_vs_{c}_{cls}" for cls in np.asarray(self.classes_))
        return names

    def _columns(self, tau: np.ndarray) -> list[np.ndarray]:
        return [tau[:, j, d] for j in range(tau.shape[1]) for d in range(tau.shape[2])]

    def _effects(self, est: np.ndarray, se: np.ndarray, method: str, n: int, level: float) -> Any:
        """(K-1, D) estimates -> AverageEffect or a tuple of them."""
        out = []
        for j, k in enumerate(self._treated_codes):
            e, s = est[j], se[j]
            out.append(
                AverageEffect.from_estimate(
                    variant=_py(self.variants_[k]),
                    control=_py(self.control_),
                    estimate=e[0] if len(e) == 1 else e,
                    std_error=s[0] if len(s) == 1 else s,
                    method=method,
                    n=n,
                    level=level,
                )
            )
        return out[0] if len(out) == 1 else tuple(out)

    # -------------------------------------------------------- sklearn plumbing
    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        models = [
            getattr(self, n, None) for n in ("outcome_model", "propensity_model", "effect_model")
        ]
        models = [m if m is not None else default_regressor() for m in models]
        tags.input_tags.allow_nan = all(allows_nan(m) for m in models)
        return tags

    # Hooks for other modules ------------------------------------------------
    def _explanation_plan(self) -> tuple[dict[tuple[int, int], list[PlanTerm]] | None, str]:
        """The CATE of each effect ``(j, d)`` as a linear combination of fitted models.

        Returns ``(plans, "")``, or ``(None, reason)`` when the CATE is not such
        a combination (:mod:`metalearn.explain` then explains it model-agnostically).
        """
        return None, f"{type(self).__name__} declares no explanation plan"

    def _outcome_indicators(self) -> bool:
        """Whether the models explained take treatment indicator columns (S, pooled T)."""
        return False

    def _check_predictable(self) -> None:
        """Raise when the CATE is not a function of ``X`` alone (e.g. per-row propensities)."""

    def _final_loss(
        self,
        Y: np.ndarray,
        w: np.ndarray,
        own: Any,
        tau3: np.ndarray,
        sample_weight: np.ndarray | None,
    ) -> float | None:
        """The loss this learner's final stage minimises, on rows with its own nuisances.

        ``Y`` (n, D) targets, variant codes ``w``, effects ``tau3`` (n, K-1, D);
        ``own`` holds this learner's own nuisance predictions for those rows
        (out of fold for training rows): ``own.mu`` (n, K, D) outcomes,
        ``own.e`` (n, K) propensities, ``own.marginal`` a dict from treated
        code to the pair's marginal outcome (n, D); each may be ``None``.
        ``None`` when the learner has no final loss of its own (the searches'
        ``final_loss`` is then NaN).
        """
        return None

    # Subclass hooks --------------------------------------------------------
    def _fit_final(
        self, data: Data, nuis: Nuisance | None, folds: np.ndarray, honest: bool
    ) -> np.ndarray | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict_tau(self, Xa: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _analytic_stage(self) -> tuple[Any, str]:
        """Hook: ``(LinearCATEInference, "")`` of a linear final stage, or ``(None, reason)``."""
        return None, (
            f"the {type(self).__name__} has no analytic CATE intervals (only the DRLearner and "
            "RLearner with `effect_model=LinearRegression()` have)"
        )

    # --------------------------------------------------------------- intervals
    def predict_interval(
        self,
        X: Any,
        *,
        alpha: float = 0.05,
        method: str = "auto",
        X_train: Any = None,
        y_train: Any = None,
        w_train: Any = None,
        n_boot: int = 200,
        n_jobs: int | None = None,
        random_state: int | None = None,
    ) -> Any:
        r"""Pointwise ``1 - alpha`` confidence intervals for the CATE of new rows.

        - ``method="analytic"``: for a :class:`~metalearn.DRLearner` or
          :class:`~metalearn.RLearner` with ``effect_model=LinearRegression()``
          (regression or binary outcome),
          :math:`z^\top\hat\beta \pm z_{1-\alpha/2}\sqrt{z^\top\hat V z}`,
          ``z = (1, x)``, from the least-squares fit of the training rows'
          pseudo-outcomes (the R-learner's weighted by :math:`(T - \hat p)^2`)
          and its HC1 sandwich covariance :math:`\hat V`, both computed by
          ``fit``: for the DR-learner, the intervals of
          :func:`metalearn.inference.linear_dr_inference` without the
          training data. They are centred on that full-sample fit, which is
          ``predict(X)`` with ``final_stage="full"``; the default cross-fitted
          stage predicts with the mean of its fold fits, which differs from it
          by far less than a standard error.
        - ``method="bootstrap"``: any learner;
          :func:`metalearn.inference.bootstrap_cate` (percentile intervals) on
          the training data, which must then be passed as ``X_train``,
          ``y_train`` and ``w_train``. The learner's settings are refitted
          ``n_boot`` times; the estimate is its refit on all training rows
          (``predict(X)`` when the learner was fitted on them with a fixed
          ``random_state``).
        - ``method="auto"``: analytic where the learner has it, else the
          bootstrap when the training data are given.

        Both describe the estimator's sampling variability, not its bias:
        the analytic intervals cover the best linear approximation of the
        CATE, which is the CATE when it is linear in the features.

        Parameters
        ----------
        X : frame or array-like of shape (n_samples, n_features)
            Rows to predict.
        alpha : float, default=0.05
            One minus the confidence level, in (0, 1).
        method : {"auto", "analytic", "bootstrap"}, default="auto"
        X_train, y_train, w_train : frame or array-like, default=None
            The data the learner was fitted on, for the bootstrap; ignored by
            the analytic intervals.
        n_boot : int, default=200
            Bootstrap replicates.
        n_jobs : int, default=None
            Joblib workers for the bootstrap replicates.
        random_state : int, default=None
            Seeds the bootstrap resampling (and unset seeds of the learner).

        Returns
        -------
        metalearn.inference.CATEIntervals
            ``estimate``, ``std_error``, ``ci_low`` and ``ci_high`` of the shape
            of ``predict(X)``: ``(n_samples,)`` for two variants,
            ``(n_samples, n_variants - 1)`` for more (one column per treated
            variant, with a trailing class axis for a multi-class outcome
            under the bootstrap); ``to_frame()`` labels the columns.

        Examples
        --------
        >>> import metalearn as ml
        >>> from sklearn.linear_model import LinearRegression, LogisticRegression
        >>> sim = ml.datasets.simulate_confounded(n=1000, seed=0)
        >>> dr = ml.DRLearner(outcome_model=LinearRegression(),
        ...                   propensity_model=LogisticRegression(),
        ...                   effect_model=LinearRegression(), random_state=0)
        >>> ci = dr.fit(sim.X, sim.y, sim.w).predict_interval(sim.X[:5], alpha=0.1)
        >>> ci.ci_low.shape, ci.level, ci.n_boot
        ((5,), 0.9, 0)
        >>> t = ml.TLearner(outcome_model=LinearRegression(), random_state=0)
        >>> t = t.fit(sim.X, sim.y, sim.w)
        >>> ci = t.predict_interval(sim.X[:5], X_train=sim.X, y_train=sim.y, w_train=sim.w,
        ...                         n_boot=20, random_state=0)
        >>> ci.method, bool((ci.ci_low <= ci.ci_high).all())
        ('percentile bootstrap (20 replicates)', True)
        """
        check_is_fitted(self, "variants_")
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, int | float | np.integer | np.floating)
            or not 0.0 < alpha < 1.0
        ):
            raise ValueError(f"`alpha` must be in (0, 1), e.g. 0.05; got {alpha!r}.")
        if method not in ("auto", "analytic", "bootstrap"):
            raise ValueError(f"`method` must be 'auto', 'analytic' or 'bootstrap'; got {method!r}.")
        name = type(self).__name__
        train = {"X_train": X_train, "y_train": y_train, "w_train": w_train}
        missing = [k for k, v in train.items() if v is None]
        if 0 < len(missing) < len(train):
            raise ValueError(
                f"`{name}.predict_interval` needs `X_train`, `y_train` and `w_train` together "
                f"for the bootstrap; {', '.join(f'`{m}`' for m in missing)} missing."
            )
        level = 1.0 - float(alpha)
        if method != "bootstrap":
            stage, reason = self._analytic_stage()
            if stage is not None:
                from metalearn._core.design import frame_backend

                return stage._intervals(self._encode_rows(X), frame_backend(X), level)
            if method == "analytic":
                raise ValueError(
                    f"`method='analytic'` is not available: {reason}. Use "
                    "`method='bootstrap'` with the training data `X_train`, `y_train` and "
                    "`w_train`."
                )
            if missing:
                raise ValueError(
                    f"`{name}.predict_interval` has no analytic intervals here ({reason}): "
                    "pass the training data `X_train`, `y_train` and `w_train` for bootstrap "
                    "intervals."
                )
        elif missing:
            raise ValueError(
                f"`method='bootstrap'` refits the {name} on bootstrap samples of its training "
                f"data: pass `X_train`, `y_train` and `w_train` "
                f"({', '.join(f'`{m}`' for m in missing)} missing)."
            )
        from metalearn.inference import bootstrap_cate

        return bootstrap_cate(
            self,
            X_train,
            y_train,
            w_train,
            X_new=X,
            n_boot=n_boot,
            level=level,
            n_jobs=n_jobs,
            random_state=random_state,
        )


class PseudoOutcomeLearner(MetaLearner):
    """Base of the learners whose CATE regresses pseudo-outcomes on ``X`` alone (R, DR, RA).

    One effect model per (treated variant, outcome dimension), keyed ``(k, d)``
    in ``effect_models_``, cross-fitted or not (``final_stage``); new rows get
    the mean of the fold models, which is also the learner's explanation plan.
    A subclass builds its pseudo-outcomes and hands them to
    :meth:`_fit_pseudo_outcomes`.
    """

    _final_stage_on_X: ClassVar[bool] = True

    def _analytic_stage(self) -> tuple[Any, str]:
        """The fitted linear final stage (DR- and R-learners keep one), or why there is none."""
        stage = getattr(self, "_linear_stage", None)
        if stage is not None:
            return stage, ""
        from metalearn._core.intervals import _linear_stage_problem

        if not hasattr(self, "_fit_linear_stage"):
            return super()._analytic_stage()
        problem = _linear_stage_problem(self._effect_template(), self._out_dim, type(self).__name__)
        reason = "refit the learner" if problem is None else problem[1]
        return None, reason

    def _fit_pseudo_outcomes(
        self,
        data: Data,
        specs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
        keys: Sequence[tuple[int, int]],
        folds: np.ndarray,
        honest: bool,
        *,
        require_weight: bool = False,
    ) -> np.ndarray | None:
        """Fit the effect model of each spec ``(rows, target, weight)`` under its key.

        Returns the (n, K-1, D) out-of-fold effects for ``honest`` fits, else ``None``.
        """
        names = [self._effect_label(k, d) for k, d in keys]
        models, oofs = self._fit_effects(
            data, specs, folds, honest, require_weight=require_weight, names=names
        )
        self.effect_models_ = dict(zip(keys, models, strict=True))
        if not honest:
            return None
        assert oofs is not None
        return self._stack_effects(dict(zip(keys, oofs, strict=True)), data.n)

    def _predict_tau(self, Xa: np.ndarray) -> np.ndarray:
        return self._predict_effect_models(Xa)

    def _explanation_plan(self) -> tuple[dict[tuple[int, int], list[PlanTerm]] | None, str]:
        return fold_mean_plan(self, self.effect_models_), ""


@dataclass(frozen=True)
class PlanTerm:
    """One model in a CATE's linear combination: ``coef * f(x[, variant])``.

    Attributes
    ----------
    coef : float
    model : fitted estimator or None
        ``None``: the constant ``coef`` (no feature takes a share of it).
    variant : int or None
        Indicator columns of this variant code are appended to ``x``...
    indicators : callable or None
        ... made by this function of variant codes (S-learner, pooled T-learner).
    column : int or None
        Classification: the ``predict_proba`` column explained.
    """

    coef: float
    model: Any
    variant: int | None = None
    indicators: Any = None
    column: int | None = None


def positive_column(model: Any, classes: Any) -> int | None:
    """``None`` for regression; the predict_proba column of class code 1; -1 if missing."""
    if classes is None:
        return None
    seen = list(np.asarray(model.classes_).tolist())
    return seen.index(1) if 1 in seen else -1


def fold_mean_plan(
    learner: MetaLearner, models: dict[Any, list[Any]]
) -> dict[tuple[int, int], list[PlanTerm]]:
    """Plan of a learner whose effect ``(k, d)`` is the mean of ``models[(k, d)]``."""
    plans = {}
    for j, k in enumerate(learner._treated_codes):
        for d in range(learner._out_dim):
            group = models[(k, d)]
            plans[(j, d)] = [PlanTerm(1.0 / len(group), m) for m in group]
    return plans


def indicator_plan(
    learner: MetaLearner, models: list[Any], indicators: Any
) -> tuple[dict[tuple[int, int], list[PlanTerm]] | None, str]:
    """Plan of a CATE ``f(x, k) - f(x, c)`` from models taking treatment indicator columns."""
    classes = learner.classes_
    if classes is not None and len(classes) > 2:
        return None, "multi-class probabilities (a softmax) have no exact per-model explainer"
    c = learner._control_code
    plans = {}
    for j, k in enumerate(learner._treated_codes):
        terms = []
        for m in models:
            col = positive_column(m, classes)
            if col == -1:
                return None, "an outcome model never saw one of the outcome classes"
            terms.append(PlanTerm(1.0 / len(models), m, k, indicators, col))
            terms.append(PlanTerm(-1.0 / len(models), m, c, indicators, col))
        plans[(j, 0)] = terms
    return plans, ""


def learner_registry() -> dict[str, type[MetaLearner]]:
    """Every learner with a short name, ``{"S": SLearner, ..., "DR": DRLearner, ...}``."""
    import metalearn.learners  # noqa: F401  (the learners register on import)

    ranked = sorted(MetaLearner._registry.items(), key=lambda kv: (kv[1]._registry_rank, kv[0]))
    return dict(ranked)


def _clip_bounds(clip: Any) -> tuple[float, float]:
    return clip_bounds(clip)


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
