"""Regenerate the golden-master predictions pinned by tests/test_golden.py.

Run only on purpose (a deliberate change of the learners' numbers), from the
repository root: ``python tests/golden/make_golden.py``. The cases use explicit
base-model settings (single-threaded LightGBM and linear models) so that they
pin the engine, not the defaults.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def cases():
    from lightgbm import LGBMClassifier, LGBMRegressor
    from sklearn.linear_model import LinearRegression, LogisticRegression

    import metalearn as ml

    def lgb_r():
        return LGBMRegressor(n_estimators=30, num_leaves=7, n_jobs=1, verbose=-1)

    def lgb_c():
        return LGBMClassifier(n_estimators=30, num_leaves=7, n_jobs=1, verbose=-1)

    sims = {
        "nwA": ml.datasets.simulate_nie_wager("A", n=800, seed=1),
        "nwC": ml.datasets.simulate_nie_wager("C", n=800, seed=2),
        "multi": ml.datasets.simulate_multiarm(n=900, seed=3),
        "binary": ml.datasets.simulate_binary_outcome(n=900, seed=4),
    }
    common = {"n_folds": 3, "random_state": 0, "n_jobs": 1}
    for sname, sim in sims.items():
        X = np.asarray(sim.X)
        for lname in ("S", "T", "X", "R", "DR"):
            cls = getattr(ml, f"{lname}Learner")
            for mname in ("lgb", "lin"):
                kw: dict = dict(common)
                params = cls().get_params(deep=False)
                reg = lgb_r if mname == "lgb" else LinearRegression
                clf = lgb_c if mname == "lgb" else (lambda: LogisticRegression(max_iter=1000))
                kw["outcome_model"] = clf() if sname == "binary" else reg()
                if "propensity_model" in params:
                    kw["propensity_model"] = clf()
                if "effect_model" in params:
                    kw["effect_model"] = reg()
                if "propensity_clip" in params:
                    kw["propensity_clip"] = 0.02
                yield f"{sname}_{lname}_{mname}", cls(**kw), X, sim


def compute(learner, X, sim):
    oof = learner.fit_predict(X, sim.y, sim.w)
    pred = learner.predict(X[:200])
    return np.asarray(oof, dtype=np.float64), np.asarray(pred, dtype=np.float64)


if __name__ == "__main__":
    out = {}
    for name, learner, X, sim in cases():
        oof, pred = compute(learner, X, sim)
        out[f"{name}__oof"] = oof
        out[f"{name}__predict"] = pred
        print(name, oof.shape, float(np.mean(oof)))
    np.savez_compressed(HERE / "learners.npz", **out)
