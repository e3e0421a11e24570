# Peer-library CATE runner.  Run ONLY with the peer venv's interpreter:
#
#     bash benchmarks/make_peer_venv.sh
#     benchmarks/.venv-peers/bin/python benchmarks/peers.py '{"library": "econml", ...}'
#     benchmarks/.venv-peers/bin/python benchmarks/peers.py --job job.json
#
# Resolved in benchmarks/.venv-peers (CPython 3.11.7, Linux x86_64), via
# `pip freeze | grep -iE 'econml|causalml|metalearners|scikit-learn|lightgbm'`:
#     causalml==0.18.0
#     econml==0.17.0
#     lightgbm==4.7.0
#     metalearners==0.13.0
#     scikit-learn==1.7.2
# (with numpy==2.4.6, pandas==3.1.1, scipy==1.17.1, polars==2.1.0)
#
# Job (JSON object):
#     library   "econml" | "causalml" | "metalearners"
#     learner   "S" | "T" | "X" | "R" | "DR"
#     train     .npz with X (n, p) float, w (n,) int 0/1, y (n,) float
#     test      .npz with X (m, p) float, tau (m,) float
#     threads   int, LightGBM n_jobs (and BLAS / OpenMP / joblib caps)
#     seed      int, random_state of every model and fold splitter
#     propensity  optional, causalml only: "oof" (default) or "native", see
#                 _run_causalml below
#     metalearners_s_encoding  optional, "onehot" (default) or "categorical",
#                 see _run_metalearners below
#
# Output: exactly one JSON line on stdout.  Success:
#     {"library", "learner", "pehe", "ate_hat", "fit_predict_s",
#      "peak_rss_mb", "ok": true, ...extra diagnostics}
# Failure (peer missing, learner unsupported, fit crashed):
#     {"library", "learner", "ok": false, "error": "..."}
# The exit status is 0 whenever that line was printed, 2 for a malformed job.
# Anything the libraries print to stdout is diverted to stderr so the JSON
# line is the only thing on stdout.
#
# Every base model is LightGBM with the same hyper-parameters:
#     n_estimators=100, learning_rate=0.1, num_leaves=31, n_jobs=threads,
#     verbose=-1, random_state=seed
# and cross-fitting uses 5 folds wherever the peer cross-fits at all.

import contextlib
import json
import os
import sys

LEARNERS = ("S", "T", "X", "R", "DR")
LIBRARIES = ("econml", "causalml", "metalearners")
N_FOLDS = 5
# causalml's own ElasticNetPropensityModel clips to these bounds; we use the
# same ones for the LightGBM propensities we hand to causalml.
P_CLIP = (1e-3, 1 - 1e-3)


def _parse_job(argv):
    if len(argv) >= 3 and argv[1] == "--job":
        with open(argv[2]) as fh:
            return json.load(fh)
    if len(argv) == 2 and argv[1] == "-":
        return json.load(sys.stdin)
    if len(argv) == 2:
        return json.loads(argv[1])
    raise ValueError("usage: peers.py '<json job>' | --job FILE | -")


def _limit_threads(threads):
    # Must run before numpy / scipy / lightgbm are imported.
    for var in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "BLIS_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "NUMBA_NUM_THREADS",
        "POLARS_MAX_THREADS",
        "LOKY_MAX_CPU_COUNT",
    ):
        os.environ[var] = str(threads)


def _lgbm_params(threads, seed):
    return {
        "n_estimators": 100,
        "learning_rate": 0.1,
        "num_leaves": 31,
        "n_jobs": threads,
        "verbose": -1,
        "random_state": seed,
    }


def _reg(threads, seed):
    from lightgbm import LGBMRegressor

    return LGBMRegressor(**_lgbm_params(threads, seed))


def _clf(threads, seed):
    from lightgbm import LGBMClassifier

    return LGBMClassifier(**_lgbm_params(threads, seed))


# ---------------------------------------------------------------- econml


def _run_econml(learner, X, w, y, X_test, threads, seed, job):
    """econml's documented estimators for each meta-learner.

    S, T, X (econml.metalearners) do no cross-fitting: every nuisance model,
    including the X-learner's propensity model, is fit in-sample on all data.
    DR (econml.dr.DRLearner) and R (econml.dml.NonParamDML) cross-fit their
    nuisances with cv=N_FOLDS.
    """
    from econml.metalearners import SLearner, TLearner, XLearner

    if learner == "S":
        est = SLearner(overall_model=_reg(threads, seed))
    elif learner == "T":
        est = TLearner(models=_reg(threads, seed))
    elif learner == "X":
        est = XLearner(
            models=_reg(threads, seed),
            propensity_model=_clf(threads, seed),
            cate_models=_reg(threads, seed),
        )
    elif learner == "DR":
        from econml.dr import DRLearner

        est = DRLearner(
            model_propensity=_clf(threads, seed),
            model_regression=_reg(threads, seed),
            model_final=_reg(threads, seed),
            cv=N_FOLDS,
            random_state=seed,
        )
    elif learner == "R":
        from econml.dml import NonParamDML

        est = NonParamDML(
            model_y=_reg(threads, seed),
            model_t=_clf(threads, seed),
            model_final=_reg(threads, seed),
            discrete_treatment=True,
            cv=N_FOLDS,
            random_state=seed,
        )
    else:
        raise _Unsupported(f"econml has no {learner}-learner")

    if learner in ("DR", "R"):
        # inference=None: no bootstrap / no covariance work, point estimates only.
        est.fit(y, w, X=X, inference=None)
    else:
        est.fit(y, w, X=X)
    return est.effect(X_test)


# --------------------------------------------------------------- causalml


def _causalml_propensity(X, w, X_test, threads, seed, need_test):
    """Out-of-fold LightGBM propensity scores for causalml.

    causalml's X and DR regressors have no propensity-model argument: with
    p=None they fall back to their ElasticNetPropensityModel.  To keep every
    base model LightGBM we pass p explicitly: N_FOLDS-fold out-of-fold
    LGBMClassifier probabilities on the training rows (so the DR pseudo
    outcomes are not built from in-sample propensities), clipped like
    causalml's default model.  The X-learner also needs p on the test rows at
    predict time; those come from one LGBMClassifier fit on all training rows.
    """
    import numpy as np
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(n_splits=N_FOLDS, shuffle=True, random_state=seed)
    p_train = cross_val_predict(
        _clf(threads, seed), X, w, cv=folds, method="predict_proba", n_jobs=1
    )[:, 1]
    p_train = np.clip(p_train, *P_CLIP)
    p_test = None
    if need_test:
        model = _clf(threads, seed).fit(X, w)
        p_test = np.clip(model.predict_proba(X_test)[:, 1], *P_CLIP)
    return p_train, p_test


def _run_causalml(learner, X, w, y, X_test, threads, seed, job):
    """causalml.inference.meta Base*Regressor with LightGBM learners.

    S and T are plain (no cross-fitting).  X fits its outcome and effect
    models in-sample.  R cross-fits the outcome model (n_fold=N_FOLDS) and
    DR uses causalml's fixed 3-way rotating split (not configurable).

    propensity="oof" (default): p from _causalml_propensity for X, R, DR.
    propensity="native": causalml's own handling.  X and DR then use
    ElasticNetPropensityModel (DR cross-fit over its 3 splits, X in-sample);
    R uses propensity_learner=LGBMClassifier, which causalml fits and
    predicts in-sample (not cross-fitted).
    """
    from causalml.inference.meta import (
        BaseDRRegressor,
        BaseRRegressor,
        BaseSRegressor,
        BaseTRegressor,
        BaseXRegressor,
    )

    mode = job.get("propensity", "oof")
    if mode not in ("oof", "native"):
        raise ValueError(f"propensity must be 'oof' or 'native', got {mode!r}")

    if learner == "S":
        est = BaseSRegressor(learner=_reg(threads, seed))
        est.fit(X, w, y)
        return est.predict(X_test, verbose=False)
    if learner == "T":
        est = BaseTRegressor(learner=_reg(threads, seed))
        est.fit(X, w, y)
        return est.predict(X_test, verbose=False)

    p_train = p_test = None
    if mode == "oof":
        p_train, p_test = _causalml_propensity(
            X, w, X_test, threads, seed, need_test=(learner == "X")
        )

    if learner == "X":
        est = BaseXRegressor(learner=_reg(threads, seed))
        est.fit(X, w, y, p=p_train)
        return est.predict(X_test, p=p_test, verbose=False)
    if learner == "R":
        est = BaseRRegressor(
            learner=_reg(threads, seed),
            propensity_learner=_clf(threads, seed),
            n_fold=N_FOLDS,
            random_state=seed,
        )
        # BaseRRegressor does not expose cv_n_jobs and inherits -1 (all cores)
        # for its cross_val_predict; cap it so `threads` is honoured.
        est.cv_n_jobs = 1
        est.fit(X, w, y, p=p_train, verbose=False)
        return est.predict(X_test)
    if learner == "DR":
        est = BaseDRRegressor(learner=_reg(threads, seed))
        est.fit(X, w, y, p=p_train, seed=seed)
        return est.predict(X_test, verbose=False)
    raise _Unsupported(f"causalml has no {learner}-learner")


# ----------------------------------------------------------- metalearners


def _run_metalearners(learner, X, w, y, X_test, threads, seed, job):
    """QuantCo metalearners 0.13.

    Every learner, S and T included, cross-fits all its base models with
    n_folds=N_FOLDS and additionally fits an "overall" model on all rows;
    predict(is_oos=True) uses those overall models (oos_method="overall").

    S-learner quirk: for a model it believes handles categoricals (any
    LGBMRegressor), metalearners 0.13 appends the treatment as a pandas
    categorical built from the *strings* "0"/"1" and then calls
    set_categories([0, 1]) with ints, so the column is all NaN and the
    S-learner predicts tau_hat == 0 everywhere.  By default
    (job "metalearners_s_encoding": "onehot") the base model is an
    LGBMRegressor behind a thin wrapper that metalearners does not recognise,
    which sends it down its one-hot path (treatment appended as a 0/1
    column, as econml and causalml do).  "categorical" keeps the broken
    native path.
    """
    import metalearners
    from lightgbm import LGBMClassifier, LGBMRegressor

    classes = {
        "S": metalearners.SLearner,
        "T": metalearners.TLearner,
        "X": metalearners.XLearner,
        "R": metalearners.RLearner,
        "DR": metalearners.DRLearner,
    }
    if learner not in classes:
        raise _Unsupported(f"metalearners has no {learner}-learner")
    cls = classes[learner]
    params = _lgbm_params(threads, seed)
    nuisance_factory = LGBMRegressor
    if learner == "S":
        encoding = job.get("metalearners_s_encoding", "onehot")
        if encoding == "onehot":
            nuisance_factory = _one_hot_lgbm_regressor_class()
        elif encoding != "categorical":
            raise ValueError(
                f"metalearners_s_encoding must be 'onehot' or 'categorical', got {encoding!r}"
            )
    kwargs = {
        "is_classification": False,
        "n_variants": 2,
        "nuisance_model_factory": nuisance_factory,
        "nuisance_model_params": params,
        "n_folds": N_FOLDS,
        "random_state": seed,
    }
    # Only pass the factories a learner declares; the S/T learners reject a
    # treatment model and the S/T learners have no propensity model.
    if cls.treatment_model_specifications():
        kwargs["treatment_model_factory"] = LGBMRegressor
        kwargs["treatment_model_params"] = params
    if "propensity_model" in cls.nuisance_model_specifications():
        kwargs["propensity_model_factory"] = LGBMClassifier
        kwargs["propensity_model_params"] = params
    est = cls(**kwargs)
    est.fit(X, y, w)
    # Regression output has shape (n, n_variants - 1, 1).
    return est.predict(X_test, is_oos=True)


def _one_hot_lgbm_regressor_class():
    """An LGBMRegressor that metalearners' supports_categoricals() misses.

    Deliberately not an LGBMRegressor subclass (that check is an isinstance
    test): a minimal scikit-learn regressor holding one, so the S-learner
    one-hot encodes the treatment.  Built lazily so sklearn is imported
    only after the thread limits are set.
    """
    from lightgbm import LGBMRegressor
    from sklearn.base import BaseEstimator, RegressorMixin

    class OneHotLGBMRegressor(RegressorMixin, BaseEstimator):
        def __init__(
            self,
            n_estimators=100,
            learning_rate=0.1,
            num_leaves=31,
            n_jobs=1,
            verbose=-1,
            random_state=None,
        ):
            self.n_estimators = n_estimators
            self.learning_rate = learning_rate
            self.num_leaves = num_leaves
            self.n_jobs = n_jobs
            self.verbose = verbose
            self.random_state = random_state

        def fit(self, X, y, **fit_params):
            self.model_ = LGBMRegressor(**self.get_params()).fit(X, y, **fit_params)
            return self

        def predict(self, X):
            return self.model_.predict(X)

    return OneHotLGBMRegressor


class _Unsupported(Exception):
    pass


RUNNERS = {
    "econml": _run_econml,
    "causalml": _run_causalml,
    "metalearners": _run_metalearners,
}


def _version(library):
    from importlib import metadata

    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        return None


def _rss_mb():
    import resource

    # ru_maxrss is in KiB on Linux.
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return self_mb, children_mb


def run(job):
    library = job.get("library")
    learner = job.get("learner")
    out = {"library": library, "learner": learner}
    if library not in RUNNERS:
        return {**out, "ok": False, "error": f"unknown library {library!r}"}
    if learner not in LEARNERS:
        return {**out, "ok": False, "error": f"unknown learner {learner!r}"}
    threads = int(job.get("threads", 1))
    seed = int(job.get("seed", 0))
    out["version"] = _version(library)
    if out["version"] is None:
        return {**out, "ok": False, "error": f"{library} is not installed in {sys.prefix}"}

    import time
    import warnings

    import numpy as np

    warnings.filterwarnings("ignore")
    with np.load(job["train"]) as d:
        X = np.ascontiguousarray(d["X"], dtype=np.float64)
        w = np.asarray(d["w"]).astype(np.int64).ravel()
        y = np.asarray(d["y"], dtype=np.float64).ravel()
    with np.load(job["test"]) as d:
        X_test = np.ascontiguousarray(d["X"], dtype=np.float64)
        tau = np.asarray(d["tau"], dtype=np.float64).ravel()
    if not (X.ndim == 2 and len(X) == len(w) == len(y)):
        raise ValueError("train npz: X must be (n, p) with w, y of length n")
    if not (X_test.ndim == 2 and len(X_test) == len(tau)):
        raise ValueError("test npz: X must be (m, p) with tau of length m")
    if not set(np.unique(w)) <= {0, 1}:
        raise ValueError("train npz: w must be 0/1")

    # Import the peer (and lightgbm) before the clock starts.
    import lightgbm  # noqa: F401

    __import__(
        {
            "econml": "econml.metalearners",
            "causalml": "causalml.inference.meta",
            "metalearners": "metalearners",
        }[library]
    )
    rss_before_mb, _ = _rss_mb()

    t0 = time.perf_counter()
    try:
        tau_hat = RUNNERS[library](learner, X, w, y, X_test, threads, seed, job)
    except _Unsupported as exc:
        return {**out, "ok": False, "error": str(exc)}
    elapsed = time.perf_counter() - t0

    tau_hat = np.asarray(tau_hat, dtype=np.float64)
    if tau_hat.size != len(X_test):
        raise ValueError(
            f"{library} {learner}: prediction has shape {tau_hat.shape}, "
            f"expected {len(X_test)} values"
        )
    tau_hat = tau_hat.reshape(-1)
    if not np.all(np.isfinite(tau_hat)):
        raise ValueError(f"{library} {learner}: non-finite CATE predictions")
    peak_mb, peak_children_mb = _rss_mb()
    out.update(
        {
            "pehe": float(np.sqrt(np.mean((tau_hat - tau) ** 2))),
            "ate_hat": float(np.mean(tau_hat)),
            "ate_true": float(np.mean(tau)),
            "fit_predict_s": elapsed,
            "peak_rss_mb": peak_mb,
            "rss_before_fit_mb": rss_before_mb,
            "peak_rss_children_mb": peak_children_mb,
            "n_train": len(y),
            "n_test": len(tau),
            "threads": threads,
            "seed": seed,
            "ok": True,
        }
    )
    if library == "causalml" and learner in ("X", "R", "DR"):
        out["propensity"] = job.get("propensity", "oof")
    if library == "metalearners" and learner == "S":
        out["metalearners_s_encoding"] = job.get("metalearners_s_encoding", "onehot")
    return out


def main(argv):
    try:
        job = _parse_job(argv)
        if not isinstance(job, dict):
            raise ValueError("job must be a JSON object")
    except Exception as exc:  # malformed command line / job file
        print(json.dumps({"ok": False, "error": f"bad job: {exc}"}))
        return 2
    with contextlib.suppress(TypeError, ValueError):
        _limit_threads(max(1, int(job.get("threads", 1))))

    # Keep stdout clean: libraries (and LightGBM's C++ logger) may print, so
    # point fd 1 at stderr while we work and write the result to the saved fd.
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        result = run(job)
    except BaseException as exc:  # report, never crash without a JSON line
        if isinstance(exc, KeyboardInterrupt):
            raise
        result = {
            "library": job.get("library"),
            "learner": job.get("learner"),
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
        }
    finally:
        sys.stdout.flush()
        os.dup2(real_stdout, 1)
        os.close(real_stdout)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
