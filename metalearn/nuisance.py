"""The shareable cross-fitted nuisance stage and the default base models.

Public names: :class:`Nuisance` (defined in :mod:`metalearn.learners.nuisance`)
and the models used where a base model is left at ``None``.
"""

from metalearn._core.defaults import default_classifier, default_regressor
from metalearn.learners.nuisance import Nuisance

__all__ = ["Nuisance", "default_regressor", "default_classifier"]
