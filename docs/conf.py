"""Sphinx configuration for the wsthread documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` from the
repository root (after ``pip install -e '.[docs]'``).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document this checkout, installed or not

import wsthread  # noqa: E402

project = "wsthread"
author = "the wsthread authors"
copyright = "the wsthread authors, MIT licence"  # noqa: A001
release = version = wsthread.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Docstrings are Google style; "Attributes:" become fields, not duplicate entries.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_title = f"wsthread {release}"
pygments_style = "sphinx"
