"""Sphinx configuration of the metalearn documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` after
``pip install -e ".[docs]"``. Pages are Markdown (MyST); the API reference is
generated from the numpydoc docstrings.
"""

from __future__ import annotations

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


html_theme = "pydata_sphinx_theme"
html_title = "metalearn"
html_theme_options = {"show_toc_level": 2}
