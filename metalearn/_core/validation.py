"""Checks of ``y``, ``w``, weights, propensities and sub-models.

Every error message about user input lives here or in ``_frames``: it names
the argument, what was expected, what was received and how to fix it. Also
here: the error of a base model that fails (:class:`BaseModelError`, raised
by :func:`metalearn._core.tasks.run_tasks`) and the version stamp of pickled
objects (:class:`VersionedPickle`, :class:`InconsistentVersionWarning`).
"""

from __future__ import annotations

import numbers
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import is_classifier, is_regressor
from sklearn.utils import get_tags

from metalearn._core.frames import to_1d_array
from metalearn._core.positivity import check_propensity_values

__all__ = [
    "BaseModelError",
    "InconsistentVersionWarning",
    "VersionedPickle",
    "Treatment",
    "encode_treatment",
    "encode_outcome",
    "check_sample_weight",
    "check_propensity",
    "check_estimator",
    "check_classifier",
    "check_regressor",
    "check_has_rows",
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


def is_missing(arr: np.ndarray) -> np.ndarray:
    """Boolean mask of the missing entries of a 1-D label or outcome array.

    NaN in float arrays; in object arrays also ``None`` and pandas' ``pd.NA``
    and ``NaT`` (whose truth value cannot be taken, so a plain ``v != v``
    test would raise). The one missing-value rule of ``y``, ``w`` and
    ``groups``.
    """
    if arr.dtype.kind == "f":
        return np.isnan(arr)
    if arr.dtype == object:
        pd = sys.modules.get("pandas")  # pd.NA can only be present if pandas is loaded
        if pd is not None:
            return np.asarray(pd.isna(arr), dtype=bool)
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
    missing = is_missing(arr)
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


def _check_class_labels(arr: np.ndarray) -> None:
    """Reject a continuous ``y`` given to a classifier outcome model.

    Class labels are strings, bools, integers or integral floats (``0.0``,
    ``1.0``); floats with a fractional part are measurements, not classes.
    """
    values = arr
    if arr.dtype == object:
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in arr):
            return
        values = arr.astype(np.float64)
    if values.dtype.kind != "f":
        return
    fractional = values != np.round(values)
    if fractional.any():
        shown = ", ".join(f"{v:g}" for v in values[fractional][:3])
        raise ValueError(
            f"`y` looks continuous ({int(fractional.sum())} values with a fractional part, "
            f"e.g. {shown}) but `outcome_model` is a classifier, which needs class labels. "
            "Use a regressor as `outcome_model` (e.g. LGBMRegressor()) for a numeric "
            "outcome, or pass the class labels as `y`."
        )


def encode_outcome(y: Any, n_samples: int, *, classification: bool, classes: Any = None):
    """Check ``y``. Regression: float array. Classification: codes into ``classes``.

    Missing values (NaN, ``None``, ``pd.NA``) raise a :class:`ValueError`; so
    does a continuous ``y`` (non-integral floats) for a classifier outcome
    model.
    """
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
    # Float outcomes of a regressor get the NaN-or-infinite check below.
    missing = is_missing(arr) if classification or arr.dtype == object else np.zeros(0, dtype=bool)
    if missing.any():
        raise ValueError(
            f"`y` holds {int(missing.sum())} missing values (NaN/None/NA), e.g. at row "
            f"{int(np.flatnonzero(missing)[0])}; drop or impute those rows."
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
    if classes is None:
        _check_class_labels(arr)
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


def check_estimator(estimator: Any, name: str) -> None:
    """``None`` or an estimator instance: something with ``fit`` and ``predict``/``predict_proba``.

    A class instead of an instance (``LinearRegression``), a string
    (``"lgbm"``) or another object raise a :class:`TypeError` that names
    ``name`` and the fix.
    """
    if estimator is None:
        return
    if isinstance(estimator, type):
        raise TypeError(
            f"`{name}` must be an estimator instance; got the class {estimator.__name__}. "
            f"Pass an instance: `{name}={estimator.__name__}()`."
        )
    if not hasattr(estimator, "fit") or not (
        hasattr(estimator, "predict") or hasattr(estimator, "predict_proba")
    ):
        hint = (
            " metalearn does not resolve model names: pass an estimator instance, e.g. "
            "LGBMRegressor() (LGBMClassifier() for a propensity or a class outcome)."
            if isinstance(estimator, str)
            else " Pass an object with `fit` and `predict` (e.g. LGBMRegressor())."
        )
        raise TypeError(
            f"`{name}` must be a scikit-learn estimator instance; got {estimator!r} "
            f"({type(estimator).__name__}).{hint}"
        )


def check_classifier(estimator: Any, name: str) -> None:
    if estimator is None:
        return
    check_estimator(estimator, name)
    if is_regressor(estimator) or not hasattr(estimator, "predict_proba"):
        raise TypeError(
            f"`{name}` must be a classifier with `predict_proba`; got {type(estimator).__name__}. "
            "Use e.g. LGBMClassifier() or LogisticRegression()."
        )


def check_regressor(estimator: Any, name: str) -> None:
    if estimator is None:
        return
    check_estimator(estimator, name)
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


def check_has_rows(X: np.ndarray, *, name: str = "X", action: str = "predict") -> None:
    """Reject an ``X`` without rows: nothing to ``action`` (``"predict"``, ``"explain"``)."""
    if X.shape[0] == 0:
        raise ValueError(
            f"`{name}` has no rows to {action} (shape {X.shape}); pass at least one row. "
            "Skip the call for an empty batch."
        )


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


# ------------------------------------------------------------ errors of base models
class BaseModelError(Exception):
    """A base model raised while metalearn fitted it.

    The message names the model parameter (``outcome_model``,
    ``propensity_model``, ``effect_model``, ...), the model's class and which
    fit of the stage failed (stage, variant, fold); the model's own exception
    is chained as ``__cause__`` (and kept as ``original``). The error is also
    an instance of the original exception's class whenever that class can be
    combined with this one, so ``except ValueError`` still catches a
    ``ValueError`` raised by a model.

    With worker threads or processes (``n_jobs``), joblib may replace
    ``__cause__`` by the worker's traceback; ``original`` is always the
    model's exception.

    Attributes
    ----------
    where : str
        The failing fit, e.g. ``"`outcome_model` (Ridge; nuisance stage, outcome
        of variant 1, fold 2)"``.
    original : Exception
        The exception the base model raised.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> class Picky(LinearRegression):
    ...     def fit(self, X, y, sample_weight=None):
    ...         raise ValueError("not today")
    >>> sim = ml.datasets.simulate_nie_wager("B", n=200, seed=0)
    >>> try:
    ...     ml.TLearner(outcome_model=Picky(), n_folds=2).fit(sim.X, sim.y, sim.w)
    ... except ValueError as err:  # also a ValueError, like the model's own
    ...     print(type(err).__name__, "|", err.where)
    ...     print(repr(err.original), err.__cause__ is err.original)
    BaseModelError | `outcome_model` (Picky; nuisance stage, outcome of variant 0, all rows)
    ValueError('not today') True
    """

    where: str
    original: BaseException

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> Any:
        # The combined class is made at run time: rebuild it from its parts (process
        # backends of joblib pickle exceptions raised in workers).
        return (wrap_base_model_error, (self.original, self.where))


_COMBINED: dict[type[BaseException], type[BaseModelError]] = {}


def _combined_class(cls: type[BaseException]) -> type[BaseModelError]:
    """``BaseModelError`` that is also a ``cls`` (cached); else plain ``BaseModelError``."""
    if issubclass(BaseModelError, cls):
        return BaseModelError
    found = _COMBINED.get(cls)
    if found is None:
        try:
            found = type(
                "BaseModelError",
                (BaseModelError, cls),
                {
                    "__module__": __name__,
                    "__qualname__": "BaseModelError",
                    "__doc__": BaseModelError.__doc__,
                },
            )
        except TypeError:  # layout conflicts, classes that forbid subclassing
            found = BaseModelError
        _COMBINED[cls] = found
    return found


def wrap_base_model_error(exc: BaseException, where: str) -> BaseModelError:
    """The :class:`BaseModelError` for ``exc``, raised by the fit ``where`` (raise it from exc)."""
    message = f"{where} raised {type(exc).__name__}: {exc}"
    cls = _combined_class(type(exc))
    err: BaseModelError
    try:
        err = cls.__new__(cls, message)
        BaseException.__init__(err, message)
    except Exception:  # an exception class with an unusual constructor
        err = BaseModelError(message)
    err.where = where
    err.original = exc
    err.__cause__ = exc
    return err


# ------------------------------------------------------------------ pickled models
class InconsistentVersionWarning(UserWarning):
    """A metalearn object is loaded by another metalearn version than the one that pickled it.

    Fitted learners, nuisances and searches may hold internal state that
    another version reads differently; refit them with the installed version.

    Parameters
    ----------
    estimator_name : str
        The class of the loaded object.
    original_version : str
        The version that pickled the object (``"unknown"`` for a pickle without one).
    current_version : str
        The installed version.

    Examples
    --------
    >>> import warnings
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> sim = ml.datasets.simulate_nie_wager("B", n=200, seed=0)
    >>> t = ml.TLearner(outcome_model=LinearRegression(), n_folds=2).fit(sim.X, sim.y, sim.w)
    >>> state = t.__getstate__()  # what pickle stores
    >>> state["_metalearn_version"] = "0.0.1"  # as if an older version wrote it
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     object.__new__(ml.TLearner).__setstate__(state)
    >>> w = caught[0].message
    >>> type(w).__name__, w.original_version, w.current_version == ml.__version__
    ('InconsistentVersionWarning', '0.0.1', True)
    """

    def __init__(self, *, estimator_name: str, original_version: str, current_version: str):
        self.estimator_name = estimator_name
        self.original_version = original_version
        self.current_version = current_version

    def __str__(self) -> str:
        return (
            f"This {self.estimator_name} was pickled by metalearn {self.original_version} and "
            f"is loaded by metalearn {self.current_version}; it may give wrong results or "
            "break. Refit it with the installed version (or install "
            f"metalearn=={self.original_version} to use it as it is)."
        )


_VERSION_KEY = "_metalearn_version"


def _metalearn_version() -> str:
    from metalearn._core.version import __version__

    return __version__


class VersionedPickle:
    """Mixin: pickles record the metalearn version; loading under another one warns.

    ``__getstate__`` adds the version to the state of the next class in the
    method resolution order (scikit-learn's ``BaseEstimator``, which records
    its own version for its estimators); ``__setstate__`` removes it, emits an
    :class:`InconsistentVersionWarning` when it differs from the installed
    version, and hands the rest on.
    """

    def __getstate__(self) -> Any:
        state: Any = super().__getstate__()
        if state is None:  # an instance without attributes
            state = {}
        return {**state, _VERSION_KEY: _metalearn_version()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        original = state.pop(_VERSION_KEY, "unknown")
        current = _metalearn_version()
        if original != current:
            warnings.warn(
                InconsistentVersionWarning(
                    estimator_name=type(self).__name__,
                    original_version=str(original),
                    current_version=current,
                ),
                stacklevel=2,
            )
        parent = getattr(super(), "__setstate__", None)
        if parent is not None:
            parent(state)
        else:
            self.__dict__.update(state)
