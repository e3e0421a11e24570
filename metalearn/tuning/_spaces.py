"""Optuna search spaces: checks, sampling, defaults and LightGBM presets.

A dict space maps ``set_params`` names to Optuna distributions. The name
``"learner"`` (a ``CategoricalDistribution`` of learner names) makes the
space conditional: a trial first picks the learner, then suggests only the
names that apply to it. Optuna is imported lazily, so that
``import metalearn`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from metalearn.learners.base import MetaLearner
from metalearn.tuning._params import (
    LEARNER_KEY,
    NUISANCE_PREFIXES,
    applies,
    check_name,
    learner_by_name,
    with_defaults,
)

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import BaseTrial

__all__ = [
    "Choices",
    "contains",
    "default_params",
    "import_optuna",
    "is_nuisance_name",
    "lightgbm_space",
    "sample_space",
    "suggest",
]

_SUBMODELS = ("outcome_model", "propensity_model", "effect_model")


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - optuna is a core dependency
        raise ImportError("MetaLearnerOptunaSearch needs optuna: `pip install optuna`.") from exc
    return optuna


def is_nuisance_name(name: str) -> bool:
    return name.split("__")[0] in NUISANCE_PREFIXES


def _is_lightgbm(model: Any) -> bool:
    return type(model).__module__.startswith("lightgbm")


def lightgbm_space(learner: Any, *, effect_only: bool = False) -> dict[str, BaseDistribution]:
    """Search-space preset for every LightGBM sub-model of a learner.

    Sub-models left at ``None`` count as LightGBM (the built-in default).
    Nuisance models (``outcome_model``, ``propensity_model``; ordinary
    supervised problems) get a wider space than the effect model, whose
    targets are noisy pseudo-outcomes that favour small, regularised trees.
    An S-learner's ``outcome_model`` is its final stage and gets the effect
    model's space.

    Parameters
    ----------
    learner : learner, or dict of str to learner
        The learner(s) whose sub-models to cover.
    effect_only : bool, default=False
        Only the final-stage model (``effect_model``, or an S-learner's
        ``outcome_model``).

    Returns
    -------
    dict of str to optuna distribution
        Keyed by ``set_params`` names such as ``effect_model__num_leaves``.

    Examples
    --------
    >>> import metalearn as ml
    >>> from metalearn.tuning import lightgbm_space
    >>> space = lightgbm_space(ml.RLearner())
    >>> sorted(space)[:2]
    ['effect_model__colsample_bytree', 'effect_model__learning_rate']
    >>> space["effect_model__num_leaves"]
    IntDistribution(high=32, log=True, low=2, step=1)
    """
    from optuna.distributions import FloatDistribution, IntDistribution

    learners = list(learner.values()) if isinstance(learner, Mapping) else [learner]
    space: dict[str, Any] = {}
    for lrn in learners:
        params = lrn.get_params(deep=False)
        for top in _SUBMODELS:
            if top not in params:
                continue
            final = top == "effect_model" or not lrn._uses_nuisance
            if effect_only and not final:
                continue
            if top in NUISANCE_PREFIXES and params.get("nuisance") is not None:
                continue
            model = params[top]
            if model is not None and not _is_lightgbm(model):
                continue
            if final:
                dists = {
                    "n_estimators": IntDistribution(20, 400, log=True),
                    "learning_rate": FloatDistribution(0.01, 0.3, log=True),
                    "num_leaves": IntDistribution(2, 32, log=True),
                    "min_child_samples": IntDistribution(10, 400, log=True),
                    "colsample_bytree": FloatDistribution(0.5, 1.0),
                    "reg_lambda": FloatDistribution(1e-3, 100.0, log=True),
                }
            else:
                dists = {
                    "n_estimators": IntDistribution(50, 1000, log=True),
                    "learning_rate": FloatDistribution(0.01, 0.3, log=True),
                    "num_leaves": IntDistribution(4, 128, log=True),
                    "min_child_samples": IntDistribution(5, 200, log=True),
                    "colsample_bytree": FloatDistribution(0.5, 1.0),
                    "reg_lambda": FloatDistribution(1e-3, 10.0, log=True),
                }
            for k, d in dists.items():
                space.setdefault(f"{top}__{k}", d)
    return space


class Choices:
    """The learners a search can build: one template, or named learners."""

    def __init__(self, learner: Any) -> None:
        if isinstance(learner, Mapping):
            if not learner:
                raise ValueError("`learner` is an empty dict; give at least one named learner.")
            for name, lrn in learner.items():
                if not isinstance(name, str):
                    raise TypeError(f"`learner` dict keys must be names (str); got {name!r}.")
                _check(lrn, f"learner[{name!r}]")
            self.named: dict[str, MetaLearner] | None = dict(learner)
            self.base: MetaLearner = next(iter(learner.values()))
        else:
            self.base = _check(learner, "learner")
            self.named = None

    def names(self) -> list[str] | None:
        return None if self.named is None else list(self.named)

    def get(self, name: Any) -> MetaLearner:
        if isinstance(name, MetaLearner):
            return name
        if self.named is not None:
            if name not in self.named:
                raise ValueError(
                    f"Unknown learner {name!r}: the `learner` dict names {list(self.named)}."
                )
            return self.named[name]
        return learner_by_name(self.base, name)

    def default_name(self) -> str:
        return next(iter(self.named)) if self.named is not None else type(self.base).__name__


def _check(learner: Any, name: str) -> MetaLearner:
    from metalearn.tuning._params import check_learner

    return check_learner(learner, name)


def check_space(space: Any, choices: Choices) -> dict[str, Any]:
    """A dict space, checked: distributions, names, and the learner choice."""
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
    )

    if not isinstance(space, Mapping):
        raise TypeError(
            "`search_space` must be a dict of parameter names to optuna distributions, a "
            f"callable `space(trial) -> dict`, or 'lightgbm'; got {type(space).__name__}."
        )
    if not space:
        raise ValueError(
            "`search_space` is empty: give at least one parameter name and its distribution."
        )
    out = dict(space)
    for name, dist in out.items():
        if not isinstance(name, str):
            raise TypeError(f"`search_space` keys must be parameter names; got {name!r}.")
        if not isinstance(dist, BaseDistribution):
            raise TypeError(
                f"`search_space[{name!r}]` must be an optuna distribution (FloatDistribution, "
                f"IntDistribution or CategoricalDistribution); got {dist!r}. For a list of "
                "choices use CategoricalDistribution([...])."
            )
        if isinstance(dist, CategoricalDistribution):
            bad = [c for c in dist.choices if not isinstance(c, None | bool | int | float | str)]
            if bad:
                raise TypeError(
                    f"`search_space[{name!r}]` has choices that Optuna cannot store: "
                    f"{bad[0]!r}. Choices must be None, bool, int, float or str; to swap whole "
                    "models, use a callable search space that returns them."
                )
    if LEARNER_KEY in out:
        dist = out[LEARNER_KEY]
        if not isinstance(dist, CategoricalDistribution):
            raise TypeError(
                "`search_space['learner']` must be a CategoricalDistribution of learner names; "
                f"got {dist!r}."
            )
        for c in dist.choices:
            choices.get(c)
    for name in out:
        if name == LEARNER_KEY:
            continue
        options = list(learner_options(out, choices).values())
        if not any(applies(lrn, name) for lrn in options):
            check_name(with_defaults(options[0], [name]), name, "search_space")
    return out


def learner_options(space: Mapping[str, Any], choices: Choices) -> dict[str, MetaLearner]:
    """The learners a dict space can pick, by name."""
    if LEARNER_KEY in space:
        return {str(c): choices.get(c) for c in space[LEARNER_KEY].choices}
    return {choices.default_name(): choices.base}


def suggest(trial: BaseTrial, name: str, dist: BaseDistribution) -> Any:
    """``trial.suggest_*`` for a distribution object."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    raise TypeError(f"Unsupported distribution for {name!r}: {dist!r}.")  # pragma: no cover


def sample_space(
    trial: BaseTrial,
    space: Mapping[str, Any] | Callable[[Any], Any],
    choices: Choices,
    *,
    applicable: Callable[[str, str], bool],
) -> dict[str, Any]:
    """One trial's parameters (``"learner"`` as a name) from a dict or callable space."""
    if callable(space) and not isinstance(space, Mapping):
        params = space(trial)
        if not isinstance(params, Mapping):
            raise TypeError(
                "A callable `search_space` must return a dict of parameter names to values; "
                f"got {type(params).__name__}."
            )
        return dict(params)
    params = {}
    chosen = choices.default_name()
    if LEARNER_KEY in space:
        chosen = str(suggest(trial, LEARNER_KEY, space[LEARNER_KEY]))
        params[LEARNER_KEY] = chosen
    for name, dist in space.items():
        if name != LEARNER_KEY and applicable(chosen, name):
            params[name] = suggest(trial, name, dist)
    return params


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is a point of ``dist`` (so that it can be enqueued)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(dist, CategoricalDistribution):
        return any(type(c) is type(value) and c == value for c in dist.choices)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(dist, IntDistribution):
        if int(value) != value:
            return False
        return dist.low <= value <= dist.high and (int(value) - dist.low) % dist.step == 0
    if isinstance(dist, FloatDistribution):
        if not dist.low <= value <= dist.high:
            return False
        if dist.step is not None:
            k = (value - dist.low) / dist.step
            return abs(k - round(k)) < 1e-8
        return True
    return False  # pragma: no cover


def default_params(
    space: Mapping[str, Any], choices: Choices, names: list[str] | None = None
) -> dict[str, Any]:
    """The template's current settings for the names of ``space`` it can express.

    Sub-models left at ``None`` are read from their default (LightGBM), so
    that the enqueued first trial is the learner exactly as the user built it.
    """
    chosen = choices.default_name()
    out: dict[str, Any] = {}
    if LEARNER_KEY in space:
        if not contains(space[LEARNER_KEY], chosen):
            return out
        out[LEARNER_KEY] = chosen
    wanted = [n for n in space if n != LEARNER_KEY and (names is None or n in names)]
    learner = choices.get(chosen)
    wanted = [n for n in wanted if applies(learner, n)]
    current = with_defaults(learner, wanted).get_params(deep=True)
    for name in wanted:
        if name in current and contains(space[name], current[name]):
            out[name] = current[name]
    return out
