"""The public API's docstrings: numpydoc sections, and examples that run.

* Every object in ``__all__`` of metalearn and of its public modules has a
  docstring with a one-line summary, a "Parameters" section that names every
  parameter of its signature (for a class, of ``__init__``) and an "Examples"
  section. Result containers (dataclasses and named tuples, which users get
  rather than build) may document their fields under "Attributes" instead,
  in the class or in a base class.
* The examples of every docstring in the package run under :mod:`doctest`
  and print what they say, one test per module.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import inspect
import pkgutil
import re
import sys
from typing import Any

import pytest

import metalearn

PUBLIC_MODULES = (
    "metalearn",
    "metalearn.ate",
    "metalearn.datasets",
    "metalearn.diagnostics",
    "metalearn.evaluation",
    "metalearn.explain",
    "metalearn.inference",
    "metalearn.learners",
    "metalearn.nuisance",
    "metalearn.plotting",
    "metalearn.refute",
    "metalearn.scoring",
    "metalearn.tuning",
)

# Optional dependencies that the examples of a module need (core dependencies,
# such as shap, optuna or Polars, are always there).
EXTRAS = {
    "metalearn.plotting": "matplotlib",
    "metalearn.datasets._real": "statsmodels",
}

DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
_UNDERLINE = re.compile(r"-{3,}")


# ----------------------------------------------------------------- helpers
def public_objects() -> dict[str, Any]:
    """Qualified name -> object, for every non-module name in a public ``__all__``."""
    objects: dict[str, Any] = {}
    seen: set[int] = set()
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or id(obj) in seen:
                continue
            seen.add(id(obj))
            objects[f"{module_name}.{name}"] = obj
    return objects


def sections(doc: str) -> dict[str, list[str]]:
    """The numpydoc sections of a (cleaned) docstring: header -> its lines."""
    lines = doc.splitlines()
    out: dict[str, list[str]] = {}
    current: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and not line[0].isspace() and _UNDERLINE.fullmatch(nxt.strip()):
            current = line.strip()
            out[current] = []
            i += 2
            continue
        if current is not None:
            out[current].append(line)
        i += 1
    return out


def documented_names(lines: list[str]) -> set[str]:
    """Names of the entries of a Parameters/Attributes section (``a, b : type``)."""
    names: set[str] = set()
    for line in lines:
        if line and not line[0].isspace():
            head = line.split(" : ")[0]
            names.update(part.strip().lstrip("*") for part in head.split(","))
    return names


def signature_parameters(obj: Any) -> tuple[list[str], bool]:
    """Named parameters of a function or of a class's constructor, and whether
    it also takes ``**kwargs``."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):  # builtins without a signature
        return [], True
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    names = [p.name for p in sig.parameters.values() if p.kind not in skip]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    return [n for n in names if n not in ("self", "cls")], var_kw


def is_result_container(obj: Any) -> bool:
    """A dataclass or named tuple: its fields may be documented as Attributes."""
    return inspect.isclass(obj) and (
        dataclasses.is_dataclass(obj) or (issubclass(obj, tuple) and hasattr(obj, "_fields"))
    )


def docstring_problems(obj: Any) -> list[str]:
    """What is wrong with the docstring of ``obj`` (nothing: an empty list)."""
    own = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    doc = inspect.cleandoc(own) if isinstance(own, str) else ""
    if not doc.strip():
        return ["no docstring"]
    problems = []
    lines = doc.splitlines()
    summary = lines[0].strip()
    if not summary or summary[-1] not in ".?!" or (len(lines) > 1 and lines[1].strip()):
        problems.append("the summary is not one sentence on one line followed by a blank line")
    found = sections(doc)
    if not any(line.lstrip().startswith(">>>") for line in found.get("Examples", [])):
        problems.append('no "Examples" section with an example')
    params, var_kw = signature_parameters(obj)
    documented = documented_names(found.get("Parameters", []))
    if is_result_container(obj):
        for klass in inspect.getmro(obj):
            kdoc = inspect.getdoc(klass) if klass.__doc__ else None
            if klass is not object and kdoc:
                kfound = sections(kdoc)
                documented |= documented_names(kfound.get("Attributes", []))
                documented |= documented_names(kfound.get("Parameters", []))
    missing = [p for p in params if p not in documented]
    if missing:
        problems.append(f'"Parameters" does not document {missing}')
    if not var_kw:
        unknown = sorted(documented_names(found.get("Parameters", [])) - set(params))
        if unknown:
            problems.append(f'"Parameters" documents {unknown}, which the signature lacks')
    return problems


def package_modules() -> list[str]:
    """Every module of the package, all imported.

    Importing them all first makes the search for examples independent of the
    import order: some objects are defined in a private module and declare
    the public one as their ``__module__``, and doctest finds them there only
    once that module is imported.
    """
    names = ["metalearn"]
    names += sorted(m.name for m in pkgutil.walk_packages(metalearn.__path__, "metalearn."))
    for name in names:
        importlib.import_module(name)
    return names


def module_doctests(module_name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    return sorted((t for t in finder.find(module) if t.examples), key=lambda t: t.name)


DOCTEST_MODULES = [name for name in package_modules() if module_doctests(name)]


# ------------------------------------------------------------------- tests
def test_public_docstrings_have_summary_parameters_and_examples():
    offenders = {}
    for name, obj in public_objects().items():
        problems = docstring_problems(obj)
        if problems:
            offenders[name] = problems
    for module_name in PUBLIC_MODULES:
        doc = inspect.getdoc(importlib.import_module(module_name)) or ""
        first = doc.splitlines()[0].strip() if doc.strip() else ""
        if not first or first[-1] not in ".?!":
            offenders[module_name] = ["the module has no one-line summary"]
    report = "\n".join(f"{name}: {'; '.join(p)}" for name, p in sorted(offenders.items()))
    assert not offenders, f"{len(offenders)} public docstring(s) to fix:\n{report}"


def test_every_public_module_and_example_is_covered():
    # The submodules that metalearn exports are checked as public modules ...
    exported = {
        f"metalearn.{name}"
        for name in metalearn.__all__
        if inspect.ismodule(getattr(metalearn, name))
    }
    assert exported <= set(PUBLIC_MODULES)
    # ... and the examples of every public object are run by the doctest test below.
    not_run = sorted(
        name
        for name, obj in public_objects().items()
        if getattr(obj, "__module__", None) not in DOCTEST_MODULES
        or getattr(sys.modules[obj.__module__], obj.__name__, None) is not obj
    )
    assert not not_run, f"the examples of {not_run} are not found by the doctest test"


def test_the_checker_reports_each_problem():
    def good(a, b=0, *args, c="", **kwargs):
        """Do nothing.

        Parameters
        ----------
        a, b : int
        c : str
            Text.

        Examples
        --------
        >>> good(1)
        """

    def bad(a, c=""):
        """Do nothing
        at all.

        Parameters
        ----------
        a : int
        d : float
        """

    assert docstring_problems(good) == []
    assert docstring_problems(bad) == [
        "the summary is not one sentence on one line followed by a blank line",
        'no "Examples" section with an example',
        "\"Parameters\" does not document ['c']",
        "\"Parameters\" documents ['d'], which the signature lacks",
    ]


@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_docstring_examples_run(module_name: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch):
    extra = EXTRAS.get(module_name)
    if extra is not None:
        pytest.importorskip(extra)
    if extra == "matplotlib":
        import matplotlib

        matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
    report: list[str] = []
    try:
        for test in module_doctests(module_name):
            runner.run(test, out=report.append)
    finally:
        if extra == "matplotlib":
            import matplotlib.pyplot as plt

            plt.close("all")
    assert runner.tries > 0
    assert runner.failures == 0, "".join(report)
