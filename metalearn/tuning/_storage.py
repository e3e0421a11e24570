"""Optuna storages for several workers: opening, creating studies, and the trial budget.

* :func:`open_storage` turns the ``storage`` of a search (or the CLI's
  ``--storage``) into an Optuna storage, after checking a file path (a
  directory, a missing or read-only parent directory) so that a bad one
  fails with a clear error before any fitting. A database URL gets Optuna's
  heartbeat, and its creation is retried on the schema-creation race of
  several workers starting at once on a fresh database.
* :func:`create_or_load_study` creates a study or loads the one another
  worker created, and says which, so that only the creator enqueues the
  default trial.
* :class:`TrialBudget` runs a study until it holds exactly ``n_trials``
  finished (complete or pruned) trials, all workers together; it detects
  trials left running by a killed worker (Optuna's heartbeat on database
  storages, a heartbeat of its own on the others), fails them and queues
  them again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metalearn.tuning._spaces import import_optuna

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import FrozenTrial, Trial

__all__ = [
    "DROPPED_ATTR",
    "ERROR_ATTR",
    "HEARTBEAT_ATTR",
    "DroppedTrial",
    "TrialBudget",
    "TrialFitError",
    "create_or_load_study",
    "describe_error",
    "fit_errors",
    "open_storage",
]

HEARTBEAT_ATTR = "metalearn_heartbeat"  # seconds since the epoch of a trial's last heartbeat
DROPPED_ATTR = "metalearn_dropped"  # why a surplus trial was dropped
ERROR_ATTR = "error"  # the error of a failed trial
MAX_RETRY = 3  # times a trial left running by a killed worker is queued again
_SQLITE_MAGIC = b"SQLite format 3\x00"
_ATTEMPTS = 8  # storage and study creation: tries on a race with another worker


# ------------------------------------------------------------------ opening
def _sqlite_file(url: str) -> str | None:
    """The database file of an SQLite URL (None: not SQLite, or in memory)."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # not a URL SQLAlchemy reads: opening it reports the error
        return None
    if parsed.get_backend_name() != "sqlite":
        return None
    db = parsed.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return db


def _check_parent(path: Path, label: str, what: str, lead: str) -> None:
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(
            f"{label}: {lead}directory {str(parent)!r} of the {what} does not exist; create it "
            "first or give a path in an existing directory."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(
            f"{label}: {lead}directory {str(parent)!r} of the {what} is not writable (the "
            "storage writes its lock and journal files there); give a path in a writable "
            "directory."
        )
    if path.is_file() and not os.access(path, os.R_OK | os.W_OK):
        raise ValueError(
            f"{label}: {lead}the {what} {str(path)!r} is not writable; give a path you may "
            "write to."
        )


def check_storage_path(spec: str, label: str = "`storage`") -> None:
    """Check the file of a journal path or an SQLite URL; raise ``ValueError`` naming ``label``."""
    if "://" in spec:
        db = _sqlite_file(spec)
        if db is None:
            return
        path = Path(db)
        if path.is_dir():
            raise ValueError(
                f"{label}: {spec!r} names a directory, not an SQLite database file; give a file "
                f"in it, e.g. sqlite:///{path / 'tune.db'}"
            )
        _check_parent(path, label, "SQLite database", f"could not open {spec!r}: ")
        return
    path = Path(spec)
    if path.is_dir():
        raise ValueError(
            f"{label}: {spec!r} is a directory; give a journal file path such as "
            f"{str(path / 'tune.log')!r}, or a database URL such as "
            f"sqlite:///{path / 'tune.db'}"
        )
    _check_parent(path, label, "journal file", "")
    if path.is_file():
        with path.open("rb") as fh:
            if fh.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC:
                raise ValueError(
                    f"{label}: {spec!r} is an SQLite database, not a journal file; pass it as a "
                    f"URL: sqlite:///{path}"
                )


def _retry(make: Callable[[], Any], errors: tuple[type[BaseException], ...]) -> Any:
    """``make()``, tried again after a short random pause on ``errors`` (a race)."""
    jitter = random.Random()
    delay = 0.05
    for attempt in range(_ATTEMPTS):
        try:
            return make()
        except errors:
            if attempt == _ATTEMPTS - 1:
                raise
            time.sleep(delay * (1.0 + jitter.random()))
            delay = min(2.0 * delay, 1.0)
    raise AssertionError("unreachable")  # pragma: no cover


def _rdb_storage(url: str, heartbeat_interval: int | None, grace_period: int | None) -> Any:
    """An ``RDBStorage`` of ``url`` with Optuna's heartbeat, built despite creation races.

    Workers that start together on a fresh database all try to create its
    tables and version rows; the losers get ``OperationalError`` ("table
    already exists") or ``IntegrityError``. The tables exist after the
    winner's try, so a second try finds them.
    """
    optuna = import_optuna()
    from sqlalchemy import exc as sa_exc

    kwargs: dict[str, Any] = {}
    if _sqlite_file(url) is not None or url.startswith("sqlite"):
        # Several writers: wait for SQLite's lock up to 30 s instead of 5 s.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 30}}
    if heartbeat_interval is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        kwargs.update(
            heartbeat_interval=int(heartbeat_interval),
            grace_period=None if grace_period is None else int(grace_period),
            heartbeat_stale_trial_callback=retry,
        )

    def make() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, **kwargs)

    return _retry(make, (sa_exc.OperationalError, sa_exc.IntegrityError))


def open_storage(
    storage: Any,
    *,
    label: str = "`storage`",
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
) -> Any:
    """The Optuna storage of ``storage``: ``None`` (in memory), a URL, a journal path, an object.

    A URL or a path is checked (see :func:`check_storage_path`), opened and
    read, so that a bad one fails here, before any fitting, with a
    ``ValueError`` naming ``label``. A database URL gets Optuna's heartbeat
    (``heartbeat_interval``, ``grace_period``) and its killed trials are
    queued again; a storage object is returned as it is.
    """
    if storage is None or not isinstance(storage, str | os.PathLike):
        return storage
    optuna = import_optuna()
    spec = os.fspath(storage)
    check_storage_path(spec, label)
    try:
        if "://" in spec:
            opened = _rdb_storage(spec, heartbeat_interval, grace_period)
        else:
            from optuna.storages.journal import JournalFileBackend

            opened = optuna.storages.JournalStorage(JournalFileBackend(spec))
        optuna.study.get_all_study_names(opened)
    except Exception as exc:  # any driver's error: a bad URL, a missing driver, no access
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise ValueError(f"{label}: could not open {spec!r}: {first}") from exc
    return opened


def create_or_load_study(
    storage: Any,
    *,
    study_name: str,
    directions: list[str],
    sampler: Any,
    pruner: Any,
    load_if_exists: bool,
) -> tuple[Study, bool]:
    """The study ``study_name``, and whether this call created it.

    Several workers may create the same study at once: one wins, the others
    load it (the storage rejects the duplicate name). Only the creator
    enqueues the default trial, so it runs once per study.
    """
    optuna = import_optuna()
    transient: tuple[type[BaseException], ...] = (optuna.exceptions.StorageInternalError,)
    with contextlib.suppress(ImportError):
        from sqlalchemy import exc as sa_exc

        transient = (*transient, sa_exc.OperationalError)

    def make() -> tuple[Study, bool]:
        try:
            study = optuna.create_study(
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                study_name=study_name,
                directions=directions,
                load_if_exists=False,
            )
            return study, True
        except optuna.exceptions.DuplicatedStudyError:
            if not load_if_exists:
                raise
        loaded = optuna.load_study(
            study_name=study_name, storage=storage, sampler=sampler, pruner=pruner
        )
        return loaded, False

    return _retry(make, transient)  # type: ignore[no-any-return]


def describe_error(exc: BaseException) -> str:
    """``Type: message``, with the notes a failing base model's error carries."""
    text = f"{type(exc).__name__}: {exc}".strip()
    notes = getattr(exc, "__notes__", None) or []
    if notes:
        text += " (" + "; ".join(str(n) for n in notes) + ")"
    return text


# ------------------------------------------------------------------- budget
class DroppedTrial(Exception):
    """A trial started past the budget by a race between workers; it is failed, unscored."""


class TrialFitError(Exception):
    """The fit of a trial's candidate raised: the trial fails and the study goes on."""


@contextlib.contextmanager
def fit_errors() -> Iterator[None]:
    """Turn an error of a trial's fit into :class:`TrialFitError` (pruning passes through).

    Only the fit is wrapped: a bad search space or setting raises as it is
    and stops the search.
    """
    optuna = import_optuna()
    try:
        yield
    except optuna.TrialPruned:
        raise
    except Exception as exc:
        raise TrialFitError(describe_error(exc)) from exc


class _QuietDrops(logging.Filter):
    """Optuna logs a dropped trial as a failure: keep the one line, not the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, DroppedTrial):
            record.exc_info = None
            record.exc_text = None
        return True


_QUIET = _QuietDrops()


def _quiet_drops() -> None:
    logger = logging.getLogger("optuna.study._optimize")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)


def heartbeat_mode(storage: Any, heartbeat_interval: int | None) -> str:
    """How trials left running by a killed worker are found on ``storage``.

    ``"memory"``: in memory (no other process; nothing to find);
    ``"native"``: the storage's own heartbeat (an ``RDBStorage`` with one);
    ``"own"``: metalearn's heartbeat, a trial attribute renewed every
    ``heartbeat_interval`` seconds (journal files, other storages);
    ``"none"``: not found (``heartbeat_interval=None``).
    """
    optuna = import_optuna()
    if storage is None or isinstance(storage, optuna.storages.InMemoryStorage):
        return "memory"
    native = getattr(storage, "get_heartbeat_interval", None)
    if callable(native) and native() is not None:
        return "native"
    return "none" if heartbeat_interval is None else "own"


class TrialBudget:
    """Runs a study until it holds ``n_trials`` finished trials, all workers together.

    *Finished* is complete or pruned. Failed trials do not count: a trial
    whose fit raised, a trial of a killed worker (failed once its heartbeat
    is ``grace_period`` seconds old, and queued again up to ``MAX_RETRY``
    times), and a trial dropped because other workers filled the budget
    first. A worker stops after ``max_failures`` failed trials of its own.

    Before each trial a worker counts the finished and running trials; when
    running ones (of any worker) would fill the budget, it waits for them,
    since one of them may still fail and need replacing, unless killed
    trials cannot be detected (``mode="none"``), where it stops instead. Two
    workers that start a trial for the last slot at the same moment are told
    apart by trial number once their trials exist: the higher number waits
    for the lower one and is dropped if that one finishes.
    """

    def __init__(
        self,
        study: Study,
        n_trials: int,
        *,
        mode: str,
        heartbeat_interval: int | None,
        grace_period: int | None,
        timeout: float | None,
        max_failures: int,
        min_trials: int = 0,
    ) -> None:
        self.study = study
        self.n_trials = int(n_trials)
        self.mode = mode
        self.interval = float(heartbeat_interval or 0)
        self.grace = float(
            grace_period if grace_period is not None else 2 * (heartbeat_interval or 0)
        )
        self.can_wait = mode != "none"
        self.poll = 0.1 if mode == "memory" else min(1.0, max(0.1, self.interval / 4))
        self.deadline = None if timeout is None else time.monotonic() + float(timeout)
        self.min_trials = int(min_trials)
        self.max_failures = int(max_failures)
        self.failures = 0
        self.stopped = threading.Event()
        self._lock = threading.Lock()

    # -- counting
    def time_left(self) -> float | None:
        """Seconds until the timeout; ``None`` without one or before ``min_trials`` finished."""
        if self.deadline is None or self._finished() < self.min_trials:
            return None
        return self.deadline - time.monotonic()

    def _finished(self) -> int:
        if self.min_trials <= 0:
            return 0
        optuna = import_optuna()
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return sum(t.state in done for t in self._trials())

    def _expired(self) -> bool:
        left = self.time_left()
        return left is not None and left <= 0

    def _trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def fail_stale(self) -> None:
        """Fail (and queue again) the running trials whose heartbeat is too old."""
        optuna = import_optuna()
        if self.mode == "native":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            # A worker killed between the start of a trial and its first native heartbeat
            # leaves a running trial the storage has no heartbeat of, which Optuna never
            # fails: the trial's own heartbeat attribute (or its start) decides then.
            if self.interval <= 0 or self.grace <= 0:
                return  # a storage object's own heartbeat settings: nothing of ours to read
        elif self.mode != "own":
            return
        state = optuna.trial.TrialState
        now = time.time()
        for t in self.study.get_trials(deepcopy=False, states=(state.RUNNING,)):
            stamps = [t.user_attrs.get(HEARTBEAT_ATTR)]
            if t.datetime_start is not None:  # local time, as the storages record it
                stamps.append(t.datetime_start.timestamp())
            alive = max((float(s) for s in stamps if s is not None), default=now)
            if now - alive <= self.grace:
                continue
            try:
                self.study.tell(t.number, state=state.FAIL)
            except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # another worker failed it first (or it just finished)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
            retry(self.study, self.study.get_trials(deepcopy=False)[t.number])

    def next_free(self) -> int:
        """Slots a worker may start trials in now, after waiting if others hold them (0: stop)."""
        optuna = import_optuna()
        state = optuna.trial.TrialState
        while True:
            if self.stopped.is_set() or self._expired():
                return 0
            self.fail_stale()
            trials = self._trials()
            done = sum(t.state in (state.COMPLETE, state.PRUNED) for t in trials)
            running = sum(t.state == state.RUNNING for t in trials)
            if done >= self.n_trials:
                return 0
            free = self.n_trials - done - running
            if free > 0:
                return free
            if not self.can_wait:
                return 0
            time.sleep(self.poll)

    def admit(self, trial: Trial) -> None:
        """Let ``trial`` run, wait for lower-numbered trials, or drop it (the budget is full)."""
        optuna = import_optuna()
        state = optuna.trial.TrialState
        number = trial.number
        while True:
            trials = self._trials()
            done = sum(t.state in (state.COMPLETE, state.PRUNED) for t in trials)
            ahead = sum(
                t.state in (state.RUNNING, state.WAITING) and t.number < number for t in trials
            )
            waiting = sum(t.state == state.WAITING and t.number < number for t in trials)
            if done + ahead < self.n_trials:
                return
            if done + waiting >= self.n_trials or not self.can_wait or self._expired():
                reason = (
                    f"the study already had its {self.n_trials} trials finished or queued when "
                    "this trial started (a race between workers); it was dropped unscored"
                )
                trial.set_user_attr(DROPPED_ATTR, reason)
                raise DroppedTrial(reason)
            self.fail_stale()
            time.sleep(self.poll)

    # -- running
    @contextlib.contextmanager
    def heartbeat(self, trial: Trial) -> Iterator[None]:
        """Renew the trial's heartbeat attribute every ``heartbeat_interval`` s (``mode="own"``,
        and beside the storage's own heartbeat in ``mode="native"``, see :meth:`fail_stale`)."""
        if self.mode not in ("own", "native") or self.interval <= 0:
            yield
            return
        stop = threading.Event()

        def beat() -> None:
            while True:
                try:
                    trial.set_user_attr(HEARTBEAT_ATTR, time.time())
                except Exception:  # the trial is finished (failed by another worker)
                    return
                if stop.wait(self.interval):
                    return

        thread = threading.Thread(target=beat, name=f"metalearn-heartbeat-{trial.number}")
        thread.daemon = True
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def wrap(self, objective: Callable[[Trial], Any]) -> Callable[[Trial], Any]:
        """``objective`` behind the budget check, the heartbeat and the error record."""
        import numpy as np

        def run(trial: Trial) -> Any:
            with self.heartbeat(trial):
                self.admit(trial)
                try:
                    value = objective(trial)
                except TrialFitError as exc:
                    with contextlib.suppress(Exception):
                        trial.set_user_attr(ERROR_ATTR, str(exc))
                    raise
            values = value if isinstance(value, list | tuple) else [value]
            if not all(np.isfinite(float(v)) for v in values):
                trial.set_user_attr(ERROR_ATTR, f"the trial scored {value!r}")
            return value

        return run

    def after_trial(self, study: Study, trial: FrozenTrial) -> None:
        """Optuna callback: count this worker's failures; stop, go on, or wait for a slot."""
        optuna = import_optuna()
        if trial.state == optuna.trial.TrialState.FAIL and DROPPED_ATTR not in trial.user_attrs:
            with self._lock:
                self.failures += 1
                give_up = self.failures >= self.max_failures
            if give_up:
                self.stopped.set()
        if self.next_free() == 0:
            self.stopped.set()
            study.stop()

    def run(
        self,
        objective: Callable[[Trial], Any],
        *,
        n_jobs: int,
        show_progress_bar: bool,
    ) -> None:
        """Optimize until the budget is met, this worker gave up, or the time is out."""
        optuna = import_optuna()
        _quiet_drops()
        wrapped = self.wrap(objective)
        while True:
            free = self.next_free()
            left = self.time_left()
            if free == 0 or (left is not None and left <= 0):
                return
            if left is None and self.deadline is not None:
                # Below `min_trials`: those trials first, with no timeout; then the rest.
                free = min(free, max(1, self.min_trials - self._finished()))
            try:
                self.study.optimize(
                    wrapped,
                    n_trials=free,
                    timeout=left,
                    n_jobs=max(1, min(int(n_jobs), free)),
                    catch=(DroppedTrial, TrialFitError),
                    callbacks=[self.after_trial],
                    show_progress_bar=show_progress_bar,
                )
            except optuna.exceptions.UpdateFinishedTrialError as exc:
                warnings.warn(
                    f"A trial of this worker was failed by another worker while it ran ({exc}); "
                    "its heartbeat was older than `grace_period`. Raise `grace_period` if the "
                    "machine is busy.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            except ValueError as exc:
                # Two workers on SQLite may both take the same queued trial (the enqueued
                # defaults): the one that reports second finds it finished. Its result is
                # the same trial's; the study keeps the first, and this worker goes on.
                if not str(exc).startswith("Cannot tell a "):
                    raise
            if self.stopped.is_set():
                return
