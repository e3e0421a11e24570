"""Reproduce the retention lecture's hand-made tables with metalearn's functions.

The HTE lecture among the seeds (``001_*``: a randomized customer-retention
experiment, 12 000 accounts, seed 5101) prints a decile calibration table of
a linear interaction model's predicted CATE and a top-30% targeting table
with a contact cost of 2. Its recipe is fully specified: one seeded
``numpy.random.default_rng`` with the draws in a fixed order, a stratified
``train_test_split`` (35% test, ``random_state=27``), an OLS fit and a second
seeded generator (2026) for the random policy. ``_retention_experiment``
below rebuilds the data from those facts.

The notebook's tables are *oracle* evaluations: they average the simulated
true effects. metalearn's estimators average AIPW scores; fed the simulated
potential outcomes as ``mu`` the AIPW score of every row is exactly its true
effect (the residual terms vanish, since ``y`` is the potential outcome of
the row's own arm), so :func:`calibration_table` and :func:`policy_value`
return the notebook's oracle numbers.

Only the "Lowest predicted Y(0) 30%" row depends on a random forest, whose
fitted trees could change with scikit-learn's implementation; it is
checked too, and was reproduced with scikit-learn 1.9.1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import train_test_split

import metalearn as ml
from metalearn.evaluation import calibration_table, policy_value

N_ACCOUNTS = 12_000
CONTACT_COST = 2.0
CONTACT_SHARE = 0.30
FEATURES = [
    "risk_score",
    "usage_z",
    "log_customer_value",
    "tenure_months",
    "enterprise_plan",
    "support_tickets",
]


def _retention_experiment(n: int = N_ACCOUNTS, seed: int = 5101) -> dict[str, np.ndarray]:
    """The lecture's simulated experiment: features, arms, potential outcomes."""
    gen = np.random.default_rng(seed)
    risk = gen.beta(2.2, 2.8, n)
    usage = gen.normal(0.0, 1.0, n)
    value = gen.lognormal(4.2, 0.55, n)
    tenure = gen.gamma(2.2, 10.0, n)
    p_enterprise = 1.0 / (1.0 + np.exp(0.4 - 0.55 * (np.log(value) - 4.2)))
    enterprise = gen.binomial(1, p_enterprise)
    tickets = gen.poisson(np.maximum(1.2 + 2.5 * risk - 0.3 * usage, 0.1))
    arm = gen.binomial(1, 0.5, n)
    base = (
        65.0
        + 0.16 * value
        + 6.0 * usage
        - 10.0 * risk
        + 4.0 * enterprise
        + 0.12 * tenure
        - 1.5 * tickets
        + 3.0 * np.sin(usage)
    )
    effect = -4.0 + 15.0 * risk + 2.5 * enterprise - 2.0 * (usage > 1.0) + 1.5 * (tickets >= 4)
    y0 = base + gen.normal(0.0, 6.0, n)
    y1 = y0 + effect
    return {
        "risk_score": risk,
        "usage_z": usage,
        "customer_value": value,
        "log_customer_value": np.log(value),
        "tenure_months": tenure,
        "enterprise_plan": enterprise,
        "support_tickets": tickets,
        "treatment": arm,
        "y0": y0,
        "y1": y1,
        "outcome": np.where(arm == 1, y1, y0),
        "true_cate": effect,
    }


def _top(score: np.ndarray, share: float, *, largest: bool = True) -> np.ndarray:
    """Indicator of the ``floor(share * n)`` rows with the largest (smallest) score."""
    k = int(np.floor(share * len(score)))
    order = np.argsort(-score if largest else score, kind="stable")
    mask = np.zeros(len(score), dtype=bool)
    mask[order[:k]] = True
    return mask


@pytest.fixture(scope="module")
def lecture() -> dict[str, Any]:
    data = _retention_experiment()
    rows = np.arange(N_ACCOUNTS)
    train, test = train_test_split(
        rows, test_size=0.35, random_state=27, stratify=data["treatment"]
    )
    X = np.column_stack([data[c] for c in FEATURES]).astype(np.float64)
    # The lecture's OLS with all treatment x feature interactions has the
    # same fitted effects as a T-learner with one linear model per arm.
    learner = ml.TLearner(outcome_model=LinearRegression())
    learner.fit(X[train], data["outcome"][train], data["treatment"][train])
    cols = {k: v[test] for k, v in data.items()}
    cols["cate_hat"] = np.asarray(learner.predict(X[test]), dtype=np.float64)
    cols["mu"] = np.column_stack([cols["y0"], cols["y1"]])
    return {"data": data, "train": train, "test": test, "X": X, "t": cols}


def _scores(t: dict[str, np.ndarray]) -> dict[str, Any]:
    """Arguments that make metalearn's AIPW scores equal the true effects."""
    return {"propensity": 0.5, "mu": t["mu"]}


def test_the_data_recipe_matches_the_printed_summary(lecture: dict[str, Any]) -> None:
    d = lecture["data"]
    assert round(float(d["treatment"].mean()), 3) == 0.503
    assert round(float(d["outcome"].mean()), 3) == 75.456
    assert round(float(d["true_cate"].mean()), 3) == 3.545
    assert round(float((d["true_cate"] > 0).mean()), 3) == 0.826
    assert round(float(d["true_cate"].std(ddof=1)), 3) == 3.539
    assert round(float(d["true_cate"].min()), 3) == -5.554
    assert round(float(d["true_cate"].max()), 3) == 14.450
    # first account of the printed head
    assert round(float(d["y0"][0]), 3) == 62.106
    assert round(float(d["true_cate"][0]), 3) == 1.497


def test_the_interaction_model_matches_the_printed_metrics(lecture: dict[str, Any]) -> None:
    t = lecture["t"]
    assert len(t["cate_hat"]) == 4200
    assert round(float(np.corrcoef(t["cate_hat"], t["true_cate"])[0, 1]), 3) == 0.979
    rmse = float(np.sqrt(np.mean((t["cate_hat"] - t["true_cate"]) ** 2)))
    assert round(rmse, 3) == 0.841
    assert round(float(t["cate_hat"].mean()), 3) == 3.754
    assert round(float(t["true_cate"].mean()), 3) == 3.587


# (n, mean predicted CATE, mean true CATE) per predicted-CATE decile, as printed
DECILES = [
    (420, -2.536, -1.995),
    (420, -0.470, -0.170),
    (420, 0.900, 1.002),
    (420, 1.962, 1.980),
    (420, 3.005, 2.853),
    (420, 4.101, 3.875),
    (420, 5.241, 4.893),
    (420, 6.552, 6.115),
    (420, 8.072, 7.474),
    (420, 10.717, 9.845),
]


def test_decile_calibration_table(lecture: dict[str, Any]) -> None:
    t = lecture["t"]
    table = calibration_table(t["cate_hat"], t["outcome"], t["treatment"], **_scores(t))
    table = table.sort("group")
    assert table["group"].to_list() == list(range(1, 11))
    got = list(
        zip(
            table["n"].to_list(),
            [round(v, 3) for v in table["predicted"].to_list()],
            [round(v, 3) for v in table["estimate"].to_list()],
            strict=True,
        )
    )
    assert got == DECILES


# policy: (target share, mean true lift if targeted, share negative, net value per account)
POLICIES = {
    "Oracle highest true CATE 30%": (0.300, 7.878, 0.000, 1.763),
    "Highest predicted CATE 30%": (0.300, 7.811, 0.000, 1.743),
    "Highest risk 30%": (0.300, 7.487, 0.000, 1.646),
    "Treat everyone": (1.000, 3.587, 0.168, 1.587),
    "Lowest predicted Y(0) 30%": (0.300, 4.740, 0.084, 0.822),
    "Highest value 30%": (0.300, 3.789, 0.154, 0.537),
    "Random 30%": (0.300, 3.487, 0.164, 0.446),
}


def _policy_masks(lecture: dict[str, Any]) -> dict[str, np.ndarray]:
    d, t, train, test = lecture["data"], lecture["t"], lecture["train"], lecture["test"]
    control_train = train[d["treatment"][train] == 0]
    forest = RandomForestRegressor(n_estimators=300, min_samples_leaf=25, random_state=202)
    forest.fit(lecture["X"][control_train], d["outcome"][control_train])
    predicted_y0 = forest.predict(lecture["X"][test])
    n_contact = int(np.floor(CONTACT_SHARE * len(test)))
    # the lecture draws account labels (here: row numbers) of the test rows
    picked = np.random.default_rng(2026).choice(test, size=n_contact, replace=False)
    return {
        "Treat everyone": np.ones(len(test), dtype=bool),
        "Random 30%": np.isin(test, picked),
        "Highest risk 30%": _top(t["risk_score"], CONTACT_SHARE),
        "Highest value 30%": _top(t["customer_value"], CONTACT_SHARE),
        "Lowest predicted Y(0) 30%": _top(predicted_y0, CONTACT_SHARE, largest=False),
        "Highest predicted CATE 30%": _top(t["cate_hat"], CONTACT_SHARE),
        "Oracle highest true CATE 30%": _top(t["true_cate"], CONTACT_SHARE),
    }


def _row(t: dict[str, np.ndarray], mask: np.ndarray) -> tuple[float, float, float, float]:
    policy = mask.astype(int)
    net = policy_value(
        None, t["outcome"], t["treatment"], policy=policy, cost=CONTACT_COST, **_scores(t)
    )
    gross = policy_value(None, t["outcome"], t["treatment"], policy=policy, **_scores(t))
    share = gross.share_treated
    # value per eligible account minus treating no one = P(contact) E[tau - c | contact]
    lift = gross.gain_over_none / share
    negative = float((t["true_cate"][mask] < 0).mean())
    return (
        round(share, 3),
        round(lift, 3),
        round(negative, 3),
        round(net.gain_over_none, 3),
    )


def test_top_30_percent_policy_table(lecture: dict[str, Any]) -> None:
    t = lecture["t"]
    masks = _policy_masks(lecture)
    got = {name: _row(t, mask) for name, mask in masks.items()}
    assert got == POLICIES


def test_top_30_percent_from_predictions_matches_the_explicit_mask(lecture: dict[str, Any]) -> None:
    # policy_value's own budget rule (share=0.3, treat if net predicted effect > 0)
    t = lecture["t"]
    v = policy_value(
        t["cate_hat"],
        t["outcome"],
        t["treatment"],
        share=CONTACT_SHARE,
        cost=CONTACT_COST,
        **_scores(t),
    )
    assert round(v.share_treated, 3) == 0.300
    assert round(v.gain_over_none, 3) == 1.743
    assert round(v.gain_over_all, 3) == round(1.743 - 1.587, 3)
