"""The one prepared-data type: the user's input converted once, at the edge.

:func:`prepare_data` encodes the features (:mod:`metalearn._core.frames`), the
treatment variants, the outcome, weights, groups and known propensities;
every later stage and every subset (:meth:`Data.take`) reads these arrays, and
nothing converts a native frame again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from metalearn._core.frames import FrameSchema, encode_features, to_1d_array
from metalearn._core.validation import (
    check_propensity,
    check_sample_weight,
    encode_outcome,
    encode_treatment,
    is_missing,
)

__all__ = ["Data", "prepare_data", "encode_groups", "align_proba", "outcome_columns"]


@dataclass
class Data:
    """The training data once, converted: what every stage reads.

    Made by :func:`prepare_data`; all arrays are numpy.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features)
        Features as float64, categories as integer codes (see ``schema``).
    schema : FrameSchema
        Column names and category lists of ``X``, used to encode new rows the
        same way.
    y : ndarray of shape (n_samples,)
        The outcome (float64), or class codes ``0 .. C-1`` for a categorical
        outcome.
    classes : ndarray or None
        The outcome classes, sorted (``None`` for a numeric outcome).
    w : ndarray of shape (n_samples,)
        Variant codes: positions in ``variants``.
    variants : ndarray
        The sorted variants of ``w``.
    sample_weight : ndarray of shape (n_samples,) or None
    propensity : ndarray of shape (n_samples, n_variants) or None
        Known propensities of every variant, if given.
    fingerprint : str
        A hash of every row of every array, computed on first use (a fitted
        :class:`Nuisance` checks it).
    groups : ndarray of shape (n_samples,) or None
        Group codes ``0 .. G-1`` when ``groups`` were given (cross-fitting
        keeps each group in one fold).

    Examples
    --------
    >>> from metalearn._core.data import prepare_data
    >>> data = prepare_data([[0.0], [1.0], [2.0], [3.0]], [1.0, 2.0, 3.0, 5.0],
    ...                     ["b", "a", "b", "a"], classification=False)
    >>> data.variants.tolist(), data.w.tolist()
    (['a', 'b'], [1, 0, 1, 0])
    >>> data.n, data.n_variants, data.out_dim
    (4, 2, 1)
    """

    X: np.ndarray
    schema: FrameSchema
    y: np.ndarray
    classes: np.ndarray | None
    w: np.ndarray
    variants: np.ndarray
    sample_weight: np.ndarray | None
    propensity: np.ndarray | None
    groups: np.ndarray | None = None

    @property
    def fingerprint(self) -> str:
        """Hash of every array (computed once, on first use)."""
        fp = self.__dict__.get("_fingerprint")
        if fp is None:
            g = [] if self.groups is None else [self.groups]
            fp = _fingerprint(self.X, self.y, self.w, self.sample_weight, self.propensity, *g)
            self.__dict__["_fingerprint"] = fp
        return fp

    def take(self, rows: np.ndarray, *, groups: np.ndarray | None = None) -> Data:
        """The rows ``rows`` (positions, repeats allowed) as a new ``Data``.

        Subsets (outer folds of a search, bootstrap replicates, refutation
        subsets) slice the converted arrays: the column schema (names and
        category lists) is the full data's, and nothing is converted again.

        Parameters
        ----------
        rows : ndarray of int
            Row positions.
        groups : ndarray of shape (len(rows),), optional
            Group codes for the subset, replacing the sliced ones (a bootstrap
            replicate passes the original row of each draw, so that every
            copy of a row lies in one cross-fitting fold).

        Returns
        -------
        Data
        """
        rows = np.asarray(rows)
        if groups is not None:
            _, g = np.unique(np.asarray(groups), return_inverse=True)
            new_groups: np.ndarray | None = g.astype(np.intp)
        elif self.groups is not None:
            _, g = np.unique(self.groups[rows], return_inverse=True)
            new_groups = g.astype(np.intp)
        else:
            new_groups = None
        return Data(
            X=self.X[rows],
            schema=self.schema,
            y=self.y[rows],
            classes=self.classes,
            w=self.w[rows],
            variants=self.variants,
            sample_weight=None if self.sample_weight is None else self.sample_weight[rows],
            propensity=None if self.propensity is None else self.propensity[rows],
            groups=new_groups,
        )

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def n_variants(self) -> int:
        return len(self.variants)

    @property
    def out_dim(self) -> int:
        if self.classes is None or len(self.classes) == 2:
            return 1
        return len(self.classes)

    def target_matrix(self) -> np.ndarray:
        """``Y`` as an (n, D) float array: the outcome, or class indicators."""
        if self.classes is None:
            return self.y[:, None]
        if len(self.classes) == 2:
            return (self.y == 1).astype(np.float64)[:, None]
        return (self.y[:, None] == np.arange(len(self.classes))[None, :]).astype(np.float64)


def _fingerprint(X: np.ndarray, *arrays: np.ndarray | None) -> str:
    """A hash of every row of ``X`` and of the other arrays (``None`` counts too).

    Every byte is read (about 1 s per GB): a fitted :class:`Nuisance` is reused
    only for exactly the data it was fitted on, whatever rows differ.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(X.shape, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(X).data)
    for a in arrays:
        if a is None:
            h.update(b"|")
        else:
            h.update(b"#" + str(a.dtype).encode() + np.asarray(a.shape, dtype=np.int64).tobytes())
            h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def prepare_data(
    X: Any,
    y: Any,
    w: Any,
    *,
    classification: bool,
    sample_weight: Any = None,
    propensity: Any = None,
    groups: Any = None,
    schema: FrameSchema | None = None,
    workflow: bool = False,
) -> Data:
    """Convert and check the user's ``X, y, w`` once.

    Every learner and :class:`Nuisance` calls it at the start of ``fit``:
    features are encoded (frames through narwhals, categorical and string
    columns to codes), the variants and outcome classes are coded as
    integers, and weights and known propensities are checked.

    Parameters
    ----------
    X : frame or array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    w : array-like of shape (n_samples,)
        Variant of each row (ints, strings or categories).
    classification : bool
        Whether ``y`` is categorical (coded as classes) or numeric.
    sample_weight : array-like of shape (n_samples,), optional
    propensity : float or array-like, optional
        Known propensities: a constant, one per row (two variants) or one per
        row and variant.
    groups : array-like of shape (n_samples,), optional
        Group labels (e.g. a school or a customer id); coded as integers.
    schema : FrameSchema, optional
        Encode ``X`` with a schema learned before (validation rows of a
        search are encoded like its training rows); ``None`` learns one.
    workflow : bool, default=False
        The entry of the average-effect workflow (:mod:`metalearn.ate`,
        :mod:`metalearn.diagnostics`, ...), whose functions may take no
        features (``X=None``: zero columns) or no outcome (``y=None``) and
        check the sizes themselves; see :func:`metalearn._core.design.prepare_design`.

    Returns
    -------
    Data

    Raises
    ------
    ValueError
        For fewer than two rows, no features, or inconsistent ``y``, ``w``,
        ``sample_weight`` or ``propensity``.

    Examples
    --------
    >>> import numpy as np
    >>> from metalearn._core.data import prepare_data
    >>> X = np.arange(8.0).reshape(4, 2)
    >>> data = prepare_data(X, ["no", "yes", "yes", "no"], [0, 1, 0, 1],
    ...                     classification=True, propensity=0.5)
    >>> data.classes.tolist(), data.y.tolist()
    (['no', 'yes'], [0, 1, 1, 0])
    >>> data.propensity.shape
    (4, 2)
    """
    if X is None and not workflow:
        raise ValueError("`X` is required.")
    if X is None:
        # The average-effect workflow without features: zero columns, as many rows as
        # the outcome (or, without one, the treatment) has.
        rows = y if y is not None else w
        n = len(to_1d_array(rows, name="y" if y is not None else "w")) if rows is not None else 0
        Xa, schema = np.empty((n, 0)), FrameSchema(n_features=0, feature_names=None)
    else:
        Xa, schema = encode_features(X, schema)
    n = Xa.shape[0]
    if not workflow and n < 2:
        raise ValueError(
            f"Found array with {n} sample(s) (shape={Xa.shape}) while a minimum of 2 is "
            "required: `X` needs n_samples = 2 or more rows."
        )
    if not workflow and Xa.shape[1] == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={Xa.shape}) while a minimum of 1 is required."
        )
    treatment = encode_treatment(w, n)
    if y is None and workflow:
        yv, classes = np.full(n, np.nan), None  # no outcome: the workflow's Design hides it
    else:
        yv, classes = encode_outcome(y, n, classification=classification)
    sw = check_sample_weight(sample_weight, n)
    p = None
    if propensity is not None:
        p = check_propensity(propensity, n, treatment.n_variants)
    g = None if groups is None else encode_groups(groups, n)
    return Data(
        X=Xa,
        schema=schema,
        y=yv,
        classes=classes,
        w=treatment.codes,
        variants=treatment.variants,
        sample_weight=sw,
        propensity=p,
        groups=g,
    )


def encode_groups(groups: Any, n: int) -> np.ndarray:
    """Group labels as integer codes ``0 .. G-1``; missing labels (NaN, None, ``pd.NA``) and
    wrong lengths fail."""
    arr = to_1d_array(groups, name="groups")
    if arr.shape[0] != n:
        raise ValueError(
            f"`groups` has {arr.shape[0]} entries but `X` has {n} rows: pass one group label "
            "per row."
        )
    missing = is_missing(arr)
    if missing.any():
        raise ValueError(
            f"`groups` has {int(missing.sum())} missing label(s) (NaN or None), first at row "
            f"{int(np.flatnonzero(missing)[0])}: give every row a group."
        )
    try:
        _, codes = np.unique(arr, return_inverse=True)
    except TypeError as exc:  # mixed label types
        raise TypeError(f"`groups` labels must be mutually comparable: {exc}") from None
    return codes.astype(np.intp)


def align_proba(proba: np.ndarray, model_classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Put ``predict_proba`` columns in the global class order (missing -> 0).

    A model that saw a single class at fit (a variant whose rows all hold one
    outcome class) gives that class probability one, whatever the shape of its
    ``predict_proba`` (LightGBM returns two columns then).
    """
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape[1] == n_classes and np.array_equal(model_classes, np.arange(n_classes)):
        return proba
    seen = np.asarray(model_classes, dtype=np.intp)
    out = np.zeros((proba.shape[0], n_classes))
    if len(seen) == 1:
        out[:, seen[0]] = 1.0
        return out
    out[:, seen] = proba
    return out


def outcome_columns(pred: np.ndarray, model: Any, classes: np.ndarray | None) -> np.ndarray:
    """Model output -> (n, D): regression value, P(class 1), or class probabilities."""
    if classes is None:
        return np.asarray(pred, dtype=np.float64).reshape(-1, 1)
    proba = align_proba(pred, model.classes_, len(classes))
    return proba[:, [1]] if len(classes) == 2 else proba
