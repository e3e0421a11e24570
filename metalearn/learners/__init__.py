"""The meta-learners, one algorithm per module."""

from metalearn.learners.dr import DRLearner
from metalearn.learners.r import RLearner
from metalearn.learners.s import SLearner
from metalearn.learners.t import TLearner
from metalearn.learners.x import XLearner

__all__ = ["SLearner", "TLearner", "XLearner", "RLearner", "DRLearner"]
