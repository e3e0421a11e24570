"""Simulated data sets with known heterogeneous treatment effects.

The simulators return a :class:`Simulation` holding the observed data
``(X, w, y)`` and the ground truth (true CATE ``tau``, propensity scores and
conditional mean outcomes ``mu``), for testing and benchmarking CATE
estimators. :func:`simulate_learning_mindset` returns a
:class:`MindsetSimulation` instead: a frame in the layout of
:func:`load_learning_mindset` and the true effects.
"""

from metalearn.datasets._mindset import load_learning_mindset
from metalearn.datasets._mindset_sim import MindsetSimulation, simulate_learning_mindset
from metalearn.datasets._real import load_rand_hie
from metalearn.datasets._simulate import (
    Simulation,
    simulate_binary_outcome,
    simulate_confounded,
    simulate_multiarm,
    simulate_nie_wager,
    simulate_retention,
)

__all__ = [
    "Simulation",
    "simulate_nie_wager",
    "simulate_retention",
    "simulate_multiarm",
    "simulate_binary_outcome",
    "simulate_confounded",
    "MindsetSimulation",
    "simulate_learning_mindset",
    "load_rand_hie",
    "load_learning_mindset",
]
