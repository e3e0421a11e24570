"""metalearn: meta-learners for heterogeneous treatment effects.

S-, T-, X-, R- and DR-learners as scikit-learn estimators over pandas,
Polars and numpy, with cross-fitting, several treatment variants,
regression and classification outcomes, and a shareable nuisance stage.
"""

from metalearn import (
    ate,
    datasets,
    diagnostics,
    evaluation,
    explain,
    inference,
    plotting,
    refute,
    scoring,
    tuning,
)
from metalearn import learners as _learners
from metalearn._core.lgbm_bins import shared_lightgbm_bins
from metalearn._core.positivity import OverlapWarning
from metalearn._core.progress import progress
from metalearn._core.results import AverageEffect
from metalearn._core.validation import BaseModelError, InconsistentVersionWarning
from metalearn._core.version import __version__ as __version__
from metalearn.learners import DRLearner, RLearner, SLearner, StackedLearner, TLearner, XLearner
from metalearn.learners.nuisance import Nuisance
from metalearn.policy import PolicyTree
from metalearn.tuning import (
    MetaLearnerGridSearch,
    MetaLearnerOptunaSearch,
    SelectionWarning,
    auto_cate,
)

# Learners added as new files in metalearn/learners/ are exported too.
_extra_learners = [n for n in _learners.__all__ if n not in globals()]
globals().update({n: getattr(_learners, n) for n in _extra_learners})

__all__ = [
    "AverageEffect",
    "BaseModelError",
    "DRLearner",
    "InconsistentVersionWarning",
    "MetaLearnerGridSearch",
    "MetaLearnerOptunaSearch",
    "Nuisance",
    "OverlapWarning",
    "PolicyTree",
    "RLearner",
    "SLearner",
    "SelectionWarning",
    "StackedLearner",
    "TLearner",
    "XLearner",
    "ate",
    "auto_cate",
    "datasets",
    "diagnostics",
    "evaluation",
    "explain",
    "inference",
    "plotting",
    "progress",
    "refute",
    "scoring",
    "shared_lightgbm_bins",
    "tuning",
    *_extra_learners,
]
