"""Golden masters: the five learners' predictions pinned on a few simulators.

The numbers were recorded before the engine refactor (tests/golden/make_golden.py
regenerates them, on purpose only); a refactor that changes them changed
behaviour. Base models are single-threaded with explicit settings, so the
check pins the engine (folds, seeds, nuisance wiring, final stages), not the
defaults.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent / "golden"
_spec = importlib.util.spec_from_file_location("make_golden", HERE / "make_golden.py")
assert _spec is not None and _spec.loader is not None
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)

GOLDEN = np.load(HERE / "learners.npz")
CASES = list(make_golden.cases())


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_learner_matches_golden_master(case):
    name, learner, X, sim = case
    oof, pred = make_golden.compute(learner, X, sim)
    np.testing.assert_allclose(oof, GOLDEN[f"{name}__oof"], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(pred, GOLDEN[f"{name}__predict"], rtol=1e-7, atol=1e-9)
