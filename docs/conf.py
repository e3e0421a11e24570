"""Sphinx configuration of the metalearn documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` after
``pip install -e ".[docs]"``. Pages are Markdown (MyST); the API reference is
generated from the numpydoc docstrings.
"""

from __future__ import annotations

import os
from pathlib import Path

import metalearn

project = "metalearn"
author = "The metalearn developers"
copyright = "2026, the metalearn developers"
release = metalearn.__version__
version = release

extensions = [
    "myst_nb",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
exclude_patterns = ["_build", "examples/*.py"]
master_doc = "index"

autosummary_generate = True
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set[str] = set()

myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3
nb_execution_mode = "cache"
nb_execution_raise_on_error = True
nb_execution_timeout = 300

# The learning-mindset case study reads a CSV that metalearn does not bundle. The
# repository's parent holds a copy in shared/data; point METALEARN_MINDSET_CSV at
# yours to build elsewhere. Without it the page is rendered unexecuted.
_mindset = Path(
    os.environ.setdefault(
        "METALEARN_MINDSET_CSV",
        str(Path(__file__).resolve().parents[2] / "shared" / "data" / "learning_mindset.csv"),
    )
)
nb_execution_excludepatterns: list[str] = []
if not _mindset.is_file():
    print(f"metalearn docs: {_mindset} not found; case_studies/learning_mindset is not executed")
    nb_execution_excludepatterns.append("case_studies/learning_mindset.md")
    suppress_warnings = ["myst-nb.lexer"]  # an unexecuted page has no kernel language


html_theme = "pydata_sphinx_theme"
html_title = "metalearn"
html_theme_options = {"show_toc_level": 2}
