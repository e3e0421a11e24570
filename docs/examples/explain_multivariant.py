"""Explain a multi-variant DR-learner: SHAP beeswarm per arm, importance, who benefits.

The simulated experiment has a control and two treatment arms with known
effects: arm 1 helps by ``0.5 + x0`` (driven by ``x0``), arm 2 by ``1`` when
``x1 > 0`` and ``-0.25`` otherwise (driven by ``x1``). The SHAP values of the
DR-learner's CATE should put ``x0`` first for arm 1 and ``x1`` first for
arm 2, and the honest tree for arm 2 should split on ``x1`` near 0.

Run from the repository root (needs matplotlib: ``pip install metalearn[plot]``)::

    python docs/examples/explain_multivariant.py [output.png]

It writes the beeswarm plots to ``explain_multivariant.png`` (or the path
given) and prints the importance table, how the values were computed and
the tree summary.
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
import shap
from lightgbm import LGBMClassifier, LGBMRegressor

import metalearn as ml
from metalearn.explain import summarize_cate


def main(path: str = "explain_multivariant.png") -> None:
    sim = ml.datasets.simulate_multiarm(n=6000, n_variants=3, seed=0)
    X = sim.to_frame()  # a Polars frame: its column names label the plots
    learner = ml.DRLearner(
        outcome_model=LGBMRegressor(n_estimators=200, learning_rate=0.05, verbose=-1),
        propensity_model=LGBMClassifier(n_estimators=100, verbose=-1),
        effect_model=LGBMRegressor(n_estimators=200, learning_rate=0.05, verbose=-1),
        n_folds=5,
        random_state=0,
    )
    learner.fit_predict(X, sim.y, sim.w)  # honest out-of-fold CATE, kept for the summary

    explainer = learner.explainer()
    explanations = explainer(X[:2000])  # {"tau_1_vs_0": Explanation, "tau_2_vs_0": ...}
    for name, info in explainer.info_.items():
        print(
            f"{name}: {info.algorithm}, {info.feature_perturbation}, exact={info.exact}, "
            f"additive={info.additive} (max error {info.max_additivity_error:.1e})"
        )

    fig, axes = plt.subplots(1, len(explanations), figsize=(12, 4.5))
    for ax, (name, explanation) in zip(axes, explanations.items(), strict=True):
        shap.plots.beeswarm(explanation, ax=ax, show=False, plot_size=None, max_display=6)
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"beeswarm plots written to {path}")

    print(explainer.feature_importance(X[:2000]))
    print(summarize_cate(learner, X, sim.y, sim.w, variant=2, random_state=0))


if __name__ == "__main__":
    main(*sys.argv[1:2])
