"""metalearn.datasets.simulate_learning_mindset: the layout of the real file and a known effect."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from lightgbm import LGBMClassifier, LGBMRegressor

import metalearn as ml
from metalearn.datasets._mindset import _COLUMNS

SCHOOL_COLUMNS = (
    "school_urbanicity",
    "school_mindset",
    "school_achievement",
    "school_ethnic_minority",
    "school_poverty",
    "school_size",
)
# code column -> the codes the real file uses
CODES = {
    "ethnicity": range(1, 16),
    "gender": (1, 2),
    "frst_in_family": (0, 1),
    "school_urbanicity": range(5),
    "schoolid": range(1, 77),
}


@pytest.fixture(scope="module")
def sim() -> ml.datasets.MindsetSimulation:
    return ml.datasets.simulate_learning_mindset(seed=0)


def _loader_schema(tmp_path_factory: pytest.TempPathFactory) -> pl.Schema:
    """The schema of ``load_learning_mindset`` on a two-row file of the real layout."""
    path = tmp_path_factory.mktemp("mindset") / "learning_mindset.csv"
    path.write_text(
        ",".join(_COLUMNS) + "\n3,1,0.5,5,2,1,0,1,0.1,-0.2,0.3,-0.4,0.5\n"
        "8,0,-0.7,3,4,2,1,2,-1.0,0.9,-0.8,0.7,-0.6\n"
    )
    return ml.datasets.load_learning_mindset(path).schema


def test_shapes_columns_and_dtypes_are_those_of_the_loader(
    sim: ml.datasets.MindsetSimulation, tmp_path_factory: pytest.TempPathFactory
) -> None:
    df = sim.data
    assert isinstance(df, pl.DataFrame)
    assert df.shape == (10_391, 13)
    assert df.schema == _loader_schema(tmp_path_factory)
    assert df.null_count().sum_horizontal().item() == 0
    assert sim.tau.shape == sim.propensity.shape == (10_391,)
    assert sim.mu.shape == (10_391, 2)
    np.testing.assert_allclose(sim.mu[:, 1] - sim.mu[:, 0], sim.tau)


def test_codes_are_in_range_and_every_school_has_students(
    sim: ml.datasets.MindsetSimulation,
) -> None:
    df = sim.data
    for name, codes in CODES.items():
        used = {int(v) for v in df[name].unique().to_list()}
        assert used <= set(codes), name
    assert df["schoolid"].n_unique() == 76
    assert set(df["success_expect"].unique().to_list()) == set(range(1, 8))
    assert set(df["intervention"].unique().to_list()) == {0, 1}
    # the marginals are those of the real file, roughly
    assert 0.28 < df["intervention"].mean() < 0.38  # 32.6 % treated
    assert abs(df["achievement_score"].mean()) < 0.2 and 0.85 < df["achievement_score"].std() < 1.15
    assert 0.55 < (df["frst_in_family"] == "1").mean() < 0.7  # 63 %
    corr = np.corrcoef(df["achievement_score"], df["success_expect"])[0, 1]
    assert 0.3 < corr < 0.6  # 0.44


def test_school_covariates_are_constant_within_a_school(
    sim: ml.datasets.MindsetSimulation,
) -> None:
    per_school = sim.data.group_by("schoolid").agg(pl.col(SCHOOL_COLUMNS).n_unique())
    assert per_school.height == 76
    for name in SCHOOL_COLUMNS:
        assert per_school[name].max() == 1, name
    # ... and differ between schools
    assert sim.data["school_mindset"].n_unique() == 76


def test_a_seed_gives_the_same_data_and_n_sets_the_size() -> None:
    a = ml.datasets.simulate_learning_mindset(n=300, seed=3)
    b = ml.datasets.simulate_learning_mindset(n=300, seed=3)
    assert a.data.equals(b.data) and np.array_equal(a.tau, b.tau)
    assert a.data.height == 300 and a.data["schoolid"].n_unique() == 76
    c = ml.datasets.simulate_learning_mindset(n=300, seed=4)
    assert not np.array_equal(a.data["achievement_score"], c.data["achievement_score"])
    with pytest.raises(ValueError, match="at least 76"):
        ml.datasets.simulate_learning_mindset(n=75)


def test_the_effect_is_heterogeneous_and_its_average_is_recovered(
    sim: ml.datasets.MindsetSimulation,
) -> None:
    df = sim.data
    assert 0.2 < sim.tau.mean() < 0.35 and sim.tau.std() > 0.05
    assert sim.propensity.min() > 0.1 and sim.propensity.max() < 0.5
    X = df.drop("schoolid", "intervention", "achievement_score")
    y, w = df["achievement_score"], df["intervention"]
    effect = ml.ate.aipw(
        X,
        y,
        w,
        outcome_model=LGBMRegressor(n_estimators=100, num_leaves=15, verbose=-1, n_jobs=1),
        propensity_model=LGBMClassifier(n_estimators=50, num_leaves=7, verbose=-1, n_jobs=1),
        n_folds=3,
        random_state=0,
        groups=df["schoolid"],
    )
    # Students share a school effect, so the folds keep schools whole and the standard
    # error is clustered by school (the row-wise one is too small here). AIPW is
    # asymptotically normal around the sample's mean effect; 4 standard errors leave a
    # false alarm about once in 16,000 seeds.
    assert abs(effect.estimate - sim.tau.mean()) < 4 * effect.std_error
    assert effect.std_error < 0.05
