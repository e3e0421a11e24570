"""Shapley values for CATE functions: per-model explainers and a model-agnostic estimator.

Private engine behind :mod:`metalearn.explain`. Two ways to get Shapley values
of a learner's CATE live here:

* **Per model** (:func:`model_shap`). When the CATE is a fixed linear
  combination ``sum_t c_t f_t(x)`` of fitted models, the Shapley values of the
  CATE are the same combination of the models' Shapley values, because
  Shapley values are linear in the game (Shapley 1953; Lundberg and Lee
  2017), provided every model is explained in the same game. Three exact
  explainers are available: TreeSHAP with path-dependent feature
  perturbation (LightGBM's own ``pred_contrib`` or SHAP's TreeExplainer;
  Lundberg et al. 2020, Algorithm 2), interventional TreeSHAP against a
  background sample (SHAP's TreeExplainer; Lundberg et al. 2020), and the
  closed form of a linear model under the same interventional game,
  :math:`\\phi_j = \\beta_j (x_j - \\bar b_j)` (Lundberg and Lee 2017).
* **Model agnostic** (:func:`interventional_shapley`). The interventional
  game :math:`v(S) = \\frac{1}{|B|}\\sum_{b \\in B} f(x_S, b_{\\bar S})` over a
  background sample ``B``, solved exactly by enumerating all coalitions when
  that is cheap, else estimated from antithetic pairs of random permutations
  (Strumbelj and Kononenko 2014; Mitchell et al. 2022). Both telescope from
  :math:`v(\\emptyset)` to :math:`v(N) = f(x)`, so base value plus the sum of
  the values equals ``f(x)`` exactly, whatever the number of permutations.

Nothing here imports ``shap`` or ``lightgbm`` at module import time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import is_classifier

__all__ = [
    "require_shap",
    "require_matplotlib",
    "model_kind",
    "model_shap",
    "interventional_shapley",
    "Unsupported",
]

# Rows of synthetic data evaluated per call of the CATE function (memory bound).
_BATCH_ROWS = 400_000


class Unsupported(Exception):
    """The per-model explainer cannot explain this model exactly (internal signal)."""


def require_shap() -> Any:
    """Import :mod:`shap`, or raise an ImportError that says how to install it."""
    try:
        import shap
    except ImportError as exc:  # pragma: no cover - exercised through a monkeypatched import
        raise ImportError(
            "metalearn.explain needs the `shap` package, a dependency of metalearn that is "
            "missing from this environment. Install it with `pip install shap` (or reinstall "
            "metalearn: `pip install metalearn`)."
        ) from exc
    return shap


def require_matplotlib() -> Any:
    """Import :mod:`matplotlib.pyplot`, or raise an ImportError naming the extra."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised through a monkeypatched import
        raise ImportError(
            "Plotting needs matplotlib, an optional dependency of metalearn. Install it with "
            "`pip install metalearn[plot]` (or `pip install matplotlib`)."
        ) from exc
    return plt


# ---------------------------------------------------------------- model kinds
def _is_lightgbm(model: Any) -> bool:
    return type(model).__module__.startswith("lightgbm") and hasattr(model, "booster_")


def model_kind(model: Any) -> str:
    """``"lightgbm"``, ``"linear"`` (a regressor with ``coef_``), or ``"other"``.

    ``"other"`` models may still be trees that SHAP's TreeExplainer knows;
    :func:`model_shap` finds out by trying.
    """
    if _is_lightgbm(model):
        return "lightgbm"
    if hasattr(model, "coef_") and hasattr(model, "intercept_") and not is_classifier(model):
        return "linear"
    return "other"


# LightGBM objectives whose prediction is not the raw score (log or logit links).
_LGBM_LINKED = {
    "poisson",
    "gamma",
    "tweedie",
    "binary",
    "cross_entropy",
    "xentropy",
    "cross_entropy_lambda",
    "xentlambda",
    "multiclass",
    "softmax",
    "multiclassova",
    "multiclass_ova",
    "ova",
    "ovr",
}


def _lgbm_identity_output(model: Any) -> bool:
    objective = getattr(model, "objective_", None)
    if callable(objective):
        return True  # custom objectives: LightGBM applies no output transform
    return str(objective) not in _LGBM_LINKED


def lgbm_has_categorical_splits(model: Any) -> bool:
    """Whether a fitted LightGBM model has categorical splits (SHAP misreads them)."""
    text = model.booster_.model_to_string(num_iteration=-1)
    for line in text.splitlines():
        if line.startswith("num_cat=") and line.strip() != "num_cat=0":
            return True
    return False


# ---------------------------------------------------------- per-model values
def model_shap(
    model: Any,
    Z: np.ndarray,
    *,
    game: str,
    background: np.ndarray | None,
    column: int | None,
) -> tuple[np.ndarray, float, str]:
    """Exact Shapley values of one fitted model on rows ``Z``.

    Parameters
    ----------
    model : fitted estimator
    Z : ndarray of shape (n, q)
        Rows as the model saw them (with any extra columns appended).
    game : {"tree_path_dependent", "interventional"}
    background : ndarray of shape (m, q) or None
        Reference rows of the interventional game.
    column : int or None
        ``None``: explain ``predict``. An int: explain column ``column`` of
        ``predict_proba`` (binary classifiers only).

    Returns
    -------
    values : ndarray of shape (n, q)
    base : float
    algorithm : str

    Raises
    ------
    Unsupported
        When no exact explainer applies to this model and game.
    """
    kind = model_kind(model)
    if game == "tree_path_dependent":
        if column is not None:
            raise Unsupported("path-dependent TreeSHAP explains the raw margin, not probabilities")
        if kind == "lightgbm":
            if not _lgbm_identity_output(model):
                raise Unsupported(f"LightGBM objective {model.objective_!r} has a link function")
            out = np.asarray(model.booster_.predict(Z, pred_contrib=True), dtype=np.float64)
            return out[:, :-1], float(out[0, -1]), "LightGBM pred_contrib (TreeSHAP)"
        if kind == "linear":
            raise Unsupported("linear models have no path-dependent game")
        shap = require_shap()
        try:
            explainer = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")
            values = explainer.shap_values(Z, check_additivity=False)
        except Exception as exc:  # SHAP raises several types for unknown models
            raise Unsupported(
                f"SHAP's TreeExplainer does not support {type(model).__name__}"
            ) from exc
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2:
            raise Unsupported("the tree model has several outputs")
        return values, float(np.ravel(explainer.expected_value)[0]), "SHAP TreeExplainer (TreeSHAP)"

    # interventional
    assert background is not None
    if kind == "linear" and column is None:
        beta = np.ravel(np.asarray(model.coef_, dtype=np.float64))
        if beta.size != Z.shape[1]:
            raise Unsupported("the linear model has several outputs")
        mean = background.mean(axis=0)
        base = float(np.ravel(model.predict(mean[None, :]))[0])
        return (Z - mean) * beta, base, "linear SHAP (closed form)"
    if kind == "lightgbm" and lgbm_has_categorical_splits(model):
        raise Unsupported("SHAP's interventional TreeSHAP misreads LightGBM categorical splits")
    if kind == "linear":
        raise Unsupported("a linear model's probability is not linear")
    shap = require_shap()
    try:
        explainer = shap.TreeExplainer(
            model,
            data=background,
            feature_perturbation="interventional",
            model_output="raw" if column is None else "probability",
        )
        values = np.asarray(explainer.shap_values(Z, check_additivity=False), dtype=np.float64)
    except Exception as exc:
        raise Unsupported(f"SHAP's TreeExplainer does not support {type(model).__name__}") from exc
    expected = np.ravel(np.asarray(explainer.expected_value, dtype=np.float64))
    if values.ndim == 3:
        if column is None or column >= values.shape[2]:
            raise Unsupported("unexpected number of model outputs")
        return values[:, :, column], float(expected[column]), "SHAP TreeExplainer (interventional)"
    if column is not None and column != 1:
        raise Unsupported("a single-output probability explains the positive class only")
    return values, float(expected[0]), "SHAP TreeExplainer (interventional)"


# --------------------------------------------------------- model-agnostic
def _shapley_weights(p: int) -> np.ndarray:
    """Matrix W (2**p, p) with phi = V @ W for the coalition values V (bitmask order)."""
    masks = (np.arange(2**p)[:, None] >> np.arange(p)[None, :]) & 1
    size = masks.sum(axis=1)
    fact = [math.factorial(k) for k in range(p + 1)]
    W = np.zeros((2**p, p))
    for s in range(2**p):
        k = int(size[s])
        for i in range(p):
            if masks[s, i]:
                W[s, i] = fact[k - 1] * fact[p - k] / fact[p]
            else:
                W[s, i] = -fact[k] * fact[p - k - 1] / fact[p]
    return W


def use_enumeration(p: int, n_permutations: int) -> bool:
    """Enumerate all coalitions when that costs no more than the permutation estimate."""
    return p <= 16 and 2**p - 2 <= n_permutations * max(p - 1, 1)


def _permutations(p: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` permutations of ``range(p)`` in antithetic pairs (a permutation and its reverse)."""
    perms: list[np.ndarray] = []
    while len(perms) < m:
        pi = rng.permutation(p)
        perms.append(pi)
        if len(perms) < m:
            perms.append(pi[::-1].copy())
    return np.asarray(perms, dtype=np.intp)


def _evaluate(
    f: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    B: np.ndarray,
    masks: np.ndarray,
) -> np.ndarray:
    """Mean over ``B`` of ``f`` on hybrid rows, for every row of ``X`` and mask.

    Returns an array (n, n_masks, E): entry ``[i, s]`` is ``v_i(S_s)``.
    """
    n, p = X.shape
    nb = B.shape[0]
    n_masks = masks.shape[0]
    per_row = max(1, n_masks * nb)
    chunk = max(1, _BATCH_ROWS // per_row)
    out: list[np.ndarray] = []
    for start in range(0, n, chunk):
        Xc = X[start : start + chunk]
        r = Xc.shape[0]
        Z = np.where(masks[None, :, None, :], Xc[:, None, None, :], B[None, None, :, :])
        vals = f(Z.reshape(-1, p))
        out.append(vals.reshape(r, n_masks, nb, -1).mean(axis=2))
    return np.concatenate(out, axis=0)


def interventional_shapley(
    f: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    background: np.ndarray,
    *,
    n_permutations: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Shapley values of ``f`` in the interventional game against ``background``.

    Parameters
    ----------
    f : callable
        Maps rows (m, p) to outputs (m, E).
    X : ndarray of shape (n, p)
        Rows to explain.
    background : ndarray of shape (nb, p)
        Reference rows.
    n_permutations : int
        Permutations for the sampled estimate (antithetic pairs).
    rng : numpy Generator

    Returns
    -------
    values : ndarray of shape (n, p, E)
    base : ndarray of shape (E,)
        :math:`v(\\emptyset)`, the mean of ``f`` over the background.
    fx : ndarray of shape (n, E)
        ``f(X)``; ``base + values.sum(1)`` equals it up to rounding.
    exact : bool
        ``True`` when all coalitions were enumerated (exact values of the
        game), ``False`` for the permutation estimate.
    """
    n, p = X.shape
    base = np.asarray(f(background), dtype=np.float64).mean(axis=0)
    fx = np.asarray(f(X), dtype=np.float64)
    E = fx.shape[1]
    if p == 1:
        return (fx - base)[:, None, :], base, fx, True
    if use_enumeration(p, n_permutations):
        bits = ((np.arange(2**p)[:, None] >> np.arange(p)[None, :]) & 1).astype(bool)
        mid = _evaluate(f, X, background, bits[1:-1])
        V = np.concatenate(
            [np.broadcast_to(base, (n, 1, E)), mid, fx[:, None, :]],
            axis=1,
        )
        values = np.einsum("nse,sp->npe", V, _shapley_weights(p))
        return values, base, fx, True
    perms = _permutations(p, n_permutations, rng)
    m = perms.shape[0]
    # masks[q, t]: the first t+1 features of permutation q are taken from x.
    ranks = np.argsort(perms, axis=1)  # ranks[q, j]: step at which feature j enters
    steps = np.arange(1, p)[:, None]
    masks = ranks[:, None, :] < steps[None, :, :]  # (m, p-1, p)
    mid = _evaluate(f, X, background, masks.reshape(-1, p)).reshape(n, m, p - 1, E)
    V = np.concatenate(
        [
            np.broadcast_to(base, (n, m, 1, E)),
            mid,
            np.broadcast_to(fx[:, None, None, :], (n, m, 1, E)),
        ],
        axis=2,
    )
    gains = np.diff(V, axis=2)  # (n, m, p, E): gain of the feature entering at each step
    values = np.take_along_axis(gains, ranks[None, :, :, None], axis=2).mean(axis=1)
    return values, base, fx, False
