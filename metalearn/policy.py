r"""Policy trees: the best shallow decision tree of whom to give which variant.

A policy :math:`\pi` maps features to one variant per row. Given a reward
matrix :math:`\Gamma` with :math:`\Gamma_{i,a}` an unbiased score of row
``i``'s outcome under variant ``a``, the doubly robust (AIPW) scores

.. math:: \Gamma_{i,a} = \hat\mu_a(X_i) + \frac{1\{W_i = a\}(Y_i - \hat\mu_a(X_i))}{\hat e_a(X_i)}

with cross-fitted outcome models :math:`\hat\mu` and propensities
:math:`\hat e` (:func:`metalearn._core.formulas.aipw_potential_outcomes`),
:class:`PolicyTree` finds the depth-``d`` tree (``d`` = 1, 2 or 3) of axis
splits ``x_j <= t`` that maximises the estimated policy value

.. math:: \hat V(\pi) = \sum_i \omega_i \big(\Gamma_{i,\pi(X_i)} - c_{\pi(X_i)}\big)

over all trees of that depth, with variant costs :math:`c_a` (zero for the
control) and row weights :math:`\omega_i`. Athey and Wager (2021) [1]_ show
that maximising the AIPW value over a class of bounded complexity gives
regret of order :math:`\sqrt{\mathrm{VC}/n}`; Zhou, Athey and Wager (2023)
[2]_ extend this to several variants and propose exactly this tree search.

The search
----------
The search is exact: every feature, every threshold between two sorted
distinct values and every leaf variant is considered (or, with
``max_split_points``, at most that many quantile thresholds per feature),
so the fitted tree has the largest :math:`\hat V` of all trees of its
depth, up to rounding. Subtracting the control's score from every column
changes :math:`\hat V` by a constant, so rewards are handled as gains over
the control and a leaf's best value is ``max(0, best gain)``.

* Depth 1: for each feature, prefix sums of the rewards in the feature's
  sorted order give both sides of every threshold at once,
  :math:`O(p\,(n + B) K)` for ``p`` features, ``B`` thresholds per feature
  and ``K`` variants.
* Depth 2: for each pair of features ``(j, k)`` the two-dimensional prefix
  sums :math:`C[b, t]` of the rows with ``x_j`` in the first ``b`` bins and
  ``x_k`` in the first ``t`` give the four quadrants of every pair of
  thresholds; the best split on ``k`` of either side of every root split on
  ``j`` (and, from the same sums, of every root split on ``k``) is then a
  maximum over one axis. :math:`O(p^2 B^2 K)` time, memory bounded by
  blocks of root thresholds.
* Depth 3: the same with three-dimensional prefix sums over each ordered
  triple of features, :math:`O(p^3 B^3 K)`.

With exact thresholds ``B`` is the number of distinct values (up to
``n``): depth 2 on ``n = 2000`` rows and 10 features takes seconds, depth 3
is practical for a few hundred rows only; ``max_split_points`` (e.g. 32)
bounds ``B`` and makes both fast for any ``n`` (the search is then exact
over the trees whose thresholds lie among the candidates). The subtrees of
the chosen root split are found by solving the smaller problem on each
side again.

Features are the encoded columns of ``X``
(:func:`metalearn._core.frames.encode_features`): a categorical column is
split on its integer codes (the category order of the column: declared
categories in their order, else the sorted values) like an ordered
feature, and :meth:`PolicyTree.export_text` shows the categories on each
side. Missing feature values are not allowed.

References
----------
.. [1] Athey, S. and Wager, S. (2021). Policy learning with observational
   data. Econometrica 89(1), 133-161.
.. [2] Zhou, Z., Athey, S. and Wager, S. (2023). Offline multi-action policy
   learning: generalization and optimization. Operations Research 71(1),
   148-183.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import narwhals.stable.v2 as nw
import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from metalearn._core.data import prepare_data
from metalearn._core.formulas import aipw_potential_outcomes, clip_bounds, clip_propensity
from metalearn._core.frames import FrameSchema, encode_features, native_backend, to_native_frame
from metalearn._core.validation import check_sample_weight, control_index
from metalearn.learners.nuisance import Nuisance

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["PolicyTree", "PolicyNode", "plot_policy_tree"]

_NEG = -np.inf
# Block sizes (elements per reward column) of the prefix-sum arrays of depth 2 and 3.
_BLOCK2 = 1 << 15
_BLOCK3 = 1 << 15
# Depth 2 builds the prefix sums of a block row by row (one update per data row) when
# there are many bins per row of data, and by cumulative sums of histograms otherwise.
_SPARSE_RATIO = 300
# Bisection steps of the budget's penalty.
_BISECTION_STEPS = 40
_DEFAULT_CLIP = 0.05
# Warn above this many prefix-sum cells of a depth-3 search.
_WARN_CELLS3 = 2e9


# ------------------------------------------------------------------ results
@dataclass(frozen=True)
class PolicyNode:
    """One node of a fitted :class:`PolicyTree` (``tree.nodes_``).

    Attributes
    ----------
    node_id : int
        Position in ``nodes_`` (the root is 0; children follow in depth-first order).
    depth : int
        Depth of the node (the root has depth 0).
    feature : str or None
        Name of the split feature (``None`` for a leaf).
    feature_index : int
        Column of the split feature in ``X`` (-1 for a leaf).
    threshold : float
        Rows with ``x <= threshold`` go left (NaN for a leaf).
    left, right : int
        ``node_id`` of the children (-1 for a leaf).
    action : object or None
        The variant a leaf assigns (``None`` for a split).
    n_samples : int
        Training rows in the node.
    gain : float
        Mean estimated gain per row of the node's policy over giving its
        rows the control, net of costs (in outcome units), on the training
        rows. In-sample, hence optimistic: evaluate the policy on held-out
        rows with :meth:`PolicyTree.value`.

    Examples
    --------
    >>> import numpy as np
    >>> from metalearn.policy import PolicyTree
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> rewards = np.array([[0.0, -1.0], [0.0, -1.0], [0.0, 2.0], [0.0, 2.0]])
    >>> root = PolicyTree(depth=1).fit(X, rewards=rewards).nodes_[0]
    >>> root.feature, root.threshold, root.gain
    ('x0', 1.5, 1.0)
    """

    node_id: int
    depth: int
    feature: str | None
    feature_index: int
    threshold: float
    left: int
    right: int
    action: Any
    n_samples: int
    gain: float

    @property
    def is_leaf(self) -> bool:
        """Whether the node is a leaf."""
        return self.feature_index < 0


# ---------------------------------------------------------- the exact search
def _mx(P: np.ndarray) -> np.ndarray:
    """Best leaf value of sets with reward sums ``P`` (K1, ...): ``max(0, max_k P_k)``."""
    out = np.maximum(P[0], 0.0)
    for k in range(1, P.shape[0]):
        np.maximum(out, P[k], out=out)
    return out


def _quad(P: np.ndarray, counts: np.ndarray | None, m: int) -> np.ndarray:
    """Leaf values of sets, -inf where a set has fewer than ``m`` rows (``m > 1``)."""
    q = _mx(P)
    if counts is not None and m > 1:
        q[counts < m] = _NEG
    return q


def _hist(idx: np.ndarray, R: np.ndarray, size: int) -> np.ndarray:
    """Per-column sums of ``R`` (K1, rows) in the cells ``idx``: (K1, size)."""
    out = np.empty((R.shape[0], size))
    for k in range(R.shape[0]):
        out[k] = np.bincount(idx, weights=R[k], minlength=size)
    return out


@dataclass
class _Split:
    feature: int
    bin: int
    left: Any
    right: Any


@dataclass
class _Leaf:
    action: int  # 0: control; k: treated column k - 1
    rows: np.ndarray


class _Search:
    """Exact search over binned features: ``codes`` (n, p), ``R`` (K1, n) gains."""

    def __init__(self, codes: np.ndarray, n_bins: list[int], R: np.ndarray, m: int) -> None:
        self.codes = codes
        self.nb = n_bins
        self.R = R
        self.m = m
        self.mm = max(m, 1)
        self.tol = 1e-12 * (float(np.abs(R).sum()) + 1.0)

    # -------------------------------------------------------------- leaves
    def leaf(self, rows: np.ndarray) -> tuple[float, int]:
        tot = self.R[:, rows].sum(axis=1)
        k = int(np.argmax(tot))
        return (float(tot[k]), k + 1) if tot[k] > 0 else (0.0, 0)

    # -------------------------------------------------------------- depth 1
    def solve1(self, rows: np.ndarray) -> tuple[float, tuple[int, int] | None]:
        Rs = self.R[:, rows]
        tot = Rs.sum(axis=1)
        n = len(rows)
        best: tuple[float, tuple[int, int] | None] = (_NEG, None)
        for j, B in enumerate(self.nb):
            c = self.codes[rows, j]
            P = np.cumsum(_hist(c, Rs, B), axis=1)
            Pn = np.cumsum(np.bincount(c, minlength=B))
            v = _mx(P) + _mx(tot[:, None] - P)
            v[(Pn < self.mm) | (n - Pn < self.mm)] = _NEG
            b = int(np.argmax(v))
            if v[b] > best[0]:
                best = (float(v[b]), (j, b))
        return best

    # -------------------------------------------------------------- depth 2
    def _blocks2(
        self, cj: np.ndarray, c2: np.ndarray, Rj: np.ndarray, B1: int, B2: int, counts: bool
    ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray | None]]:
        """Blocks of the prefix sums ``C[b, t]`` (K1, rows b of the block, B2).

        ``C[b, t]`` sums the rows with ``code_j <= b`` and ``code_k <= t``;
        ``cj`` is sorted. The counts of rows come along when ``counts``.
        """
        K1 = Rj.shape[0]
        eb = max(1, _BLOCK2 // max(B2, 1))
        starts = np.searchsorted(cj, np.arange(B1 + 1))
        sparse = _SPARSE_RATIO * (len(cj) + B1) < B1 * B2
        if sparse:
            cur = np.zeros((K1, B2))
            curn = np.zeros(B2)
            for s in range(0, B1, eb):
                e = min(B1, s + eb)
                C = np.empty((K1, e - s, B2))
                Cn = np.empty((e - s, B2)) if counts else None
                for b in range(s, e):
                    for i in range(starts[b], starts[b + 1]):
                        cur[:, c2[i] :] += Rj[:, i : i + 1]
                        if counts:
                            curn[c2[i] :] += 1.0
                    C[:, b - s] = cur
                    if Cn is not None:
                        Cn[b - s] = curn
                yield s, e, C, Cn
            return
        carry = np.zeros((K1, B2))
        carryn = np.zeros(B2)
        for s in range(0, B1, eb):
            e = min(B1, s + eb)
            lo, hi = starts[s], starts[e]
            idx = (cj[lo:hi] - s) * B2 + c2[lo:hi]
            G = np.cumsum(_hist(idx, Rj[:, lo:hi], (e - s) * B2).reshape(K1, e - s, B2), axis=1)
            G += carry[:, None, :]
            carry = G[:, -1].copy()
            C = np.cumsum(G, axis=2)
            Cn = None
            if counts:
                Hn = np.bincount(idx, minlength=(e - s) * B2).reshape(e - s, B2)
                Gn = np.cumsum(Hn, axis=0) + carryn[None, :]
                carryn = Gn[-1].copy()
                Cn = np.cumsum(Gn, axis=1)
            yield s, e, C, Cn

    def _sides2(self, rows: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Best depth-1 subtree value of each side of every root split (leaves included)."""
        m = self.m
        Rs = self.R[:, rows]
        Sc = self.codes[rows]
        n = len(rows)
        Stot = Rs.sum(axis=1)
        p = Sc.shape[1]
        VL = [np.full(B, _NEG) for B in self.nb]
        VR = [np.full(B, _NEG) for B in self.nb]
        counts = m > 1
        for j in range(p):
            o = np.argsort(Sc[:, j], kind="stable")
            cj = Sc[o, j]
            Rj = Rs[:, o]
            B1 = self.nb[j]
            Pj = np.cumsum(_hist(cj, Rj, B1), axis=1)
            np.maximum(VL[j], _mx(Pj), out=VL[j])  # a leaf on either side
            np.maximum(VR[j], _mx(Stot[:, None] - Pj), out=VR[j])
            for k in range(j, p):
                B2 = self.nb[k]
                c2 = Sc[o, k]
                colC = np.cumsum(_hist(c2, Rj, B2), axis=1)
                colN = np.cumsum(np.bincount(c2, minlength=B2)).astype(np.float64)
                accL = np.full(B2, _NEG)
                accR = np.full(B2, _NEG)
                for s, e, C, Cn in self._blocks2(cj, c2, Rj, B1, B2, counts):
                    Lt = C[:, :, -1:]
                    Ln = None if Cn is None else Cn[:, -1:]
                    # The four quadrants of (root split b on j) x (split t on k).
                    q1 = _quad(C, Cn, m)
                    q2 = _quad(Lt - C, None if Cn is None else Ln - Cn, m)
                    D = colC[:, None, :] - C
                    Dn = None if Cn is None else colN - Cn
                    q3 = _quad(D, Dn, m)
                    np.subtract(Stot[:, None, None] - Lt, D, out=D)
                    q4 = _quad(D, None if Dn is None or Ln is None else (n - Ln) - Dn, m)
                    np.maximum(VL[j][s:e], (q1 + q2).max(axis=1), out=VL[j][s:e])
                    np.maximum(VR[j][s:e], (q3 + q4).max(axis=1), out=VR[j][s:e])
                    if k != j:  # the same sums, with the root split on k
                        np.maximum(accL, (q1 + q3).max(axis=0), out=accL)
                        np.maximum(accR, (q2 + q4).max(axis=0), out=accR)
                if k != j:
                    np.maximum(VL[k], accL, out=VL[k])
                    np.maximum(VR[k], accR, out=VR[k])
        return VL, VR

    def _root(
        self, rows: np.ndarray, VL: list[np.ndarray], VR: list[np.ndarray]
    ) -> tuple[float, tuple[int, int] | None]:
        best: tuple[float, tuple[int, int] | None] = (_NEG, None)
        n = len(rows)
        for j, B in enumerate(self.nb):
            n_left = np.cumsum(np.bincount(self.codes[rows, j], minlength=B))
            v = VL[j] + VR[j]
            v[(n_left < self.mm) | (n - n_left < self.mm)] = _NEG
            b = int(np.argmax(v))
            if v[b] > best[0]:
                best = (float(v[b]), (j, b))
        return best

    def solve2(self, rows: np.ndarray) -> tuple[float, tuple[int, int] | None]:
        VL, VR = self._sides2(rows)
        return self._root(rows, VL, VR)

    # -------------------------------------------------------------- depth 3
    def solve3(self, rows: np.ndarray) -> tuple[float, tuple[int, int] | None]:
        m, mm = self.m, self.mm
        Rs = self.R[:, rows]
        Sc = self.codes[rows]
        n = len(rows)
        Stot = Rs.sum(axis=1)
        K1, p = Rs.shape[0], Sc.shape[1]
        VL: list[np.ndarray] = []
        VR: list[np.ndarray] = []
        counts = m > 1
        for j in range(p):
            B1 = self.nb[j]
            cj = Sc[:, j]
            o = np.argsort(cj, kind="stable")
            sorted_j = (Sc[o], Rs[:, o])
            Pj = np.cumsum(_hist(cj, Rs, B1), axis=1)
            Pjn = np.cumsum(np.bincount(cj, minlength=B1)).astype(np.float64)
            left = _mx(Pj)  # a leaf on either side of the root split
            right = _mx(Stot[:, None] - Pj)
            for k in range(p):
                B2 = self.nb[k]
                c2 = Sc[:, k]
                idx2 = cj * B2 + c2
                C2 = np.cumsum(np.cumsum(_hist(idx2, Rs, B1 * B2).reshape(K1, B1, B2), 1), 2)
                C2n = np.cumsum(
                    np.cumsum(np.bincount(idx2, minlength=B1 * B2).reshape(B1, B2), 0), 1
                ).astype(np.float64)
                col2 = C2[:, -1:, :]
                col2n = C2n[-1:, :]
                # Each of the four grandchildren sets: a leaf or a split on some third feature.
                sets = [
                    _mx(C2),
                    _mx(Pj[:, :, None] - C2),
                    _mx(col2 - C2),
                    _mx(Stot[:, None, None] - Pj[:, :, None] - col2 + C2),
                ]
                for r in range(p):
                    self._third(sorted_j, j, k, r, sets, counts)
                n_ll = C2n
                n_lr = Pjn[:, None] - C2n
                n_rl = col2n - C2n
                n_rr = n - Pjn[:, None] - col2n + C2n
                v_left = sets[0] + sets[1]
                v_left[(n_ll < mm) | (n_lr < mm)] = _NEG
                v_right = sets[2] + sets[3]
                v_right[(n_rl < mm) | (n_rr < mm)] = _NEG
                np.maximum(left, v_left.max(axis=1), out=left)
                np.maximum(right, v_right.max(axis=1), out=right)
            VL.append(left)
            VR.append(right)
        return self._root(rows, VL, VR)

    def _third(
        self,
        sorted_j: tuple[np.ndarray, np.ndarray],
        j: int,
        k: int,
        r: int,
        sets: list[np.ndarray],
        counts: bool,
    ) -> None:
        """Raise ``sets`` (best values of the sets after splits on j and k) by splits on r."""
        m = self.m
        So, Ro = sorted_j  # the rows sorted by their bin of feature j
        K1 = Ro.shape[0]
        B1, B2, B3 = self.nb[j], self.nb[k], self.nb[r]
        cj, c2, c3 = So[:, j], So[:, k], So[:, r]
        idx23 = c2 * B3 + c3
        F = np.cumsum(np.cumsum(_hist(idx23, Ro, B2 * B3).reshape(K1, B2, B3), 1), 2)[:, None]
        Fn = None
        if counts:
            Fn = np.cumsum(
                np.cumsum(np.bincount(idx23, minlength=B2 * B3).reshape(B2, B3), 0), 1
            ).astype(np.float64)[None]
        starts = np.searchsorted(cj, np.arange(B1 + 1))
        eb = max(1, _BLOCK3 // max(B2 * B3, 1))
        carry = np.zeros((K1, B2, B3))
        carryn = np.zeros((B2, B3))
        for s in range(0, B1, eb):
            e = min(B1, s + eb)
            lo, hi = starts[s], starts[e]
            idx = ((cj[lo:hi] - s) * B2 + c2[lo:hi]) * B3 + c3[lo:hi]
            size = (e - s) * B2 * B3
            G = np.cumsum(_hist(idx, Ro[:, lo:hi], size).reshape(K1, e - s, B2, B3), axis=1)
            G += carry[:, None]
            carry = G[:, -1].copy()
            C = np.cumsum(np.cumsum(G, axis=2), axis=3)
            A = C[:, :, -1:, :]
            prefixes = [C, A - C, F - C, F[:, :, -1:, :] - A - F + C]
            ns: list[Any] = [None] * 4
            if counts:
                assert Fn is not None
                Hn = np.bincount(idx, minlength=size).reshape(e - s, B2, B3)
                Gn = np.cumsum(Hn, axis=0) + carryn[None]
                carryn = Gn[-1].copy()
                Cn = np.cumsum(np.cumsum(Gn, axis=1), axis=2).astype(np.float64)
                An = Cn[:, -1:, :]
                ns = [Cn, An - Cn, Fn - Cn, Fn[:, -1:, :] - An - Fn + Cn]
            for q, (P, Pn) in enumerate(zip(prefixes, ns)):
                low = _quad(P, Pn, m)
                high = _quad(P[..., -1:] - P, None if Pn is None else Pn[..., -1:] - Pn, m)
                low += high
                np.maximum(sets[q][s:e], low.max(axis=-1), out=sets[q][s:e])

    # --------------------------------------------------------- the tree
    def grow(self, rows: np.ndarray, depth: int) -> _Split | _Leaf:
        value, action = self.leaf(rows)
        if depth == 0 or len(rows) < 2 * self.mm:
            return _Leaf(action, rows)
        solve = {1: self.solve1, 2: self.solve2, 3: self.solve3}[depth]
        best, split = solve(rows)
        if split is None or best <= value + self.tol:
            return _Leaf(action, rows)
        j, b = split
        go_left = self.codes[rows, j] <= b
        left = self.grow(rows[go_left], depth - 1)
        right = self.grow(rows[~go_left], depth - 1)
        if isinstance(left, _Leaf) and isinstance(right, _Leaf) and left.action == right.action:
            return _Leaf(left.action, rows)  # the split changes no assignment
        return _Split(j, b, left, right)


# ------------------------------------------------------------------ helpers
def _bins(x: np.ndarray, max_split_points: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Candidate thresholds (midpoints between distinct values) and the bin of each row."""
    u, counts = np.unique(x, return_counts=True)
    lo, hi = u[:-1], u[1:]
    mids = lo + (hi - lo) / 2.0
    mids = np.where(mids >= hi, lo, mids)  # adjacent floats: keep `lo` on the left
    if max_split_points is not None and len(mids) > max_split_points:
        share = np.cumsum(counts)[:-1] / len(x)
        levels = np.arange(1, max_split_points + 1) / (max_split_points + 1)
        pick = np.unique(np.minimum(np.searchsorted(share, levels), len(mids) - 1))
        mids = mids[pick]
    return mids, np.searchsorted(mids, x, side="left").astype(np.intp)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)


def _label(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _fmt(v: float) -> str:
    return f"{v:.4g}"


# ---------------------------------------------------------------- the tree
class PolicyTree(BaseEstimator):
    r"""Exact depth-limited policy tree maximising the doubly robust policy value.

    Finds the tree of depth ``depth`` whose leaves assign variants so that
    the sum over the training rows of the reward of the assigned variant,
    net of its cost, is the largest among all such trees (Athey and Wager
    2021; Zhou, Athey and Wager 2023; see :mod:`metalearn.policy` for the
    search and its cost). The rewards are the AIPW scores of every variant:

    * ``fit(X, learner=dr)``: from a fitted :class:`~metalearn.DRLearner`
      (its pseudo-outcomes, with its own propensity clip); ``X`` are the
      features for the tree on the learner's training rows, in order (any
      columns: often a few interpretable ones);
    * ``fit(X, y, w, learner=fitted)``: from the cross-fitted outcome models
      and propensities of any fitted learner whose nuisance stage has both
      (e.g. one fitted with a shared :class:`~metalearn.Nuisance`);
    * ``fit(X, y, w, nuisance=nuis)``: from a fitted ``Nuisance``;
    * ``fit(X, rewards=gamma)``: from a reward matrix of your own, one
      column per variant (columns of a frame name the variants; those of an
      array are variants ``0 .. K-1``).

    Parameters
    ----------
    depth : int, default=2
        Depth of the tree: 1, 2 or 3 (at most ``2 ** depth`` leaves). Splits
        that change no assignment are merged, so a fitted tree can be smaller.
    min_leaf_size : int, default=1
        Fewest training rows in a leaf.
    max_split_points : int, optional
        At most this many candidate thresholds per feature, at quantiles of
        its values. ``None``: every midpoint between two distinct values (the
        exact search). Needed for depth 3 beyond a few hundred rows.
    costs : float, sequence, dict, optional
        Cost of each treated variant, in outcome units, subtracted from its
        rewards: one number for all, one per treated variant (in the order of
        ``variants_`` without the control), or ``{variant: cost}``. The
        control costs nothing.
    budget : float in (0, 1], optional
        Largest share of the rows (of their weight) that the tree may give
        a variant other than the control. Met through a penalty
        :math:`\lambda` per treated row, found by bisection: the fitted tree
        is the best tree for the rewards minus :math:`\lambda`, which makes it
        the tree of largest value among all trees treating at most its own
        share ``share_treated_ <= budget``. A tree treating a share between
        that and ``budget`` can be better (the Lagrangian relaxation of a
        discrete problem); each bisection step is one search.
    control : object, optional
        The reference variant: the learner's control by default, else ``0``
        if present, else the first variant. The budget counts the rows given
        any other variant.
    propensity_clip : "auto", None, float or (float, float), default="auto"
        Clip of the propensities in the AIPW scores (the library's clip rule,
        :mod:`metalearn._core.formulas`): ``"auto"`` uses the learner's own
        ``propensity_clip`` when it has one, else 0.05. Not used with
        ``rewards``.

    Attributes
    ----------
    nodes_ : tuple of PolicyNode
        The tree, root first (depth-first order).
    variants_ : ndarray
        The variants, in the reward columns' order.
    control_ : object
        The control variant.
    costs_ : ndarray of shape (n_variants,)
        Cost of each variant (0 for the control).
    penalty_ : float
        The budget's penalty per treated row (0 without a budget).
    share_treated_ : float
        Share of the training rows (of their weight) not given the control.
    gain_ : float
        Mean estimated gain per training row over giving everyone the
        control, net of costs (in-sample, hence optimistic).
    n_split_points_ : ndarray of shape (n_features,)
        Number of candidate thresholds of each feature.
    n_features_in_ : int
    feature_names_in_ : ndarray
        Column names, when ``X`` is a frame.

    Examples
    --------
    >>> import metalearn as ml
    >>> from sklearn.linear_model import LinearRegression
    >>> sim = ml.datasets.simulate_multiarm(n=4000, seed=0)  # 3 arms, known propensities
    >>> nuis = ml.Nuisance(outcome_model=LinearRegression(), n_folds=2, random_state=0)
    >>> nuis = nuis.fit(sim.X, sim.y, sim.w, propensity=sim.propensity)
    >>> tree = ml.PolicyTree(depth=2, min_leaf_size=50, max_split_points=16)
    >>> print(tree.fit(sim.X, sim.y, sim.w, nuisance=nuis).export_text())
    x1 <= -0.085
    |   x0 <= -0.518
    |   |   -> 0 (n=547, gain=0)
    |   x0 > -0.518
    |   |   -> 1 (n=1336, gain=1.087)
    x1 > -0.085
    |   x0 <= 0.566
    |   |   -> 2 (n=1529, gain=1.049)
    |   x0 > 0.566
    |   |   -> 1 (n=588, gain=1.789)
    >>> tree.predict(sim.X[:4]).tolist()
    [1, 1, 0, 2]
    >>> test = ml.datasets.simulate_multiarm(n=4000, seed=1)
    >>> v = tree.value(test.X, test.y, test.w, propensity=test.propensity)
    >>> bool(v.gain_over_all > 0)
    True
    """

    def __init__(
        self,
        depth: int = 2,
        *,
        min_leaf_size: int = 1,
        max_split_points: int | None = None,
        costs: Any = None,
        budget: float | None = None,
        control: Any = None,
        propensity_clip: Any = "auto",
    ) -> None:
        self.depth = depth
        self.min_leaf_size = min_leaf_size
        self.max_split_points = max_split_points
        self.costs = costs
        self.budget = budget
        self.control = control
        self.propensity_clip = propensity_clip

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        X: Any,
        y: Any = None,
        w: Any = None,
        *,
        learner: Any = None,
        nuisance: Any = None,
        rewards: Any = None,
        sample_weight: Any = None,
    ) -> PolicyTree:
        """Find the best tree for the rewards of the rows of ``X``.

        Parameters
        ----------
        X : frame or array-like of shape (n_samples, n_features)
            Features of the tree, for the rows the rewards belong to.
        y, w : array-like of shape (n_samples,), optional
            Outcomes and variants, for rewards from ``nuisance`` or from a
            learner's nuisance stage (not needed with a DR-learner).
        learner : fitted learner, optional
            A fitted :class:`~metalearn.DRLearner`, or (with ``y`` and ``w``)
            any fitted learner whose nuisance stage has cross-fitted outcome
            models and propensities.
        nuisance : Nuisance, optional
            A fitted :class:`~metalearn.Nuisance` (with ``y`` and ``w``).
        rewards : array-like or frame of shape (n_samples, n_variants), optional
            A reward matrix: ``rewards[i, a]`` scores row ``i``'s outcome
            under variant ``a``.
        sample_weight : array-like of shape (n_samples,), optional
            Row weights of the policy value and of the budget's share.

        Returns
        -------
        self : PolicyTree
        """
        self._check_params()
        gamma, variants, control, Xa, schema = self._rewards(X, y, w, learner, nuisance, rewards)
        n = Xa.shape[0]
        sw = check_sample_weight(sample_weight, n)
        weight = np.ones(n) if sw is None else sw
        if weight.sum() <= 0:
            raise ValueError("`sample_weight` must have a positive sum.")
        if not np.all(np.isfinite(Xa)):
            bad = np.flatnonzero(~np.all(np.isfinite(Xa), axis=0))
            names = [schema.output_names()[j] for j in bad[:5]]
            raise ValueError(
                f"`X` holds NaN or infinite values in columns {names}: a policy tree needs "
                "complete features. Impute or drop those rows or columns."
            )
        K = len(variants)
        costs = self._cost_vector(variants, control)
        treated = [a for a in range(K) if a != control]
        net = gamma - costs[None, :]
        gains = net[:, treated] - net[:, [control]]  # (n, K-1): gains over the control

        cuts, codes = [], np.empty(Xa.shape, dtype=np.intp)
        for j in range(Xa.shape[1]):
            c, codes[:, j] = _bins(Xa[:, j], self.max_split_points)
            cuts.append(c)
        n_bins = [len(c) + 1 for c in cuts]
        if int(self.depth) == 3 and float(sum(n_bins)) ** 3 > _WARN_CELLS3:
            warnings.warn(
                f"depth=3 searches about (sum of thresholds per feature)^3 = "
                f"{float(sum(n_bins)) ** 3:.2g} cells (about a minute per 1e9 here); pass "
                "`max_split_points` (e.g. 32) to bound the thresholds per feature.",
                UserWarning,
                stacklevel=2,
            )
        rows = np.arange(n)

        def grow(penalty: float) -> tuple[_Split | _Leaf, float]:
            R = np.ascontiguousarray(((gains - penalty) * weight[:, None]).T)
            search = _Search(codes, n_bins, R, int(self.min_leaf_size))
            root = search.grow(rows, int(self.depth))
            treated_w = sum(float(weight[lf.rows].sum()) for lf in _leaves(root) if lf.action)
            return root, treated_w / float(weight.sum())

        penalty = 0.0
        root, share = grow(0.0)
        if self.budget is not None and share > self.budget:
            lo, hi = 0.0, float(np.max(gains)) * (1.0 + 1e-9) + 1e-12
            root, share = grow(hi)  # nothing is worth treating at this penalty
            for _ in range(_BISECTION_STEPS):
                mid = 0.5 * (lo + hi)
                cand, cand_share = grow(mid)
                if cand_share <= self.budget:
                    hi, root, share = mid, cand, cand_share
                else:
                    lo = mid
                if hi - lo <= 1e-9 * hi or share >= self.budget - 0.5 / n:
                    break
            penalty = hi

        self.variants_ = variants
        self.control_ = _label(variants[control])
        self.costs_ = costs
        self.penalty_ = penalty
        self.share_treated_ = share
        self.schema_ = schema
        self.n_features_in_ = Xa.shape[1]
        if schema.feature_names is not None:
            self.feature_names_in_ = np.asarray(schema.feature_names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.n_split_points_ = np.array([len(c) for c in cuts])
        self._control_code = control
        self._treated_codes = treated
        self.nodes_ = self._flatten(root, cuts, gains, weight)
        self.gain_ = float(
            np.sum(weight * self._row_gain(gains, self._codes_of(root, n))) / weight.sum()
        )
        return self

    # ------------------------------------------------------------- predict
    def apply(self, X: Any) -> np.ndarray:
        """Leaf (``node_id`` in ``nodes_``) of each row.

        Parameters
        ----------
        X : frame or array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)

        Examples
        --------
        >>> import numpy as np
        >>> from metalearn.policy import PolicyTree
        >>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
        >>> rewards = np.array([[0.0, -1.0], [0.0, -1.0], [0.0, 2.0], [0.0, 2.0]])
        >>> PolicyTree(depth=1).fit(X, rewards=rewards).apply(X).tolist()
        [1, 1, 2, 2]
        """
        check_is_fitted(self, "nodes_")
        Xa, _ = encode_features(X, self.schema_)
        if not np.all(np.isfinite(Xa)):
            raise ValueError(
                "`X` holds NaN or infinite values: a policy tree needs complete features."
            )
        feature = np.array([nd.feature_index for nd in self.nodes_])
        threshold = np.array([nd.threshold for nd in self.nodes_])
        left = np.array([nd.left for nd in self.nodes_])
        right = np.array([nd.right for nd in self.nodes_])
        node = np.zeros(Xa.shape[0], dtype=np.intp)
        rows = np.arange(Xa.shape[0])
        for _ in range(int(self.depth)):
            inner = feature[node] >= 0
            if not inner.any():
                break
            f = np.where(inner, feature[node], 0)
            go_left = Xa[rows, f] <= threshold[node]
            node = np.where(inner, np.where(go_left, left[node], right[node]), node)
        return node

    def predict(self, X: Any) -> np.ndarray:
        """Variant the tree assigns to each row (labels of ``variants_``).

        Parameters
        ----------
        X : frame or array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)

        Examples
        --------
        >>> import numpy as np
        >>> from metalearn.policy import PolicyTree
        >>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
        >>> rewards = np.array([[0.0, -1.0], [0.0, -1.0], [0.0, 2.0], [0.0, 2.0]])
        >>> PolicyTree(depth=1).fit(X, rewards=rewards).predict([[0.5], [2.5]]).tolist()
        [0, 1]
        """
        leaf = self.apply(X)
        codes = np.array([self._code(nd.action) if nd.is_leaf else -1 for nd in self.nodes_])
        return self.variants_[codes[leaf]]

    def predict_frame(self, X: Any) -> Any:
        """:meth:`predict` as a frame with columns ``policy`` (the variant) and ``leaf``.

        The frame has the type of ``X`` (pandas or Polars; Polars for numpy
        input); a pandas frame keeps the row index of ``X``.

        Parameters
        ----------
        X : frame or array-like of shape (n_samples, n_features)

        Returns
        -------
        frame

        Examples
        --------
        >>> import numpy as np
        >>> from metalearn.policy import PolicyTree
        >>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
        >>> rewards = np.array([[0.0, -1.0], [0.0, -1.0], [0.0, 2.0], [0.0, 2.0]])
        >>> PolicyTree(depth=1).fit(X, rewards=rewards).predict_frame(X).columns
        ['policy', 'leaf']
        """
        leaf = self.apply(X)
        codes = np.array([self._code(nd.action) if nd.is_leaf else -1 for nd in self.nodes_])
        out = to_native_frame(
            {"policy": self.variants_[codes[leaf]], "leaf": leaf}, native_backend(X)
        )
        index = getattr(X, "index", None)
        if index is not None and type(out).__module__.startswith("pandas"):
            out.index = index
        return out

    def value(
        self,
        X: Any,
        y: Any,
        w: Any,
        *,
        propensity: Any,
        mu: Any = None,
        sample_weight: Any = None,
        level: float = 0.95,
    ) -> Any:
        """Estimated value of the tree's policy on rows it was not fitted on, with its costs.

        :func:`metalearn.evaluation.policy_value` of ``predict(X)``, with
        ``cost`` the tree's ``costs`` and its control: the policy's mean
        outcome per row net of costs, against treating no one and treating
        everyone, with standard errors.

        Parameters
        ----------
        X : frame or array-like of shape (n_samples, n_features)
            Held-out rows.
        y, w : array-like of shape (n_samples,)
            Their outcomes and variants.
        propensity : float or array-like
            Their propensities (known ones in an experiment).
        mu : array-like of shape (n_samples, n_variants), optional
            Outcome predictions under every variant, for AIPW instead of IPW
            scores (cross-fitted on the held-out rows, e.g.
            ``metalearn.scoring.fit_scoring_nuisance(X, y, w).outcomes[..., 0]``).
        sample_weight : array-like of shape (n_samples,), optional
        level : float, default=0.95

        Returns
        -------
        metalearn.evaluation.PolicyValue

        Examples
        --------
        >>> import metalearn as ml
        >>> sim = ml.datasets.simulate_nie_wager("A", n=1000, seed=0)
        >>> gamma = sim.mu + 0.0  # true mean outcomes as rewards
        >>> tree = ml.PolicyTree(depth=1, costs=0.5).fit(sim.X, rewards=gamma)
        >>> test = ml.datasets.simulate_nie_wager("A", n=2000, seed=1)
        >>> v = tree.value(test.X, test.y, test.w, propensity=test.propensity)
        >>> v.method, bool(v.share_treated > 0)
        ('IPW', True)
        """
        from metalearn.evaluation import policy_value

        check_is_fitted(self, "nodes_")
        cost = {_label(self.variants_[k]): float(self.costs_[k]) for k in self._treated_codes}
        return policy_value(
            None,
            y,
            w,
            policy=self.predict(X),
            cost=cost,
            propensity=propensity,
            mu=mu,
            control=self.control_,
            sample_weight=sample_weight,
            level=level,
        )

    # -------------------------------------------------------------- views
    def export_text(self, *, decimals: int = 3) -> str:
        """The tree as indented text: splits, and each leaf's variant, rows and gain.

        A leaf line reads ``-> variant (n=rows, gain=g)`` with ``g`` the mean
        in-sample gain per row over the control, net of costs. A categorical
        feature's split lists the categories on each side.

        Parameters
        ----------
        decimals : int, default=3
            Decimals of the thresholds.

        Returns
        -------
        str

        Examples
        --------
        >>> import numpy as np
        >>> from metalearn.policy import PolicyTree
        >>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
        >>> rewards = np.array([[0.0, -1.0], [0.0, -1.0], [0.0, 2.0], [0.0, 2.0]])
        >>> print(PolicyTree(depth=1).fit(X, rewards=rewards).export_text())
        x0 <= 1.5
        |   -> 0 (n=2, gain=0)
        x0 > 1.5
        |   -> 1 (n=2, gain=2)
        """
        check_is_fitted(self, "nodes_")
        lines: list[str] = []

        def walk(i: int, indent: str) -> None:
            nd = self.nodes_[i]
            if nd.is_leaf:
                lines.append(f"{indent}-> {nd.action} (n={nd.n_samples}, gain={_fmt(nd.gain)})")
                return
            low, high = self._conditions(nd, decimals)
            lines.append(indent + low)
            walk(nd.left, indent + "|   ")
            lines.append(indent + high)
            walk(nd.right, indent + "|   ")

        if self.nodes_[0].is_leaf:
            walk(0, "")
        else:
            root = self.nodes_[0]
            low, high = self._conditions(root, decimals)
            lines.append(low)
            walk(root.left, "|   ")
            lines.append(high)
            walk(root.right, "|   ")
        return "\n".join(lines)

    def _conditions(self, nd: PolicyNode, decimals: int) -> tuple[str, str]:
        cats = self.schema_.categories.get(nd.feature_index)
        if cats is not None:
            cut = int(np.floor(nd.threshold)) + 1
            show = lambda c: "{" + ", ".join(str(v) for v in c) + "}"  # noqa: E731
            return f"{nd.feature} in {show(cats[:cut])}", f"{nd.feature} in {show(cats[cut:])}"
        t = f"{nd.threshold:.{decimals}f}".rstrip("0").rstrip(".")
        if float(t) == 0.0 and nd.threshold != 0.0:
            t = f"{nd.threshold:.{decimals}g}"
        t = "0" if t == "-0" else t
        return f"{nd.feature} <= {t}", f"{nd.feature} > {t}"

    # ------------------------------------------------------------ internals
    def _check_params(self) -> None:
        d = self.depth
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or not 1 <= d <= 3:
            raise ValueError(f"`depth` must be 1, 2 or 3; got {d!r}.")
        m = self.min_leaf_size
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
            raise ValueError(f"`min_leaf_size` must be an integer >= 1; got {m!r}.")
        q = self.max_split_points
        if q is not None and (isinstance(q, bool) or not isinstance(q, numbers.Integral) or q < 1):
            raise ValueError(f"`max_split_points` must be None or an integer >= 1; got {q!r}.")
        b = self.budget
        if b is not None and (not _is_number(b) or not 0 < float(b) <= 1):
            raise ValueError(
                f"`budget` must be None or a number in (0, 1], the largest share of rows to "
                f"treat; got {b!r}."
            )
        clip = self.propensity_clip
        if not (isinstance(clip, str) and clip == "auto") and clip is not None:
            try:
                lo, hi = clip_bounds(clip)
            except (TypeError, ValueError):
                lo, hi = np.nan, np.nan
            if not 0 <= lo < hi <= 1:
                raise ValueError(
                    "`propensity_clip` must be 'auto', None, a float in [0, 0.5) or a pair "
                    f"(low, high) with 0 <= low < high <= 1; got {clip!r}."
                )

    def _clip_for(self, learner: Any) -> Any:
        if isinstance(self.propensity_clip, str):
            own = getattr(learner, "propensity_clip", None) if learner is not None else None
            return _DEFAULT_CLIP if own is None else own
        return self.propensity_clip

    def _rewards(
        self, X: Any, y: Any, w: Any, learner: Any, nuisance: Any, rewards: Any
    ) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, FrameSchema]:
        """(n, K) rewards, the variants, the control's code, encoded X and its schema."""
        given = [
            n
            for n, v in (("learner", learner), ("nuisance", nuisance), ("rewards", rewards))
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "Pass exactly one source of rewards: `learner=` (a fitted learner), "
                "`nuisance=` (a fitted Nuisance, with y and w) or `rewards=` (a reward matrix); "
                f"got {', '.join(f'`{g}`' for g in given) if given else 'none'}."
            )
        if rewards is not None:
            if y is not None or w is not None:
                raise ValueError("With `rewards`, pass no `y` or `w`: the rewards replace them.")
            Xa, schema = encode_features(X)
            gamma, variants = self._reward_matrix(rewards, Xa.shape[0])
            return gamma, variants, control_index(variants, self.control), Xa, schema
        if learner is not None:
            try:
                check_is_fitted(learner, "variants_")
            except (NotFittedError, TypeError) as exc:
                raise ValueError(
                    f"`learner` ({type(learner).__name__}) is not a fitted metalearn learner: "
                    "fit it first (`learner.fit(X, y, w)`)."
                ) from exc
            if getattr(learner, "_out_dim", 1) != 1:
                raise ValueError(
                    "`learner` has a multi-class outcome: a policy tree needs one reward per "
                    "variant (a numeric or binary outcome)."
                )
            control = self.control if self.control is not None else learner.control_
            if y is None and w is None:
                phi = getattr(learner, "pseudo_outcomes_", None)
                if type(learner).__name__ != "DRLearner" or phi is None:
                    raise ValueError(
                        f"`learner` ({type(learner).__name__}) has no AIPW pseudo-outcomes: pass "
                        "`y` and `w` to score its nuisance stage's outcome models and "
                        "propensities, or fit a DRLearner."
                    )
                if self.propensity_clip != "auto" and self.propensity_clip != getattr(
                    learner, "propensity_clip", None
                ):
                    raise ValueError(
                        "`propensity_clip` differs from the DR-learner's own: its "
                        "pseudo-outcomes are used as they are. Pass `y` and `w` to rescore "
                        "its nuisance stage with another clip."
                    )
                Xa, schema = encode_features(X)
                if phi.shape[0] != Xa.shape[0]:
                    raise ValueError(
                        f"`X` has {Xa.shape[0]} rows but `learner` was fitted on "
                        f"{phi.shape[0]}: pass the features of its training rows, in order."
                    )
                variants = learner.variants_
                gamma = np.zeros((phi.shape[0], len(variants)))
                gamma[:, learner._treated_codes] = phi[:, :, 0]
                return gamma, variants, control_index(variants, control), Xa, schema
            nuis = getattr(learner, "nuisance_", None)
            if nuis is None or "mu" not in getattr(nuis, "oof_", {}) or "e" not in nuis.oof_:
                raise ValueError(
                    f"`learner` ({type(learner).__name__}) has no cross-fitted outcome models "
                    "and propensities to score: fit it with a shared `Nuisance` that has both "
                    "(or pass that Nuisance as `nuisance=`), or use a DRLearner."
                )
            return self._from_nuisance(X, y, w, nuis, "learner", control, self._clip_for(learner))
        if not isinstance(nuisance, Nuisance):
            raise TypeError(f"`nuisance` must be a metalearn.Nuisance; got {type(nuisance)!r}.")
        if not hasattr(nuisance, "fingerprint_"):
            raise ValueError("`nuisance` is not fitted: call `nuisance.fit(X, y, w)` first.")
        if "mu" not in nuisance.oof_ or "e" not in nuisance.oof_:
            raise ValueError(
                "`nuisance` has no cross-fitted outcome models or propensities yet: fit it "
                "with `nuisance.fit(X, y, w)`."
            )
        return self._from_nuisance(
            X, y, w, nuisance, "nuisance", self.control, self._clip_for(None)
        )

    def _from_nuisance(
        self, X: Any, y: Any, w: Any, nuis: Nuisance, name: str, control: Any, clip: Any
    ) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, FrameSchema]:
        if y is None or w is None:
            raise ValueError(
                f"Rewards from `{name}` need the outcomes `y` and variants `w` of its training "
                "rows: call `fit(X, y, w, ...)`."
            )
        data = prepare_data(X, y, w, classification=nuis.is_classification)
        mu = nuis.oof_["mu"]
        if mu.shape[0] != data.n:
            raise ValueError(
                f"`X` has {data.n} rows but `{name}` was fitted on {mu.shape[0]}: pass its "
                "training rows, in order."
            )
        if not np.array_equal(data.variants, nuis.variants_):
            raise ValueError(
                f"`w` holds the variants {data.variants.tolist()} but `{name}` was fitted on "
                f"{nuis.variants_.tolist()}."
            )
        if mu.shape[2] != 1:
            raise ValueError(
                f"`{name}` models a multi-class outcome: a policy tree needs one reward per "
                "variant (a numeric or binary outcome)."
            )
        e = clip_propensity(nuis.oof_["e"], clip)
        gamma = aipw_potential_outcomes(data.target_matrix(), data.w, mu, e)[:, :, 0]
        variants = nuis.variants_
        return gamma, variants, control_index(variants, control), data.X, data.schema

    def _reward_matrix(self, rewards: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
        native = nw.from_native(rewards, pass_through=True)
        if isinstance(native, nw.LazyFrame):
            native = native.collect()
        if isinstance(native, nw.DataFrame):
            labels = np.asarray([str(c) for c in native.columns], dtype=object)
            arr = native.to_numpy()
        else:
            arr = rewards
            labels = None
        try:
            G = np.asarray(arr, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"`rewards` must be numeric; got {type(rewards).__name__}.") from exc
        if G.ndim != 2 or G.shape[0] != n or G.shape[1] < 2:
            raise ValueError(
                f"`rewards` must have shape (n_samples, n_variants) = ({n}, K) with K >= 2: one "
                f"reward per row of `X` and variant; got shape {G.shape}."
            )
        if not np.all(np.isfinite(G)):
            raise ValueError(
                f"`rewards` holds {int((~np.isfinite(G)).sum())} NaN or infinite values; every "
                "reward must be finite."
            )
        variants = np.arange(G.shape[1]) if labels is None else labels
        return G, variants

    def _cost_vector(self, variants: np.ndarray, control: int) -> np.ndarray:
        K = len(variants)
        treated = [a for a in range(K) if a != control]
        out = np.zeros(K)
        costs = self.costs
        if costs is None:
            return out
        labels = [str(v) for v in variants]
        if isinstance(costs, dict):
            unknown = [k for k in costs if str(k) not in labels]
            if unknown:
                raise ValueError(
                    f"`costs` names unknown variants {unknown}; variants are {labels}."
                )
            for key, c in costs.items():
                a = labels.index(str(key))
                if a == control and c != 0:
                    raise ValueError(
                        f"`costs` gives the control {labels[a]!r} a cost: the control costs "
                        "nothing (costs are per treated variant)."
                    )
                out[a] = float(c)
        else:
            try:
                c = np.asarray(costs, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"`costs` must be numeric; got {costs!r}.") from exc
            if c.ndim == 0:
                out[treated] = float(c)
            elif c.shape == (K - 1,):
                out[treated] = c
            else:
                raise ValueError(
                    f"`costs` must be a number, one cost per treated variant ({K - 1}: "
                    f"{[labels[a] for a in treated]}) or a dict {{variant: cost}}; got "
                    f"{c.size} values."
                )
        if not np.all(np.isfinite(out)):
            raise ValueError("`costs` must be finite.")
        return out

    def _code(self, action: Any) -> int:
        return [_label(v) for v in self.variants_].index(action)

    def _codes_of(self, root: _Split | _Leaf, n: int) -> np.ndarray:
        """Reward column (0 control, k treated column k-1) of each training row."""
        out = np.zeros(n, dtype=np.intp)
        for lf in _leaves(root):
            out[lf.rows] = lf.action
        return out

    @staticmethod
    def _row_gain(gains: np.ndarray, actions: np.ndarray) -> np.ndarray:
        padded = np.column_stack([np.zeros(len(gains)), gains])
        return padded[np.arange(len(gains)), actions]

    def _flatten(
        self, root: _Split | _Leaf, cuts: list[np.ndarray], gains: np.ndarray, weight: np.ndarray
    ) -> tuple[PolicyNode, ...]:
        names = self.schema_.output_names()
        action_code = [self._control_code, *self._treated_codes]
        nodes: list[PolicyNode | None] = []

        def add(node: _Split | _Leaf, depth: int) -> tuple[int, np.ndarray, np.ndarray]:
            i = len(nodes)
            nodes.append(None)
            if isinstance(node, _Leaf):
                rows = node.rows
                g = np.full(len(rows), 0.0) if node.action == 0 else gains[rows, node.action - 1]
                label = _label(self.variants_[action_code[node.action]])
                nodes[i] = PolicyNode(
                    i,
                    depth,
                    None,
                    -1,
                    float("nan"),
                    -1,
                    -1,
                    label,
                    len(rows),
                    _mean(g, weight[rows]),
                )
                return i, rows, g
            li, lrows, lg = add(node.left, depth + 1)
            ri, rrows, rg = add(node.right, depth + 1)
            rows = np.concatenate([lrows, rrows])
            g = np.concatenate([lg, rg])
            nodes[i] = PolicyNode(
                i,
                depth,
                names[node.feature],
                node.feature,
                float(cuts[node.feature][node.bin]),
                li,
                ri,
                None,
                len(rows),
                _mean(g, weight[rows]),
            )
            return i, rows, g

        add(root, 0)
        return tuple(nd for nd in nodes if nd is not None)


def _mean(g: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(g * w) / np.sum(w)) if np.sum(w) > 0 else 0.0


def _leaves(node: _Split | _Leaf) -> list[_Leaf]:
    if isinstance(node, _Leaf):
        return [node]
    return _leaves(node.left) + _leaves(node.right)


# -------------------------------------------------------------- the figure
def plot_policy_tree(tree: PolicyTree, *, ax: Axes | None = None) -> Axes:
    """Draw a fitted :class:`PolicyTree`: split boxes, and leaves with variant, rows and gain.

    matplotlib is imported when called (``pip install "metalearn[plot]"``).

    Parameters
    ----------
    tree : PolicyTree
        A fitted tree.
    ax : matplotlib Axes, optional
        Axes to draw on (default: a new figure).

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import numpy as np
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from metalearn.policy import PolicyTree, plot_policy_tree
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> rewards = np.array([[0.0, -1.0], [0.0, -1.0], [0.0, 2.0], [0.0, 2.0]])
    >>> ax = plot_policy_tree(PolicyTree(depth=1).fit(X, rewards=rewards))
    >>> texts = [t.get_text() for t in ax.texts]
    >>> texts[:2], texts[2].splitlines(), texts[4].splitlines()
    (['yes', 'no'], ['x0 <= 1.5', 'n=4'], ['1', 'n=2', 'gain=2'])
    """
    check_is_fitted(tree, "nodes_")
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - optional extra
        raise ImportError(
            'plot_policy_tree needs matplotlib: pip install "metalearn[plot]"'
        ) from exc
    nodes = tree.nodes_
    n_leaves = sum(nd.is_leaf for nd in nodes)
    max_depth = max(nd.depth for nd in nodes)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 2.2 * n_leaves), 1.6 * (max_depth + 1) + 0.5))
    xs: dict[int, float] = {}
    counter = [0]

    def place(i: int) -> float:
        nd = nodes[i]
        if nd.is_leaf:
            xs[i] = float(counter[0])
            counter[0] += 1
        else:
            xs[i] = 0.5 * (place(nd.left) + place(nd.right))
        return xs[i]

    place(0)
    for nd in nodes:
        x, yv = xs[nd.node_id], -float(nd.depth)
        if nd.is_leaf:
            text = f"{nd.action}\nn={nd.n_samples}\ngain={_fmt(nd.gain)}"
            style = {"boxstyle": "round", "facecolor": "#e8f1fa", "edgecolor": "#4a78a8"}
        else:
            low, _ = tree._conditions(nd, 3)
            text = f"{low}\nn={nd.n_samples}"
            style = {"boxstyle": "square", "facecolor": "white", "edgecolor": "0.3"}
            for child, lab in ((nd.left, "yes"), (nd.right, "no")):
                cx, cy = xs[child], -float(nodes[child].depth)
                ax.plot([x, cx], [yv, cy], color="0.5", lw=1, zorder=1)
                ax.annotate(
                    lab,
                    ((x + cx) / 2, (yv + cy) / 2),
                    fontsize=7,
                    color="0.4",
                    ha="center",
                    va="center",
                )
        ax.text(x, yv, text, ha="center", va="center", fontsize=8, bbox=style, zorder=2)
    ax.set_xlim(-0.7, max(n_leaves - 0.3, 0.7))
    ax.set_ylim(-max_depth - 0.6, 0.6)
    ax.axis("off")
    return ax
