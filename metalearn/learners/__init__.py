"""The meta-learners, one algorithm per module.

Every public module of this package is imported here and each learner class
with a ``short_name`` registers itself (:func:`metalearn.learners.base.learner_registry`):
a new learner is one new file in this folder. The CLI's ``--learner``, the
searches' ``learner`` choices and the top-level ``metalearn`` namespace read
the registry.
"""

import importlib
import pkgutil

from metalearn.learners.base import MetaLearner
from metalearn.learners.dr import DRLearner
from metalearn.learners.r import RLearner
from metalearn.learners.s import SLearner
from metalearn.learners.stack import StackedLearner
from metalearn.learners.t import TLearner
from metalearn.learners.x import XLearner

__all__ = ["SLearner", "TLearner", "XLearner", "RLearner", "DRLearner", "StackedLearner"]


def _discover() -> None:
    """Import every other public module here; export the learners they define."""
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            is_learner = isinstance(obj, type) and issubclass(obj, MetaLearner)
            if is_learner and obj.short_name and name not in __all__:
                globals()[name] = obj
                __all__.append(name)


_discover()
