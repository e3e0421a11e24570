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
One thread budget covers the whole package: :func:`available_cpus`, the CPUs
this process may use (CPU affinity and cgroup quotas included, through
:func:`joblib.cpu_count`; never :func:`os.cpu_count`, which counts the whole
host). Every layer that runs work side by side divides the budget it was given
among its busy workers, so that the layers together never ask for more
threads than the budget:

* tuning runs ``n_search`` candidates or trials side by side: each gets
  ``budget // n_search`` (:func:`share_threads`, or the thread counts that
  :func:`metalearn.tuning._params.limit_threads` writes into its models);
* a learner's batch of fits runs on ``busy`` joblib workers, the smaller of its
  workers (``n_jobs``) and its fits: each fit gets ``max(1, share // busy)``
  threads, ``share`` being what the layers above left (the whole budget for a
  learner fitted on its own). With one worker (``n_jobs=None``, the default)
  ``busy`` is 1 and a fit gets the whole share;
* a base model whose thread parameter (``n_jobs``, ``num_threads``,
  ``nthread``, ``thread_count``, also inside a Pipeline or another
  meta-estimator) asks for every core *by its own library's semantics* gets
  that count explicitly: LightGBM ``None`` (its physical cores), ``0`` (the
  OpenMP default) or a negative count; XGBoost ``None`` or ``<= 0``; CatBoost
  ``thread_count`` unset or ``-1``; for scikit-learn and other joblib-style
  ``n_jobs`` a negative count (``None`` means one thread there and is kept);
* a base model without such a parameter (a Pipeline of BLAS-heavy models,
  ``HistGradientBoosting*``, which uses OpenMP) fits and predicts under
  :func:`threadpoolctl.threadpool_limits` at the same count, when more than one
  fit runs side by side (OpenMP limits are set in each worker thread, the
  process-wide BLAS limit once around the batch);
* a positive thread count set by the user is kept as it is. It is the user's
  choice and may oversubscribe the CPUs (``n_jobs`` workers x that count).

When the fits of a batch do not fill whole rounds of the workers (5 fold fits
on 2 workers), the last, incomplete round runs after the others with the share
divided among its own fits instead of leaving workers idle. Each fit gets at
least one thread, so ``n_jobs`` above the budget still oversubscribes.
"""

from __future__ import annotations

import copy
import inspect
import os
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import joblib
import numpy as np
from joblib import effective_n_jobs
from sklearn.base import clone
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.utils.parallel import Parallel, delayed

from metalearn._core import progress as _progress
from metalearn._core.validation import BaseModelError, wrap_base_model_error

__all__ = [
    "Task",
    "TaskBuilder",
    "available_cpus",
    "dask_client",
    "make_folds",
    "predict_models",
    "prepare_estimator",
    "run_tasks",
    "send_once",
    "share_model_threads",
    "share_threads",
    "thread_budget",
]

# Every thread parameter name metalearn knows (also the names that tuning leaves out of
# its cache keys: a thread count never changes a fitted model's predictions).
_THREAD_PARAMS = ("n_jobs", "num_threads", "num_thread", "nthread", "nthreads", "thread_count")

# Per library, its thread parameters in the order the library itself reads them
# (LightGBM prefers ``num_threads`` and its aliases to the scikit-learn ``n_jobs``).
_LIBRARY_THREAD_PARAMS = {
    "lightgbm": ("num_threads", "num_thread", "nthread", "nthreads", "n_jobs"),
    "xgboost": ("nthread", "n_jobs"),
    "catboost": ("thread_count",),
}


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
    label: str = ""
    bins: Any = None  # the batch's binned features (metalearn.shared_lightgbm_bins), or None

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
    first = np.full(n_groups, -1, dtype=np.int64)
    first[groups[::-1]] = strata[::-1]
    if n_groups > _MANY_GROUPS and np.array_equal(first[groups], strata):
        # Every group lies in one stratum (bootstrap copies of a row; a treatment
        # assigned per group) and there are many groups: stratify the groups
        # themselves. StratifiedGroupKFold balances group sizes too, but its
        # search costs seconds per 10,000 groups; with many groups the sizes
        # average out anyway.
        skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=random_state)
        group_fold = np.empty(n_groups, dtype=np.intp)
        for f, (_, test) in enumerate(skf.split(np.zeros((n_groups, 1)), first)):
            group_fold[test] = f
        fold[:] = group_fold[groups]
        _check_folds_cover(fold, strata, n_folds, len(counts), what)
        return fold
    sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=random_state)
    with warnings.catch_warnings():
        # "The least populated class has only k members": checked above, per row.
        warnings.simplefilter("ignore", UserWarning)
        splits = list(sgkf.split(np.zeros((len(strata), 1)), strata, groups))
    for f, (_, test) in enumerate(splits):
        fold[test] = f
    _check_folds_cover(fold, strata, n_folds, len(counts), what)
    return fold


_MANY_GROUPS = 1000


def _check_folds_cover(
    fold: np.ndarray, strata: np.ndarray, n_folds: int, n_strata: int, what: str
) -> None:
    for f in range(n_folds):
        present = np.unique(strata[fold != f])
        if len(present) < n_strata:
            raise ValueError(
                f"With `groups`, the rows outside fold {f} lack a {what}: some {what}s occur "
                "in too few groups to train a model without every group of one fold (e.g. a "
                "treatment assigned to whole groups). Lower `n_folds` or pass finer groups."
            )


class TaskBuilder:
    """The one place where base-model fits become :class:`Task` objects.

    Every cross-fitted stage of the package (nuisance models, final stages,
    the S-learner, scoring and tuning stages, the ATE estimators' propensity
    models) builds its fits here, so that the seed of each fit
    (:func:`task_seed` of the stage's ``random_state`` and the fit's
    identity ``key``), LightGBM's ``categorical_feature``, the sample weights
    (and the check that the model takes them) and the thread counts
    (:func:`prepare_estimator`) are set one way.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        The converted features every task reads.
    categorical : sequence of int
        Categorical columns of ``X`` (told to models whose ``fit`` takes
        ``categorical_feature``).
    n_jobs : int or None
        Joblib workers of the stage.
    random_state : int or None
        The stage's seed; ``None`` leaves base models' own seeds alone.
    """

    def __init__(
        self, X: np.ndarray, categorical: Sequence[int], *, n_jobs: int | None, random_state: Any
    ) -> None:
        self.X = X
        self.categorical = list(categorical)
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.workers = n_workers(n_jobs)
        self.tasks: list[Task] = []

    def add(
        self,
        template: Any,
        train: np.ndarray,
        target: np.ndarray,
        *,
        key: tuple[int, ...],
        role: str,
        sample_weight: np.ndarray | None = None,
        predict_rows: np.ndarray | None = None,
        method: str = "predict",
        extra_columns: np.ndarray | None = None,
        predict_extra: Sequence[np.ndarray] = (),
        where: str = "",
    ) -> Task:
        """Add the fit of a clone of ``template`` on ``train`` (see :class:`Task`).

        ``key`` identifies the fit within the stage (its seed depends only on
        it); ``role`` names the model in errors (``"outcome_model"``, ...) and
        ``where`` says which of the stage's fits this is (``"variant 1, fold
        3"``): an exception raised by the model becomes a
        :class:`~metalearn.BaseModelError` that names both, with the model's
        exception chained (see :func:`run_tasks`).
        """
        if sample_weight is not None and not accepts_sample_weight(template):
            raise TypeError(
                f"`sample_weight` was given but `{role}` ({type(template).__name__}) does not "
                "accept it in fit: every base model must take the weights (an unweighted "
                "model would estimate another population's quantity). Use a model whose "
                "`fit` takes `sample_weight`."
            )
        label = f"`{role}` ({type(template).__name__}" + (f"; {where})" if where else ")")
        n_train = int(np.count_nonzero(train)) if train.dtype == bool else len(train)
        if n_train < 2:
            raise ValueError(
                f"`w`: the fit of {label} would train on {n_train} row(s); a model needs at "
                "least 2. A variant needs at least 2 rows, and with cross-fitting enough that "
                "every fold leaves 2 of them for training (with n_folds=2, at least 4 rows): "
                "lower `n_folds`, or collect more rows of that variant."
            )
        est = prepare_estimator(
            template, n_workers=self.workers, seed=task_seed(self.random_state, *key)
        )
        fit_params = (
            {"categorical_feature": self.categorical}
            if self.categorical and accepts_categorical(est)
            else {}
        )
        task = Task(
            estimator=est,
            train=train,
            target=target,
            sample_weight=sample_weight,
            predict_rows=predict_rows,
            method=method,
            extra_columns=extra_columns,
            predict_extra=list(predict_extra),
            fit_params=fit_params,
            label=label,
        )
        self.tasks.append(task)
        return task

    def run(self, desc: str) -> list[tuple[Any, list[np.ndarray] | None]]:
        """Fit every task added (one flat batch, :func:`run_tasks`); results in order."""
        return run_tasks(self.tasks, self.X, n_jobs=self.n_jobs, desc=desc)


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


# ------------------------------------------------------------------ thread budget
def available_cpus() -> int:
    """The number of CPUs this process may use: the package's one thread budget.

    :func:`joblib.cpu_count` (loky's count) takes the smallest of the host's
    CPUs, the process's CPU affinity (``taskset``, ``os.sched_setaffinity``),
    a cgroup CPU quota (Docker, Kubernetes limits) and the
    ``LOKY_MAX_CPU_COUNT`` environment variable. Should it fail, the CPU
    affinity (:func:`os.sched_getaffinity`) is used where the platform has
    one, and the host's count otherwise.

    Returns
    -------
    int
        At least 1.
    """
    try:
        count = int(joblib.cpu_count())
    except Exception:  # pragma: no cover - joblib always answers on supported platforms
        count = 0
    if count < 1:
        count = _affinity_cpus()
    return max(1, count)


def _affinity_cpus() -> int:
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            return len(getaffinity(0))
        except OSError:  # pragma: no cover
            pass
    return os.cpu_count() or 1


# How many ways the layers around the running code (tuning trials side by side) have
# divided the budget; a context variable, so each thread (trial) keeps its own.
_SHARE: ContextVar[int] = ContextVar("metalearn_thread_share", default=1)


def thread_budget() -> int:
    """The threads the running code may use: :func:`available_cpus` over the active shares.

    Outside :func:`share_threads` this is :func:`available_cpus`; inside
    ``share_threads(k)`` (nested: the product of the ``k``) it is
    ``max(1, available_cpus() // k)``.
    """
    return max(1, available_cpus() // _SHARE.get())


@contextmanager
def share_threads(n_workers: int) -> Iterator[int]:
    """Run the enclosed code as one of ``n_workers`` that share the thread budget.

    Used around work that runs side by side with other work (one tuning
    trial among ``n_workers`` trials in threads): every batch of fits
    inside divides ``thread_budget() // n_workers`` instead of the whole
    budget. The setting is local to the current thread (a context variable).

    Parameters
    ----------
    n_workers : int
        How many such pieces of work run side by side (values below 1 count as 1).

    Yields
    ------
    int
        The budget inside the block.
    """
    token = _SHARE.set(_SHARE.get() * max(1, int(n_workers)))
    try:
        yield thread_budget()
    finally:
        _SHARE.reset(token)


def _library(estimator: Any) -> str:
    return type(estimator).__module__.partition(".")[0]


def _thread_param(estimator: Any) -> str | None:
    """The name of ``estimator``'s own thread parameter (not a nested estimator's), if any."""
    if _inert_n_jobs(estimator) or not hasattr(estimator, "get_params"):
        return None
    lib = _library(estimator)
    params = estimator.get_params(deep=False)
    for name in _LIBRARY_THREAD_PARAMS.get(lib, _THREAD_PARAMS):
        if name in params:
            return name
    if lib == "catboost":
        return "thread_count"  # CatBoost lists only the parameters it was given
    return None


def _asks_all_cores(estimator: Any, name: str, value: Any) -> bool:
    """Whether ``name=value`` means "every core" by ``estimator``'s library's own semantics.

    LightGBM: ``None`` (its physical cores), ``0`` (the OpenMP default) and a
    negative count (joblib's ``n_cpus + 1 + n_jobs``). XGBoost: ``None`` and
    ``<= 0``. CatBoost: unset and ``-1``. scikit-learn and other joblib-style
    ``n_jobs``: a negative count only (``None`` is one thread). Other thread
    parameters: ``None`` and ``<= 0``.
    """
    lib = _library(estimator)
    if value is None:
        return lib in _LIBRARY_THREAD_PARAMS or name != "n_jobs"
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        return False
    if lib == "catboost" or (name == "n_jobs" and lib not in _LIBRARY_THREAD_PARAMS):
        return bool(value < 0)
    return bool(value <= 0)


def _thread_owners(estimator: Any) -> list[tuple[str, Any]]:
    """``(set_params prefix, estimator)`` for ``estimator`` and every estimator nested in it."""
    owners: list[tuple[str, Any]] = [("", estimator)]
    try:
        deep = estimator.get_params(deep=True)
    except Exception:  # pragma: no cover - an estimator with a broken get_params
        return owners
    seen = {id(estimator)}
    for key, value in deep.items():
        if hasattr(value, "get_params") and not isinstance(value, type) and id(value) not in seen:
            seen.add(id(value))
            owners.append((f"{key}__", value))
    return owners


def _thread_settings(estimator: Any) -> list[tuple[str, Any, bool]]:
    """``(set_params key, value, asks for every core)`` for each thread parameter inside."""
    if not hasattr(estimator, "get_params"):
        return []
    out = []
    for prefix, owner in _thread_owners(estimator):
        name = _thread_param(owner)
        if name is None:
            continue
        value = owner.get_params(deep=False).get(name)
        out.append((prefix + name, value, _asks_all_cores(owner, name, value)))
    return out


def _user_threads(estimator: Any) -> bool:
    """Whether ``estimator`` (or a model inside it) has a positive thread count."""
    return any(
        not auto
        and isinstance(value, int | np.integer)
        and not isinstance(value, bool)
        and value > 0
        for _, value, auto in _thread_settings(estimator)
    )


class _RuleThreads(NamedTuple):
    """Thread counts chosen by the thread rule: ``keys`` hold ``budget // (outer * width)``."""

    keys: tuple[str, ...]
    outer: int
    width: int


# The attribute that marks an estimator whose thread counts the rule chose (``clone``
# drops it, so a user's own estimator never carries it into a later fit).
_RULE_ATTR = "_metalearn_threads"


def _rule_of(estimator: Any) -> _RuleThreads | None:
    rule = getattr(estimator, "__dict__", {}).get(_RULE_ATTR)
    return rule if isinstance(rule, _RuleThreads) else None


def _set_rule_threads(estimator: Any, keys: tuple[str, ...], outer: int, width: int) -> None:
    threads = max(1, thread_budget() // (outer * width))
    estimator.set_params(**dict.fromkeys(keys, threads))
    with suppress(AttributeError):  # an estimator with __slots__ keeps explicit counts
        setattr(estimator, _RULE_ATTR, _RuleThreads(keys, outer, width))


def share_model_threads(model: Any, n_workers: int) -> Any:
    """Give ``model``'s every-core thread counts their share of ``n_workers`` side by side.

    The thread counts that ask for every core (by the model's library's own
    semantics, nested models included) become ``thread_budget() // n_workers``
    and are marked as the rule's, so that a learner fitting clones of
    ``model`` on its own workers divides them further (a count set by the
    user is kept). Calling it again replaces the share. The model is changed
    in place and returned.
    """
    if model is None or not hasattr(model, "get_params"):
        return model
    rule = _rule_of(model)
    keys = rule.keys if rule is not None else tuple(k for k, _, a in _thread_settings(model) if a)
    if keys:
        _set_rule_threads(model, keys, rule.outer if rule is not None else 1, max(1, n_workers))
    return model


def prepare_estimator(template: Any, *, n_workers: int, seed: int | None) -> Any:
    """Clone ``template``; set its thread counts by the thread rule and a missing random seed.

    Every thread parameter of the clone (nested models included) that asks
    for every core by its library's semantics gets ``thread_budget() //
    n_workers`` threads, explicitly (so one worker gives LightGBM the whole
    budget, not its own default); :func:`run_tasks` then divides by the
    workers actually busy. A template whose counts an outer layer chose
    (:func:`share_model_threads`, or an earlier ``prepare_estimator``) gets
    that layer's share divided by ``n_workers``. Positive counts set by the
    user are kept.
    """
    est = clone(template)
    rule = _rule_of(template)
    if rule is not None:
        keys, outer = rule.keys, rule.outer * rule.width
    else:
        keys, outer = tuple(k for k, _, auto in _thread_settings(est) if auto), 1
    params = est.get_params(deep=False)
    if seed is not None and "random_state" in params and params["random_state"] is None:
        est.set_params(random_state=seed)
    if keys:
        _set_rule_threads(est, keys, outer, max(1, n_workers))
    return est


def n_workers(n_jobs: int | None) -> int:
    """Effective number of joblib workers for ``n_jobs`` under the active backend.

    ``n_jobs=-1`` counts joblib's CPUs, i.e. :func:`available_cpus`.
    """
    try:
        return max(1, int(effective_n_jobs(n_jobs)))
    except Exception:  # pragma: no cover - exotic backends
        return 1


class _ProcessWideLimit:
    """One BLAS limit for the whole process while any batch that asked for one runs.

    BLAS thread pools (OpenBLAS, MKL) are process-wide: batches running at
    once in several threads (tuning trials) share one limit, set by the first
    and restored by the last, so that no batch restores the original limit
    while another still runs. OpenMP limits are per thread and set in each
    worker instead (:func:`_openmp_limit`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._current = 0
        self._restore: Any = None

    @contextmanager
    def __call__(self, threads: int | None) -> Iterator[None]:
        if threads is None:
            yield
            return
        with self._lock:
            if self._users == 0:
                self._restore = _controller().limit(limits=threads, user_api="blas")
                self._current = threads
            elif threads < self._current:
                _controller().limit(limits=threads, user_api="blas")
                self._current = threads
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._restore is not None:
                    self._restore.restore_original_limits()
                    self._restore = None


_blas_limit = _ProcessWideLimit()
_CONTROLLER: list[Any] = []  # [threadpoolctl controller, len(sys.modules) when built]


def _controller() -> Any:
    """A threadpoolctl controller, rebuilt when modules were imported since the last.

    Building one scans every loaded shared library (tens of milliseconds), too
    slow for each of many small fits; a newly imported package may bring its
    own OpenMP or BLAS, hence the rebuild.
    """
    from threadpoolctl import ThreadpoolController

    if not _CONTROLLER or _CONTROLLER[1] != len(sys.modules):
        _CONTROLLER[:] = [ThreadpoolController(), len(sys.modules)]
    return _CONTROLLER[0]


@contextmanager
def _openmp_limit(threads: int | None) -> Iterator[None]:
    """Limit OpenMP in the current thread (OpenMP's thread count is per thread)."""
    if threads is None:
        yield
        return
    with _controller().limit(limits=threads, user_api="openmp"):
        yield


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
    every = _is_every_row(rows, X.shape[0])
    if extra is None:
        # A model fitted on every row reads X itself: no copy of the features.
        return X if every else X[rows]
    extra_rows = extra[rows] if extra.shape[0] == X.shape[0] and not every else extra
    p = X.shape[1]
    out = np.empty((len(rows), p + extra_rows.shape[1]), dtype=np.result_type(X, extra_rows))
    if every:
        out[:, :p] = X
    else:
        for start in range(0, len(rows), _CHUNK_ROWS):
            block = rows[start : start + _CHUNK_ROWS]
            out[start : start + len(block), :p] = X[block]
    out[:, p:] = extra_rows
    return out


def _is_every_row(rows: np.ndarray, n: int) -> bool:
    """Whether ``rows`` is ``0, 1, ..., n-1`` (every row of X, in order)."""
    if len(rows) != n or n == 0:
        return False
    if rows.dtype == bool or rows[0] != 0 or rows[-1] != n - 1:
        return False
    return bool(np.array_equal(rows, np.arange(n, dtype=rows.dtype)))


def _rows_of(values: np.ndarray, train: np.ndarray, n: int) -> np.ndarray:
    """``values`` for the training rows: indexed when given for all ``n`` rows of X."""
    if values.shape[0] == n and len(train) != n:
        return values[train]
    return values


def _run_one(
    task: Task, X: np.ndarray, threads: int | None = None
) -> tuple[Any, list[np.ndarray] | None]:
    """Fit (and predict) one task; ``threads`` caps OpenMP in this thread meanwhile."""
    with _openmp_limit(threads):
        try:
            return _fit_predict(task, X)
        except BaseModelError:
            raise  # a nested batch already said which fit failed
        except Exception as exc:
            # Which fit failed (model parameter, stage, variant, fold), with the model's own
            # exception chained. BaseExceptions (KeyboardInterrupt, the scorer's
            # TreatmentNotRoutedError) pass through as they are.
            if not task.label:
                raise
            raise wrap_base_model_error(exc, task.label) from exc


def _fit_predict(task: Task, X: np.ndarray) -> tuple[Any, list[np.ndarray] | None]:
    est = task.estimator
    target = _rows_of(task.target, task.train, X.shape[0])
    weight = (
        None if task.sample_weight is None else _rows_of(task.sample_weight, task.train, X.shape[0])
    )
    if task.bins is not None:  # train on a subset of the batch's binned X: no copy of rows
        from metalearn._core.lgbm_bins import fit_on_bins

        fit_on_bins(est, task.bins, task.train, target, weight, task.fit_params)
    else:
        Xt = _with_extra(X, task.train, task.extra_columns)
        kwargs = dict(task.fit_params)
        if weight is not None:
            kwargs["sample_weight"] = weight
        est.fit(Xt, target, **kwargs)
        del Xt  # the training copy goes before the held-out rows are gathered
    preds = None
    if task.predict_rows is not None:
        predict = getattr(est, task.method)
        rows = task.predict_rows
        if task.predict_extra:
            # The held-out rows are gathered once; each variant's indicator block is
            # written over the extra columns of that one matrix in turn.
            p = X.shape[1]
            Xp = _with_extra(X, rows, task.predict_extra[0])
            preds = []
            for i, e in enumerate(task.predict_extra):
                if i:
                    Xp[:, p:] = e[rows] if e.shape[0] == X.shape[0] else e
                preds.append(np.asarray(predict(Xp), dtype=np.float64))
        else:
            preds = [np.asarray(predict(X[rows]), dtype=np.float64)]
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

    Threads follow the module's thread rule: base models whose thread count
    the rule chose (:func:`prepare_estimator`) get the budget divided among the
    fits that run side by side, explicitly; base models without a thread
    count (neither the rule's nor the user's) fit under an OpenMP/BLAS limit
    at the same count when fits run side by side. When every task is one of
    those and the batch does not split into full rounds of the workers (5 fold
    fits on 2 workers), the last, incomplete round runs after the others with
    the budget divided among its own fits instead of leaving workers idle.

    ``desc`` names the batch in progress reports (:func:`metalearn.progress`).

    A task whose model raises an :class:`Exception` stops the batch with a
    :class:`~metalearn.BaseModelError` naming the task's ``label`` (model
    parameter, class, stage, variant, fold), raised ``from`` the model's
    exception; it is also an instance of that exception's class where the two
    classes combine. Other :class:`BaseException` (``KeyboardInterrupt``)
    pass through unchanged.
    """
    if not tasks:
        return []
    busy = min(n_workers(n_jobs), len(tasks))
    rules = [_pop_rule(t.estimator) for t in tasks]
    limitable = [
        r is None and not _user_threads(t.estimator) for t, r in zip(tasks, rules, strict=True)
    ]
    adjustable = all(r is not None or lim for r, lim in zip(rules, limitable, strict=True))
    tail = len(tasks) % busy if adjustable else 0
    head = len(tasks) - tail
    budget = thread_budget()
    for i, (t, rule) in enumerate(zip(tasks, rules, strict=True)):
        if rule is not None:  # counts chosen by the thread rule, not by the user
            width = busy if i < head else tail
            threads = max(1, budget // (rule.outer * width))
            t.estimator.set_params(**dict.fromkeys(rule.keys, threads))
    # Other work runs beside this batch (tuning trials): limit even a batch of one width.
    shared = _SHARE.get() > 1
    reporting = _progress.current() is not None
    on_dask = dask_client() is not None
    _share_bins(tasks, X, on_dask)

    def run(lo: int, hi: int, width: int) -> Iterator[tuple[Any, list[np.ndarray] | None]]:
        part = tasks[lo:hi]
        cap = max(1, budget // width) if width > 1 or shared else None
        caps = [cap if limitable[i] else None for i in range(lo, hi)]
        with _blas_limit(cap if any(c is not None for c in caps) else None):
            if width == 1:
                yield from (_run_one(t, X, c) for t, c in zip(part, caps, strict=True))
                return
            # A generator lets the progress bar advance as fits finish (still in task order).
            yield from Parallel(
                n_jobs=n_jobs, prefer="threads", return_as="generator" if reporting else "list"
            )(_delayed_task(t, X, c, on_dask) for t, c in zip(part, caps, strict=True))

    parts = [(0, head, busy), (head, len(tasks), tail)] if tail else [(0, len(tasks), busy)]
    results = (r for lo, hi, width in parts for r in run(lo, hi, width))
    out = _progress.track(results, len(tasks), desc, labels=[t.label for t in tasks])
    _release_free_memory(X)
    return out


def _share_bins(tasks: list[Task], X: np.ndarray, on_dask: bool) -> None:
    """Under :func:`metalearn.shared_lightgbm_bins`, give eligible fits the batch's bins."""
    from metalearn._core import lgbm_bins

    if on_dask or not lgbm_bins.shared_bins_enabled():
        return  # a Dask worker cannot share this process's binned copy
    chosen = [
        t
        for t in tasks
        if t.bins is None
        and lgbm_bins.eligible(t.estimator, t.extra_columns)
        and (t.train.dtype != bool)
    ]
    if len(chosen) < 2:
        return  # one fit gains nothing from bins it alone reads
    bins = lgbm_bins.SharedBins(X, list(chosen[0].fit_params.get("categorical_feature", [])))
    for t in chosen:
        t.bins = bins


# Task fields that may hold an array shared by the stage's tasks (one for every row of X).
_ARRAY_FIELDS = ("target", "sample_weight", "extra_columns")


def _delayed_task(task: Task, X: np.ndarray, threads: int | None, on_dask: bool) -> Any:
    """The joblib call of one task, its large arrays passed as arguments of their own.

    Under the local backends this is the task as it is. Under joblib's Dask
    backend, the stage's shared arrays (``X``, and a ``target``, weights or
    indicator block given for every row) travel as separate arguments, which
    the backend sends to the cluster once per batch, however many tasks read
    them (it scatters each large argument once and passes its future), instead
    of once inside every pickled task. Row indices and the estimator stay in
    the task.
    """
    if not on_dask:
        return delayed(_run_one)(task, X, threads)
    # joblib scatters top-level arguments only: each array is one argument of its own.
    stub = copy.copy(task)
    arrays = [getattr(task, name) for name in _ARRAY_FIELDS]
    for name in _ARRAY_FIELDS:
        setattr(stub, name, None)
    stub.predict_extra = []
    return delayed(_run_sent)(stub, threads, X, *arrays, *task.predict_extra)


def _run_sent(
    stub: Task, threads: int | None, X: np.ndarray, *arrays: np.ndarray | None
) -> tuple[Any, list[np.ndarray] | None]:
    """:func:`_run_one` on a Dask worker: the task rebuilt from the arrays sent apart."""
    n = len(_ARRAY_FIELDS)
    task = copy.copy(stub)
    task.predict_extra = [a for a in arrays[n:] if a is not None]
    for name, value in zip(_ARRAY_FIELDS, arrays[:n], strict=True):
        setattr(task, name, value)
    return _run_one(task, X, threads)


def dask_client() -> Any | None:
    """The Dask client of joblib's active backend, or ``None`` under any other backend."""
    from joblib.parallel import get_active_backend

    try:
        backend, _ = get_active_backend()
    except Exception:  # pragma: no cover - a misconfigured backend fails in Parallel itself
        return None
    if type(backend).__name__ != "DaskDistributedBackend":
        return None
    return getattr(backend, "client", None)


def send_once(obj: Any) -> Any:
    """``obj`` itself, or under joblib's Dask backend a future of it on the cluster.

    For an argument that many calls of one joblib batch read and that joblib
    would otherwise pickle into every call (an object holding the training
    data, e.g. a search's evaluator): it goes to the cluster once, and each
    call receives the future, which Dask resolves on the worker.
    """
    client = dask_client()
    if client is None:
        return obj
    return client.scatter(obj, hash=False)


def _pop_rule(estimator: Any) -> _RuleThreads | None:
    """The rule's mark on a task's estimator, removed (a fitted model does not carry it)."""
    rule = getattr(estimator, "__dict__", {}).pop(_RULE_ATTR, None)
    return rule if isinstance(rule, _RuleThreads) else None


def _predict_one(model: Any, Xp: np.ndarray, method: str, threads: int | None = None) -> np.ndarray:
    with _openmp_limit(threads):
        return np.asarray(getattr(model, method)(Xp), dtype=np.float64)


def _augmented(X: np.ndarray, extra: np.ndarray | None) -> np.ndarray:
    return X if extra is None else np.hstack([X, extra])


_PARALLEL_PREDICT_ROWS = 50_000


def predict_models(
    jobs: Sequence[tuple[Any, str, np.ndarray | None]], X: np.ndarray, *, n_jobs: int | None
) -> list[np.ndarray]:
    """Predict ``X`` with many fitted models (``(model, method, extra_columns)``), in order.

    Jobs that share one ``extra_columns`` array (the same object: a variant's
    indicator block, read by every fold model) share one augmented matrix,
    built once. Predictions run side by side only for large ``X``: below
    ``_PARALLEL_PREDICT_ROWS`` rows a prediction takes less time than
    starting the workers.
    """
    # Jobs grouped by their extra columns, in order of first appearance.
    groups: dict[int, list[int]] = {}
    for i, (_, _, e) in enumerate(jobs):
        groups.setdefault(-1 if e is None else id(e), []).append(i)
    if n_workers(n_jobs) == 1 or len(jobs) == 1 or X.shape[0] < _PARALLEL_PREDICT_ROWS:
        out: list[Any] = [None] * len(jobs)
        for idx in groups.values():
            Xp = _augmented(X, jobs[idx[0]][2])  # one matrix at a time
            for i in idx:
                m, meth, _ = jobs[i]
                out[i] = _predict_one(m, Xp, meth)
            del Xp
        return out
    mats = {key: _augmented(X, jobs[idx[0]][2]) for key, idx in groups.items()}
    keys = [-1 if e is None else id(e) for _, _, e in jobs]
    # Models without a thread count of their own predict under the thread rule's limit.
    cap = max(1, thread_budget() // min(n_workers(n_jobs), len(jobs)))
    caps = [None if _user_threads(m) else cap for m, _, _ in jobs]
    with _blas_limit(cap if any(c is not None for c in caps) else None):
        return list(
            Parallel(n_jobs=n_jobs, prefer="threads")(
                delayed(_predict_one)(m, mats[key], meth, c)
                for (m, meth, _), key, c in zip(jobs, keys, caps, strict=True)
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
