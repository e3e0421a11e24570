"""Analytic identities of the learners: closed forms, fit counts and honesty.

Every check recomputes a learner's output by hand (numpy least squares, the
AIPW formula, the R-learner's weighted mean) from the pieces the learner
exposes, so that a wrong sign, a swapped arm, a misaligned fold or an extra
fit makes it fail.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

import metalearn as ml
from metalearn.datasets import Simulation, simulate_multiarm, simulate_nie_wager

CLIP = 0.01  # the default propensity_clip of the X- and R-learners
DR_CLIP = 0.05  # the DR-learner's default
N_FOLDS = 3


# ------------------------------------------------------------------ helpers
def ols(X: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Coefficients (intercept first) of (weighted) least squares, by lstsq."""
    Xt = np.column_stack([np.ones(len(X)), X])
    if weight is not None:
        root = np.sqrt(weight)
        return np.linalg.lstsq(Xt * root[:, None], y * root, rcond=None)[0]
    return np.linalg.lstsq(Xt, y, rcond=None)[0]


def ols_predict(beta: np.ndarray, X: np.ndarray) -> np.ndarray:
    return beta[0] + X @ beta[1:]


@pytest.fixture(scope="module")
def two_arm() -> Simulation:
    """Confounded two-arm data (setup C), 800 rows."""
    return simulate_nie_wager("C", n=800, seed=11)


@pytest.fixture(scope="module")
def three_arm() -> Simulation:
    """Randomized three-arm data, 900 rows."""
    return simulate_multiarm(n=900, seed=12)


@pytest.fixture(scope="module")
def fresh() -> np.ndarray:
    return simulate_nie_wager("C", n=200, seed=13).X


def linear_learner(cls: type, **kw: Any) -> Any:
    params = cls().get_params(deep=False)
    args: dict[str, Any] = {
        "outcome_model": LinearRegression(),
        "propensity_model": LogisticRegression(),
        "effect_model": LinearRegression(),
        "n_folds": N_FOLDS,
        "random_state": 0,
        "n_jobs": 1,
    }
    if kw.get("nuisance") is not None:
        args.pop("outcome_model")
        args.pop("propensity_model")
    args.update(kw)
    return cls(**{k: v for k, v in args.items() if k in params})


# ------------------------------------------------------------- T-learner OLS
@pytest.mark.parametrize("K", [2, 3])
def test_t_learner_ols_equals_difference_of_arm_regressions(
    K: int, two_arm: Simulation, three_arm: Simulation
) -> None:
    sim = two_arm if K == 2 else three_arm
    t = ml.TLearner(outcome_model=LinearRegression(), random_state=0).fit(sim.X, sim.y, sim.w)
    betas = [ols(sim.X[sim.w == k], sim.y[sim.w == k]) for k in range(K)]
    Xn = sim.X[:50] + 0.5  # any rows
    expected = np.column_stack(
        [ols_predict(betas[k], Xn) - ols_predict(betas[0], Xn) for k in range(1, K)]
    )
    got = t.predict(Xn)
    assert got.shape == ((50,) if K == 2 else (50, K - 1))
    np.testing.assert_allclose(got.reshape(50, -1), expected, rtol=1e-9, atol=1e-9)
    mu = t.predict_outcomes(Xn)
    np.testing.assert_allclose(
        mu, np.column_stack([ols_predict(b, Xn) for b in betas]), rtol=1e-9, atol=1e-9
    )


def test_t_learner_ols_fit_predict_is_fold_wise_closed_form(two_arm: Simulation) -> None:
    sim = two_arm
    t = ml.TLearner(outcome_model=LinearRegression(), n_folds=N_FOLDS, random_state=0)
    oof = t.fit_predict(sim.X, sim.y, sim.w)
    folds = t.folds_
    assert sorted(np.unique(folds)) == list(range(N_FOLDS))
    expected = np.empty(len(sim.y))
    fold_betas = []
    for f in range(N_FOLDS):
        out = folds != f
        b = [ols(sim.X[out & (sim.w == k)], sim.y[out & (sim.w == k)]) for k in (0, 1)]
        fold_betas.append(b)
        rows = folds == f
        expected[rows] = ols_predict(b[1], sim.X[rows]) - ols_predict(b[0], sim.X[rows])
    np.testing.assert_allclose(oof, expected, rtol=1e-9, atol=1e-9)
    # after fit_predict, predict averages the fold models
    Xn = sim.X[:40]
    avg = np.mean([ols_predict(b[1], Xn) - ols_predict(b[0], Xn) for b in fold_betas], axis=0)
    np.testing.assert_allclose(t.predict(Xn), avg, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------- S-learner OLS
@pytest.mark.parametrize("K", [2, 3])
def test_s_learner_ols_effect_is_treatment_coefficient(
    K: int, two_arm: Simulation, three_arm: Simulation
) -> None:
    sim = two_arm if K == 2 else three_arm
    s = ml.SLearner(outcome_model=LinearRegression(), random_state=0).fit(sim.X, sim.y, sim.w)
    indicators = (sim.w[:, None] == np.arange(1, K)[None, :]).astype(float)
    beta = ols(np.column_stack([sim.X, indicators]), sim.y)
    coef = beta[-(K - 1) :]
    got = s.predict(sim.X[:30]).reshape(30, -1)
    np.testing.assert_allclose(got, np.broadcast_to(coef, got.shape), rtol=1e-9, atol=1e-9)
    assert np.ptp(got, axis=0).max() < 1e-9  # constant in x


def test_s_learner_ols_fit_predict_is_fold_wise_coefficient(two_arm: Simulation) -> None:
    sim = two_arm
    s = ml.SLearner(outcome_model=LinearRegression(), n_folds=N_FOLDS, random_state=0)
    oof = s.fit_predict(sim.X, sim.y, sim.w)
    design = np.column_stack([sim.X, sim.w])
    coef = [ols(design[s.folds_ != f], sim.y[s.folds_ != f])[-1] for f in range(N_FOLDS)]
    np.testing.assert_allclose(oof, np.asarray(coef)[s.folds_], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(s.predict(sim.X[:5]), np.full(5, np.mean(coef)), rtol=1e-9)


# --------------------------------------------------------------- DR and AIPW
def aipw(
    sim: Simulation, mu: np.ndarray, e: np.ndarray, k: int, c: int = 0, weight: Any = None
) -> tuple[float, float]:
    """Hand AIPW estimate and standard error of variant k vs control c (DR-learner clip)."""
    e = np.clip(e, DR_CLIP, 1 - DR_CLIP)
    y = sim.y
    phi = (
        mu[:, k]
        - mu[:, c]
        + (sim.w == k) * (y - mu[:, k]) / e[:, k]
        - (sim.w == c) * (y - mu[:, c]) / e[:, c]
    )
    n = len(y)
    if weight is None:
        return float(phi.mean()), float(phi.std(ddof=1) / np.sqrt(n))
    w = np.asarray(weight, dtype=float)
    est = float(np.sum(w * phi) / np.sum(w))
    # sandwich variance of a weighted mean, with the n / (n - 1) correction
    se = float(np.sqrt(np.sum(w**2 * (phi - est) ** 2) * n / (n - 1)) / np.sum(w))
    return est, se


@pytest.mark.parametrize("weighted", [False, True])
def test_dr_ate_equals_hand_aipw(weighted: bool, two_arm: Simulation) -> None:
    sim = two_arm
    sw = np.random.default_rng(0).uniform(0.2, 3.0, len(sim.y)) if weighted else None
    dr = linear_learner(ml.DRLearner).fit(sim.X, sim.y, sim.w, sample_weight=sw)
    mu = dr.nuisance_.oof_["mu"][:, :, 0]
    e = dr.nuisance_.oof_["e"]
    est, se = aipw(sim, mu, e, 1, weight=sw)
    effect = dr.ate()
    assert effect.method == "AIPW (ATE)"
    np.testing.assert_allclose(effect.estimate, est, rtol=1e-10)
    np.testing.assert_allclose(effect.std_error, se, rtol=1e-10)
    np.testing.assert_allclose(effect.ci_high - effect.ci_low, 2 * 1.959963984540054 * se)
    if weighted:
        # the weights matter: the unweighted formula gives another answer
        assert abs(aipw(sim, mu, e, 1)[0] - est) > 1e-6


def test_dr_ate_with_unit_weights_equals_unweighted(two_arm: Simulation) -> None:
    sim = two_arm
    a = linear_learner(ml.DRLearner).fit(sim.X, sim.y, sim.w).ate()
    b = linear_learner(ml.DRLearner).fit(sim.X, sim.y, sim.w, sample_weight=np.ones(len(sim.y)))
    np.testing.assert_allclose(b.ate().estimate, a.estimate, rtol=1e-9)
    np.testing.assert_allclose(b.ate().std_error, a.std_error, rtol=1e-9)


def test_dr_ate_multiarm_equals_hand_aipw(three_arm: Simulation) -> None:
    sim = three_arm
    dr = linear_learner(ml.DRLearner).fit(sim.X, sim.y, sim.w)
    mu = dr.nuisance_.oof_["mu"][:, :, 0]
    e = dr.nuisance_.oof_["e"]
    effects = dr.ate()
    assert isinstance(effects, tuple) and len(effects) == 2
    for k, effect in zip((1, 2), effects, strict=True):
        est, se = aipw(sim, mu, e, k)
        assert effect.variant == k and effect.control == 0
        np.testing.assert_allclose([effect.estimate, effect.std_error], [est, se], rtol=1e-10)


def test_dr_pseudo_outcome_regression_is_ols_on_aipw_terms(two_arm: Simulation) -> None:
    # final_stage="full": one OLS of the AIPW pseudo-outcome on X over all rows
    sim = two_arm
    dr = linear_learner(ml.DRLearner, final_stage="full").fit(sim.X, sim.y, sim.w)
    mu = dr.nuisance_.oof_["mu"][:, :, 0]
    e = np.clip(dr.nuisance_.oof_["e"], DR_CLIP, 1 - DR_CLIP)
    phi = mu[:, 1] - mu[:, 0] + sim.w * (sim.y - mu[:, 1]) / e[:, 1]
    phi -= (1 - sim.w) * (sim.y - mu[:, 0]) / e[:, 0]
    np.testing.assert_allclose(dr.pseudo_outcomes_[:, 0, 0], phi, rtol=1e-10, atol=1e-10)
    Xn = sim.X[:25]
    np.testing.assert_allclose(
        dr.predict(Xn), ols_predict(ols(sim.X, phi), Xn), rtol=1e-8, atol=1e-8
    )


# ------------------------------------------------------ R-learner closed form
def r_constant(
    sim: Simulation, m: np.ndarray, e1: np.ndarray, rows: np.ndarray, weight: Any = None
) -> float:
    """sum (T - p)(Y - m) / sum (T - p)^2 over ``rows`` (times the sample weight)."""
    p = np.clip(e1, CLIP, 1 - CLIP)
    t_res, y_res = sim.w - p, sim.y - m
    sw = np.ones(len(sim.y)) if weight is None else weight
    return float(np.sum((sw * t_res * y_res)[rows]) / np.sum((sw * t_res**2)[rows]))


@pytest.mark.parametrize("weighted", [False, True])
def test_r_learner_constant_effect_is_weighted_mean_ratio(
    weighted: bool, two_arm: Simulation
) -> None:
    sim = two_arm
    sw = np.random.default_rng(1).uniform(0.2, 3.0, len(sim.y)) if weighted else None
    everything = np.ones(len(sim.y), dtype=bool)
    # final_stage="full": one fit on all rows -> the closed form on all rows
    r = linear_learner(ml.RLearner, effect_model=DummyRegressor(), final_stage="full")
    r.fit(sim.X, sim.y, sim.w, sample_weight=sw)
    m = r.nuisance_.oof_["m:0:1"][:, 0]
    e1 = r.nuisance_.oof_["e"][:, 1]
    assert not np.isnan(m).any()
    expected = r_constant(sim, m, e1, everything, sw)
    np.testing.assert_allclose(r.predict(sim.X[:20]), np.full(20, expected), rtol=1e-10)
    # default cross-fitted final stage: fold f's model uses the rows outside f
    r2 = linear_learner(ml.RLearner, effect_model=DummyRegressor())
    oof = r2.fit_predict(sim.X, sim.y, sim.w, sample_weight=sw)
    folds = r2.folds_
    per_fold = [r_constant(sim, m, e1, folds != f, sw) for f in range(N_FOLDS)]
    np.testing.assert_allclose(oof, np.asarray(per_fold)[folds], rtol=1e-10)
    np.testing.assert_allclose(r2.predict(sim.X[:5]), np.full(5, np.mean(per_fold)), rtol=1e-10)
    if weighted:
        assert abs(r_constant(sim, m, e1, everything) - expected) > 1e-6


def test_r_learner_constant_effect_multiarm_uses_pair_rows(three_arm: Simulation) -> None:
    # Variant k against control 0: the rows of the pair only, the marginal
    # outcome model of the pair, the pair propensity e_k / (e_k + e_0).
    sim = three_arm
    r = linear_learner(ml.RLearner, effect_model=DummyRegressor(), final_stage="full")
    r.fit(sim.X, sim.y, sim.w)
    e = r.nuisance_.oof_["e"]
    got = r.predict(sim.X[:3])
    assert got.shape == (3, 2)
    for k in (1, 2):
        pair = (sim.w == 0) | (sim.w == k)
        m = r.nuisance_.oof_[f"m:0:{k}"][:, 0]
        assert np.isnan(m[~pair]).all() and not np.isnan(m[pair]).any()
        p = np.clip(e[:, k] / (e[:, k] + e[:, 0]), CLIP, 1 - CLIP)
        t_res = (sim.w == k) - p
        y_res = np.where(pair, sim.y - np.nan_to_num(m), 0.0)
        expected = np.sum((t_res * y_res)[pair]) / np.sum((t_res**2)[pair])
        np.testing.assert_allclose(got[:, k - 1], expected, rtol=1e-10)


def test_r_learner_linear_effect_is_weighted_least_squares(two_arm: Simulation) -> None:
    sim = two_arm
    r = linear_learner(ml.RLearner, final_stage="full").fit(sim.X, sim.y, sim.w)
    m = r.nuisance_.oof_["m:0:1"][:, 0]
    p = np.clip(r.nuisance_.oof_["e"][:, 1], CLIP, 1 - CLIP)
    t_res = sim.w - p
    beta = ols(sim.X, (sim.y - m) / t_res, weight=t_res**2)
    Xn = sim.X[:30]
    np.testing.assert_allclose(r.predict(Xn), ols_predict(beta, Xn), rtol=1e-8, atol=1e-8)


# ------------------------------------------------------ X-learner blend 1/2
def test_x_learner_known_half_propensity_averages_effect_models(two_arm: Simulation) -> None:
    sim = two_arm
    x = linear_learner(ml.XLearner, final_stage="full").fit(sim.X, sim.y, sim.w, propensity=0.5)
    mu = x.nuisance_.oof_["mu"][:, :, 0]
    treated, control = sim.w == 1, sim.w == 0
    tau1 = ols(sim.X[treated], (sim.y - mu[:, 0])[treated])  # D1 = Y - mu0 on the treated
    tau0 = ols(sim.X[control], (mu[:, 1] - sim.y)[control])  # D0 = mu1 - Y on the controls
    Xn = sim.X[:30] * 1.5
    expected = 0.5 * ols_predict(tau0, Xn) + 0.5 * ols_predict(tau1, Xn)
    np.testing.assert_allclose(x.predict(Xn), expected, rtol=1e-8, atol=1e-8)
    # and from the learner's own effect models
    own = [x.effect_models_[(1, side, 0)][0].predict(Xn) for side in (0, 1)]
    np.testing.assert_allclose(x.predict(Xn), 0.5 * own[0] + 0.5 * own[1], rtol=1e-10)
    assert x.nuisance_.models_["e"] is None  # nothing was fitted for e


# ------------------------------------------------- counting base-model fits
FIT_LOG: list[tuple[str, str]] = []


def _digest(X: Any, y: Any, sample_weight: Any) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in (X, y, sample_weight):
        h.update(b"|" if a is None else np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()


class CountingRegressor(RegressorMixin, BaseEstimator):
    """LinearRegression that logs every fit (role, digest of its training data)."""

    def __init__(self, role: str = "outcome") -> None:
        self.role = role

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> CountingRegressor:
        FIT_LOG.append((self.role, _digest(X, y, sample_weight)))
        self.model_ = LinearRegression().fit(X, y, sample_weight=sample_weight)
        self.n_features_in_ = self.model_.n_features_in_
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self.model_.predict(X)


class CountingClassifier(ClassifierMixin, BaseEstimator):
    """LogisticRegression that logs every fit."""

    def __init__(self, role: str = "propensity") -> None:
        self.role = role

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> CountingClassifier:
        FIT_LOG.append((self.role, _digest(X, y, sample_weight)))
        self.model_ = LogisticRegression().fit(X, y, sample_weight=sample_weight)
        self.classes_ = self.model_.classes_
        self.n_features_in_ = self.model_.n_features_in_
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.model_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        return self.model_.predict(X)


@pytest.fixture(autouse=True)
def _clear_fit_log() -> Iterator[None]:
    FIT_LOG.clear()
    yield
    FIT_LOG.clear()


def fits(role: str) -> int:
    return sum(r == role for r, _ in FIT_LOG)


def assert_no_duplicate_fits(roles: tuple[str, ...] = ("outcome", "propensity")) -> None:
    counts = Counter(entry for entry in FIT_LOG if entry[0] in roles)
    dup = {k: v for k, v in counts.items() if v > 1}
    assert not dup, f"base models fitted more than once on the same data: {dup}"


@pytest.mark.parametrize("K", [2, 3])
def test_shared_nuisance_fits_each_model_once(
    K: int, two_arm: Simulation, three_arm: Simulation
) -> None:
    sim = two_arm if K == 2 else three_arm
    nuis = ml.Nuisance(
        outcome_model=CountingRegressor(),
        propensity_model=CountingClassifier(),
        n_folds=N_FOLDS,
        random_state=0,
        n_jobs=1,
    ).fit(sim.X, sim.y, sim.w)
    assert fits("outcome") == K * N_FOLDS
    assert fits("propensity") == N_FOLDS
    assert nuis.n_model_fits_ == (K + 1) * N_FOLDS

    shared = {
        "T": ml.TLearner(nuisance=nuis, random_state=0, n_jobs=1),
        "X": ml.XLearner(
            nuisance=nuis,
            effect_model=CountingRegressor("effect"),
            final_stage="crossfit",  # the rule of "auto" would fit one model on these few rows
            random_state=0,
        ),
        "R": ml.RLearner(nuisance=nuis, effect_model=CountingRegressor("effect"), random_state=0),
        "R2": ml.RLearner(nuisance=nuis, effect_model=CountingRegressor("effect"), random_state=0),
        "DR": ml.DRLearner(nuisance=nuis, effect_model=CountingRegressor("effect"), random_state=0),
    }
    for learner in shared.values():
        learner.set_params(n_jobs=1)
        learner.fit(sim.X, sim.y, sim.w)
    # T, X and DR fit no nuisance model; the R-learners' marginal outcome
    # models (one per control/treatment pair and fold) are fitted once.
    assert fits("outcome") == K * N_FOLDS + (K - 1) * N_FOLDS
    assert fits("propensity") == N_FOLDS
    assert_no_duplicate_fits()
    # Effect models: one per learner, spec and fold; the two R-learners fit
    # the same ones (same data), the others are all distinct.
    assert fits("effect") == N_FOLDS * (K - 1) * (2 + 1 + 1 + 1)
    assert len({d for r, d in FIT_LOG if r == "effect"}) == N_FOLDS * (K - 1) * (2 + 1 + 1)
    for name in ("T", "X", "DR", "R2"):
        assert shared[name].nuisance_ is nuis
    assert shared["R2"].n_model_fits_ == (K - 1) * N_FOLDS  # its effect models only

    # The same learners with their own nuisance and the same random_state
    # predict the same. The T-learner's own `fit` uses one outcome model per
    # arm on all rows, while a shared cross-fitted nuisance serves its fold
    # models: compare T through fit_predict (cross-fitted in both).
    kw: dict[str, Any] = {"n_folds": N_FOLDS, "random_state": 0, "n_jobs": 1}
    models: dict[str, Any] = {
        "outcome_model": CountingRegressor(),
        "propensity_model": CountingClassifier(),
    }
    own = {
        # the shared Nuisance models each variant separately: ask the same
        "X": ml.XLearner(
            **models, effect_model=CountingRegressor("effect"), outcome_pooling="per_variant", **kw
        ),
        "R": ml.RLearner(**models, effect_model=CountingRegressor("effect"), **kw),
        "DR": ml.DRLearner(
            **models, effect_model=CountingRegressor("effect"), outcome_pooling="per_variant", **kw
        ),
    }
    Xn = sim.X[:60] + 0.1
    for name, learner in own.items():
        if name == "X":
            # Like T: the X-learner's own per-variant `fit` imputes with one outcome model
            # per arm on all rows; the shared cross-fitted nuisance serves its fold models.
            np.testing.assert_array_equal(
                learner.fit_predict(sim.X, sim.y, sim.w),
                shared[name].fit_predict(sim.X, sim.y, sim.w),
            )
        else:
            learner.fit(sim.X, sim.y, sim.w)
        np.testing.assert_array_equal(learner.predict(Xn), shared[name].predict(Xn), name)
    t_own = ml.TLearner(outcome_model=CountingRegressor(), **kw)
    np.testing.assert_array_equal(
        t_own.fit_predict(sim.X, sim.y, sim.w), shared["T"].fit_predict(sim.X, sim.y, sim.w)
    )
    np.testing.assert_array_equal(t_own.predict(Xn), shared["T"].predict(Xn))


def test_shared_nuisance_equals_own_with_seeded_lightgbm(two_arm: Simulation) -> None:
    # Row and column subsampling make every LightGBM fit depend on its seed:
    # equality needs the seeds to follow the task, not the learner.
    sim = two_arm
    lgbm: dict[str, Any] = {
        "n_estimators": 20,
        "subsample": 0.7,
        "subsample_freq": 1,
        "colsample_bytree": 0.7,
        "verbose": -1,
        "n_jobs": 1,
    }
    kw: dict[str, Any] = {"n_folds": N_FOLDS, "random_state": 3, "n_jobs": 1}
    nuis = ml.Nuisance(
        outcome_model=LGBMRegressor(**lgbm), propensity_model=LGBMClassifier(**lgbm), **kw
    ).fit(sim.X, sim.y, sim.w)
    Xn = sim.X[:50]
    for cls in (ml.XLearner, ml.RLearner, ml.DRLearner):
        shared = cls(nuisance=nuis, effect_model=LGBMRegressor(**lgbm), **kw)
        pooling = {} if cls is ml.RLearner else {"outcome_pooling": "per_variant"}
        own = cls(
            outcome_model=LGBMRegressor(**lgbm),
            propensity_model=LGBMClassifier(**lgbm),
            effect_model=LGBMRegressor(**lgbm),
            **pooling,
            **kw,
        )
        np.testing.assert_array_equal(
            shared.fit_predict(sim.X, sim.y, sim.w), own.fit_predict(sim.X, sim.y, sim.w)
        )
        np.testing.assert_array_equal(shared.predict(Xn), own.predict(Xn))
    # and the seeds are used: another random_state changes the estimates
    other = ml.DRLearner(
        outcome_model=LGBMRegressor(**lgbm),
        propensity_model=LGBMClassifier(**lgbm),
        effect_model=LGBMRegressor(**lgbm),
        **{**kw, "random_state": 4},
    ).fit(sim.X, sim.y, sim.w)
    assert not np.array_equal(other.predict(Xn), own.predict(Xn))


@pytest.mark.parametrize("K", [2, 3])
def test_s_and_t_fit_counts(K: int, two_arm: Simulation, three_arm: Simulation) -> None:
    sim = two_arm if K == 2 else three_arm
    s = ml.SLearner(outcome_model=CountingRegressor(), n_folds=N_FOLDS, random_state=0)
    s.fit(sim.X, sim.y, sim.w)
    assert fits("outcome") == 1 and s.n_model_fits_ == 1  # no cross-fitting in fit
    FIT_LOG.clear()
    s.fit_predict(sim.X, sim.y, sim.w)
    assert fits("outcome") == N_FOLDS and s.n_model_fits_ == N_FOLDS
    assert_no_duplicate_fits()

    FIT_LOG.clear()
    t = ml.TLearner(outcome_model=CountingRegressor(), n_folds=N_FOLDS, random_state=0)
    t.fit(sim.X, sim.y, sim.w)
    assert fits("outcome") == K and t.n_model_fits_ == K  # one model per variant
    FIT_LOG.clear()
    t.fit_predict(sim.X, sim.y, sim.w)
    assert fits("outcome") == N_FOLDS * K and t.n_model_fits_ == N_FOLDS * K
    assert_no_duplicate_fits()


# ------------------------------------------------------------------ honesty
def test_oof_nuisance_never_predicts_its_own_training_rows(two_arm: Simulation) -> None:
    # A 1-nearest-neighbour model reproduces its training targets exactly
    # (continuous y, no ties): an in-sample prediction would equal y.
    sim = two_arm
    nuis = ml.Nuisance(
        outcome_model=KNeighborsRegressor(n_neighbors=1),
        propensity_model=KNeighborsClassifier(n_neighbors=1),
        n_folds=N_FOLDS,
        random_state=0,
    ).fit(sim.X, sim.y, sim.w)
    rows = np.arange(len(sim.y))
    mu_own = nuis.oof_["mu"][rows, sim.w, 0]
    assert not np.any(mu_own == sim.y)
    # ... while the fold models do reproduce their training rows (the check can fail)
    fold0 = nuis.models_["mu"][0][0]
    train0 = np.flatnonzero((nuis.folds_ != 0) & (sim.w == 0))
    np.testing.assert_array_equal(fold0.predict(sim.X[train0]), sim.y[train0])
    # In-sample 1-NN propensities would be one-hot on the own variant for
    # every row; out of fold they are for the rows whose neighbour shares it.
    own_e = nuis.oof_["e"][rows, sim.w]
    assert 0.2 < np.mean(own_e == 1.0) < 0.9
    # The R-learner's marginal outcome model, cross-fitted on both arms.
    r = ml.RLearner(nuisance=nuis, effect_model=LinearRegression(), random_state=0)
    r.fit(sim.X, sim.y, sim.w)
    assert not np.any(nuis.oof_["m:0:1"][:, 0] == sim.y)


@pytest.mark.parametrize("cls", [ml.XLearner, ml.DRLearner])
def test_fit_predict_final_stage_is_out_of_fold(cls: type, two_arm: Simulation) -> None:
    # A 1-NN effect model would return each row's own target in sample.
    sim = two_arm
    learner = cls(
        outcome_model=LinearRegression(),
        propensity_model=LogisticRegression(),
        effect_model=KNeighborsRegressor(n_neighbors=1),
        n_folds=N_FOLDS,
        random_state=0,
    )
    oof = learner.fit_predict(sim.X, sim.y, sim.w)
    mu = learner.nuisance_.oof_["mu"][:, :, 0]
    if cls is ml.DRLearner:
        target = learner.pseudo_outcomes_[:, 0, 0]
        assert not np.any(oof == target)
        # the fold models do reproduce the targets of their own training rows
        model = learner.effect_models_[(1, 0)][0]
        train0 = np.flatnonzero(learner.folds_ != 0)
        np.testing.assert_array_equal(model.predict(sim.X[train0]), target[train0])
    else:
        # each side's model, in sample, would reproduce the imputed effects
        d1 = (sim.y - mu[:, 0])[sim.w == 1]
        d0 = (mu[:, 1] - sim.y)[sim.w == 0]
        side1 = np.empty(len(sim.y))
        side0 = np.empty(len(sim.y))
        for f in range(N_FOLDS):
            rows = learner.folds_ == f
            side0[rows] = learner.effect_models_[(1, 0, 0)][f].predict(sim.X[rows])
            side1[rows] = learner.effect_models_[(1, 1, 0)][f].predict(sim.X[rows])
        assert not np.any(side1[sim.w == 1] == d1)
        assert not np.any(side0[sim.w == 0] == d0)
        e = np.clip(learner.nuisance_.oof_["e"][:, 1], CLIP, 1 - CLIP)
        np.testing.assert_allclose(oof, e * side0 + (1 - e) * side1, rtol=1e-12)


def test_t_learner_fit_predict_uses_out_of_fold_outcomes(two_arm: Simulation) -> None:
    sim = two_arm
    t = ml.TLearner(outcome_model=KNeighborsRegressor(n_neighbors=1), n_folds=N_FOLDS)
    oof = t.fit_predict(sim.X, sim.y, sim.w)
    mu = t.nuisance_.oof_["mu"][:, :, 0]
    np.testing.assert_array_equal(oof, mu[:, 1] - mu[:, 0])
    assert not np.any(mu[np.arange(len(sim.y)), sim.w] == sim.y)


def test_pooled_outcome_model_gives_constant_arm_difference(three_arm: Simulation) -> None:
    # A pooled linear outcome model is y ~ X b + sum_k d_k 1{W=k}: every
    # out-of-fold mu_k - mu_0 of a fold is that fold's coefficient d_k, the
    # same for all rows of the fold, and equals a hand-fitted lstsq.
    sim = three_arm
    nuis = ml.Nuisance(
        outcome_model=LinearRegression(), outcome_pooling="pooled", n_folds=N_FOLDS, random_state=0
    ).fit(sim.X, sim.y, sim.w, propensity=[0.5, 0.3, 0.2])
    mu = nuis.oof_["mu"][:, :, 0]
    K = mu.shape[1]
    for f in range(N_FOLDS):
        train = nuis.folds_ != f
        design = np.column_stack(
            [np.ones(train.sum()), sim.X[train]]
            + [(sim.w[train] == k).astype(float) for k in range(1, K)]
        )
        coef = np.linalg.lstsq(design, sim.y[train], rcond=None)[0]
        rows = nuis.folds_ == f
        for k in range(1, K):
            np.testing.assert_allclose(mu[rows, k] - mu[rows, 0], coef[-(K - 1) + k - 1])
    assert nuis.n_model_fits_ == N_FOLDS  # one pooled model per fold


def test_outcome_pooling_is_validated(two_arm: Simulation) -> None:
    with pytest.raises(ValueError, match="`outcome_pooling` must be"):
        ml.DRLearner(outcome_pooling="shared").fit(two_arm.X, two_arm.y, two_arm.w)
