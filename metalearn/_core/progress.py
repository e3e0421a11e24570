"""Progress reports for long batches: cross-fitting stages and bootstrap replicates.

Off by default. :func:`progress` switches them on for the code inside a ``with``
block; every batch of model fits (one per cross-fitting stage) and every
bootstrap run then draws a one-line bar on ``stderr`` (or the given stream).
On a terminal the line is redrawn as fits finish, with an estimate of the
time left (once a few fits are done), the model being fitted and the stage
of the enclosing work (``candidate 3/12`` in a search); elsewhere (logs,
notebooks captured to files) one summary line is written when the batch
ends, so logs stay short. No third-party progress package is needed.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import IO, Any

__all__ = ["progress", "stage", "candidates"]


@dataclass(frozen=True)
class _Settings:
    stream: IO[str] | None
    live: bool | None


_ACTIVE: ContextVar[_Settings | None] = ContextVar("metalearn_progress", default=None)
# The stage of the enclosing work ("candidate 3/12"), shown on a terminal's bars.
_STAGE: ContextVar[str | None] = ContextVar("metalearn_progress_stage", default=None)


@contextmanager
def progress(enabled: bool = True, *, file: IO[str] | None = None) -> Iterator[None]:
    """Report progress of model fits and bootstrap replicates inside a ``with`` block.

    Each batch of base-model fits (the nuisance stage, the final stage of a
    learner, the stage fits of a search) and each :func:`bootstrap_cate` run
    writes a bar such as ``metalearn: nuisance models [#######.....] 7/10 2.1 s``.
    On a terminal the line also shows the time left (once a few fits are
    done), the model being fitted and, in a search, the candidate:
    ``metalearn: candidate 3/12: nuisance models [...] 7/10 2.1 s, about 0.9 s
    left | propensity_model (LogisticRegression; fold 2)``.

    Parameters
    ----------
    enabled : bool, default=True
        ``False`` silences reports inside the block (for code nested in an
        enabled block).
    file : text stream, default=None
        Where to write; ``None`` means ``sys.stderr`` at the time of writing.
        A terminal gets a line redrawn as fits finish; any other stream gets
        one line per batch when it ends.

    Examples
    --------
    >>> import io
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> X, w, y, tau, *_ = ml.datasets.simulate_nie_wager("B", n=400, seed=0)
    >>> log = io.StringIO()
    >>> with ml.progress(file=log):
    ...     _ = ml.TLearner(outcome_model=LinearRegression(), random_state=0).fit_predict(X, y, w)
    >>> print(log.getvalue().splitlines()[0].split(" [")[0])
    metalearn: nuisance models
    """
    token = _ACTIVE.set(_Settings(stream=file, live=None) if enabled else None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


class Bar:
    """A text progress bar for ``total`` units of work (see :func:`progress`).

    ``labels`` names the units (the model of each fit, in order): a terminal's
    line shows the one in progress, after the stage of the enclosing work
    (:func:`stage`) and the estimated time left, which appears once
    ``min(ETA_AFTER, total - 1)`` units are done. ``clock`` returns seconds
    (injectable for tests). The one line written off a terminal keeps the
    plain ``metalearn: <desc> [bar] done/total <seconds> s``.
    """

    _WIDTH = 24
    ETA_AFTER = 3

    def __init__(
        self,
        total: int,
        desc: str,
        settings: _Settings,
        *,
        labels: Sequence[str] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total = int(total)
        self.desc = desc
        self.done = 0
        self.labels = list(labels) if labels is not None else []
        self.stage = _STAGE.get()
        self._clock = clock
        self._stream = settings.stream if settings.stream is not None else sys.stderr
        isatty = getattr(self._stream, "isatty", None)
        self._live = bool(isatty()) if callable(isatty) else False
        self._drawn = 0
        self._start = clock()
        if self._live:
            self._draw(end="")

    @property
    def elapsed(self) -> float:
        """Seconds since the bar started."""
        return self._clock() - self._start

    def eta(self) -> float | None:
        """Estimated seconds left (``None`` until enough units are done, and at the end)."""
        if not 0 < self.done < self.total or self.done < min(self.ETA_AFTER, self.total - 1):
            return None
        return self.elapsed / self.done * (self.total - self.done)

    def _line(self, live: bool = False) -> str:
        filled = self._WIDTH * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (self._WIDTH - filled)
        desc = f"{self.stage}: {self.desc}" if live and self.stage else self.desc
        line = f"metalearn: {desc} [{bar}] {self.done}/{self.total} {self.elapsed:.1f} s"
        if not live:
            return line
        eta = self.eta()
        if eta is not None:
            line += f", about {_duration(eta)} left"
        if self.done < min(self.total, len(self.labels)):
            line += f" | {_short_label(self.labels[self.done])}"
        width = shutil.get_terminal_size((120, 24)).columns - 1
        return line if len(line) <= width else line[: max(width - 3, 0)] + "..."

    def _draw(self, end: str) -> None:
        line = self._line(live=True)
        pad = " " * max(self._drawn - len(line), 0)  # wipe the rest of a longer line
        self._drawn = len(line)
        self._stream.write("\r" + line + pad + end)
        self._stream.flush()

    def update(self, n: int = 1) -> None:
        """Record ``n`` more finished units."""
        self.done = min(self.total, self.done + n)
        if self._live:
            self._draw(end="")

    def close(self) -> None:
        """Finish the line (a terminal's redrawn line, or the one summary line)."""
        if self._live:
            self._draw(end="\n")
        else:
            self._stream.write(self._line() + "\n")
            self._stream.flush()


_TASK_LABEL = re.compile(r"`(?P<role>[^`]+)` \((?P<model>[^;)]*)(?:; (?P<where>.*))?\)")


def _short_label(label: str) -> str:
    """A task's label (```outcome_model` (Model; fold 2)``) as ``outcome_model, fold 2``."""
    m = _TASK_LABEL.fullmatch(label)
    if m is None:
        return label
    return f"{m['role']}, {m['where']}" if m["where"] else f"{m['role']} ({m['model']})"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@contextmanager
def stage(label: str) -> Iterator[None]:
    """Name the stage of the work inside the block on the bars drawn there.

    Nested stages are joined: ``outer: inner``.
    """
    token = _STAGE.set(_join(_STAGE.get(), label))
    try:
        yield
    finally:
        _STAGE.reset(token)


def candidates(items: Iterable[Any], name: str = "candidate") -> Iterator[Any]:
    """Yield ``items``, each under the stage ``"<name> i/N"`` while the caller works on it.

    ``[evaluate(c) for c in candidates(cands)]`` labels the bars drawn by
    ``evaluate`` with ``candidate 1/12``, ``candidate 2/12``, ... (a generator
    runs in its caller's context, so the stage it sets holds until the next
    item is asked for).
    """
    seq = list(items)
    for i, item in enumerate(seq):
        token = _STAGE.set(_join(_STAGE.get(), f"{name} {i + 1}/{len(seq)}"))
        try:
            yield item
        finally:
            with suppress(ValueError):  # closed from another context: nothing to undo
                _STAGE.reset(token)


def _join(outer: str | None, label: str) -> str:
    return f"{outer}: {label}" if outer else label


def current() -> _Settings | None:
    """The progress settings of the current context (``None``: reports are off)."""
    return _ACTIVE.get()


def bar(
    total: int,
    desc: str,
    settings: _Settings | None = None,
    labels: Sequence[str] | None = None,
) -> Bar | None:
    """A :class:`Bar` when progress reports are on (and there is work), else ``None``.

    ``settings`` overrides the current context's (for a bar drawn inside a block
    that silences nested reports); ``labels`` names the units, in order.
    """
    settings = _ACTIVE.get() if settings is None else settings
    if settings is None or total < 1:
        return None
    return Bar(total, desc, settings, labels=labels)


def track(
    results: Any,
    total: int,
    desc: str,
    settings: _Settings | None = None,
    labels: Sequence[str] | None = None,
) -> list[Any]:
    """Collect an iterable of results into a list, advancing a bar when reports are on."""
    b = bar(total, desc, settings, labels)
    if b is None:
        return list(results)
    out = []
    try:
        for r in results:
            out.append(r)
            b.update()
    finally:
        b.close()
    return out
