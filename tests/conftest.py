"""Shared fixtures and helpers for the metalearn test suite."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from metalearn import DRLearner, RLearner, SLearner, TLearner, XLearner
from metalearn.datasets import Simulation, simulate_nie_wager

ALL_LEARNERS = (SLearner, TLearner, XLearner, RLearner, DRLearner)
FRAME_KINDS = ("numpy", "pandas", "polars")


def to_frame(arr: np.ndarray, kind: str, columns: Sequence[str] | None = None) -> Any:
    """Convert a 2-D numpy array to ``kind`` ("numpy", "pandas" or "polars")."""
    arr = np.asarray(arr)
    if kind == "numpy":
        return arr
    names = list(columns) if columns is not None else [f"x{j}" for j in range(arr.shape[1])]
    if kind == "pandas":
        import pandas as pd

        return pd.DataFrame(arr, columns=names)
    if kind == "polars":
        import polars as pl

        return pl.DataFrame({name: arr[:, j] for j, name in enumerate(names)})
    raise ValueError(f"unknown frame kind {kind!r}")


@pytest.fixture(params=FRAME_KINDS)
def frame(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """A converter ``f(array, columns=None)`` to numpy, pandas or Polars."""
    kind = request.param

    def convert(arr: np.ndarray, columns: Sequence[str] | None = None) -> Any:
        return to_frame(arr, kind, columns)

    convert.kind = kind  # type: ignore[attr-defined]
    return convert


@pytest.fixture(scope="session")
def small_data() -> Simulation:
    """Nie-Wager setup B (randomized, two variants), 600 rows, 6 features."""
    return simulate_nie_wager("B", n=600, seed=0)


def make_learner(cls: type, **kw: Any) -> Any:
    """``cls`` with fast linear base models, 2 folds and a fixed seed; ``kw`` overrides."""
    params = cls().get_params(deep=False)
    defaults: dict[str, Any] = {
        "outcome_model": LinearRegression(),
        "propensity_model": LogisticRegression(),
        "effect_model": LinearRegression(),
        "n_folds": 2,
        "random_state": 0,
    }
    if kw.get("nuisance") is not None:
        defaults.pop("outcome_model")
        defaults.pop("propensity_model")
    args = {k: v for k, v in defaults.items() if k in params}
    args.update(kw)
    return cls(**args)


def fitted_base_models(learner: Any) -> list[Any]:
    """Every fitted base model of a learner (nuisance and final stage)."""
    models: list[Any] = list(getattr(learner, "models_", []))
    nuisance = getattr(learner, "nuisance_", None)
    if nuisance is not None:
        for fitted in nuisance.models_.values():
            stack = [fitted]
            while stack:
                item = stack.pop()
                if isinstance(item, list):
                    stack.extend(item)
                elif item is not None:
                    models.append(item)
    for group in getattr(learner, "effect_models_", {}).values():
        models.extend(group)
    return models


@pytest.fixture(scope="module")
def yardstick() -> Any:
    """The scoring nuisance of the search tests: linear models, two folds (fast, fixed)."""
    from metalearn import Nuisance

    return Nuisance(
        outcome_model=LinearRegression(),
        propensity_model=LogisticRegression(),
        n_folds=2,
        random_state=0,
    )
