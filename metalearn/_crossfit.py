"""Cross-fitting: fold assignment and one flat, seeded batch of base-model fits.

A stage of a meta-learner (all nuisance models, or all final-stage models)
is expressed as a list of :class:`Task` objects. :func:`run_tasks` sends the
whole list to joblib at once through :class:`sklearn.utils.parallel.Parallel`
(so ``n_jobs`` workers share folds x variants x model kinds), never names a
backend (so ``joblib.parallel_config(backend="dask")`` moves the work to a
Dask cluster unchanged) and returns results in task order, so results do not
depend on ``n_jobs``.

Thread rule
-----------
With one joblib worker, base models keep their own thread settings (LightGBM
then uses every core itself). With several workers, every base model whose
thread parameter (``n_jobs``, ``num_threads``, ``nthread`` or
``thread_count``) is left at its default or asks for every core (``None``,
``-1`` or ``0``) gets ``max(1, cpu_count // busy)`` threads, where ``busy``
is the smaller of the workers and the tasks in the batch, so that busy
workers x threads does not exceed the number of cores (a batch of one fit
keeps every core). A positive thread count set by the user is never changed.
"""

from __future__ import annotations

import inspect
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from joblib import effective_n_jobs
from sklearn.base import clone
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.utils.parallel import Parallel, delayed

from metalearn import _progress

__all__ = ["Task", "make_folds", "run_tasks", "predict_models", "prepare_estimator"]

_THREAD_PARAMS = ("n_jobs", "num_threads", "nthread", "thread_count")


@dataclass
class Task:
    """One base-model fit, optionally followed by a prediction on held-out rows.

    Attributes
    ----------
    estimator : estimator
        An unfitted, already prepared clone.
    train : ndarray of int
        Rows of ``X`` to fit on.
    target : ndarray
        The target for those rows, or for every row of ``X`` (then indexed
        by ``train`` when the task runs, so that a stage's tasks share one
        array instead of holding a copy each).
    sample_weight : ndarray or None
        Weights for those rows, or for every row of ``X`` (as ``target``).
    predict_rows : ndarray of int or None
        Rows of ``X`` to predict after fitting (out-of-fold predictions).
    method : str
        ``"predict"`` or ``"predict_proba"``.
    extra_columns : ndarray or None
        Columns appended to ``X`` for this task (the S-learner's treatment
        indicators), one row per row of ``X``.
    """

    estimator: Any
    train: np.ndarray
    target: np.ndarray
    sample_weight: np.ndarray | None = None
    predict_rows: np.ndarray | None = None
    method: str = "predict"
    extra_columns: np.ndarray | None = None
    predict_extra: list[np.ndarray] = field(default_factory=list)
    fit_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A stage holds every task's row indices at once: int32 halves them.
        self.train = _compact(self.train)
        if self.predict_rows is not None:
            self.predict_rows = _compact(self.predict_rows)


def _compact(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows)
    if (
        rows.dtype.kind in "iu"
        and rows.dtype.itemsize > 4
        and (rows.size == 0 or rows.max() < 2**31 - 1)
    ):
        return rows.astype(np.int32)
    return rows


def make_folds(
    strata: np.ndarray,
    n_folds: int,
    random_state: int | None,
    *,
    what: str = "variant",
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Assign each row to one of ``n_folds`` folds, stratified by ``strata``.

    With ``groups`` (integer codes), every group lies in one fold
    (:class:`~sklearn.model_selection.StratifiedGroupKFold`), so no model
    predicts a row whose group it was trained on.

    Returns an int array ``fold`` of shape ``(n_samples,)``.
    """
    _, counts = np.unique(strata, return_counts=True)
    if counts.min() < n_folds:
        raise ValueError(
            f"Each {what} needs at least n_folds={n_folds} rows for cross-fitting; "
            f"the smallest has {counts.min()}. Lower `n_folds` or collect more data."
        )
    fold = np.empty(len(strata), dtype=np.intp)
    if groups is None:
        skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=random_state)
        for f, (_, test) in enumerate(skf.split(np.zeros((len(strata), 1)), strata)):
            fold[test] = f
        return fold
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise ValueError(
            f"`groups` has {n_groups} distinct group(s); cross-fitting keeps each group in "
            f"one fold and needs at least n_folds={n_folds}. Lower `n_folds` or pass finer "
            "groups."
        )
    sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=random_state)
    with warnings.catch_warnings():
        # "The least populated class has only k members": checked above, per row.
        warnings.simplefilter("ignore", UserWarning)
        splits = list(sgkf.split(np.zeros((len(strata), 1)), strata, groups))
    for f, (_, test) in enumerate(splits):
        fold[test] = f
    for f in range(n_folds):
        present = np.unique(strata[fold != f])
        if len(present) < len(counts):
            raise ValueError(
                f"With `groups`, the rows outside fold {f} lack a {what}: some {what}s occur "
                "in too few groups to train a model without every group of one fold (e.g. a "
                "treatment assigned to whole groups). Lower `n_folds` or pass finer groups."
            )
    return fold


def _sklearn_at_least(major: int, minor: int) -> bool:
    import sklearn

    found = tuple(int(v) for v in sklearn.__version__.split(".")[:2])
    return found >= (major, minor)


_LOGISTIC_N_JOBS_INERT = _sklearn_at_least(1, 8)


def _inert_n_jobs(estimator: Any) -> bool:
    """``LogisticRegression.n_jobs`` does nothing (and warns when set) from scikit-learn 1.8."""
    cls = type(estimator)
    return (
        _LOGISTIC_N_JOBS_INERT
        and cls.__name__ == "LogisticRegression"
        and cls.__module__.startswith("sklearn.")
    )


def _thread_param(estimator: Any) -> str | None:
    if _inert_n_jobs(estimator):
        return None
    params = estimator.get_params(deep=False)
    for name in _THREAD_PARAMS:
        if name in params:
            return name
    return None


def prepare_estimator(template: Any, *, n_workers: int, seed: int | None) -> Any:
    """Clone ``template``; set a default-thread count and a missing random seed."""
    est = clone(template)
    params = est.get_params(deep=False)
    updates: dict[str, Any] = {}
    name = _thread_param(est)
    if name is not None and n_workers > 1 and params[name] in (None, -1, 0):
        updates[name] = max(1, (os.cpu_count() or 1) // n_workers)
        # run_tasks gives the threads back when its batch has fewer tasks than workers.
        est._metalearn_auto_threads = name
    if seed is not None and "random_state" in params and params["random_state"] is None:
        updates["random_state"] = seed
    if updates:
        est.set_params(**updates)
    return est


def n_workers(n_jobs: int | None) -> int:
    """Effective number of joblib workers for ``n_jobs`` under the active backend."""
    try:
        return max(1, int(effective_n_jobs(n_jobs)))
    except Exception:  # pragma: no cover - exotic backends
        return 1


def _accepts(estimator: Any, method: str, param: str) -> bool:
    try:
        sig = inspect.signature(getattr(estimator, method))
    except (TypeError, ValueError):  # pragma: no cover
        return False
    return param in sig.parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()
    )


_CHUNK_ROWS = 65_536


def _with_extra(X: np.ndarray, rows: np.ndarray, extra: np.ndarray | None) -> np.ndarray:
    """``X[rows]`` with ``extra`` columns appended, built in one allocation.

    Gathering the rows and stacking the columns in two steps would hold two
    copies of the rows at once; the rows are copied straight into place,
    a block at a time, instead.
    """
    if extra is None:
        return X[rows]
    extra_rows = extra[rows] if extra.shape[0] == X.shape[0] else extra
    p = X.shape[1]
    out = np.empty((len(rows), p + extra_rows.shape[1]), dtype=np.result_type(X, extra_rows))
    for start in range(0, len(rows), _CHUNK_ROWS):
        block = rows[start : start + _CHUNK_ROWS]
        out[start : start + len(block), :p] = X[block]
    out[:, p:] = extra_rows
    return out


def _rows_of(values: np.ndarray, train: np.ndarray, n: int) -> np.ndarray:
    """``values`` for the training rows: indexed when given for all ``n`` rows of X."""
    if values.shape[0] == n and len(train) != n:
        return values[train]
    return values


def _run_one(task: Task, X: np.ndarray) -> tuple[Any, list[np.ndarray] | None]:
    est = task.estimator
    Xt = _with_extra(X, task.train, task.extra_columns)
    kwargs = dict(task.fit_params)
    if task.sample_weight is not None:
        kwargs["sample_weight"] = _rows_of(task.sample_weight, task.train, X.shape[0])
    est.fit(Xt, _rows_of(task.target, task.train, X.shape[0]), **kwargs)
    preds = None
    if task.predict_rows is not None:
        predict = getattr(est, task.method)
        if task.predict_extra:
            preds = [
                np.asarray(predict(_with_extra(X, task.predict_rows, e)), dtype=np.float64)
                for e in task.predict_extra
            ]
        else:
            preds = [np.asarray(predict(X[task.predict_rows]), dtype=np.float64)]
    return est, preds


def _load_malloc_trim() -> Any:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _load_malloc_trim() if sys.platform.startswith("linux") else None
_TRIM_BYTES = 32 * 2**20


def _release_free_memory(X: np.ndarray) -> None:
    """Hand memory freed by a large batch back to the operating system (glibc).

    Base models fitted in worker threads allocate from per-thread malloc
    arenas, which glibc keeps after the models free their training copies;
    without a trim the next stage starts on top of that freed-but-held
    memory and peak RSS grows by a stage's worth of copies.
    """
    if _MALLOC_TRIM is not None and X.nbytes >= _TRIM_BYTES:
        _MALLOC_TRIM(0)


def run_tasks(
    tasks: list[Task], X: np.ndarray, *, n_jobs: int | None, desc: str = "model fits"
) -> list[tuple[Any, list[np.ndarray] | None]]:
    """Fit every task in one flat joblib batch; results come back in task order.

    Base models whose thread count the thread rule chose get the cores divided
    among the fits that run side by side. When every task's count is the rule's
    and the batch does not split into full rounds of the workers (5 fold fits on
    2 workers), the last, incomplete round runs after the others with the cores
    divided among its own fits instead of leaving workers idle.

    ``desc`` names the batch in progress reports (:func:`metalearn.progress`).
    """
    if not tasks:
        return []
    busy = min(n_workers(n_jobs), len(tasks))
    auto = [t.estimator.__dict__.pop("_metalearn_auto_threads", None) for t in tasks]
    tail = len(tasks) % busy if all(a is not None for a in auto) else 0
    head = len(tasks) - tail
    cpus = os.cpu_count() or 1
    for i, (t, name) in enumerate(zip(tasks, auto, strict=True)):
        if name is not None:  # a thread count set by the thread rule, not by the user
            t.estimator.set_params(**{name: max(1, cpus // (busy if i < head else tail))})
    reporting = _progress.current() is not None

    def run(part: list[Task], width: int) -> Any:
        if width == 1:
            return (_run_one(t, X) for t in part)
        # A generator lets the progress bar advance as fits finish (still in task order).
        return Parallel(
            n_jobs=n_jobs, prefer="threads", return_as="generator" if reporting else "list"
        )(delayed(_run_one)(t, X) for t in part)

    parts = [(tasks[:head], busy), (tasks[head:], tail)] if tail else [(tasks, busy)]
    results = (r for part, width in parts for r in run(part, width))
    out = _progress.track(results, len(tasks), desc)
    _release_free_memory(X)
    return out


def _predict_one(model: Any, X: np.ndarray, method: str, extra: np.ndarray | None) -> np.ndarray:
    Xp = X if extra is None else np.hstack([X, extra])
    return np.asarray(getattr(model, method)(Xp), dtype=np.float64)


_PARALLEL_PREDICT_ROWS = 50_000


def predict_models(
    jobs: Sequence[tuple[Any, str, np.ndarray | None]], X: np.ndarray, *, n_jobs: int | None
) -> list[np.ndarray]:
    """Predict ``X`` with many fitted models (``(model, method, extra_columns)``), in order.

    Predictions run side by side only for large ``X``: below
    ``_PARALLEL_PREDICT_ROWS`` rows a prediction takes less time than
    starting the workers.
    """
    if n_workers(n_jobs) == 1 or len(jobs) == 1 or X.shape[0] < _PARALLEL_PREDICT_ROWS:
        return [_predict_one(m, X, meth, e) for m, meth, e in jobs]
    return list(
        Parallel(n_jobs=n_jobs, prefer="threads")(
            delayed(_predict_one)(m, X, meth, e) for m, meth, e in jobs
        )
    )


def task_seed(random_state: Any, *key: int) -> int | None:
    """A seed for one task, from ``random_state`` and the task's identity ``key``.

    It depends only on the task, not on which other tasks share its batch, so
    a model fitted now or later (or by another learner) gets the same seed.
    ``None`` (and a ``RandomState``/``Generator``, which are not reproducible
    across calls) give ``None``: the base model's own seed is left alone.
    """
    if random_state is None or isinstance(
        random_state, np.random.RandomState | np.random.Generator
    ):
        return None
    ss = np.random.SeedSequence(int(random_state), spawn_key=tuple(int(k) for k in key))
    return int(ss.generate_state(1)[0] % (2**31 - 1))


def accepts_sample_weight(estimator: Any) -> bool:
    return _accepts(estimator, "fit", "sample_weight")


def accepts_categorical(estimator: Any) -> bool:
    """Whether ``fit`` takes LightGBM's ``categorical_feature`` argument."""
    try:
        sig = inspect.signature(estimator.fit)
    except (TypeError, ValueError):  # pragma: no cover
        return False
    return "categorical_feature" in sig.parameters
