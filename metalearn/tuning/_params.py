"""Search-space plumbing shared by the searches: names, candidates, learner choices.

A *candidate* is a learner template plus a dict of ``set_params`` names
(``effect_model__max_depth``) and values. The special name ``"learner"``
swaps the whole learner (an instance in a grid, a name in an Optuna space);
the other names then apply to the chosen learner. Sub-models left at ``None``
(the built-in LightGBM default) are filled in with that default when a
nested name needs them, so ``outcome_model__num_leaves`` works on a learner
built with ``outcome_model=None``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from sklearn.base import clone

from metalearn._core.defaults import default_classifier, default_regressor
from metalearn._core.tasks import _THREAD_PARAMS, share_model_threads
from metalearn.learners.base import MetaLearner

__all__ = [
    "LEARNER_KEY",
    "NUISANCE_PREFIXES",
    "build_candidate",
    "check_learner",
    "learner_by_name",
    "limit_model_threads",
    "limit_threads",
    "param_key",
    "short_repr",
    "with_defaults",
]

LEARNER_KEY = "learner"
#: Parameter prefixes of the nuisance stage (the first stage of staged tuning).
NUISANCE_PREFIXES = ("outcome_model", "propensity_model")
_DEFAULT_MODELS: dict[str, Callable[[], Any]] = {
    "outcome_model": default_regressor,
    "propensity_model": default_classifier,
    "effect_model": default_regressor,
}


def check_learner(learner: Any, name: str = "learner") -> MetaLearner:
    """``learner`` must be a metalearn learner instance (not a class)."""
    if isinstance(learner, type) and issubclass(learner, MetaLearner):
        raise TypeError(
            f"`{name}` must be a learner instance such as {learner.__name__}(); got the class "
            f"{learner.__name__}."
        )
    if not isinstance(learner, MetaLearner):
        raise TypeError(
            f"`{name}` must be a metalearn learner (SLearner, TLearner, XLearner, RLearner, "
            f"DRLearner); got {type(learner).__name__}."
        )
    return learner


def learner_classes() -> dict[str, type]:
    """Every registered learner by class name (``"DRLearner"``) and short name (``"DR"``)."""
    from metalearn.learners.base import learner_registry

    registry = learner_registry()
    out: dict[str, type] = {cls.__name__: cls for cls in registry.values()}
    out.update(registry)
    return out


def learner_by_name(template: MetaLearner, name: str) -> MetaLearner:
    """A learner of class ``name`` with the parameters of ``template`` it shares."""
    classes = learner_classes()
    if name not in classes:
        raise ValueError(
            f"Unknown learner {name!r} in the search space's `learner` choices; use names of "
            f"{sorted(classes)}, or pass `learner` as a dict of named learners."
        )
    cls = classes[name]
    if isinstance(template, cls):
        return clone(template)
    own = cls().get_params(deep=False)
    shared = {k: v for k, v in template.get_params(deep=False).items() if k in own}
    if shared.get("nuisance") is not None:
        for k in ("outcome_model", "propensity_model"):
            shared.pop(k, None)
    if not getattr(cls, "_uses_nuisance", True):
        shared.pop("nuisance", None)
    return clone(cls(**shared))


def param_key(obj: Any) -> Any:
    """A hashable identity of a parameter value: estimators by class and parameters.

    Thread counts are left out: they change speed, not the fitted models.
    """
    if hasattr(obj, "get_params") and not isinstance(obj, type):
        params = obj.get_params(deep=False)
        return (
            type(obj).__module__,
            type(obj).__qualname__,
            tuple(sorted((k, param_key(v)) for k, v in params.items() if k not in _THREAD_PARAMS)),
        )
    if isinstance(obj, list | tuple):
        return (type(obj).__name__, tuple(param_key(v) for v in obj))
    if isinstance(obj, dict):
        return ("dict", tuple(sorted((repr(k), param_key(v)) for k, v in obj.items())))
    if isinstance(obj, np.ndarray):
        return ("ndarray", obj.shape, str(obj.dtype), obj.tobytes())
    return repr(obj)


def short_repr(value: Any) -> Any:
    """A frame-friendly value: numbers, strings and None as they are, else a repr."""
    if value is None or isinstance(value, bool | int | float | str | np.number | np.bool_):
        return value.item() if isinstance(value, np.generic) else value
    if hasattr(value, "get_params") and not isinstance(value, type):
        return repr(value).replace("\n", "").replace("  ", "")
    return repr(value)


def _fill_default(learner: Any, top: str) -> None:
    """Give a sub-model left at ``None`` its built-in default, so nested names apply."""
    params = learner.get_params(deep=False)
    if top in _DEFAULT_MODELS and top in params and params[top] is None:
        if top in NUISANCE_PREFIXES and getattr(learner, "nuisance", None) is not None:
            return  # a shared Nuisance brings its own models
        learner.set_params(**{top: _DEFAULT_MODELS[top]()})


def _unknown(owner: Any, path: str, part: str, full: str, where: str) -> ValueError:
    names = sorted(owner.get_params(deep=False)) if hasattr(owner, "get_params") else []
    close = difflib.get_close_matches(part, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    inside = f"{type(owner).__name__} ({path})" if path else type(owner).__name__
    if not hasattr(owner, "get_params"):
        return ValueError(
            f"Unknown parameter {full!r} in `{where}`: {path} is {owner!r}, which has no "
            "parameters. Names follow `learner.get_params()`."
        )
    return ValueError(
        f"Unknown parameter {full!r} in `{where}`: {inside} has no parameter {part!r}.{hint} "
        "Names follow `learner.get_params()` (nested names as 'effect_model__max_depth')."
    )


def check_name(learner: Any, name: str, where: str) -> None:
    """Raise a ValueError naming ``name`` unless it is a valid ``set_params`` name."""
    parts = name.split("__")
    obj = learner
    for i, part in enumerate(parts):
        path = "__".join(parts[:i])
        if not hasattr(obj, "get_params") or isinstance(obj, type):
            raise _unknown(obj, path, part, name, where)
        params = obj.get_params(deep=False)
        if part not in params:
            raise _unknown(obj, path, part, name, where)
        obj = params[part]


def with_defaults(learner: MetaLearner, names: Iterable[str]) -> MetaLearner:
    """A clone of ``learner`` whose sub-models reached by nested ``names`` are not None."""
    out = clone(learner)
    for name in names:
        if "__" in name:
            _fill_default(out, name.split("__")[0])
    return out


def applies(learner: MetaLearner, name: str) -> bool:
    """Whether ``name`` is a ``set_params`` name of ``learner`` (defaults filled in)."""
    try:
        check_name(with_defaults(learner, [name]), name, "search space")
    except ValueError:
        return False
    return True


def build_candidate(
    template: MetaLearner, params: Mapping[str, Any], *, where: str = "param_grid"
) -> MetaLearner:
    """A fresh learner: ``template`` (or ``params['learner']``) with ``params`` set.

    Values are cloned (an estimator in a grid is never fitted in place), names
    are checked, and sub-models at ``None`` get their default when a nested
    name reaches into them.
    """
    params = dict(params)
    base = params.pop(LEARNER_KEY, template)
    if isinstance(base, str):
        base = learner_by_name(template, base)
    check_learner(base, f"{where}['learner']" if base is not template else "learner")
    learner = clone(base)
    values = clone(params, safe=False)
    top_level = {k: v for k, v in values.items() if "__" not in k}
    for k in top_level:
        check_name(learner, k, where)
    if top_level:
        learner.set_params(**top_level)
    nested = {k: v for k, v in values.items() if "__" in k}
    for k in nested:
        _fill_default(learner, k.split("__")[0])
        check_name(learner, k, where)
    if nested:
        learner.set_params(**nested)
    return learner


def limit_model_threads(model: Any, n_workers: int) -> Any:
    """``model``, its every-core thread counts given their share of ``n_workers`` side by side.

    The thread rule of :mod:`metalearn._core.tasks`: a thread count that asks
    for every core (by the model's library's semantics, nested models
    included) becomes ``thread_budget() // n_workers``
    (:func:`metalearn._core.tasks.available_cpus` is the budget) and is marked
    as the rule's, so that the learner's own workers divide it further. A
    positive thread count set by the user is kept; the model is changed in
    place and returned.
    """
    if n_workers <= 1 or model is None or not hasattr(model, "get_params"):
        return model
    return share_model_threads(model, n_workers)


def limit_threads(learner: MetaLearner, n_workers: int) -> MetaLearner:
    """Give every-core sub-models ``thread_budget() // n_workers`` threads (the thread rule).

    Used when candidates or trials run side by side, on the learner that is
    then fitted (not on a template that is cloned first: a clone keeps the
    counts but loses the mark that lets the learner's own workers divide
    them; code that clones runs under :func:`metalearn._core.tasks.share_threads`
    instead). Sub-models left at ``None`` get their default model first.
    Returns ``learner`` (changed in place).
    """
    if n_workers <= 1:
        return learner
    for top in ("outcome_model", "propensity_model", "effect_model"):
        params = learner.get_params(deep=False)
        if top not in params:
            continue
        if params[top] is None:
            if top != "effect_model" and getattr(learner, "nuisance", None) is not None:
                continue  # a shared Nuisance brings its own models
            _fill_default(learner, top)
        limit_model_threads(learner.get_params(deep=False)[top], n_workers)
    return learner
