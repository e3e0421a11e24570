"""Shared plumbing of :mod:`metalearn.diagnostics`, :mod:`metalearn.ate`,
:mod:`metalearn.refute` and :mod:`metalearn.inference`.

Inputs are converted here once (features through :mod:`metalearn._core.frames`,
treatment labels through :mod:`metalearn._core.validation`); propensities are
either taken as given or estimated by a classifier, cross-fitted through the
same flat joblib batch as the learners' nuisance stage (:mod:`metalearn._core.tasks`).

Propensities are kept as an ``(n, K)`` matrix whose columns follow the sorted
variants. A contrast of variant ``k`` against the control ``c`` uses the
*pairwise score* ``q = e_k / (e_k + e_c)``, the probability of ``k`` given
the features and given that the row received ``k`` or ``c`` (Lechner 2001);
for two variants it is the usual propensity score ``P(W = k | X)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import narwhals.stable.v2 as nw
import numpy as np

from metalearn._core.data import Data, align_proba, prepare_data
from metalearn._core.defaults import default_classifier
from metalearn._core.formulas import clip_bounds as formula_clip_bounds
from metalearn._core.formulas import pair_propensity
from metalearn._core.frames import FrameSchema, native_backend, to_1d_array
from metalearn._core.positivity import check_propensity_values
from metalearn._core.tasks import TaskBuilder, make_folds
from metalearn._core.validation import (
    check_classifier,
    check_finite_X,
    control_index,
)

__all__ = ["Design", "prepare_design", "estimate_propensity", "clip_bounds"]

#: Hint for a missing ``X`` where it only serves the propensity model.
PROPENSITY_HINT = " to estimate the propensities (or pass given ones as `propensity=`)"

# Seed key of the propensity fits of this module (distinct from the Nuisance kinds).
_PROPENSITY_KIND = 41


@dataclass(frozen=True)
class Design:
    """The workflow's view of the prepared data: what every function of ``ate``,
    ``diagnostics``, ``refute`` and ``inference`` reads.

    The arrays are those of one :class:`~metalearn._core.data.Data` (the one
    prepared-data type, built by :func:`~metalearn._core.data.prepare_data`);
    the view adds the control and the caller's frame library, and reads
    ``X``/``y`` as ``None`` where the function was given none. ``w`` holds
    codes into ``variants``; ``treated`` lists the codes other than the
    control in ``variants`` order.
    """

    data: Data
    control: int
    backend: Any
    has_X: bool
    has_y: bool

    @property
    def X(self) -> np.ndarray | None:
        return self.data.X if self.has_X else None

    @property
    def schema(self) -> FrameSchema | None:
        return self.data.schema if self.has_X else None

    @property
    def y(self) -> np.ndarray | None:
        return self.data.y if self.has_y else None

    @property
    def w(self) -> np.ndarray:
        return self.data.w

    @property
    def variants(self) -> np.ndarray:
        return self.data.variants

    @property
    def n(self) -> int:
        return len(self.data.w)

    @property
    def n_variants(self) -> int:
        return len(self.data.variants)

    @property
    def treated(self) -> list[int]:
        return [k for k in range(self.n_variants) if k != self.control]

    def label(self, code: int) -> Any:
        return py(self.variants[code])


def py(v: Any) -> Any:
    """A numpy scalar as the Python scalar it holds (for readable reprs)."""
    return v.item() if isinstance(v, np.generic) else v


def frame_backend(*objs: Any) -> Any:
    """The narwhals implementation of the first frame or series among ``objs``."""
    for obj in objs:
        if obj is None:
            continue
        backend = native_backend(obj)
        if backend is not None:
            return backend
        series = nw.from_native(obj, pass_through=True, allow_series=True)
        if isinstance(series, nw.Series):
            return series.implementation
    return None


def prepare_design(
    X: Any,
    y: Any,
    w: Any,
    *,
    control: Any = None,
    need_X: bool = True,
    need_y: bool = True,
    x_hint: str = "",
) -> Design:
    """Convert and check ``X`` (optional unless ``need_X``), ``y`` and ``w`` once.

    The conversion is :func:`~metalearn._core.data.prepare_data`'s (features,
    variants and a numeric outcome, as for the learners); the checks here are
    the workflow's (a feature or an outcome may be absent).
    """
    if X is None and need_X:
        raise ValueError(f"`X` (the features) is required here{x_hint}; got None.")
    if w is None:
        raise ValueError(
            "`w` (the treatment variant of each row) is required; got None. Pass one label "
            "per row of `X`."
        )
    if y is None and need_y:
        raise ValueError("`y` (the outcome) is required here; got None.")
    if y is not None and X is None:
        arr = to_1d_array(y, name="y")
        n_w = len(to_1d_array(w, name="w"))
        if len(arr) != n_w:
            raise ValueError(f"`y` has {len(arr)} entries but `w` has {n_w}; they must match.")
    data = prepare_data(X, y, w, classification=False, workflow=True)
    if X is not None and data.X.shape[1] == 0 and need_X:
        raise ValueError(f"`X` has no columns (shape {data.X.shape}); pass at least one feature.")
    return Design(
        data=data,
        control=control_index(data.variants, control),
        backend=frame_backend(X, w, y),
        has_X=X is not None,
        has_y=y is not None,
    )


def clip_bounds(clip: Any, *, name: str = "clip") -> tuple[float, float]:
    """``None`` -> (0, 1); ``a`` -> (a, 1 - a); ``(lo, hi)`` as given: checked, then read by
    :func:`metalearn._core.formulas.clip_bounds` (the one clip rule)."""
    if clip is None:
        return 0.0, 1.0
    try:
        if np.ndim(clip) == 0:
            lo, hi = float(clip), 1.0 - float(clip)
        else:
            lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError):
        lo, hi = np.nan, np.nan
    if not (0.0 <= lo < hi <= 1.0):
        raise ValueError(
            f"`{name}` must be None, a float in [0, 0.5) or a pair (low, high) with "
            f"0 <= low < high <= 1; got {clip!r}."
        )
    return formula_clip_bounds(clip)


def as_propensity_matrix(propensity: Any, n: int, n_variants: int) -> np.ndarray:
    """Given propensities -> (n, K) matrix in sorted-variant order, rows summing to one.

    Accepts a per-row vector of ``P(W = variants[1])`` (two variants), an
    ``(n, K)`` array or frame, or a scalar ``P(W = variants[1])`` (two variants).
    Values must lie strictly between 0 and 1
    (:func:`metalearn._core.positivity.check_propensity_values`).
    """
    obj = nw.from_native(propensity, pass_through=True, allow_series=True)
    if isinstance(obj, nw.DataFrame | nw.Series):
        p = np.asarray(obj.to_numpy(), dtype=np.float64)
    else:
        try:
            p = np.asarray(propensity, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"`propensity` must be numeric; got {type(propensity).__name__}."
            ) from exc
    if p.ndim == 0:
        p = np.full(n, float(p))
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim == 1:
        if n_variants != 2:
            raise ValueError(
                f"A propensity vector needs two variants; with {n_variants} variants pass an "
                f"array of shape (n_samples, {n_variants}), one column per variant in sorted "
                "order."
            )
        if len(p) != n:
            raise ValueError(
                f"`propensity` has {len(p)} entries but there are {n} rows; they must match."
            )
        p = np.column_stack([1.0 - p, p])
    if p.shape != (n, n_variants):
        raise ValueError(
            f"`propensity` must have shape ({n},) or ({n}, {n_variants}); got {p.shape}."
        )
    check_propensity_values(p)
    if not np.allclose(p.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError(
            "Each row of `propensity` must sum to 1 over the variants (one column per variant "
            "in sorted order)."
        )
    return np.ascontiguousarray(p)


def check_n_folds(n_folds: Any) -> int | None:
    if n_folds is None:
        return None
    if isinstance(n_folds, bool) or not isinstance(n_folds, int | np.integer) or n_folds < 2:
        raise ValueError(
            f"`n_folds` must be an integer >= 2 (cross-fitted propensities) or None (fit on "
            f"all rows and predict the same rows); got {n_folds!r}."
        )
    return int(n_folds)


def design_with_propensity(
    X: Any,
    y: Any,
    w: Any,
    *,
    control: Any,
    need_y: bool,
    propensity: Any,
    propensity_model: Any,
    n_folds: int | None,
    random_state: Any,
    n_jobs: int | None,
) -> tuple[Design, np.ndarray, str]:
    """:func:`prepare_design` then :func:`estimate_propensity`: the data, ``(n, K)`` scores
    and where they came from (``X`` is needed only when no ``propensity`` is given)."""
    design = prepare_design(
        X,
        y,
        w,
        control=control,
        need_X=propensity is None,
        need_y=need_y,
        x_hint=PROPENSITY_HINT,
    )
    e, how = estimate_propensity(
        design,
        propensity=propensity,
        propensity_model=propensity_model,
        n_folds=n_folds,
        random_state=random_state,
        n_jobs=n_jobs,
    )
    return design, e, how


def estimate_propensity(
    design: Design,
    *,
    propensity: Any = None,
    propensity_model: Any = None,
    n_folds: int | None = 5,
    random_state: Any = None,
    n_jobs: int | None = None,
) -> tuple[np.ndarray, str]:
    """Propensities ``(n, K)`` and a short description of where they came from.

    Given ``propensity`` wins (with a clash error if a model is given too).
    Otherwise ``propensity_model`` (default ``LGBMClassifier(verbose=-1)``)
    is cross-fitted on ``n_folds`` folds stratified by variant, each fold
    predicted by the model fitted on the other folds, or, with
    ``n_folds=None``, fitted on all rows and used to predict them.
    """
    if propensity is not None:
        if propensity_model is not None:
            raise ValueError(
                "Pass either `propensity` (given propensities) or `propensity_model` (a "
                "classifier to estimate them), not both."
            )
        return as_propensity_matrix(propensity, design.n, design.n_variants), "given"
    folds_n = check_n_folds(n_folds)
    assert design.X is not None  # prepare_design requires X when no propensity is given
    template = default_classifier() if propensity_model is None else propensity_model
    check_classifier(template, "propensity_model")
    check_finite_X(design.X, {"propensity_model": template})
    cats = design.schema.categorical_indices if design.schema is not None else []
    K = design.n_variants
    builder = TaskBuilder(design.X, cats, n_jobs=n_jobs, random_state=_seed_int(random_state))
    if folds_n is None:
        folds = np.zeros(design.n, dtype=np.intp)
        groups = [(np.arange(design.n), np.arange(design.n))]
    else:
        folds = make_folds(design.w, folds_n, _fold_seed(random_state), what="treatment variant")
        groups = [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in range(folds_n)]
    for f, (train, test) in enumerate(groups):
        builder.add(
            template,
            train,
            design.w[train],
            key=(_PROPENSITY_KIND, 0, f + 1),
            role="propensity_model",
            predict_rows=test,
            method="predict_proba",
        )
    tasks = builder.tasks
    results = builder.run("nuisance models")
    e = np.empty((design.n, K))
    for task, (model, preds) in zip(tasks, results, strict=True):
        assert preds is not None
        e[task.predict_rows] = align_proba(preds[0], model.classes_, K)
    how = "in-sample" if folds_n is None else f"cross-fitted ({folds_n} folds)"
    return e, how


def _seed_int(random_state: Any) -> int | None:
    if random_state is None or isinstance(
        random_state, np.random.RandomState | np.random.Generator
    ):
        return None
    return int(random_state)


def _fold_seed(random_state: Any) -> Any:
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    return random_state


def pair_score(e: np.ndarray, k: int, c: int) -> np.ndarray:
    """``e_k / (e_k + e_c)``: :func:`metalearn._core.formulas.pair_propensity` (1/2 at 0/0).

    With two variants this is ``e_k`` itself.
    """
    if e.shape[1] == 2:
        return e[:, k].copy()
    return pair_propensity(e, k, c)


def crump_alpha(q: np.ndarray) -> float:
    r"""The trimming threshold of Crump, Hotz, Imbens and Mitnik (2009).

    With :math:`g = 1 / (q (1 - q))`, no trimming is needed when
    :math:`\max g \le 2\,\bar g`; otherwise :math:`\alpha` solves
    :math:`1/(\alpha(1-\alpha)) = 2\,E[g \mid g \le 1/(\alpha(1-\alpha))]`,
    evaluated on the empirical distribution of ``q``.
    """
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(divide="ignore"):
        g = np.sort(1.0 / (q * (1.0 - q)))
    finite = g[np.isfinite(g)]
    if finite.size == 0:
        return 0.5
    if finite.size == g.size and g[-1] <= 2.0 * g.mean():
        return 0.0
    cummean = np.cumsum(finite) / np.arange(1, finite.size + 1)
    # gamma = 2 E[g | g <= gamma] with {g <= gamma} the j + 1 smallest values: the first
    # j where the next value exceeds twice their mean.
    over = np.flatnonzero(finite[1:] > 2.0 * cummean[:-1])
    gamma = 2.0 * (cummean[int(over[0])] if over.size else cummean[-1])
    gamma = max(gamma, 4.0)
    return float(0.5 - np.sqrt(0.25 - 1.0 / gamma))


def trim_mask(
    e: np.ndarray, design: Design, k: int, trim: Any
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Rows kept for the contrast of ``k`` against the control, and the bounds used."""
    if trim is None:
        return np.ones(design.n, dtype=bool), None
    q = pair_score(e, k, design.control)
    if isinstance(trim, str):
        if trim != "crump":
            raise ValueError(f"`trim` must be None, 'crump' or a pair (low, high); got {trim!r}.")
        pair = np.isin(design.w, [k, design.control])
        a = crump_alpha(q[pair])
        lo, hi = a, 1.0 - a
    else:
        lo, hi = clip_bounds(trim, name="trim")
    keep = (q >= lo) & (q <= hi)
    for code in (design.control, k):
        if not np.any(keep & (design.w == code)):
            raise ValueError(
                f"No row of variant {design.label(code)!r} is left after trimming to pairwise "
                f"propensities in [{lo:.4g}, {hi:.4g}]: overlap between "
                f"{design.label(k)!r} and {design.label(design.control)!r} is too poor for "
                "these bounds. Widen `trim`, or inspect `metalearn.diagnostics.overlap`."
            )
    return keep, (lo, hi)


def check_no_extreme(
    e: np.ndarray, design: Design, codes: Sequence[int], keep: np.ndarray | None = None
) -> None:
    """Raise when a propensity that a weight divides by is exactly 0 (on kept rows)."""
    for code in codes:
        rows = design.w == code
        if keep is not None:
            rows = rows & keep
        bad = rows & (e[:, code] <= 0.0)
        if bad.any():
            raise ValueError(
                f"{int(bad.sum())} row(s) of variant {design.label(code)!r} have an estimated "
                f"or given propensity of exactly 0 for the variant they received (e.g. row "
                f"{int(np.flatnonzero(bad)[0])}); their inverse-propensity weights are "
                "infinite. Pass `clip=` (e.g. 0.01) or `trim=` to keep weights finite, or "
                "check the propensity model."
            )


def take_rows(X: Any, rows: np.ndarray) -> Any:
    """Rows of ``X`` (a frame keeps its type; arrays are indexed)."""
    df = nw.from_native(X, pass_through=True, eager_only=True)
    if isinstance(df, nw.DataFrame):
        return df[rows].to_native()
    return np.asarray(X)[rows]


def add_column(X: Any, values: np.ndarray, name: str) -> Any:
    """``X`` with one more numeric column (a frame keeps its type)."""
    df = nw.from_native(X, pass_through=True, eager_only=True)
    if isinstance(df, nw.DataFrame):
        new = name
        while new in df.columns:
            new = "_" + new
        series = nw.new_series(new, values, backend=df.implementation)
        return df.with_columns(series).to_native()
    return np.column_stack([np.asarray(X), values])


def warn_once(message: str, stacklevel: int = 3) -> None:
    warnings.warn(message, UserWarning, stacklevel=stacklevel)
