"""Default base models: where a model is left at ``None``.

:func:`default_regressor` and :func:`default_classifier` (quiet LightGBM, public
through :mod:`metalearn.nuisance`) and the DR- and R-learner's final-stage
model sized by the number of training rows (:func:`default_effect_regressor`).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "default_regressor",
    "default_classifier",
    "EFFECT_LARGE_N",
    "default_effect_regressor",
    "effect_learning_rate",
    "effect_min_child_samples",
    "FINAL_STAGE_CROSSFIT_MIN_N",
    "crossfit_final_stage",
]

#: ``final_stage="auto"`` (the X-learner's default) cross-fits the final stage from this many
#: training rows on and fits one final-stage model per effect on all rows below it. Evidence
#: (``benchmarks/RESULTS.md``, "Real covariates"; RAND HIE and learning-mindset covariates,
#: median PEHE over 5 draws): at n = 500 with a strong effect (sd(tau) 3x the noise) the
#: cross-fitted X-learner loses 8% to the peers' X and the full one is within 1% of it;
#: at n = 2,000 cross-fitting is better in every cell. The threshold lies between the two
#: sizes measured, at their geometric middle.
FINAL_STAGE_CROSSFIT_MIN_N = 1_000


def crossfit_final_stage(final_stage: str, n_samples: int) -> bool:
    """Whether a learner's final stage is cross-fitted in ``fit`` (``fit_predict`` always is).

    ``"crossfit"``: yes; ``"full"``: no; ``"auto"``: from
    :data:`FINAL_STAGE_CROSSFIT_MIN_N` training rows on.
    """
    if final_stage == "auto":
        return n_samples >= FINAL_STAGE_CROSSFIT_MIN_N
    return final_stage == "crossfit"


def default_regressor() -> Any:
    """The regressor used where a model is left at ``None``: a quiet LightGBM.

    Returns
    -------
    lightgbm.LGBMRegressor
        A new, unfitted ``LGBMRegressor(verbose=-1)`` (LightGBM's defaults
        otherwise).

    Examples
    --------
    >>> from metalearn._core.defaults import default_regressor
    >>> default_regressor()
    LGBMRegressor(verbose=-1)
    """
    from lightgbm import LGBMRegressor

    return LGBMRegressor(verbose=-1)


def default_classifier() -> Any:
    """The classifier used where a model is left at ``None``: a quiet LightGBM.

    Returns
    -------
    lightgbm.LGBMClassifier
        A new, unfitted ``LGBMClassifier(verbose=-1)`` (LightGBM's defaults
        otherwise).

    Examples
    --------
    >>> from metalearn._core.defaults import default_classifier
    >>> default_classifier()
    LGBMClassifier(verbose=-1)
    """
    from lightgbm import LGBMClassifier

    return LGBMClassifier(verbose=-1)


#: The ``n_samples`` used by :func:`default_effect_regressor` when none is given.
EFFECT_LARGE_N = 100_000

_EFFECT_LEAVES = 4
_EFFECT_TREES = 200
_EFFECT_LEAF_FACTOR = 6.0
_EFFECT_RATE_PER_ROW = 1e-5  # 0.01 per 1,000 rows
_EFFECT_MAX_RATE = 0.1  # LightGBM's default, reached at n = 10,000


def _check_n(n_samples: int) -> int:
    n = int(n_samples)
    if n < 1:
        raise ValueError(f"`n_samples` must be a positive integer; got {n_samples!r}.")
    return n


def effect_min_child_samples(n_samples: int) -> int:
    """Minimum leaf size of the default effect model: ``max(20, round(6 * sqrt(n)))``.

    Parameters
    ----------
    n_samples : int
        Number of training rows of the learner's fit.

    Returns
    -------
    int
        190 at n = 1,000, 600 at n = 10,000, 1,897 at n = 100,000; never
        below LightGBM's own default of 20.

    Examples
    --------
    >>> from metalearn._core.defaults import effect_min_child_samples
    >>> effect_min_child_samples(1_000), effect_min_child_samples(10_000)
    (190, 600)
    """
    n = _check_n(n_samples)
    return max(20, round(_EFFECT_LEAF_FACTOR * math.sqrt(n)))


def effect_learning_rate(n_samples: int) -> float:
    """Learning rate of the default effect model: ``min(0.1, n / 100_000)``.

    Parameters
    ----------
    n_samples : int
        Number of training rows of the learner's fit.

    Returns
    -------
    float
        0.01 at n = 1,000, rising linearly to LightGBM's default of 0.1 at
        n = 10,000 and staying there. Near zero for tiny ``n``: the model then
        stays at its starting value, the mean of the targets (a constant
        effect, the average-effect estimate).

    Examples
    --------
    >>> from metalearn._core.defaults import effect_learning_rate
    >>> effect_learning_rate(1_000), effect_learning_rate(10_000), effect_learning_rate(10**6)
    (0.01, 0.1, 0.1)
    """
    n = _check_n(n_samples)
    return min(_EFFECT_MAX_RATE, round(n * _EFFECT_RATE_PER_ROW, 10))


def default_effect_regressor(n_samples: int | None = None) -> Any:
    """The final-stage model of the DR- and R-learner when ``effect_model=None``.

    A strongly regularised LightGBM whose capacity grows with the number of
    training rows ``n``: 200 trees of 4 leaves, leaves of at least
    ``min_child_samples = max(20, round(6 * sqrt(n)))`` rows (190 at
    n = 1,000, 600 at 10,000, 1,897 at 100,000) and
    ``learning_rate = min(0.1, n / 100_000)`` (0.01 at n = 1,000, LightGBM's
    default 0.1 from n = 10,000 on); other settings LightGBM's defaults,
    ``verbose=-1``.

    Why: the DR pseudo-outcomes and the R-learner's residual ratios are very
    noisy (on the Nie and Wager setups at n = 1,000 the pseudo-outcomes'
    variance is 35-60 for effects whose variance is 0-1.7). LightGBM's
    defaults (100 trees of 31 leaves of at least 20 rows, learning rate 0.1)
    fit that noise: at n = 1,000 their test MSE was 4-7 for the DR-learner
    and 0.6-0.8 for the R-learner, worse than a constant effect on setups A
    and C. Leaves of ``~6 sqrt(n)`` rows average the noise down at small
    ``n`` while the number of leaves the data can fill still grows like
    ``sqrt(n)``; the learning rate is the amount of fitting the 200 trees may
    do, so at small ``n`` the model stays close to a constant effect (the
    mean of the targets, LightGBM's starting value) and it fits structure as
    data accrue. With a fixed rate of 0.01 the same trees underfit at
    n = 10,000 (setup D: test MSE 0.69 for R against 0.16 with the former
    default), hence the rate grows with ``n``. The settings were chosen on
    the four Nie and Wager setups at n = 1,000 and n = 10,000
    (``benchmarks/bench_small_n.py``, ``benchmarks/RESULTS.md``, section
    "Small n").

    Parameters
    ----------
    n_samples : int, default=None
        Number of training rows of the learner's fit. ``None`` means
        ``EFFECT_LARGE_N`` (100,000): the large-``n`` model, used where no
        data is at hand (checks before fitting).

    Returns
    -------
    lightgbm.LGBMRegressor
        A new, unfitted regressor.

    Examples
    --------
    >>> from metalearn._core.defaults import default_effect_regressor
    >>> model = default_effect_regressor(1_000)
    >>> p = model.get_params()
    >>> p["num_leaves"], p["min_child_samples"], p["learning_rate"], p["n_estimators"]
    (4, 190, 0.01, 200)
    """
    from lightgbm import LGBMRegressor

    n = EFFECT_LARGE_N if n_samples is None else n_samples
    return LGBMRegressor(
        num_leaves=_EFFECT_LEAVES,
        learning_rate=effect_learning_rate(n),
        n_estimators=_EFFECT_TREES,
        min_child_samples=effect_min_child_samples(n),
        verbose=-1,
    )
