"""Opt-in LightGBM fast path: the features are binned once per batch of fits.

A cross-fitted stage fits many LightGBM models on row subsets of one feature
matrix ``X`` (folds x variants x model kinds). By default each fit gathers its
rows (``X[rows]``, a float copy of most of ``X``) and LightGBM bins them again.
Under :func:`shared_lightgbm_bins` the batch instead bins ``X`` once
(``lightgbm.Dataset(X).construct()``) and each fit trains on
``Dataset.subset(rows)``, as ``lightgbm.cv`` does: no float copy of the rows,
no repeated binning, and the fits of a batch share the bin boundaries.

What changes: the bin boundaries come from all rows of ``X`` (or LightGBM's
sample of ``bin_construct_sample_cnt`` = 200,000 rows of them) instead of
each fit's own rows. The features' values at prediction time are not
involved, so cross-fitting stays honest (no outcome of a held-out row is
read), but the trees differ as they would with a different bin sample:
predictions are not bit-for-bit those of the default path. The accuracy is
the same within that noise (``tests/test_lgbm_bins.py``,
``benchmarks/bench_bins.py``).

Which fits take the path: ``lightgbm.LGBMRegressor`` and ``LGBMClassifier``
instances whose ``fit`` is LightGBM's own (not overridden by a subclass),
without ``class_weight`` or a callable objective, fitted on the rows of ``X``
itself (not the S-learner's matrix with treatment columns). Every other fit
of the batch runs as before. Fits that ask for other binning settings
(``max_bin``, ...) get a binned copy of their own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = ["SharedBins", "fit_on_bins", "shared_bins_enabled", "shared_lightgbm_bins"]

# Process-wide, not a context variable: the threads that joblib and Optuna start for fits,
# trials and bootstrap replicates inside the block must see it too.
_DEPTH = [0]
_DEPTH_LOCK = threading.Lock()

# LightGBM parameters that shape the binned dataset (and their aliases in the scikit-learn
# API): fits that differ in one of them cannot share one binned copy.
_DATASET_PARAMS = (
    "max_bin",
    "max_bin_by_feature",
    "min_data_in_bin",
    "subsample_for_bin",
    "bin_construct_sample_cnt",
    "use_missing",
    "zero_as_missing",
    "linear_tree",
    "enable_bundle",
    "data_random_seed",
    "forcedbins_filename",
)

# Rows of the small fit that sets the scikit-learn side of the estimator (classes, objective,
# feature count) before its booster is trained on the binned subset.
_SEED_ROWS = 4


@contextmanager
def shared_lightgbm_bins(enabled: bool = True) -> Iterator[None]:
    """Bin the features once per batch of LightGBM fits, within the ``with`` block.

    An opt-in speed and memory setting for large data: each cross-fitted
    LightGBM fit trains on a subset of one binned copy of the features
    instead of binning a float copy of its own rows (see the module notes for
    what changes). It covers every fit that metalearn runs in this process
    while the block is open, in any thread: learners, searches,
    ``auto_cate``, the bootstrap (not fits in other processes: loky or Dask
    workers).

    Parameters
    ----------
    enabled : bool, default=True
        ``False`` makes the block do nothing (to switch the path by a flag).

    Examples
    --------
    >>> import metalearn as ml
    >>> sim = ml.datasets.simulate_nie_wager("A", n=2000, seed=0)
    >>> with ml.shared_lightgbm_bins():
    ...     tau = ml.DRLearner(random_state=0).fit(sim.X, sim.y, sim.w).predict(sim.X)
    >>> tau.shape
    (2000,)
    """
    step = 1 if enabled else 0
    with _DEPTH_LOCK:
        _DEPTH[0] += step
    try:
        yield
    finally:
        with _DEPTH_LOCK:
            _DEPTH[0] -= step


def shared_bins_enabled() -> bool:
    """Whether a :func:`shared_lightgbm_bins` block is open in this process."""
    return _DEPTH[0] > 0


def eligible(estimator: Any, extra_columns: Any) -> bool:
    """Whether a fit can train on a subset of the batch's binned features."""
    if extra_columns is not None:
        return False
    try:
        from lightgbm import LGBMClassifier, LGBMRegressor
    except ImportError:  # pragma: no cover - lightgbm is a dependency
        return False
    for cls in (LGBMRegressor, LGBMClassifier):
        if isinstance(estimator, cls):
            return (
                type(estimator).fit is cls.fit
                and getattr(estimator, "class_weight", None) is None
                and not callable(estimator.get_params().get("objective"))
            )
    return False


class SharedBins:
    """The binned copies of one feature matrix, built on first use and shared by a batch."""

    def __init__(self, X: np.ndarray, categorical: list[int]) -> None:
        self.X = X
        self.categorical = list(categorical)
        self._sets: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def dataset(self, params: dict[str, Any]) -> Any:
        """The binned ``X`` for the dataset parameters of ``params`` (built once)."""
        import lightgbm as lgb

        key = tuple(repr(params.get(name)) for name in _DATASET_PARAMS)
        with self._lock:
            ds = self._sets.get(key)
            if ds is None:
                ds_params = {k: params[k] for k in _DATASET_PARAMS if k in params}
                ds_params.update(
                    verbose=-1,
                    # Fits of one batch differ in `min_child_samples`: no feature is dropped
                    # for one fit's leaf size (a dropped feature could not be split anyway).
                    feature_pre_filter=False,
                    num_threads=params.get("num_threads", 0),
                )
                ds = lgb.Dataset(
                    self.X,
                    label=np.zeros(self.X.shape[0]),
                    categorical_feature=self.categorical or "auto",
                    params=ds_params,
                    free_raw_data=True,
                ).construct()
                self._sets[key] = ds
        return ds


def _seed_rows(target: np.ndarray, classifier: bool) -> np.ndarray:
    """A few positions of ``target`` with every class of a classifier's target among them."""
    if not classifier:
        return np.arange(min(_SEED_ROWS, len(target)))
    _, first = np.unique(target, return_index=True)
    extra = np.arange(min(_SEED_ROWS, len(target)))
    return np.unique(np.concatenate([first, extra]))


def fit_on_bins(
    estimator: Any,
    bins: SharedBins,
    train: np.ndarray,
    target: np.ndarray,
    sample_weight: np.ndarray | None,
    fit_params: dict[str, Any],
) -> Any:
    """Fit ``estimator`` (an eligible LightGBM model) on rows ``train`` of the binned ``X``.

    ``target`` and ``sample_weight`` are the values of those rows. The
    estimator is first fitted on a few of its rows (which sets its classes,
    objective and feature count through LightGBM's own ``fit``); its booster
    is then replaced by one trained with the same parameters on the subset.
    """
    import lightgbm as lgb

    order = np.argsort(train, kind="stable")
    rows = np.asarray(train)[order]
    y = np.asarray(target)[order]
    sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)[order]
    classifier = isinstance(estimator, lgb.LGBMClassifier)
    seed = _seed_rows(y, classifier)
    verbose = estimator.get_params().get("verbose")
    estimator.set_params(verbose=-1)  # the few-row fit would warn that it cannot split
    try:
        estimator.fit(bins.X[rows[seed]], y[seed], **fit_params)
    finally:
        estimator.set_params(verbose=verbose)
    params = dict(estimator.booster_.params)
    params["verbose"] = -1 if verbose is None else verbose
    n_rounds = int(params.pop("num_iterations", estimator.n_estimators))
    params.pop("metric", None)
    # A subset even of every row: fits of one batch run side by side and each sets its own
    # labels and weights.
    data = bins.dataset(params).subset(rows).construct()
    label = estimator._le.transform(y) if classifier else y
    data.set_label(label)
    data.set_weight(sw)
    booster = lgb.train(params, data, num_boost_round=n_rounds)
    booster.free_dataset()
    estimator._Booster = booster
    estimator._n_features = booster.num_feature()
    estimator._best_iteration = booster.best_iteration
    estimator._best_score = booster.best_score
    estimator._evals_result = {}
    return estimator
