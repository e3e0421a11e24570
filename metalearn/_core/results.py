"""Small frozen result objects with named fields and a readable ``repr``.

Every result object of the package mixes in :class:`TableResult`: it says
what it holds as rows (``_summary_rows``), and the mixin makes of them a
frame (``summary()``), an HTML table for notebooks (``_repr_html_``) and,
for results without a ``repr`` of their own, a short text ``repr``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar

import narwhals.stable.v2 as nw
import numpy as np
from scipy import stats

from metalearn._core.frames import to_native_frame

__all__ = ["AverageEffect", "TableRepr", "TableResult", "frame_rows", "frame_backend_of"]

_HTML_ROWS = 50  # rows shown by ``_repr_html_`` (``summary()`` has them all)
_REPR_ROWS = 8  # rows shown by the table ``repr``
_REPR_TEXT = 32  # characters of a string cell in the ``repr``


def _cell(v: Any) -> Any:
    """A frame cell: a Python scalar, or the string of anything else."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)


def _column(values: list[Any]) -> list[Any]:
    """One column's cells made one type: numbers, booleans or strings."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, bool) for v in present) or all(isinstance(v, str) for v in present):
        return values
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        if any(isinstance(v, float) for v in present):
            return [None if v is None else float(v) for v in values]
        return values
    return [None if v is None else str(v) for v in values]


def _text(v: Any, limit: int | None = None) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    text = str(v)
    if limit is not None and len(text) > limit:
        return text[: limit - 3] + "..."
    return text


def _quoted(v: Any) -> str:
    """A value in a one-line ``repr``: strings quoted (and shortened), numbers short."""
    return repr(_text(v, _REPR_TEXT)) if isinstance(v, str) else _text(v)


def frame_rows(frame: Any) -> list[dict[str, Any]]:
    """The rows of a pandas or Polars frame as dicts (column -> value)."""
    df = nw.from_native(frame, eager_only=True)
    return [dict(r) for r in df.rows(named=True)]


def frame_backend_of(frame: Any) -> Any:
    """The narwhals implementation of a native frame (``None`` for anything else)."""
    df = nw.from_native(frame, pass_through=True, eager_only=True)
    return df.implementation if isinstance(df, nw.DataFrame) else None


class TableRepr:
    """Mixin: a result as a table of rows, rendered as HTML in notebooks.

    A subclass implements ``_summary_rows`` (one dict of column -> scalar
    per row); it gets ``_repr_html_`` (Jupyter shows the table) and, unless
    it defines its own ``__repr__``, a short text one: ``Name(k=v, ...)`` for
    one row, a small aligned table for more. ``_repr_columns`` restricts the
    columns of the text ``repr`` (``None``: all of them);
    ``_summary_backend`` is the frame library of the summary (``None``:
    Polars). Dataclasses that use the text ``repr`` are declared with
    ``repr=False``.
    """

    __slots__ = ()
    _repr_columns: ClassVar[tuple[str, ...] | None] = None

    def _summary_rows(self) -> list[dict[str, Any]]:
        raise NotImplementedError(f"{type(self).__name__} does not define its summary rows.")

    def _summary_backend(self) -> Any:
        return getattr(self, "backend", None)

    def _summary_columns(self) -> dict[str, list[Any]]:
        rows = self._summary_rows()
        names: dict[str, None] = {}
        for row in rows:
            names.update(dict.fromkeys(row))
        return {k: _column([_cell(r.get(k)) for r in rows]) for k in names}

    def _summary_frame(self) -> Any:
        return to_native_frame(self._summary_columns(), self._summary_backend())  # type: ignore[arg-type]

    def _repr_title(self, n: int) -> str:
        return f"{type(self).__name__} ({n} rows)"

    def _repr_html_(self) -> str:
        cols = self._summary_columns()
        names = list(cols)
        n = len(cols[names[0]]) if names else 0
        head = "".join(f"<th>{html.escape(k)}</th>" for k in names)
        body = []
        for i in range(min(n, _HTML_ROWS)):
            cells = "".join(f"<td>{html.escape(_text(cols[k][i]))}</td>" for k in names)
            body.append(f"<tr>{cells}</tr>")
        more = f"<p>... {n - _HTML_ROWS} more rows: see summary()</p>" if n > _HTML_ROWS else ""
        return (
            f'<div class="metalearn-result"><table><caption>{html.escape(type(self).__name__)}'
            f"</caption><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"{more}</div>"
        )

    def __repr__(self) -> str:
        cols = self._summary_columns()
        if self._repr_columns is not None:
            cols = {k: v for k, v in cols.items() if k in self._repr_columns}
        names = list(cols)
        n = len(cols[names[0]]) if names else 0
        name = type(self).__name__
        if n == 1:
            items = ", ".join(f"{k}={_quoted(cols[k][0])}" for k in names)
            return f"{name}({items})"
        cells = {k: [_text(v, _REPR_TEXT) for v in cols[k][:_REPR_ROWS]] for k in names}
        width = {k: max([len(k), *map(len, cells[k])]) for k in names}
        left = {k for k in names if any(isinstance(v, str) for v in cols[k])}

        def line(texts: dict[str, str]) -> str:
            return "  " + "  ".join(
                texts[k].ljust(width[k]) if k in left else texts[k].rjust(width[k]) for k in names
            )

        lines = [self._repr_title(n), line({k: k for k in names}).rstrip()]
        for i in range(min(n, _REPR_ROWS)):
            lines.append(line({k: cells[k][i] for k in names}).rstrip())
        if n > _REPR_ROWS:
            lines.append(f"  ... {n - _REPR_ROWS} more rows: see summary()")
        return "\n".join(lines)


class TableResult(TableRepr):
    """Mixin: :class:`TableRepr` and a ``summary()`` frame of the same rows.

    The default rows of a dataclass are one row of its scalar fields.
    """

    __slots__ = ()

    def _summary_rows(self) -> list[dict[str, Any]]:
        return [scalar_fields(self)]

    def summary(self) -> Any:
        """The result as a small frame (pandas for pandas input when known, else Polars)."""
        return self._summary_frame()


def scalar_fields(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of a dataclass that hold one scalar (arrays, frames and models left out)."""
    if not is_dataclass(obj):
        return {}
    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        scalar = v is None or isinstance(v, bool | int | float | str | np.generic)
        if scalar and f.name not in skip:
            out[f.name] = v
    return out


def _fmt(v: Any) -> str:
    arr = np.asarray(v)
    if arr.ndim == 0:
        return f"{float(arr):.4g}"
    return "[" + ", ".join(f"{x:.4g}" for x in arr.ravel()) + "]"


@dataclass(frozen=True)
class AverageEffect(TableResult):
    """An average treatment effect of one variant against the control.

    Attributes
    ----------
    variant, control : object
        The compared variants.
    estimate : float or ndarray
        The point estimate (an array over classes for a multi-class outcome).
    std_error : float or ndarray
        Its standard error (``nan`` where the method gives none).
    ci_low, ci_high : float or ndarray
        Bounds of the ``level`` confidence interval (normal approximation).
    level : float
        Confidence level of the interval.
    method : str
        How it was computed (e.g. ``"AIPW"``, ``"plug-in"``).
    n : int
        Number of rows used.

    See Also
    --------
    metalearn.ate : Estimators that return it (difference in means, IPW, AIPW,
        matching).

    Examples
    --------
    >>> import metalearn as ml
    >>> sim = ml.datasets.simulate_nie_wager("B", n=2000, seed=0)  # randomized
    >>> effect = ml.ate.difference_in_means(None, sim.y, sim.w)
    >>> type(effect).__name__, effect.variant, effect.control, effect.n
    ('AverageEffect', 1, 0, 2000)
    >>> bool(effect.ci_low < sim.tau.mean() < effect.ci_high)
    True
    >>> bool(effect.p_value < 0.05)  # an average effect of about 0.8
    True
    """

    variant: Any
    control: Any
    estimate: Any
    std_error: Any
    ci_low: Any
    ci_high: Any
    level: float
    method: str
    n: int

    @classmethod
    def from_estimate(
        cls,
        *,
        variant: Any,
        control: Any,
        estimate: Any,
        std_error: Any,
        method: str,
        n: int,
        level: float = 0.95,
    ) -> AverageEffect:
        z = stats.norm.ppf(0.5 + level / 2)
        est = np.asarray(estimate, dtype=float)
        se = np.asarray(std_error, dtype=float)
        lo, hi = est - z * se, est + z * se

        def unwrap(a: np.ndarray) -> Any:
            return float(a) if a.ndim == 0 else a

        return cls(
            variant=variant,
            control=control,
            estimate=unwrap(est),
            std_error=unwrap(se),
            ci_low=unwrap(lo),
            ci_high=unwrap(hi),
            level=level,
            method=method,
            n=n,
        )

    @property
    def p_value(self) -> Any:
        """Two-sided p-value of the null hypothesis of no average effect."""
        z = np.asarray(self.estimate) / np.asarray(self.std_error)
        p = 2 * stats.norm.sf(np.abs(z))
        return float(p) if np.ndim(p) == 0 else p

    def _summary_rows(self) -> list[dict[str, Any]]:
        names = ("estimate", "std_error", "ci_low", "ci_high", "p_value")
        values = [np.atleast_1d(np.asarray(getattr(self, k), dtype=float)) for k in names]
        extra = scalar_fields(self, skip=("variant", "control", *names))
        rows = []
        for d in range(len(values[0])):
            row: dict[str, Any] = {"variant": self.variant, "control": self.control}
            if np.ndim(self.estimate) > 0:
                row["outcome_class"] = d
            row.update({k: v[d] for k, v in zip(names, values, strict=True)})
            rows.append(row | extra)
        return rows

    def __repr__(self) -> str:
        if np.all(np.isnan(np.asarray(self.std_error, dtype=float))):
            # Never a silent "nan" interval: say that the method gives none.
            spread = "no standard error, no interval"
        else:
            spread = (
                f"se {_fmt(self.std_error)}, {self.level:.0%} CI {_fmt(self.ci_low)} to "
                f"{_fmt(self.ci_high)}"
            )
        return (
            f"AverageEffect({self.variant!r} vs {self.control!r}: {_fmt(self.estimate)} "
            f"({spread}), method={self.method!r}, n={self.n})"
        )


def mean_std_error(
    psi: np.ndarray, weight: np.ndarray | None = None, groups: np.ndarray | None = None
) -> np.ndarray:
    """Standard error of the (weighted) mean of influence values ``psi`` (n, ...).

    Rows independent: ``sd / sqrt(n)`` (weighted: the sandwich form with
    ``n / (n - 1)``). With integer ``groups`` codes: cluster-robust,
    ``sqrt(G / (G - 1) * sum_g (sum_{i in g} w_i (psi_i - mean))^2)`` with the
    normalised weights ``w_i`` (``1 / n`` unweighted) over the ``G`` groups.
    """
    n = psi.shape[0]
    if n < 2:
        return np.full(psi.shape[1:], np.nan)
    if weight is None and groups is None:
        return np.asarray(np.std(psi, axis=0, ddof=1) / np.sqrt(n))
    wn = np.full(n, 1.0 / n) if weight is None else weight / weight.sum()
    centre = np.tensordot(wn, psi, axes=1)
    dev = wn.reshape((n,) + (1,) * (psi.ndim - 1)) * (psi - centre)
    if groups is None:
        return np.sqrt(np.sum(dev**2, axis=0) * n / (n - 1))
    _, codes = np.unique(groups, return_inverse=True)
    G = int(codes.max()) + 1
    if G < 2:
        return np.full(psi.shape[1:], np.nan)
    per_group = np.zeros((G, *psi.shape[1:]))
    np.add.at(per_group, codes, dev)
    return np.sqrt(G / (G - 1) * np.sum(per_group**2, axis=0))
