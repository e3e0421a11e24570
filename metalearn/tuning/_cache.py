"""The nuisance cache of the searches: one fitted Nuisance per configuration and data.

Candidates whose outcome model, propensity model, folds (``n_folds``,
``random_state``), outcome pooling and outcome type agree share one fitted
:class:`~metalearn.Nuisance` on the same data (identified by its
fingerprint): a grid of G final-stage settings costs one nuisance stage plus
G final stages. With an integer ``random_state`` (the folds are then the
same for every configuration) single nuisance *kinds* are shared too: the
propensity models of two configurations that differ only in the outcome
model are fitted once, and so are the outcome models of an R- and a
T-learner. A kind is only shared when its own configuration agrees, and the
shared models are exactly those a fresh fit would produce (task seeds depend
only on the task's identity).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone

from metalearn._core.data import Data
from metalearn._core.validation import control_index
from metalearn.learners.base import MetaLearner
from metalearn.learners.nuisance import Nuisance
from metalearn.tuning._params import param_key

__all__ = ["NuisanceCache", "Prepared", "needed_kinds", "nuisance_template"]


def nuisance_template(learner: MetaLearner) -> Nuisance | None:
    """The Nuisance ``learner`` would build at fit (mirrors ``MetaLearner._make_nuisance``)."""
    if not learner._uses_nuisance:
        return None
    if learner.nuisance is not None:
        return learner.nuisance
    return Nuisance(
        outcome_model=learner.outcome_model,
        propensity_model=getattr(learner, "propensity_model", None),
        n_folds=learner.n_folds,
        outcome_pooling=getattr(learner, "outcome_pooling", "per_variant"),
        n_jobs=learner.n_jobs,
        random_state=learner.random_state,
    )


def needed_kinds(learner: MetaLearner, data: Data, *, honest: bool) -> set[str]:
    """The nuisance kinds ``learner.fit`` (or ``fit_predict`` when ``honest``) reads."""
    raw = learner._nuisance_for_oof if honest else learner._nuisance_for_fit
    c = control_index(data.variants, learner.control)
    treated = [k for k in range(data.n_variants) if k != c]
    out: set[str] = set()
    for kind in raw:
        kind = kind.replace("{c}", str(c))
        if kind == "m":
            out.update(f"m:{min(c, t)}:{max(c, t)}" for t in treated)
        else:
            out.add(kind)
    return out


@dataclass
class Prepared:
    """A candidate ready for its final stage: the learner now shares a fitted Nuisance."""

    learner: MetaLearner
    nuisance_fits: int = 0
    nuisance_time: float = 0.0


@dataclass
class _Entry:
    nuisance: Nuisance
    kind_keys: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)


def _random_state_key(rs: Any) -> tuple[bool, Any]:
    """(folds reproducible, key) for a ``random_state``."""
    if isinstance(rs, int | np.integer) and not isinstance(rs, bool):
        return True, int(rs)
    return False, repr(rs) if rs is None else ("object", id(rs))


class NuisanceCache:
    """Fitted nuisance stages shared between candidates (thread-safe).

    Parameters
    ----------
    max_size : int or None, default=None
        Configurations kept (least recently used dropped first); ``None``
        keeps all.
    n_jobs : int or None, default=None
        Joblib workers of each nuisance stage's flat batch of fits; ``None``
        keeps the learner's own ``n_jobs``.

    Attributes
    ----------
    n_model_fits : int
        Base-model fits made by the cache.
    hits, misses : int
        Preparations served without / with new fits.
    """

    def __init__(self, max_size: int | None = None, n_jobs: int | None = None) -> None:
        self.max_size = max_size
        self.n_jobs = n_jobs
        self.n_model_fits = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Any, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_entries"] = OrderedDict()  # fitted stages stay with their owner
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Drop every fitted stage (the counters stay)."""
        with self._lock:
            self._entries.clear()

    def _keys(self, tmpl: Nuisance, data: Data) -> tuple[Any, dict[str, Any]]:
        outcome = param_key(tmpl._outcome_template())
        propensity = param_key(tmpl._propensity_template())
        pooling = tmpl.outcome_pooling
        shareable, rs = _random_state_key(tmpl.random_state)
        classification = data.classes is not None
        key = (
            outcome,
            propensity,
            repr(tmpl.n_folds),
            pooling,
            rs,
            classification,
            data.fingerprint,
        )
        base = (repr(tmpl.n_folds), rs, classification, data.fingerprint) if shareable else None
        kinds = {"e": propensity, "mu": (outcome, pooling), "mu_full": (outcome, pooling)}
        return key, {"base": base, "outcome": outcome, "kinds": kinds}

    @staticmethod
    def _kind_key(info: dict[str, Any], kind: str) -> Any:
        if info["base"] is None:
            return None
        sub = info["kinds"].get(kind, info["outcome"])  # "m:c:k": the outcome model only
        return (info["base"], kind, sub)

    def prepare(self, learner: MetaLearner, data: Data, *, honest: bool) -> Prepared:
        """A clone of ``learner`` sharing a fitted Nuisance that holds every kind it reads.

        ``data`` must be what the learner will be fitted on (its fingerprint
        is checked again at fit). Learners without a nuisance stage (the
        S-learner) and learners that already hold a fitted Nuisance are
        returned as they are.
        """
        tmpl = nuisance_template(learner)
        if tmpl is None or hasattr(tmpl, "fingerprint_"):
            return Prepared(learner)
        kinds = needed_kinds(learner, data, honest=honest)
        key, info = self._keys(tmpl, data)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                nuis = clone(tmpl)
                if self.n_jobs is not None:
                    nuis.set_params(n_jobs=self.n_jobs)
                entry = _Entry(nuis, {})
                self._entries[key] = entry
                while self.max_size is not None and len(self._entries) > max(self.max_size, 1):
                    self._entries.popitem(last=False)
            self._entries.move_to_end(key)
        with entry.lock:
            nuis = entry.nuisance
            if not hasattr(nuis, "fingerprint_"):
                nuis.ensure(data, set())  # folds and bookkeeping only
            self._transplant(entry, info, kinds, data)
            before = nuis.n_model_fits_
            start = time.perf_counter()
            nuis.ensure(data, kinds)
            elapsed = time.perf_counter() - start
            fits = nuis.n_model_fits_ - before
            for kind in nuis.models_:
                entry.kind_keys[kind] = self._kind_key(info, kind)
        with self._lock:
            self.n_model_fits += fits
            if fits:
                self.misses += 1
            else:
                self.hits += 1
        cand = clone(learner)
        updates: dict[str, Any] = {"nuisance": nuis}
        own = cand.get_params(deep=False)
        updates.update({p: None for p in ("outcome_model", "propensity_model") if p in own})
        cand.set_params(**updates)
        return Prepared(cand, fits, elapsed if fits else 0.0)

    def _transplant(self, entry: _Entry, info: dict[str, Any], kinds: set[str], data: Data) -> None:
        """Copy fitted kinds of other configurations whose models are the same."""
        nuis = entry.nuisance
        missing = [k for k in kinds if k not in nuis.models_]
        if "mu" in nuis.models_ and "mu_full" in missing:
            missing.remove("mu_full")
        if data.propensity is not None and "e" in missing:
            missing.remove("e")  # known propensities cost nothing
        if not missing or info["base"] is None:
            return
        with self._lock:
            others = [e for e in self._entries.values() if e is not entry]
        for kind in missing:
            want = self._kind_key(info, kind)
            for other in others:
                if other.kind_keys.get(kind) == want and kind in other.nuisance.models_:
                    nuis.models_[kind] = other.nuisance.models_[kind]
                    if kind in other.nuisance.oof_:
                        nuis.oof_[kind] = other.nuisance.oof_[kind]
                    break
