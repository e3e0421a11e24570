"""The package's layers: every import goes down (or stays within its own concept).

Layers, lowest first (``metalearn._core`` imports nothing of metalearn above it;
``learners`` import ``_core`` only; the concepts above import what is below
them, never each other in a circle; tuning, plotting and the CLI sit on top):
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "metalearn"

RANK = {
    "_core": 0,
    "datasets": 0,
    "learners": 1,
    "nuisance": 1.5,  # the public module of the nuisance stage (re-exports learners.nuisance)
    "evaluation": 2,
    "scoring": 3,
    "explain": 4,
    "ate": 5,
    "diagnostics": 5,
    "inference": 5,
    "refute": 5,
    "policy": 5,
    "plotting": 6,
    "tuning": 6,
    "metalearn": 7,  # the top-level __init__
    "cli": 8,  # the command line: a user of the package
}

# Upward imports allowed, each inside a function (imported when called, not at
# import time): the learners' convenience methods that hand over to a higher layer.
LAZY_UPWARD = {
    ("metalearn.learners.base", "metalearn.explain"),  # learner.explainer()
    ("metalearn.learners.base", "metalearn.scoring"),  # learner.evaluate(), .score()
    ("metalearn.learners.base", "metalearn.inference"),  # predict_interval(method="bootstrap")
}


def concept(module: str) -> str:
    parts = module.split(".")
    return "metalearn" if len(parts) == 1 else parts[1]


def imports() -> list[tuple[str, str, bool]]:
    """(importing module, imported module, at module level) for every metalearn import."""
    out = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("metalearn")
            ):
                if node.module == "metalearn":
                    targets = [f"metalearn.{a.name}" for a in node.names]
                else:
                    targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("metalearn")]
            else:
                continue
            out.extend((module, t, id(node) in top) for t in targets)
    return out


IMPORTS = imports()


def test_every_concept_has_a_layer():
    assert {concept(m) for m, _, _ in IMPORTS} <= set(RANK)
    assert {concept(t) for _, t, _ in IMPORTS} <= set(RANK)


@pytest.mark.parametrize("layer", sorted(RANK))
def test_imports_go_down(layer):
    wrong = [
        (m, t, "module level" if top else "in a function")
        for m, t, top in IMPORTS
        if concept(m) == layer
        and concept(t) != layer
        and RANK[concept(t)] >= RANK[layer]
        and not (not top and (m, t) in LAZY_UPWARD)
    ]
    assert not wrong, wrong


def test_core_imports_only_core():
    outside = [(m, t) for m, t, _ in IMPORTS if concept(m) == "_core" and concept(t) != "_core"]
    assert not outside


def test_no_private_module_flat_at_the_top():
    flat = [p.name for p in PACKAGE.glob("_*.py") if p.name != "__init__.py"]
    assert not flat, flat
