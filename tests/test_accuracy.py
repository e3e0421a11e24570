"""Statistical accuracy of every learner against the simulators' true CATE.

Every check compares an error to a yardstick derived from the design, never
to a number tuned until the test passes:

* **PEHE** (root mean squared error of the estimated CATE against the true
  one, on a fresh test draw) versus the PEHE of an *uninformative* predictor:
  the constant true ATE, whose PEHE is ``sd(tau)``, where the effect is
  heterogeneous; the zero-effect predictor, whose PEHE is ``rms(tau)``, where
  it is constant (or, for the S- and T-learners on setup A, too weak to be
  resolved by their outcome models, see ``Design.level_only``). A learner
  must be *clearly* better: ``PEHE <= RHO * baseline`` with ``RHO = 0.8``.
  Over four training seeds, the standard deviation of PEHE / baseline that we
  measured for these designs and sizes is 0.01-0.04 for most pairs (0.07-0.13
  for X, R and DR on setup A, whose ratios of 0.24-0.55 are far from the
  limit): a margin of 0.2 is five or more such deviations, so passing is not
  luck and failing is not bad luck.
* **Oracle noise bound** where ``tau`` is linear in ``x`` and the effect model
  is OLS: the PEHE an OLS fit on the *oracle* pseudo-outcomes (true ``mu`` and
  ``e``) would reach, computed exactly from the truth (``oracle_pehe``), is
  the ``sigma * sqrt(p / n_eff)`` of the textbook. The Neyman-orthogonal
  learners (R and DR) must be within ``ORACLE_FACTOR = 3`` times of it.
* **ATE** within ``Z_ATE = 4`` standard errors of the sample mean of the true
  CATE, the standard error being the DR-learner's AIPW one on the same data.
* **Out-of-fold** (``fit_predict``) PEHE on the training rows comparable to
  the PEHE of ``predict`` on fresh rows (``check_fit_predict``).

Base models: LightGBM with modest settings where the truth is nonlinear,
linear models where it is linear (see ``DESIGNS``). Base models run one thread
each (``n_jobs=1``): fits are small, and this keeps timings stable when the
test suite runs in parallel workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression

import metalearn as ml
from metalearn.datasets import (
    Simulation,
    simulate_binary_outcome,
    simulate_confounded,
    simulate_multiarm,
    simulate_nie_wager,
    simulate_retention,
)

LEARNERS = ("S", "T", "X", "R", "DR", "RA")

# "Clearly better than an uninformative predictor": PEHE at most 80 % of the
# predictor's. See the module docstring for why 20 % is far outside seed noise.
RHO = 0.8

# Oracle bound slack. For the oracle (OLS on pseudo-outcomes built from the
# true nuisances) n * PEHE^2 / oracle_pehe(n)^2 is about chi^2_{p+1} / (p+1);
# its 99.9 % quantile for p + 1 = 7 is 3.47, i.e. 1.86 on the PEHE scale. A
# factor 3 leaves another ~1.6 for the estimated nuisances, whose effect on
# the R- and DR-learners is second order (a product of two nuisance errors).
ORACLE_FACTOR = 3.0

# A normal estimate lands within 4 standard errors of its target with
# probability 1 - 6e-5: a failure means bias, not bad luck.
Z_ATE = 4.0

# Plug-in ATEs of the learners that are not Neyman-orthogonal carry a
# first-order bias from the regularized outcome models, which shrinks slower
# than the standard error: there is no theorem behind "within 4 SE" for them.
# Measured errors in AIPW standard errors (training seeds 1, 2, 3, 4):
# S on setup C -3.3 -5.0 -3.6 -4.9 (regularization-induced confounding: the
# trees credit part of the effect to x2 + x3, which drive both b and e);
# X on setup C +3.6 +2.5 +4.1 +4.0 and T on setup C -2.1 -3.7 -2.3 -3.7
# (outcome models extrapolated where one arm is rare); S on the smallest arm
# of the multi-arm design -3.0 -3.9 -4.1 -3.5 (shrinkage of the treatment
# split); T on the confounded design +3.3 +1.7 +1.9 +3.7. These are expected
# pairs get a wider bound, Z_ATE_BIASED standard errors (the largest bias
# observed over five seeds was 5.0 SE, so 8 SE still fails if the bias grows
# by half again); the R- and DR-learners have no such exception.
KNOWN_ATE_BIAS = {
    ("nw_C", "S"),
    ("nw_C", "T"),
    ("nw_C", "X"),
    ("multiarm", "S"),
    ("confounded", "T"),
}

# Out-of-fold over fresh-data PEHE (see ``check_fit_predict``).
FOLD_LOW, FOLD_HIGH = 0.9, float(np.sqrt(5))

N_TEST = 5_000
TEST_SEED = 987_654  # the fresh test draw; never a training seed
TRAIN_SEED = 1
SLOW_SEEDS = (2, 3, 4)

_LGBM: dict[str, Any] = {
    "n_estimators": 100,
    "learning_rate": 0.05,
    "min_child_samples": 50,
    "verbose": -1,
    "n_jobs": 1,
}


def lgbm_outcome() -> LGBMRegressor:
    return LGBMRegressor(**_LGBM)


def lgbm_classifier() -> LGBMClassifier:
    return LGBMClassifier(**_LGBM)


def lgbm_effect() -> LGBMRegressor:
    # The final stage regresses noisy pseudo-outcomes (AIPW, R-, X-residuals)
    # on surfaces that are additive or two-way interactions in every design:
    # small trees (at most 7 leaves) are the natural model class.
    return LGBMRegressor(**_LGBM, num_leaves=7)


@dataclass(frozen=True)
class Design:
    """One simulator with the base models that fit its truth."""

    name: str
    simulate: Callable[[int, int], Simulation]
    n: int
    outcome: Callable[[], Any]
    propensity: Callable[[], Any] | None  # None: randomized, known propensity
    known_propensity: Any
    effect: Callable[[], Any]
    # tau is linear in x and the effect model is OLS: the oracle bound applies.
    linear: bool = False
    # Additive Gaussian noise sd of y (for the oracle bound).
    sigma: float = 1.0
    # Learners whose baseline is the zero-effect predictor (level of the effect
    # only); every learner when tau is constant.
    level_only: frozenset[str] = frozenset()


DESIGNS: dict[str, Design] = {
    d.name: d
    for d in [
        # A: nonlinear b and e, tau = (x1 + x2) / 2 linear -> OLS effect model.
        # sd(tau) = 0.2 is a fifth of sigma = 1: the S- and T-learners, which
        # have no final stage that can use the linearity of tau, must resolve it
        # from two nonparametric outcome fits whose own RMSE against the true
        # mu at n = 10000 (0.15 - 0.2, measured) is as large as sd(tau). For
        # them we demand the level of the effect only.
        Design(
            "nw_A",
            lambda n, s: simulate_nie_wager("A", n=n, seed=s),
            10_000,
            lgbm_outcome,
            lgbm_classifier,
            None,
            LinearRegression,
            linear=True,
            level_only=frozenset({"S", "T"}),
        ),
        # B: randomized (e = 1/2 known), nonlinear tau.
        Design(
            "nw_B",
            lambda n, s: simulate_nie_wager("B", n=n, seed=s),
            5_000,
            lgbm_outcome,
            None,
            0.5,
            lgbm_effect,
        ),
        # C: strong confounding, e logistic-linear -> LogisticRegression, tau = 1
        # constant -> OLS effect model.
        Design(
            "nw_C",
            lambda n, s: simulate_nie_wager("C", n=n, seed=s),
            10_000,
            lgbm_outcome,
            LogisticRegression,
            None,
            LinearRegression,
            linear=True,
            level_only=frozenset(LEARNERS),
        ),
        # D: unrelated arms, nonlinear everything.
        Design(
            "nw_D",
            lambda n, s: simulate_nie_wager("D", n=n, seed=s),
            5_000,
            lgbm_outcome,
            lgbm_classifier,
            None,
            lgbm_effect,
        ),
        # Randomized retention experiment, noise sd 10 against sd(tau) = 6.4.
        Design(
            "retention",
            lambda n, s: simulate_retention(n=n, seed=s),
            10_000,
            lgbm_outcome,
            None,
            0.5,
            lgbm_effect,
            sigma=10.0,
        ),
        # Three arms of shares 1/2, 1/3, 1/6 (known).
        Design(
            "multiarm",
            lambda n, s: simulate_multiarm(n=n, seed=s),
            10_000,
            lgbm_outcome,
            None,
            [0.5, 1 / 3, 1 / 6],
            lgbm_effect,
        ),
        # Binary outcome: classifier outcome models, effects on probabilities.
        # sd(tau) = 0.13 against a Bernoulli noise sd of ~0.45: the largest n.
        Design(
            "binary",
            lambda n, s: simulate_binary_outcome(n=n, seed=s),
            20_000,
            lgbm_classifier,
            None,
            0.5,
            lgbm_effect,
        ),
        # Observational, confounded (e logistic in x but estimated flexibly).
        Design(
            "confounded",
            lambda n, s: simulate_confounded(n=n, seed=s),
            10_000,
            lgbm_outcome,
            lgbm_classifier,
            None,
            lgbm_effect,
        ),
    ]
}


def make_learners(design: Design, nuisance: ml.Nuisance) -> dict[str, Any]:
    """The six learners; X, R, DR and RA share ``nuisance``.

    Sharing is only a saving: ``test_equivalences`` checks that a learner on a
    shared Nuisance predicts exactly what it predicts with its own.
    """
    common: dict[str, Any] = {"random_state": 0, "n_jobs": 1}
    return {
        "S": ml.SLearner(outcome_model=design.outcome(), **common),
        "T": ml.TLearner(outcome_model=design.outcome(), **common),
        "X": ml.XLearner(nuisance=nuisance, effect_model=design.effect(), **common),
        "R": ml.RLearner(nuisance=nuisance, effect_model=design.effect(), **common),
        "DR": ml.DRLearner(nuisance=nuisance, effect_model=design.effect(), **common),
        "RA": ml.RALearner(nuisance=nuisance, effect_model=design.effect(), **common),
    }


def make_nuisance(design: Design) -> ml.Nuisance:
    return ml.Nuisance(
        outcome_model=design.outcome(),
        propensity_model=None if design.propensity is None else design.propensity(),
        random_state=0,
        n_jobs=1,
    )


def as_matrix(tau: np.ndarray) -> np.ndarray:
    """CATE as (n, K-1)."""
    tau = np.asarray(tau, dtype=np.float64)
    return tau[:, None] if tau.ndim == 1 else tau


def pehe(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """PEHE per treated variant, shape (K-1,)."""
    return np.sqrt(np.mean((as_matrix(estimate) - as_matrix(truth)) ** 2, axis=0))


@dataclass
class Fitted:
    train: Simulation
    test: Simulation
    predict_test: dict[str, np.ndarray]
    ate: dict[str, np.ndarray]  # (K-1,) per learner
    ate_se: np.ndarray  # DR AIPW standard error, (K-1,)
    dr_effect: Any
    nuisance: ml.Nuisance


_CACHE: dict[tuple[str, int, int], Fitted] = {}


def fit_design(name: str, seed: int = TRAIN_SEED, scale: int = 1) -> Fitted:
    """Fit all five learners on one training draw (cached per test session)."""
    key = (name, seed, scale)
    if key in _CACHE:
        return _CACHE[key]
    design = DESIGNS[name]
    train = design.simulate(design.n * scale, seed)
    test = design.simulate(N_TEST, TEST_SEED)
    nuisance = make_nuisance(design).fit(
        train.X, train.y, train.w, propensity=design.known_propensity
    )
    preds, ates = {}, {}
    dr_effect = None
    for label, learner in make_learners(design, nuisance).items():
        learner.fit(train.X, train.y, train.w, propensity=design.known_propensity)
        preds[label] = as_matrix(learner.predict(test.X))
        if label == "DR":
            dr_effect = learner.ate()
            effects = dr_effect if isinstance(dr_effect, tuple) else (dr_effect,)
            ates[label] = np.array([e.estimate for e in effects])
            ate_se = np.array([e.std_error for e in effects])
        else:
            # plug-in average of the CATE over the training rows
            ates[label] = as_matrix(learner.predict(train.X)).mean(axis=0)
    fitted = Fitted(train, test, preds, ates, ate_se, dr_effect, nuisance)
    _CACHE[key] = fitted
    return fitted


def oracle_pehe(sim: Simulation, n: int, sigma: float, clip: float = 0.01) -> dict[str, float]:
    """Expected PEHE of OLS on the oracle pseudo-outcomes, from the truth of ``sim``.

    With the true ``mu`` and ``e`` the AIPW pseudo-outcome is ``tau(x)`` plus
    noise of conditional variance ``v(x) = sigma^2 (1/e + 1/(1-e))``; OLS on
    ``x~ = (1, x)`` then has ``Var(beta) = S^-1 Omega S^-1 / n`` with ``S =
    E[x~ x~']`` and ``Omega = E[v x~ x~']``, so that the expected PEHE^2 on the
    same distribution is ``tr(Omega S^-1) / n`` -- ``sigma^2 (p+1) / n_eff``
    when ``v`` does not vary with ``x``. The R-learner's weighted least squares
    with the true ``e`` has ``Var(beta) = sigma^2 A^-1 / n`` with ``A =
    E[e(1-e) x~ x~']``, hence PEHE^2 = ``sigma^2 tr(S A^-1) / n`` (smaller:
    R is the efficient one under homoscedastic noise). ``sim`` is a large draw
    of the design (the test set), standing in for the expectations.
    """
    e = np.clip(sim.propensity, clip, 1 - clip)
    Xt = np.column_stack([np.ones(len(e)), sim.X])
    S = Xt.T @ Xt / len(e)
    v = sigma**2 * (1 / e + 1 / (1 - e))
    omega = (Xt * v[:, None]).T @ Xt / len(e)
    A = (Xt * (e * (1 - e))[:, None]).T @ Xt / len(e)
    return {
        "DR": float(np.sqrt(np.trace(np.linalg.solve(S, omega)) / n)),
        "R": float(sigma * np.sqrt(np.trace(np.linalg.solve(A, S)) / n)),
    }


def baseline(design: Design, learner: str, tau_test: np.ndarray) -> tuple[str, np.ndarray]:
    """PEHE of the uninformative predictor this learner must clearly beat."""
    tau = as_matrix(tau_test)
    if learner in design.level_only:
        return "zero effect", np.sqrt(np.mean(tau**2, axis=0))
    return "constant ATE", tau.std(axis=0)


# --------------------------------------------------------------------- checks
def check_pehe(fitted: Fitted, design: Design, learner: str) -> None:
    got = pehe(fitted.predict_test[learner], fitted.test.tau)
    what, base = baseline(design, learner, fitted.test.tau)
    assert np.all(base > 0)
    assert np.all(got <= RHO * base), (
        f"{learner}-learner on {design.name}: PEHE {np.round(got, 4)} is not clearly below "
        f"the {what} predictor's {np.round(base, 4)} (allowed {RHO} x)"
    )


def check_oracle(fitted: Fitted, design: Design, learner: str) -> None:
    bound = oracle_pehe(fitted.test, len(fitted.train.y), design.sigma)[learner]
    got = float(pehe(fitted.predict_test[learner], fitted.test.tau)[0])
    assert got <= ORACLE_FACTOR * bound, (
        f"{learner}-learner on {design.name}: PEHE {got:.4f} exceeds {ORACLE_FACTOR} x the "
        f"oracle OLS PEHE {bound:.4f}"
    )


def check_ate(fitted: Fitted, design: Design, learner: str) -> None:
    truth = as_matrix(fitted.train.tau).mean(axis=0)
    err = fitted.ate[learner] - truth
    z = Z_ATE_BIASED if (design.name, learner) in KNOWN_ATE_BIAS else Z_ATE
    assert np.all(np.abs(err) <= z * fitted.ate_se), (
        f"{learner}-learner on {design.name}: ATE {fitted.ate[learner]} vs true {truth}; "
        f"error {err} is beyond {z} AIPW standard errors {fitted.ate_se}"
    )


PAIRS = [(d, lrn) for d in DESIGNS for lrn in LEARNERS]
PAIR_IDS = [f"{d}-{lrn}" for d, lrn in PAIRS]
ATE_PAIRS = [pytest.param(d, lrn, id=f"{d}-{lrn}") for d, lrn in PAIRS]
Z_ATE_BIASED = 8.0
ORACLE_PAIRS = [(d, lrn) for d in DESIGNS if DESIGNS[d].linear for lrn in ("R", "DR")]
ORACLE_IDS = [f"{d}-{lrn}" for d, lrn in ORACLE_PAIRS]


# ---------------------------------------------------------------------- tests
@pytest.mark.parametrize(("design", "learner"), PAIRS, ids=PAIR_IDS)
def test_pehe_beats_uninformative_predictor(design: str, learner: str) -> None:
    check_pehe(fit_design(design), DESIGNS[design], learner)


@pytest.mark.slow
@pytest.mark.parametrize(("design", "learner"), PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_pehe_beats_uninformative_predictor_seeds(design: str, learner: str, seed: int) -> None:
    check_pehe(fit_design(design, seed), DESIGNS[design], learner)


@pytest.mark.parametrize(("design", "learner"), ORACLE_PAIRS, ids=ORACLE_IDS)
def test_pehe_within_oracle_noise_bound(design: str, learner: str) -> None:
    check_oracle(fit_design(design), DESIGNS[design], learner)


@pytest.mark.slow
@pytest.mark.parametrize(("design", "learner"), ORACLE_PAIRS, ids=ORACLE_IDS)
@pytest.mark.parametrize("scale", [1, 4])
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_pehe_within_oracle_noise_bound_seeds(
    design: str, learner: str, scale: int, seed: int
) -> None:
    # At four times the size the bound halves: the learners must follow it.
    check_oracle(fit_design(design, seed, scale), DESIGNS[design], learner)


@pytest.mark.parametrize(("design", "learner"), ATE_PAIRS)
def test_ate_within_four_standard_errors(design: str, learner: str) -> None:
    check_ate(fit_design(design), DESIGNS[design], learner)


@pytest.mark.slow
@pytest.mark.parametrize(("design", "learner"), ATE_PAIRS)
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_ate_within_four_standard_errors_seeds(design: str, learner: str, seed: int) -> None:
    check_ate(fit_design(design, seed), DESIGNS[design], learner)


def test_dr_ate_ci_covers_constant_effect() -> None:
    # Setup C has tau = 1 for every unit (and strong confounding). The 95 % CI
    # of a fixed seed covers it; the coverage frequency is the slow test's.
    effect = fit_design("nw_C").dr_effect
    assert effect.method == "AIPW (ATE)"
    assert effect.ci_low < 1.0 < effect.ci_high, effect
    # the naive difference in means is far off: the design is a real test
    train = fit_design("nw_C").train
    naive = train.y[train.w == 1].mean() - train.y[train.w == 0].mean()
    assert not effect.ci_low < naive < effect.ci_high


@pytest.mark.slow
def test_dr_ate_ci_coverage_constant_effect() -> None:
    # R replications of setup C (n = 2000): the number of 95 % intervals that
    # cover tau = 1 is Binomial(R, 0.95) for a calibrated interval; with R = 100
    # its mean is 95 and sd 2.18, and P(count < 88) = 0.002.
    design = DESIGNS["nw_C"]
    covered = 0
    reps = 100
    for rep in range(reps):
        sim = simulate_nie_wager("C", n=2_000, seed=10_000 + rep)
        dr = ml.DRLearner(
            outcome_model=lgbm_outcome(),
            propensity_model=LogisticRegression(),
            effect_model=LinearRegression(),
            random_state=rep,
            n_jobs=1,
        ).fit(sim.X, sim.y, sim.w)
        effect = dr.ate()
        covered += effect.ci_low < 1.0 < effect.ci_high
    assert design.name == "nw_C"
    assert covered >= 88, f"{covered} of {reps} 95 % intervals cover the true ATE"


# ------------------------------------------------------------ out-of-fold fits
FOLD_DESIGNS = ("nw_B", "nw_D")


def check_fit_predict(name: str, seed: int) -> None:
    """``fit_predict``: honest out-of-fold CATE as accurate as fresh-data predictions.

    Two yardsticks. (1) Any learner: the out-of-fold PEHE on the training rows
    over the PEHE of ``predict`` (the mean of the fold models) on fresh rows
    lies in ``[FOLD_LOW, FOLD_HIGH]``. A fold model is as good on its held-out
    fold as on fresh rows (honesty), and the average of the fold models is at
    least as good as a single one (Jensen), so the ratio is >= 1 up to sampling
    noise (``FOLD_LOW = 0.9``). The average beats a single fold model by at
    most sqrt(n_folds) in PEHE (uncorrelated fold errors), so the ratio is at
    most sqrt(5) = 2.24 (``FOLD_HIGH``). (2) R and DR, whose CATE *is* the
    effect models' prediction: the out-of-fold MSE equals, in expectation, the
    mean fresh-data MSE of the single fold models (``effect_models_``): each
    fold model predicts rows it never saw in both. Over 10000 rows the relative
    standard error of an MSE is about sqrt(2 / 10000) = 1.4 %; we allow 10 %.
    """
    design = DESIGNS[name]
    fitted = fit_design(name, seed)
    train, test = fitted.train, fitted.test
    learners = make_learners(design, fitted.nuisance)
    # The T-learner cross-fits its own outcome models here (its own code path).
    learners["T"] = ml.TLearner(outcome_model=design.outcome(), random_state=0, n_jobs=1)
    failures = []
    for label, learner in learners.items():
        oof = learner.fit_predict(train.X, train.y, train.w, propensity=design.known_propensity)
        assert as_matrix(oof).shape == as_matrix(train.tau).shape
        np.testing.assert_array_equal(as_matrix(oof), as_matrix(learner.oof_tau_[..., 0]))
        in_sample = pehe(oof, train.tau)
        fresh = pehe(learner.predict(test.X), test.tau)
        ratio = in_sample / fresh
        if not np.all((ratio >= FOLD_LOW) & (ratio <= FOLD_HIGH)):
            failures.append(f"{label}: out-of-fold PEHE {in_sample} vs fresh {fresh}")
        what, base = baseline(design, label, train.tau)
        if not np.all(in_sample <= RHO * base):
            failures.append(f"{label}: out-of-fold PEHE {in_sample} vs {what} {base}")
        if label in ("R", "DR"):
            tau_test = as_matrix(test.tau)
            for j, k in enumerate(learner._treated_codes):
                models = learner.effect_models_[(k, 0)]
                assert len(models) == learner.n_folds
                single = np.mean(
                    [np.mean((m.predict(test.X) - tau_test[:, j]) ** 2) for m in models]
                )
                mse_oof = in_sample[j] ** 2
                if not 1 / 1.1 <= mse_oof / single <= 1.1:
                    failures.append(
                        f"{label}: out-of-fold MSE {mse_oof:.4g} vs single fold models' fresh "
                        f"MSE {single:.4g} (variant {k})"
                    )
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("design", FOLD_DESIGNS)
def test_fit_predict_matches_fresh_accuracy(design: str) -> None:
    check_fit_predict(design, TRAIN_SEED)


@pytest.mark.slow
@pytest.mark.parametrize("design", list(DESIGNS))
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_fit_predict_matches_fresh_accuracy_all(design: str, seed: int) -> None:
    check_fit_predict(design, seed)
