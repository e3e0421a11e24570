"""`groups=`: cross-fitting keeps each group in one fold; clustered AIPW standard errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import ALL_LEARNERS, make_learner
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import metalearn as ml


def _clustered(n_groups: int = 40, size: int = 25, seed: int = 0) -> dict[str, Any]:
    """Rows in groups sharing a random intercept; treatment randomized within groups."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), size)
    n = g.size
    X = rng.normal(size=(n, 3))
    w = rng.integers(0, 2, n)
    u = rng.normal(scale=2.0, size=n_groups)[g]  # group effect on the outcome
    tau = 1.0 + 0.5 * X[:, 0] + rng.normal(scale=2.0, size=n_groups)[g]  # and on the effect
    y = X[:, 1] + u + w * tau + rng.normal(size=n)
    return {"X": X, "y": y, "w": w, "g": np.array([f"school{k}" for k in g])}


def _linear(cls: type, **kw: Any) -> Any:
    """``cls`` with linear base models (see ``make_learner``), 4 folds."""
    return make_learner(cls, n_folds=4, **kw)


@pytest.mark.parametrize("cls", ALL_LEARNERS)
def test_every_group_lies_in_one_fold(cls: type) -> None:
    d = _clustered()
    learner = _linear(cls)
    learner.fit_predict(d["X"], d["y"], d["w"], groups=d["g"])
    folds = learner.folds_
    per_group = pd.Series(folds).groupby(d["g"]).nunique()
    assert (per_group == 1).all()
    assert set(np.unique(folds)) == {0, 1, 2, 3}
    # without groups the folds split every group
    plain = _linear(cls)
    plain.fit_predict(d["X"], d["y"], d["w"])
    assert (pd.Series(plain.folds_).groupby(d["g"]).nunique() > 1).all()


def test_nuisance_fitted_with_groups_is_shared_only_with_the_same_groups() -> None:
    d = _clustered()
    nuis = ml.Nuisance(
        outcome_model=LinearRegression(),
        propensity_model=LogisticRegression(),
        n_folds=4,
        random_state=0,
    ).fit(d["X"], d["y"], d["w"], groups=d["g"])
    assert (pd.Series(nuis.folds_).groupby(d["g"]).nunique() == 1).all()
    dr = ml.DRLearner(nuisance=nuis, effect_model=LinearRegression())
    dr.fit(d["X"], d["y"], d["w"], groups=d["g"])
    assert dr.n_model_fits_ == 4  # only the final stage: the nuisance is reused
    with pytest.raises(ValueError, match=r"propensity or groups differ"):
        ml.DRLearner(nuisance=nuis, effect_model=LinearRegression()).fit(d["X"], d["y"], d["w"])


def test_clustered_ate_standard_error_by_hand() -> None:
    d = _clustered()
    dr = _linear(ml.DRLearner).fit(d["X"], d["y"], d["w"], groups=d["g"])
    ate = dr.ate()
    phi = dr.pseudo_outcomes_[:, 0, 0]
    n = phi.size
    dev = pd.Series(phi - phi.mean()).groupby(d["g"]).sum().to_numpy() / n
    G = dev.size
    assert ate.estimate == pytest.approx(phi.mean())
    assert ate.std_error == pytest.approx(np.sqrt(G / (G - 1) * np.sum(dev**2)))
    assert "clustered by 40 groups" in ate.method
    # the group-level effect noise makes the clustered error larger than the iid one
    iid = phi.std(ddof=1) / np.sqrt(n)
    assert ate.std_error > 1.5 * iid


def test_clustered_ate_standard_error_with_sample_weight() -> None:
    d = _clustered()
    sw = np.random.default_rng(1).uniform(0.5, 2.0, d["y"].size)
    dr = _linear(ml.DRLearner).fit(d["X"], d["y"], d["w"], groups=d["g"], sample_weight=sw)
    phi = dr.pseudo_outcomes_[:, 0, 0]
    wn = sw / sw.sum()
    est = np.sum(wn * phi)
    dev = pd.Series(wn * (phi - est)).groupby(d["g"]).sum().to_numpy()
    G = dev.size
    ate = dr.ate()
    assert ate.estimate == pytest.approx(est)
    assert ate.std_error == pytest.approx(np.sqrt(G / (G - 1) * np.sum(dev**2)))


def test_clustered_standard_error_covers_across_replications() -> None:
    # Over independent draws, the spread of the AIPW estimate matches the clustered
    # standard error (and not the far smaller row-independent one).
    estimates, clustered, iid = [], [], []
    for seed in range(30):
        d = _clustered(seed=seed)
        dr = _linear(ml.DRLearner).fit(d["X"], d["y"], d["w"], groups=d["g"])
        ate = dr.ate()
        phi = dr.pseudo_outcomes_[:, 0, 0]
        estimates.append(ate.estimate)
        clustered.append(ate.std_error)
        iid.append(phi.std(ddof=1) / np.sqrt(phi.size))
    sd = np.std(estimates, ddof=1)
    # 30 replications: the sd itself is known to about +-13% (1/sqrt(2*29))
    assert 0.7 < np.median(clustered) / sd < 1.3
    assert np.median(iid) / sd < 0.65  # about 0.5 here


def test_groups_are_routed_through_a_pipeline() -> None:
    d = _clustered()
    # (a T-learner's fit reads full-data outcome models: no folds; the X-learner cross-fits)
    pipe = Pipeline([("scale", StandardScaler()), ("cate", _linear(ml.XLearner))])
    pipe.fit(d["X"], d["y"], cate__w=d["w"], cate__groups=d["g"])
    folds = pipe.named_steps["cate"].folds_
    assert (pd.Series(folds).groupby(d["g"]).nunique() == 1).all()


@pytest.mark.parametrize(
    ("groups", "match"),
    [
        (np.arange(10), r"`groups` has 10 entries but `X` has 1000 rows"),
        (np.r_[np.nan, np.ones(999)], r"`groups` has 1 missing label\(s\).*row 0"),
        (np.repeat([0, 1, 2], [400, 300, 300]), r"`groups` has 3 distinct group\(s\).*n_folds=4"),
    ],
)
def test_bad_groups_are_named(groups: np.ndarray, match: str) -> None:
    d = _clustered()
    with pytest.raises(ValueError, match=match):
        _linear(ml.TLearner).fit_predict(d["X"], d["y"], d["w"], groups=groups)


def test_treatment_assigned_to_whole_groups_needs_enough_groups_per_fold() -> None:
    d = _clustered(n_groups=5, size=40)
    g = np.repeat(np.arange(5), 40)
    w = (g == 0).astype(int)  # one treated group: the folds without it have no treated row
    with pytest.raises(ValueError, match=r"rows outside fold \d+ lack a treatment variant"):
        _linear(ml.TLearner).fit_predict(d["X"], d["y"], w, groups=g)


def test_aipw_function_with_groups_matches_the_dr_learner() -> None:
    d = _clustered()
    # per-variant outcome models, like the Nuisance that `aipw` fits from templates
    dr = _linear(ml.DRLearner, outcome_pooling="per_variant")
    dr.fit(d["X"], d["y"], d["w"], groups=d["g"])
    own = dr.ate()
    shared = ml.ate.aipw(d["X"], d["y"], d["w"], learner=dr, groups=d["g"])
    assert shared.estimate == pytest.approx(own.estimate)
    assert shared.std_error == pytest.approx(own.std_error)
    assert "clustered by 40 groups" in shared.method
    # fitted here, from templates: the folds keep the groups together as well
    fresh = ml.ate.aipw(
        d["X"],
        d["y"],
        d["w"],
        outcome_model=LinearRegression(),
        propensity_model=LogisticRegression(),
        n_folds=4,
        random_state=0,
        groups=d["g"],
    )
    assert fresh.estimate == pytest.approx(own.estimate)
    assert fresh.std_error == pytest.approx(own.std_error)
    # the learner's nuisance was fitted with groups: reusing it without them is refused
    with pytest.raises(ValueError, match=r"groups differ"):
        ml.ate.aipw(d["X"], d["y"], d["w"], learner=dr)


def _one_fold_per_group(folds: np.ndarray, groups: np.ndarray) -> bool:
    return bool((pd.Series(folds).groupby(groups).nunique() == 1).all())


@pytest.mark.parametrize("cv", [None, 3])
def test_grid_search_keeps_groups_together(cv: int | None) -> None:
    from sklearn.linear_model import Ridge

    d = _clustered()
    learner = _linear(ml.DRLearner, effect_model=Ridge())
    grid = {"effect_model__alpha": [0.1, 10.0]}
    search = ml.MetaLearnerGridSearch(learner, grid, cv=cv, random_state=0)
    search.fit(d["X"], d["y"], d["w"], groups=d["g"])
    assert _one_fold_per_group(search.best_estimator_.folds_, d["g"])
    plain = ml.MetaLearnerGridSearch(learner, grid, cv=cv, random_state=0)
    plain.fit(d["X"], d["y"], d["w"])
    # the folds differ, so do the scores
    assert not np.allclose(
        search.results_["r_loss"].to_numpy(), plain.results_["r_loss"].to_numpy()
    )
    with pytest.raises(ValueError, match=r"`groups` has 2 distinct group\(s\)"):
        ml.MetaLearnerGridSearch(learner, grid, cv=cv, random_state=0).fit(
            d["X"], d["y"], d["w"], groups=d["g"] > "school2"
        )


def test_optuna_search_keeps_groups_together() -> None:
    from optuna.distributions import FloatDistribution
    from sklearn.linear_model import Ridge

    d = _clustered()
    learner = _linear(ml.DRLearner, outcome_model=Ridge(), effect_model=Ridge())
    space = {
        "outcome_model__alpha": FloatDistribution(0.1, 10.0, log=True),
        "effect_model__alpha": FloatDistribution(0.1, 10.0, log=True),
    }
    search = ml.MetaLearnerOptunaSearch(
        learner, space, n_trials=3, nuisance_trials=2, random_state=0
    )
    search.fit(d["X"], d["y"], d["w"], groups=d["g"])
    assert sorted(search.studies_) == ["final", "outcome"]
    assert _one_fold_per_group(search.best_estimator_.folds_, d["g"])
    assert "clustered by 40 groups" in search.best_estimator_.ate().method
