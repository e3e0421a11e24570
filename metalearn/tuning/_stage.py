"""The nuisance stage of staged tuning: outcome and propensity models on their own losses.

Nuisance models solve ordinary supervised problems, so the first stage tunes
them by K-fold cross-validation on the training rows, fold by fold (each
fold's loss is reported, so that a trial can be pruned early), exactly as
the learner uses them:

* ``"per_variant"``: one outcome model per variant on its rows;
* ``"pooled"``: one outcome model on all rows with treatment indicators;
* ``"marginal"``: the R-learner's ``E[Y | X, W in {c, k}]`` per pair;
* ``"propensity"``: the variant classifier.

The loss is the outcome metric (RMSE, or log-loss for class outcomes)
averaged over variants or pairs, or the propensity log-loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from metalearn._core.data import Data, align_proba, outcome_columns
from metalearn._core.defaults import default_classifier, default_regressor
from metalearn._core.tasks import Task, TaskBuilder, make_folds
from metalearn._core.validation import control_index
from metalearn.learners.base import MetaLearner
from metalearn.scoring._losses import _outcome_eval, _score

__all__ = ["NuisanceStage", "outcome_mode"]


def outcome_mode(learner: MetaLearner) -> str | None:
    """How ``learner`` uses its outcome model, or None when it has no nuisance stage."""
    if not learner._uses_nuisance or learner.nuisance is not None:
        return None
    if "m" in learner._nuisance_for_fit:  # the pairs' marginal outcome models (R-learner)
        return "marginal"
    return str(getattr(learner, "outcome_pooling", "per_variant"))


class NuisanceStage:
    """Cross-validated loss of one nuisance model on the training rows.

    Parameters
    ----------
    data : Data
        The training rows, converted.
    kind : {"per_variant", "pooled", "marginal", "propensity"}
    control : object
        The learner's control (for ``"marginal"``).
    n_folds : int
    random_state : int or None
        Seeds the folds and the models.
    metrics : dict
        From :func:`metalearn.scoring._losses.resolve_metrics`.
    n_jobs : int or None
        Joblib workers for the fits of one fold.
    """

    def __init__(
        self,
        data: Data,
        kind: str,
        *,
        control: Any,
        n_folds: int,
        random_state: Any,
        metrics: dict[str, Any],
        n_jobs: int | None,
    ) -> None:
        self.data, self.kind, self.metrics, self.n_jobs = data, kind, metrics, n_jobs
        self.random_state = random_state
        if data.classes is None:
            strata, what = data.w, "treatment variant"
        else:
            strata, what = data.w * len(data.classes) + data.y, "(variant, outcome class) pair"
        seed = 0 if random_state is None else random_state
        self.folds = make_folds(strata, int(n_folds), seed, what=what, groups=data.groups)
        self.n_folds = int(n_folds)
        K = data.n_variants
        c = control_index(data.variants, control)
        self.extra: np.ndarray | None = None
        if kind == "per_variant":
            self.groups = [data.w == k for k in range(K)]
        elif kind == "marginal":
            self.groups = [np.isin(data.w, [c, k]) for k in range(K) if k != c]
        elif kind in ("pooled", "propensity"):
            self.groups = [np.ones(data.n, dtype=bool)]
            if kind == "pooled":
                self.extra = (data.w[:, None] == np.arange(1, K)[None, :]).astype(np.float64)
        else:  # pragma: no cover - internal misuse
            raise ValueError(f"unknown nuisance stage {kind!r}")

    def default_model(self) -> Any:
        if self.kind == "propensity":
            return default_classifier()
        return default_regressor()

    def _tasks(self, model: Any, f: int) -> TaskBuilder:
        d = self.data
        propensity = self.kind == "propensity"
        method = "predict_proba" if propensity or d.classes is not None else "predict"
        target = d.w if propensity else d.y
        builder = TaskBuilder(
            d.X, d.schema.categorical_indices, n_jobs=self.n_jobs, random_state=self.random_state
        )
        sw = d.sample_weight
        for g, mask in enumerate(self.groups):
            train = np.flatnonzero(mask & (self.folds != f))
            builder.add(
                model,
                train,
                target[train],
                key=(700, g, f + 1),
                role="propensity_model" if propensity else "outcome_model",
                sample_weight=None if sw is None else sw[train],
                predict_rows=np.flatnonzero(mask & (self.folds == f)),
                method=method,
                extra_columns=self.extra,
                predict_extra=[] if self.extra is None else [self.extra],
            )
        return builder

    def _fold_loss(self, tasks: list[Task], results: list[Any]) -> float:
        d = self.data
        m_out, m_e = self.metrics["outcome"], self.metrics["propensity"]
        losses = []
        for t, (est, preds) in zip(tasks, results, strict=True):
            rows = t.predict_rows
            assert rows is not None and preds is not None
            if self.kind == "propensity":
                p = align_proba(preds[0], est.classes_, d.n_variants)
                sw = None if d.sample_weight is None else d.sample_weight[rows]
                losses.append(_score(m_e, d.w[rows], p, sw))
                continue
            cols = outcome_columns(preds[0], est, d.classes)
            if self.kind == "pooled":  # one loss per variant, as for per-variant models
                full = np.empty((d.n, cols.shape[1]))
                full[rows] = cols
                for k in range(d.n_variants):
                    rk = rows[d.w[rows] == k]
                    losses.append(_outcome_eval(m_out, d, rk, full[rk]))
            else:
                full = np.empty((d.n, cols.shape[1]))
                full[rows] = cols
                losses.append(_outcome_eval(m_out, d, rows, full[rows]))
        return float(np.nanmean(losses))

    def loss(self, model: Any, report: Callable[[float, int], None] | None = None) -> float:
        """Mean over folds of the held-out loss; ``report(mean_so_far, fold)`` after each."""
        losses = []
        for f in range(self.n_folds):
            builder = self._tasks(model, f)
            results = builder.run("stage models")
            losses.append(self._fold_loss(builder.tasks, results))
            if report is not None and f < self.n_folds - 1:
                report(float(np.mean(losses)), f)
        return float(np.mean(losses))
