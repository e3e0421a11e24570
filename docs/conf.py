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

# The learning-mindset case study uses the real data when it finds them and a
# simulated stand-in (`metalearn.datasets.simulate_learning_mindset`) otherwise, so it
# is executed in every build. metalearn does not bundle the CSV: point
# METALEARN_MINDSET_CSV at your copy; by default the build looks in the repository's
# parent, shared/data. The page says which data it used.
_mindset = Path(__file__).resolve().parents[2] / "shared" / "data" / "learning_mindset.csv"
if "METALEARN_MINDSET_CSV" not in os.environ and _mindset.is_file():
    os.environ["METALEARN_MINDSET_CSV"] = str(_mindset)


html_theme = "pydata_sphinx_theme"
html_title = "metalearn"
html_theme_options = {"show_toc_level": 2}
# Wide code cells, outputs and tables scroll sideways instead of being cut off.
html_static_path = ["_static"]
html_css_files = ["metalearn.css"]
