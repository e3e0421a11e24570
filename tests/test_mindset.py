"""metalearn.datasets.load_learning_mindset: the CSV from ../shared/data, dtypes, errors."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import metalearn as ml

# The repository's parent holds shared/data (the file is not copied into the repository).
DATA = Path(__file__).parents[2] / "shared" / "data" / "learning_mindset.csv"
CATEGORICAL = ("schoolid", "ethnicity", "gender", "frst_in_family", "school_urbanicity")

needs_file = pytest.mark.skipif(
    not DATA.is_file(), reason=f"learning_mindset.csv not found at {DATA} (not bundled)"
)


@needs_file
def test_loads_every_student_with_categorical_codes() -> None:
    df = ml.datasets.load_learning_mindset(DATA)
    assert isinstance(df, pl.DataFrame)
    assert df.shape == (10_391, 13)
    assert df.columns[:3] == ["schoolid", "intervention", "achievement_score"]
    for name in CATEGORICAL:
        assert df.schema[name] == pl.Categorical, name
    assert df["schoolid"].n_unique() == 76
    assert df.schema["intervention"].is_integer()
    assert sorted(df["intervention"].unique().to_list()) == [0, 1]
    assert df.schema["achievement_score"] == pl.Float64
    assert df.null_count().sum_horizontal().item() == 0


@needs_file
def test_accepts_a_string_path() -> None:
    df = ml.datasets.load_learning_mindset(str(DATA))
    assert df.height == 10_391


def test_missing_file_names_the_path_and_says_not_bundled(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "learning_mindset.csv"
    with pytest.raises(FileNotFoundError, match="not bundled") as info:
        ml.datasets.load_learning_mindset(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(FileNotFoundError, match="not bundled"):
        ml.datasets.load_learning_mindset(tmp_path)  # a directory is not the file


def test_wrong_file_names_the_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    pl.DataFrame({"schoolid": [1, 2], "y": [0.1, 0.2]}).write_csv(path)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['intervention'"):
        ml.datasets.load_learning_mindset(path)
