"""Progress reports for long batches: cross-fitting stages and bootstrap replicates.

Off by default. :func:`progress` switches them on for the code inside a ``with``
block; every batch of model fits (one per cross-fitting stage) and every
bootstrap run then draws a one-line bar on ``stderr`` (or the given stream).
On a terminal the line is redrawn as fits finish; elsewhere (logs, notebooks
captured to files) one summary line is written when the batch ends, so logs
stay short. No third-party progress package is needed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import IO, Any

__all__ = ["progress"]


@dataclass(frozen=True)
class _Settings:
    stream: IO[str] | None
    live: bool | None


_ACTIVE: ContextVar[_Settings | None] = ContextVar("metalearn_progress", default=None)


@contextmanager
def progress(enabled: bool = True, *, file: IO[str] | None = None) -> Iterator[None]:
    """Report progress of model fits and bootstrap replicates inside a ``with`` block.

    Each batch of base-model fits (the nuisance stage, the final stage of a
    learner, the stage fits of a search) and each :func:`bootstrap_cate` run
    writes a bar such as ``metalearn: nuisance models [#######.....] 7/10 2.1 s``.

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
    """A text progress bar for ``total`` units of work (see :func:`progress`)."""

    _WIDTH = 24

    def __init__(self, total: int, desc: str, settings: _Settings) -> None:
        self.total = int(total)
        self.desc = desc
        self.done = 0
        self._stream = settings.stream if settings.stream is not None else sys.stderr
        isatty = getattr(self._stream, "isatty", None)
        self._live = bool(isatty()) if callable(isatty) else False
        self._start = time.perf_counter()
        if self._live:
            self._draw(end="")

    def _line(self) -> str:
        filled = self._WIDTH * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (self._WIDTH - filled)
        seconds = time.perf_counter() - self._start
        return f"metalearn: {self.desc} [{bar}] {self.done}/{self.total} {seconds:.1f} s"

    def _draw(self, end: str) -> None:
        self._stream.write("\r" + self._line() + end)
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


def current() -> _Settings | None:
    """The progress settings of the current context (``None``: reports are off)."""
    return _ACTIVE.get()


def bar(total: int, desc: str, settings: _Settings | None = None) -> Bar | None:
    """A :class:`Bar` when progress reports are on (and there is work), else ``None``.

    ``settings`` overrides the current context's (for a bar drawn inside a block
    that silences nested reports).
    """
    settings = _ACTIVE.get() if settings is None else settings
    if settings is None or total < 1:
        return None
    return Bar(total, desc, settings)


def track(results: Any, total: int, desc: str, settings: _Settings | None = None) -> list[Any]:
    """Collect an iterable of results into a list, advancing a bar when reports are on."""
    b = bar(total, desc, settings)
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
