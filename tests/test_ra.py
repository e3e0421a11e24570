"""The RA-learner, and the hooks that make a learner one file.

The RA-learner is one module (metalearn/learners/ra.py); these tests reach it
through every public entry point that lists or inspects learners: the
registry, ``explainer()``, ``evaluate``, the grid and Optuna searches and
``metalearn fit --learner RA``. Its accuracy against the simulators' truth is
checked with the other learners in tests/test_accuracy.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LinearRegression, Ridge

import metalearn as ml
from metalearn.learners.base import learner_registry


@pytest.fixture(scope="module")
def sim():
    return ml.datasets.simulate_nie_wager("A", n=1000, seed=0)


def _ra(**kw):
    args = {
        "outcome_model": LinearRegression(),
        "effect_model": LinearRegression(),
        "n_folds": 2,
        "random_state": 0,
    }
    args.update(kw)
    return ml.RALearner(**args)


def test_pseudo_outcomes_follow_the_formula(sim):
    ra = _ra().fit(sim.X, sim.y, sim.w)
    mu = ra.nuisance_.oof_outcomes_
    w, y = np.asarray(sim.w), np.asarray(sim.y)
    expected = np.where(w == 1, y - mu[:, 0, 0], mu[:, 1, 0] - y)
    np.testing.assert_allclose(ra.pseudo_outcomes_[:, 0, 0], expected)


def test_linear_truth_is_recovered_exactly_by_ols_on_ols():
    # y = x0 + w * (1 + 2 x1), no noise: OLS outcome models per arm are exact, so the
    # pseudo-outcomes equal tau(x) and the OLS effect model recovers it.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    w = rng.integers(0, 2, 400)
    y = X[:, 0] + w * (1 + 2 * X[:, 1])
    ra = _ra(outcome_pooling="per_variant").fit(X, y, w)
    np.testing.assert_allclose(ra.predict(X), 1 + 2 * X[:, 1], atol=1e-8)


def test_three_variants_use_each_pair_only():
    sim = ml.datasets.simulate_multiarm(n=1500, seed=0)
    ra = _ra().fit(sim.X, sim.y, sim.w)
    phi = ra.pseudo_outcomes_
    w = np.asarray(sim.w)
    for j, k in enumerate(ra._treated_codes):
        in_pair = (w == k) | (w == ra._control_code)
        assert np.isfinite(phi[in_pair, j, 0]).all()
        assert np.isnan(phi[~in_pair, j, 0]).all()
    assert ra.predict(sim.X[:4]).shape == (4, 2)


def test_registered_everywhere_through_its_hooks():
    assert learner_registry()["RA"] is ml.RALearner
    assert "RALearner" in ml.__all__
    from metalearn.tuning._params import learner_classes

    assert learner_classes()["RALearner"] is ml.RALearner


def test_explainer_is_exact_for_the_final_stage(sim):
    ra = _ra().fit(sim.X, sim.y, sim.w)
    exp = ra.explainer()(sim.X[:50])
    np.testing.assert_allclose(
        exp.values.sum(axis=1) + exp.base_values, ra.predict(sim.X[:50]), atol=1e-8
    )


def test_evaluate_reports_the_losses(sim):
    ra = _ra().fit(sim.X, sim.y, sim.w)
    ev = ra.evaluate(
        sim.X, sim.y, sim.w, nuisance=ml.Nuisance(outcome_model=LinearRegression(), n_folds=2)
    )
    assert np.isfinite(ev.scores["r_loss"])


def test_grid_search_chooses_among_learners_including_ra(sim):
    yardstick = ml.Nuisance(outcome_model=LinearRegression(), n_folds=2, random_state=0)
    grid = {"learner": [_ra(), ml.TLearner(outcome_model=LinearRegression(), n_folds=2)]}
    search = ml.MetaLearnerGridSearch(_ra(), grid, scoring_nuisance=yardstick).fit(
        sim.X, sim.y, sim.w
    )
    assert search.results_["learner"].to_list() == ["RALearner", "TLearner"]
    # RA's own final loss (squared distance to its pseudo-outcomes) is reported.
    assert np.isfinite(search.results_["final_loss"].to_numpy()[0])


def test_optuna_search_takes_ra_by_name(sim):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    yardstick = ml.Nuisance(outcome_model=LinearRegression(), n_folds=2, random_state=0)
    space = {
        "learner": CategoricalDistribution(["RALearner", "TLearner"]),
        "effect_model__alpha": FloatDistribution(1e-2, 1e2, log=True),
    }
    search = ml.MetaLearnerOptunaSearch(
        _ra(effect_model=Ridge()), space, n_trials=4, random_state=0, scoring_nuisance=yardstick
    ).fit(sim.X, sim.y, sim.w)
    assert {t.params["learner"] for t in search.study_.trials} <= {"RALearner", "TLearner"}
    assert search.study_.trials[0].params["learner"] == "RALearner"


def test_cli_fit_learner_ra(tmp_path: Path):
    sim = ml.datasets.simulate_nie_wager("B", n=300, seed=0)
    data = tmp_path / "d.csv"
    frame = pl.DataFrame({f"x{j}": sim.X[:, j] for j in range(3)})
    frame.with_columns(pl.Series("w", sim.w), pl.Series("y", sim.y)).write_csv(data)
    out = tmp_path / "effects.csv"
    cmd = [sys.executable, "-m", "metalearn.cli", "fit", "--data", str(data), "--outcome", "y"]
    cmd += ["--treatment", "w", "--learner", "RA", "--n-folds", "2", "--n-jobs", "1"]
    cmd += ["--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "RA-learner" in done.stdout
    assert pl.read_csv(out).columns == ["row", "tau_1_vs_0"]


def test_a_learner_defined_elsewhere_registers_itself():
    class HalfTLearner(ml.TLearner):
        """A T-learner whose effects are halved: a stand-in for a new algorithm."""

        short_name = "HALF_T_TEST"

        def _predict_tau(self, Xa):
            return 0.5 * super()._predict_tau(Xa)

    try:
        assert learner_registry()["HALF_T_TEST"] is HalfTLearner
    finally:
        from metalearn.learners.base import MetaLearner

        del MetaLearner._registry["HALF_T_TEST"]


def test_short_names_are_unique():
    with pytest.raises(TypeError, match=r"short name 'DR'.*taken by DRLearner"):

        class Clash(ml.DRLearner):
            short_name = "DR"
