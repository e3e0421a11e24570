"""Checks of ``y``, ``w``, weights, propensities and sub-models.

Every error message about user input lives here or in ``_frames``: it names
the argument, what was expected, what was received and how to fix it.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import is_classifier, is_regressor
from sklearn.utils import get_tags

from metalearn._core.frames import to_1d_array
from metalearn._core.positivity import check_propensity_values

__all__ = [
    "Treatment",
    "encode_treatment",
    "encode_outcome",
    "check_sample_weight",
    "check_propensity",
    "check_classifier",
    "check_regressor",
    "check_finite_X",
    "check_n_jobs",
    "check_random_state",
]


@dataclass(frozen=True)
class Treatment:
    """Encoded treatment: ``codes[i]`` indexes ``variants`` (sorted labels)."""

    codes: np.ndarray
    variants: np.ndarray

    @property
    def n_variants(self) -> int:
        return len(self.variants)


def _is_missing(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "f":
        return np.isnan(arr)
    if arr.dtype == object:
        return np.array([v is None or (isinstance(v, float) and v != v) for v in arr], dtype=bool)
    return np.zeros(arr.shape, dtype=bool)


def _label_kind(value: Any) -> str:
    """Kind of a treatment label: bools, numbers and strings are never mixed."""
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, numbers.Real):
        return "number"
    if isinstance(value, str):
        return "str"
    return type(value).__name__


def _one_label_type(arr: np.ndarray, name: str) -> np.ndarray:
    """Check that object labels share one type; numbers become a numeric array.

    Labels of different types (``1`` and ``"1"``, ``0`` and ``True``) raise a
    :class:`TypeError` rather than being merged or told apart by a guess.
    """
    examples: dict[str, Any] = {}
    for v in arr:
        examples.setdefault(_label_kind(v), v)
    if len(examples) > 1:
        kinds = sorted(examples)
        shown = " and ".join(f"{type(examples[k]).__name__} (e.g. {examples[k]!r})" for k in kinds)
        as_str: dict[str, set[str]] = {}
        for v in arr:
            as_str.setdefault(str(v), set()).add(_label_kind(v))
        clash = next((label for label, ks in as_str.items() if len(ks) > 1), None)
        note = (
            f" The label {clash!r} occurs as more than one type; metalearn does not guess "
            "whether those are one variant."
            if clash is not None
            else ""
        )
        raise TypeError(
            f"`{name}` mixes label types: {shown}. Use one type for all labels, e.g. all "
            f"strings (`{name}.astype(str)`) or all integers.{note}"
        )
    if next(iter(examples), None) == "number":
        integral = all(isinstance(v, numbers.Integral) for v in arr)
        try:
            return arr.astype(np.int64 if integral else np.float64)
        except OverflowError:  # Python ints beyond int64: keep them as they are
            return arr
    return arr


def encode_treatment(
    w: Any, n_samples: int, variants: np.ndarray | None = None, *, name: str = "w"
) -> Treatment:
    """Encode treatment labels; learn the sorted variants or check against known ones.

    Labels are bools, integers (integral floats such as ``1.0`` count as
    integers), other finite floats, strings or categories, all of one type:
    missing or infinite labels raise a :class:`ValueError`, labels of mixed
    types (``1`` and ``"1"``) a :class:`TypeError`.
    """
    if w is None:
        raise ValueError(
            f"`{name}` (the treatment variant of each row) is required: call "
            f"`fit(X, y, {name})`. In a Pipeline enable metadata routing "
            "(`sklearn.set_config(enable_metadata_routing=True)`) or pass `<step>__w=w`."
        )
    arr = to_1d_array(w, name=name)
    if len(arr) != n_samples:
        raise ValueError(
            f"`{name}` has {len(arr)} entries but `X` has {n_samples} rows; they must match."
        )
    missing = _is_missing(arr)
    if missing.any():
        raise ValueError(
            f"`{name}` holds {int(missing.sum())} missing values (NaN/None), e.g. at row "
            f"{int(np.flatnonzero(missing)[0])}. Every row needs a treatment variant: drop "
            "or impute those rows."
        )
    if arr.dtype == object:
        arr = _one_label_type(arr, name)
    if arr.dtype.kind == "f":
        infinite = np.isinf(arr)
        if infinite.any():
            raise ValueError(
                f"`{name}` holds {int(infinite.sum())} infinite values (inf/-inf), e.g. at row "
                f"{int(np.flatnonzero(infinite)[0])}; treatment labels must be finite. Give "
                "those rows a variant label or drop them."
            )
        # Integral floats (1.0, 0.0) are integer labels; beyond int64 they stay floats.
        if np.all(arr == np.round(arr)) and np.all(np.abs(arr) < 2.0**63):
            arr = arr.astype(np.int64)
    if variants is None:
        variants, codes = np.unique(arr, return_inverse=True)
        if len(variants) < 2:
            raise ValueError(
                f"`{name}` holds a single variant ({variants.tolist()[0]!r}); estimating an effect "
                "needs at least two (a control and a treatment)."
            )
        return Treatment(codes=codes.astype(np.intp), variants=variants)
    pos = np.searchsorted(variants, arr)
    pos = np.minimum(pos, len(variants) - 1)
    ok = variants[pos] == arr
    if not np.all(ok):
        unknown = sorted({str(v) for v in arr[~ok]})
        raise ValueError(
            f"`{name}` holds variants not seen at fit: {unknown}; known variants are "
            f"{variants.tolist()}."
        )
    return Treatment(codes=pos.astype(np.intp), variants=variants)


def control_index(variants: np.ndarray, control: Any) -> int:
    """Position of the control variant (default: 0 if present, else the first sorted)."""
    labels = variants.tolist()
    if control is None:
        for candidate in (0, "0", "control", False):
            if candidate in labels and type(labels[labels.index(candidate)]) is type(candidate):
                return labels.index(candidate)
        return 0
    if control in labels:
        return labels.index(control)
    # Accept "1" for 1 and 1 for "1" only when unambiguous.
    as_str = [str(v) for v in labels]
    if str(control) in as_str and as_str.count(str(control)) == 1:
        return as_str.index(str(control))
    raise ValueError(f"`control`={control!r} is not one of the variants in `w`: {labels}.")


def encode_outcome(y: Any, n_samples: int, *, classification: bool, classes: Any = None):
    """Check ``y``. Regression: float array. Classification: codes into ``classes``."""
    if y is None:
        raise ValueError(
            "`y` (the outcome) is required: this learner requires y to be passed, but the "
            "target y is None."
        )
    arr = to_1d_array(y, name="y")
    if len(arr) != n_samples:
        raise ValueError(
            f"`y` has {len(arr)} entries but `X` has {n_samples} rows; they must match."
        )
    if not classification:
        if arr.dtype == object or (arr.dtype.kind in "USb" and arr.dtype != bool):
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    "`y` must be numeric when the outcome model is a regressor; got values "
                    f"like {arr[:3].tolist()}. Use a classifier as `outcome_model` for a "
                    "categorical outcome."
                ) from exc
        arr = np.asarray(arr, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError(
                f"`y` holds {int((~np.isfinite(arr)).sum())} NaN or infinite values; "
                "drop or impute those rows."
            )
        return arr, None
    missing = _is_missing(arr)
    if missing.any():
        raise ValueError(f"`y` holds {int(missing.sum())} missing values; drop those rows.")
    if classes is None:
        classes, codes = np.unique(arr, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"`y` holds a single class ({classes.tolist()[0]!r}); a classifier outcome model "
                "needs at least two classes."
            )
        return codes.astype(np.intp), classes
    pos = np.minimum(np.searchsorted(classes, arr), len(classes) - 1)
    if not np.all(classes[pos] == arr):
        raise ValueError(f"`y` holds classes not seen at fit; known classes: {classes.tolist()}.")
    return pos.astype(np.intp), classes


def check_sample_weight(sample_weight: Any, n_samples: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    sw = to_1d_array(sample_weight, name="sample_weight").astype(np.float64)
    if len(sw) != n_samples:
        raise ValueError(f"`sample_weight` has {len(sw)} entries but `X` has {n_samples} rows.")
    if not np.all(np.isfinite(sw)) or (sw < 0).any():
        raise ValueError("`sample_weight` must be finite and non-negative.")
    return sw


def check_propensity(propensity: Any, n_samples: int, n_variants: int) -> np.ndarray:
    """Known propensities -> array (n_samples, n_variants) whose rows sum to one.

    Accepts a scalar (P(treated) for two variants), a vector of K per-variant
    probabilities, a per-row vector (two variants) or an (n, K) matrix.
    """
    p = np.asarray(propensity, dtype=np.float64)
    if p.ndim == 0:
        if n_variants != 2:
            raise ValueError(
                "A scalar `propensity` is P(treated) and needs two variants; with "
                f"{n_variants} variants pass one probability per variant."
            )
        p = np.array([1 - float(p), float(p)])
    if p.ndim == 1 and p.shape[0] == n_variants and n_samples != n_variants:
        p = np.broadcast_to(p, (n_samples, n_variants))
    elif p.ndim == 1 and p.shape[0] == n_samples:
        if n_variants != 2:
            raise ValueError(
                f"A per-row `propensity` vector needs two variants; with {n_variants} pass an "
                f"array of shape (n_samples, {n_variants})."
            )
        p = np.column_stack([1 - p, p])
    if p.shape != (n_samples, n_variants):
        raise ValueError(
            f"`propensity` must be a scalar, a vector of {n_variants} probabilities, or an "
            f"array of shape ({n_samples}, {n_variants}); got shape {np.shape(propensity)}."
        )
    check_propensity_values(p)
    if not np.allclose(p.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("Each row of `propensity` must sum to 1 over the variants.")
    return np.ascontiguousarray(p)


def check_classifier(estimator: Any, name: str) -> None:
    if estimator is None:
        return
    if not hasattr(estimator, "fit"):
        raise TypeError(f"`{name}` must be a scikit-learn estimator; got {estimator!r}.")
    if is_regressor(estimator) or not hasattr(estimator, "predict_proba"):
        raise TypeError(
            f"`{name}` must be a classifier with `predict_proba`; got {type(estimator).__name__}. "
            "Use e.g. LGBMClassifier() or LogisticRegression()."
        )


def check_regressor(estimator: Any, name: str) -> None:
    if estimator is None:
        return
    if not hasattr(estimator, "fit"):
        raise TypeError(f"`{name}` must be a scikit-learn estimator; got {estimator!r}.")
    if is_classifier(estimator):
        raise TypeError(
            f"`{name}` must be a regressor (it is fitted on continuous pseudo-outcomes); got "
            f"the classifier {type(estimator).__name__}. Use e.g. LGBMRegressor()."
        )


def allows_nan(estimator: Any) -> bool:
    try:
        return bool(get_tags(estimator).input_tags.allow_nan)
    except Exception:  # pragma: no cover - estimators without tags
        return False


def check_finite_X(
    X: np.ndarray, models: dict[str, Any], *, name: str = "X", when: str = "fitting"
) -> None:
    """Reject infinities always, and NaN where a base model cannot take it.

    ``when`` ("fitting" or "predicting") goes into the message. At predict
    time NaN may come from the data or from categories unseen at fit with
    ``handle_unknown="missing"``.
    """
    if X.size == 0:
        return
    finite = np.isfinite(X)
    if finite.all():
        return
    if np.isinf(X).any():
        rows, cols = np.nonzero(np.isinf(X))
        raise ValueError(
            f"`{name}` holds {len(rows)} infinite value(s) (first at row {int(rows[0])}, "
            f"column {int(cols[0])}); replace them (e.g. with NaN for models that handle "
            f"missing values) before {when}."
        )
    blockers = [k for k, m in models.items() if m is not None and not allows_nan(m)]
    if blockers:
        raise ValueError(
            f"`{name}` holds NaN values but {', '.join(f'`{b}`' for b in blockers)} cannot "
            f"handle missing values, so {when} would fail inside the model. Impute them "
            "(e.g. a Pipeline with SimpleImputer) or use a model that accepts NaN such as "
            "LightGBM."
            + (
                " (With handle_unknown='missing', categories unseen at fit are NaN too.)"
                if when == "predicting"
                else ""
            )
        )


def check_n_jobs(n_jobs: Any, name: str = "n_jobs") -> None:
    """``None`` or a non-zero integer (joblib's convention: -1 is one worker per CPU)."""
    ok = n_jobs is None or (
        isinstance(n_jobs, int | np.integer) and not isinstance(n_jobs, bool) and n_jobs != 0
    )
    if not ok:
        raise ValueError(
            f"`{name}` must be None (one worker), a positive number of workers or a negative "
            f"one (-1: one per CPU this process may use); got {n_jobs!r}."
        )


def check_random_state(random_state: Any, name: str = "random_state") -> None:
    """``None``, an integer seed, or a numpy ``RandomState``/``Generator``."""
    ok = (
        random_state is None
        or (isinstance(random_state, int | np.integer) and not isinstance(random_state, bool))
        or isinstance(random_state, np.random.RandomState | np.random.Generator)
    )
    if not ok:
        raise ValueError(
            f"`{name}` must be None, an integer seed or a numpy RandomState/Generator; got "
            f"{random_state!r}. Pass e.g. random_state=0 for reproducible results."
        )
