"""A simulated stand-in for the learning mindsets data, with a known effect.

:func:`simulate_learning_mindset` draws students in schools with the columns,
dtypes and roughly the marginal distributions of the file that
:func:`~metalearn.datasets.load_learning_mindset` reads, so that code written
for the real data runs unchanged on simulated data -- for instance the
documentation's case study on a machine without the file. Unlike the real
data, the simulation knows every student's true effect.

The design constants below are summary statistics of the circulating
``learning_mindset.csv`` (means, standard deviations, category shares,
correlations between schools; rounded) and published facts about the study;
no row of the real data is used.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl
from scipy import special, stats

from metalearn.datasets._mindset import _COLUMNS, CATEGORICAL_COLUMNS
from metalearn.datasets._simulate import SeedLike, _check_n, _expit

__all__ = ["MindsetSimulation", "simulate_learning_mindset"]

N_STUDENTS = 10_391  # students in the real file
N_SCHOOLS = 76  # schools in the real file

# Schools -------------------------------------------------------------------
# Students per school in the real file: mean 137, sd 100 (coefficient of
# variation 0.73), hence log-normal weights with sigma sqrt(log(1 + 0.73^2)).
_SCHOOL_SIZE_SIGMA = 0.66
# ... and the number of students rises with `school_size` (correlation 0.78
# over the 76 schools): the log weight loads 0.8 on the size latent.
_SIZE_LOADING = 0.8
# Latent school variables, in this order: urbanicity, mindset, achievement,
# ethnic minority, poverty, size. Their correlations over the 76 schools of
# the real file, rounded to two decimals (urbanicity as its 0-4 code).
_SCHOOL_CORR = np.array(
    [
        [1.00, 0.25, -0.24, 0.27, 0.33, 0.17],
        [0.25, 1.00, -0.58, 0.35, 0.45, -0.32],
        [-0.24, -0.58, 1.00, -0.58, -0.60, 0.32],
        [0.27, 0.35, -0.58, 1.00, 0.55, 0.09],
        [0.33, 0.45, -0.60, 0.55, 1.00, -0.16],
        [0.17, -0.32, 0.32, 0.09, -0.16, 1.00],
    ]
)
# Mean and sd over the 76 schools (not over students) of the five standardised
# school covariates in the real file; they are standardised over students,
# which is why `school_size` averages -0.57 over schools.
_SCHOOL_CONTINUOUS = (
    ("school_mindset", 0.18, 1.05),
    ("school_achievement", -0.21, 1.06),
    ("school_ethnic_minority", -0.09, 1.11),
    ("school_poverty", 0.13, 1.02),
    ("school_size", -0.57, 0.96),
)
# Schools per urbanicity code 0-4 in the real file: 7, 21, 11, 16, 21 of 76.
_URBANICITY_SHARES = np.array([7, 21, 11, 16, 21]) / 76

# Students -------------------------------------------------------------------
# Shares of the codes in the real file (gender 1 and 2; ethnicity 1-15;
# success_expect 1-7; 63 % first in their family to go to college).
_GENDER_1_SHARE = 0.51
_FIRST_SHARE = 0.63
_ETHNICITY_SHARES = (
    np.array([983, 1578, 113, 5030, 420, 40, 43, 195, 135, 176, 170, 325, 182, 652, 349]) / 10_391
)
_SUCCESS_SHARES = np.array([92, 188, 476, 1064, 3803, 3802, 966]) / 10_391
# Code 4 (48 % of students) is rarer in schools with more ethnic minorities
# (correlation -0.39): the log-odds of code 4 fall by this much per sd.
_ETHNICITY_4_SLOPE = -0.9
# First-generation students are slightly more common in poorer schools
# (correlation 0.07) and expect less success (correlation -0.15).
_FIRST_POVERTY_SLOPE = 0.15
_SUCCESS_FIRST_SHIFT = -0.3
_SUCCESS_ACHIEVEMENT_SLOPE = 0.08

# Treatment --------------------------------------------------------------------
# 32.6 % of the students are treated; the share rises from about 27 % at
# success_expect 1-4 to 36 % at 7, and is lower among first-generation
# students (60 % of the treated, 65 % of the controls).
_TREATED_SHARE = 0.326
_PROPENSITY_SUCCESS_SLOPE = 0.10  # log-odds per sd of success_expect
_PROPENSITY_FIRST_SHIFT = -0.2

# Outcome ---------------------------------------------------------------------
# Mean achievement of the controls by success_expect 1-7 shaped as in the real
# file (flat up to 4, then rising by about 0.6 per point; correlation 0.44
# between the score and success_expect), adjusted so that the score is about
# standardised over all students.
_SUCCESS_MEAN = np.array([-0.55, -0.55, -0.58, -0.50, -0.12, 0.53, 1.18])
_GENDER_2_SHIFT = -0.26
_FIRST_SHIFT = -0.15
_MINDSET_SLOPE = -0.13  # per unit of school_mindset
# Shifts by ethnicity code (code 4 the reference), rounded to 0.1.
_ETHNICITY_SHIFT = np.array(
    [0.1, 0.2, 0.0, 0.0, 0.5, 0, 0, 0.1, -0.1, -0.1, 0, 0.3, -0.1, 0.2, 0.2]
)
_URBANICITY_SHIFT = np.array([-0.05, -0.35, -0.07, -0.25, 0.0])
# The school means of the score vary (variance 0.13 over the 76 schools); what
# the covariates above leave is a school random effect of this sd.
_SCHOOL_EFFECT_SD = 0.25
_NOISE_SD = 0.75  # within-school noise, so that the score has an sd near 1

# Effect ------------------------------------------------------------------
# A design choice: the published average effect is about 0.25-0.3 sd of the
# standardised score (Athey and Wager 2019), and the published analyses find
# it varying mostly between schools. Here it falls with the school's mean
# fixed mindset, is largest in schools of middle achievement, and is larger
# for students who expect little success (success_expect 1-4).
_EFFECT_BASE = 0.25
_EFFECT_MINDSET_SLOPE = -0.08  # per sd of school_mindset
_EFFECT_ACHIEVEMENT_CURVE = 0.06  # times 1 - (standardised school_achievement)^2
_EFFECT_LOW_EXPECTATION = 0.05  # added for success_expect <= 4


class MindsetSimulation(NamedTuple):
    """A simulated learning mindsets data set together with its ground truth.

    Attributes
    ----------
    data : polars.DataFrame
        One row per student, in the layout of
        :func:`~metalearn.datasets.load_learning_mindset`: the same 13
        columns, in the same order and with the same dtypes.
    tau : numpy.ndarray of shape (n,)
        The true effect of the intervention on each student's
        ``achievement_score``.
    propensity : numpy.ndarray of shape (n,)
        The true probability that the student is treated.
    mu : numpy.ndarray of shape (n, 2)
        The true mean ``achievement_score`` without (column 0) and with
        (column 1) the intervention; ``mu[:, 1] - mu[:, 0]`` is ``tau``.

    Examples
    --------
    >>> import numpy as np
    >>> from metalearn.datasets import simulate_learning_mindset
    >>> sim = simulate_learning_mindset(n=500, seed=0)
    >>> sim._fields
    ('data', 'tau', 'propensity', 'mu')
    >>> sim.data.shape, sim.tau.shape, sim.mu.shape
    ((500, 13), (500,), (500, 2))
    >>> bool(np.allclose(sim.mu[:, 1] - sim.mu[:, 0], sim.tau))
    True
    """

    data: pl.DataFrame
    tau: np.ndarray
    propensity: np.ndarray
    mu: np.ndarray


def _cut(latent: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Codes ``0 .. len(shares) - 1`` of standard-normal ``latent`` at the shares' quantiles."""
    edges = stats.norm.ppf(np.cumsum(shares)[:-1])
    return np.searchsorted(edges, latent)


def _standardise(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / (sd if sd > 0 else 1.0)


def simulate_learning_mindset(n: int = N_STUDENTS, seed: SeedLike = None) -> MindsetSimulation:
    """Simulate a stand-in for the learning mindsets data, with a known effect.

    The students of 76 schools, with the 13 columns, dtypes and roughly the
    marginal distributions of the data that
    :func:`~metalearn.datasets.load_learning_mindset` reads (the anonymised
    version of the National Study of Learning Mindsets by Athey and Wager,
    2019), and a known, heterogeneous effect of the intervention. Code
    written for the real file runs unchanged on ``sim.data``; the numbers it
    gives are those of the simulation, not of the study.

    The design:

    * **Schools.** The five standardised school covariates and a latent
      urbanicity are jointly normal with the correlations of the real
      schools; urbanicity is cut into its five codes at the real shares of
      schools. Larger schools (``school_size``) get more students; every
      school gets at least one. School covariates are constant within a
      school.
    * **Students.** ``gender``, ``ethnicity``, ``frst_in_family`` and
      ``success_expect`` follow the real shares of their codes; ethnicity
      code 4 is rarer in schools with more ethnic minorities,
      first-generation students are a little more common in poorer schools
      and expect less success.
    * **Treatment.** About a third of the students are treated, somewhat
      more often those who expect more success and less often
      first-generation students: an observational design with good overlap
      (propensities between about 0.2 and 0.4).
    * **Outcome.** ``achievement_score`` is a school random effect plus
      shifts by expectation of success (flat up to 4, then rising), gender,
      first generation, ethnicity, urbanicity and school mindset, plus
      normal noise (sized so that the score has about mean 0 and sd 1, as
      the standardised real score), plus the effect for the treated.
    * **Effect.** ``tau = 0.25 - 0.08 m + 0.06 (1 - a^2) + 0.05 [success_expect
      <= 4]``, where ``m`` and ``a`` are the school's mindset and
      achievement standardised over the schools: an average of about 0.28 sd,
      within the published 0.25-0.3, that varies mostly between schools (sd
      about 0.1).

    Parameters
    ----------
    n : int, default 10391
        Number of students; at least 76 (one per school). The default is the
        size of the real file.
    seed : int, numpy.random.Generator or None, default None
        Seed passed to :func:`numpy.random.default_rng`.

    Returns
    -------
    MindsetSimulation
        ``data`` (the Polars frame, treatment ``intervention``, outcome
        ``achievement_score``, rows grouped by school), the true effects
        ``tau``, the true ``propensity`` and the true mean outcomes ``mu``.

    Raises
    ------
    ValueError
        If ``n`` is not an integer of at least 76.

    See Also
    --------
    load_learning_mindset : The real data, from your copy of the CSV file.

    References
    ----------
    .. [1] Yeager, D. S., Hanselman, P., Walton, G. M. et al. (2019). A
       national experiment reveals where a growth mindset improves
       achievement. Nature 573, 364-369.
    .. [2] Athey, S. and Wager, S. (2019). Estimating treatment effects with
       causal forests: an application. Observational Studies 5(2), 37-51.

    Examples
    --------
    >>> import polars as pl
    >>> import metalearn as ml
    >>> sim = ml.datasets.simulate_learning_mindset(seed=0)
    >>> df = sim.data
    >>> df.shape, df["schoolid"].n_unique()
    ((10391, 13), 76)
    >>> df["schoolid"].dtype == pl.Categorical, df["intervention"].dtype
    (True, Int64)
    >>> round(float(sim.tau.mean()), 2), round(float(df["intervention"].mean()), 2)
    (0.28, 0.33)
    >>> X = df.drop("schoolid", "intervention", "achievement_score")
    >>> X.width
    10
    """
    n = _check_n(n)
    if n < N_SCHOOLS:
        raise ValueError(f"n must be at least {N_SCHOOLS} (one student per school), got {n}.")
    rng = np.random.default_rng(seed)

    # schools
    z = rng.multivariate_normal(np.zeros(len(_SCHOOL_CORR)), _SCHOOL_CORR, size=N_SCHOOLS)
    school = {
        name: mean + sd * z[:, j + 1] for j, (name, mean, sd) in enumerate(_SCHOOL_CONTINUOUS)
    }
    urbanicity = _cut(z[:, 0], _URBANICITY_SHARES)
    size_latent = _SIZE_LOADING * z[:, 5] + np.sqrt(1 - _SIZE_LOADING**2) * rng.normal(
        size=N_SCHOOLS
    )
    weight = np.exp(_SCHOOL_SIZE_SIGMA * size_latent)
    counts = 1 + rng.multinomial(n - N_SCHOOLS, weight / weight.sum())
    s = np.repeat(np.arange(N_SCHOOLS), counts)  # school of each student
    school_effect = _SCHOOL_EFFECT_SD * rng.normal(size=N_SCHOOLS)

    # students
    gender = np.where(rng.random(n) < _GENDER_1_SHARE, 1, 2)
    minority = z[s, 3]
    p4 = _expit(special.logit(_ETHNICITY_SHARES[3]) + _ETHNICITY_4_SLOPE * minority)
    others = np.delete(_ETHNICITY_SHARES, 3) / (1 - _ETHNICITY_SHARES[3])
    other_code = rng.choice(np.delete(np.arange(1, 16), 3), size=n, p=others)
    ethnicity = np.where(rng.random(n) < p4, 4, other_code)
    first_p = _expit(special.logit(_FIRST_SHARE) + _FIRST_POVERTY_SLOPE * z[s, 4])
    first = (rng.random(n) < first_p).astype(np.int64)
    success_latent = (
        _SUCCESS_FIRST_SHIFT * (first - _FIRST_SHARE)
        + _SUCCESS_ACHIEVEMENT_SLOPE * z[s, 2]
        + rng.normal(size=n)
    )
    success = 1 + _cut(_standardise(success_latent), _SUCCESS_SHARES)

    # treatment
    logit_e = (
        special.logit(_TREATED_SHARE)
        + _PROPENSITY_SUCCESS_SLOPE * _standardise(success.astype(np.float64))
        + _PROPENSITY_FIRST_SHIFT * (first - _FIRST_SHARE)
    )
    e = _expit(logit_e)
    w = (rng.random(n) < e).astype(np.int64)

    # outcome and effect
    mu0 = (
        school_effect[s]
        + _SUCCESS_MEAN[success - 1]
        + _GENDER_2_SHIFT * (gender == 2)
        + _FIRST_SHIFT * first
        + _MINDSET_SLOPE * school["school_mindset"][s]
        + _ETHNICITY_SHIFT[ethnicity - 1]
        + _URBANICITY_SHIFT[urbanicity[s]]
    )
    tau = (
        _EFFECT_BASE
        + _EFFECT_MINDSET_SLOPE * z[s, 1]
        + _EFFECT_ACHIEVEMENT_CURVE * (1 - z[s, 2] ** 2)
        + _EFFECT_LOW_EXPECTATION * (success <= 4)
    )
    y = mu0 + w * tau + _NOISE_SD * rng.normal(size=n)

    columns = {
        "schoolid": s + 1,
        "intervention": w,
        "achievement_score": y,
        "success_expect": success.astype(np.int64),
        "ethnicity": ethnicity.astype(np.int64),
        "gender": gender.astype(np.int64),
        "frst_in_family": first,
        "school_urbanicity": urbanicity[s].astype(np.int64),
        **{name: values[s] for name, values in school.items()},
    }
    data = pl.DataFrame({name: columns[name] for name in _COLUMNS}).with_columns(
        pl.col(name).cast(pl.String).cast(pl.Categorical) for name in CATEGORICAL_COLUMNS
    )
    return MindsetSimulation(
        data=data,
        tau=np.asarray(tau, dtype=np.float64),
        propensity=np.asarray(e, dtype=np.float64),
        mu=np.column_stack([mu0, mu0 + tau]).astype(np.float64),
    )
