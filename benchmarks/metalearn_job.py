"""Run one metalearn learner on one data set and print one JSON line.

Same protocol as ``peers.py``: ``python metalearn_job.py '<json job>'`` with keys
``learner`` (a registered short name: S, T, X, R, DR, RA), ``train`` and ``test``
(npz paths), ``threads``
(joblib workers; base models get one thread each when ``threads`` > 1, and
LightGBM's own threads are pinned to 1 when ``threads`` == 1) and ``seed``.

Besides PEHE, ATE and wall time it reports ``floor_s``: the time spent inside
the LightGBM ``fit``/``predict`` calls the learner made (the bare cost of
its base models), so ``fit_predict_s / floor_s`` is metalearn's overhead.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np
from lightgbm import LGBMClassifier, LGBMRegressor

FLOOR = [0.0]


def _timed(cls):
    class Timed(cls):
        def fit(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return super().fit(*args, **kwargs)
            finally:
                FLOOR[0] += time.perf_counter() - t0

        def predict(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return super().predict(*args, **kwargs)
            finally:
                FLOOR[0] += time.perf_counter() - t0

        def predict_proba(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return super().predict_proba(*args, **kwargs)
            finally:
                FLOOR[0] += time.perf_counter() - t0

    Timed.__name__ = cls.__name__
    Timed.__qualname__ = cls.__qualname__
    return Timed


TimedRegressor = _timed(LGBMRegressor)
TimedClassifier = _timed(LGBMClassifier)


def base_params(seed: int, lgbm_threads: int | None) -> dict:
    return dict(
        n_estimators=100,
        learning_rate=0.1,
        num_leaves=31,
        verbose=-1,
        random_state=seed,
        n_jobs=lgbm_threads,
    )


def main() -> None:
    job = json.loads(sys.argv[1])
    from metalearn.learners.base import learner_registry

    train, test = np.load(job["train"]), np.load(job["test"])
    threads = int(job["threads"])
    # One worker: LightGBM single-threaded (the 1-core comparison). Several
    # workers: leave LightGBM's thread count to metalearn's rule.
    lgbm_threads = 1 if threads == 1 else None
    p = base_params(int(job["seed"]), lgbm_threads)
    reg, clf = TimedRegressor(**p), TimedClassifier(**p)
    kind = job["learner"]
    common = {"n_jobs": threads, "random_state": int(job["seed"])}
    common.update(job.get("params", {}))  # a configuration may override n_jobs
    cls = learner_registry()[kind]
    params = cls().get_params(deep=False)
    models = {"outcome_model": reg}
    if "propensity_model" in params:
        models["propensity_model"] = clf
    if "effect_model" in params:
        models["effect_model"] = TimedRegressor(**p)
    learner = cls(**models, **common)
    X, w, y = train["X"], train["w"], train["y"]
    t0 = time.perf_counter()
    learner.fit(X, y, w)
    tau_hat = learner.predict(test["X"])
    elapsed = time.perf_counter() - t0
    tau = test["tau"]
    out = {
        "library": "metalearn",
        "learner": kind,
        "pehe": float(np.sqrt(np.mean((tau_hat - tau) ** 2))),
        "ate_hat": float(np.mean(tau_hat)),
        "ate_true": float(np.mean(tau)),
        "fit_predict_s": elapsed,
        "floor_s": FLOOR[0] if threads == 1 else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ok": True,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
