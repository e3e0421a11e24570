"""The National Study of Learning Mindsets data, read from a user-given CSV file."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

__all__ = ["load_learning_mindset"]

#: Columns holding codes of categories, read as integers and cast to Categorical.
CATEGORICAL_COLUMNS = ("schoolid", "ethnicity", "gender", "frst_in_family", "school_urbanicity")
TREATMENT, OUTCOME = "intervention", "achievement_score"
_COLUMNS = (
    "schoolid",
    "intervention",
    "achievement_score",
    "success_expect",
    "ethnicity",
    "gender",
    "frst_in_family",
    "school_urbanicity",
    "school_mindset",
    "school_achievement",
    "school_ethnic_minority",
    "school_poverty",
    "school_size",
)


def load_learning_mindset(path: str | os.PathLike[str]) -> pl.DataFrame:
    r"""Load the learning mindsets data (10,391 students in 76 schools) from a CSV file.

    The data of the National Study of Learning Mindsets (Yeager et al. 2019)
    in the anonymised, simulated-from-real form that Athey and Wager (2019)
    prepared for a workshop on heterogeneous effects. The file is **not
    bundled** with metalearn; pass the path of ``learning_mindset.csv``
    (copies circulate with Athey and Wager's paper and with Matheus Facure's
    "Causal Inference for the Brave and True"). Columns:

    ==========================  ==============================================
    ``schoolid``                school (Categorical, 76 schools)
    ``intervention``            1 if the student received the growth-mindset
                                intervention (the treatment, int)
    ``achievement_score``       standardized later achievement (the outcome)
    ``success_expect``          the student's expectation of future success
                                (self-reported, 1-7)
    ``ethnicity``               ethnicity code (Categorical)
    ``gender``                  gender code (Categorical)
    ``frst_in_family``          1 if first in the family to go to college
                                (Categorical)
    ``school_urbanicity``       urbanicity of the school (Categorical)
    ``school_mindset``          school mean fixed mindset (standardized)
    ``school_achievement``      school achievement level (standardized)
    ``school_ethnic_minority``  school share of ethnic minorities
                                (standardized)
    ``school_poverty``          school share from low-income families
                                (standardized)
    ``school_size``             school size (standardized)
    ==========================  ==============================================

    The five code columns are cast to Polars ``Categorical`` (their values
    become strings such as ``"4"``), so that metalearn passes them to
    LightGBM as categorical features rather than as numbers. The study was
    randomized within schools, but in this version the treatment is
    associated with the students' covariates (e.g. ``success_expect``):
    analyse it as observational data, with a propensity model and overlap
    checks. Students are clustered in schools, so standard errors that
    treat rows as independent are too small.

    Parameters
    ----------
    path : str or path-like
        Location of the CSV file.

    Returns
    -------
    polars.DataFrame
        One row per student, the columns above in the file's order.
        ``df.to_pandas()`` gives a pandas frame.

    Raises
    ------
    FileNotFoundError
        If no file exists at ``path``.
    ValueError
        If the file lacks one of the expected columns.

    References
    ----------
    .. [1] Yeager, D. S., Hanselman, P., Walton, G. M. et al. (2019). A
       national experiment reveals where a growth mindset improves
       achievement. Nature 573, 364-369.
    .. [2] Athey, S. and Wager, S. (2019). Estimating treatment effects with
       causal forests: an application. Observational Studies 5(2), 37-51.

    Examples
    --------
    With your copy of the data, ``df = load_learning_mindset("learning_mindset.csv")``
    has shape ``(10391, 13)``; then ``X = df.drop("intervention",
    "achievement_score")`` are the features, ``df["intervention"]`` the
    treatment and ``df["achievement_score"]`` the outcome. The example below
    writes two made-up rows in the file's layout and reads them back:

    >>> import os, tempfile
    >>> import polars as pl
    >>> import metalearn as ml
    >>> header = ("schoolid,intervention,achievement_score,success_expect,ethnicity,"
    ...           "gender,frst_in_family,school_urbanicity,school_mindset,"
    ...           "school_achievement,school_ethnic_minority,school_poverty,school_size")
    >>> rows = ["3,1,0.5,5,2,1,0,1,0.1,-0.2,0.3,-0.4,0.5",
    ...         "8,0,-0.7,3,4,2,1,2,-1.0,0.9,-0.8,0.7,-0.6"]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "learning_mindset.csv")
    ...     with open(path, "w") as f:
    ...         _ = f.write("\n".join([header, *rows]) + "\n")
    ...     df = ml.datasets.load_learning_mindset(path)
    >>> df.shape
    (2, 13)
    >>> df["schoolid"].dtype == pl.Categorical, df["schoolid"].to_list()
    (True, ['3', '8'])
    >>> df["intervention"].to_list(), df["achievement_score"].to_list()
    ([1, 0], [0.5, -0.7])
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"No learning mindset CSV at {str(path)!r}: the file is not bundled with metalearn. "
            "Download `learning_mindset.csv` and pass its path to `load_learning_mindset`."
        )
    df = pl.read_csv(file)
    missing = [c for c in _COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{str(path)!r} lacks the column(s) {missing} of the learning mindset data; it has "
            f"{df.columns}. Pass the `learning_mindset.csv` of Athey and Wager (2019)."
        )
    return df.with_columns(
        pl.col(name).cast(pl.String).cast(pl.Categorical) for name in CATEGORICAL_COLUMNS
    )
