"""Sphinx configuration of the passk-interference documentation.

Build: pip install -e ".[docs]" && sphinx-build -W -b html docs docs/_build/html
"""

import pathlib
import re
import shutil
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))

project = "passk-interference"
author = "passk-interference authors"
copyright = "passk-interference authors"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "passk_results",
    "passk_help",
]

# The notebooks live in notebooks/; they are copied into a build-time folder (in .gitignore) so
# that they render here with their stored outputs and are kept in git once.
NOTEBOOK_COPY = DOCS / "notebooks_rendered"
NOTEBOOK_COPY.mkdir(exist_ok=True)
for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
    target = NOTEBOOK_COPY / notebook.name
    if not target.exists() or target.read_bytes() != notebook.read_bytes():
        shutil.copyfile(notebook, target)
nb_execution_mode = "off"

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

exclude_patterns = ["_build", "README.md", "_autosummary/**.rst.tmp", "**.ipynb_checkpoints"]

templates_path = ["_templates"]
autosummary_generate = True
autosummary_imported_members = False
# A package's page lists its modules; each member is documented once, on its own module's page.
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
# Docstrings write code and formulas in single backticks.
default_role = "code"

_SINGLE_BACKTICKS = re.compile(r"(?<![:`\w])`([^`\n]+)`(?![`_\w])")
_RETURN_HEADINGS = {"Returns:", "Return:", "Yields:"}


def _literal_returns(app, what, name, obj, options, lines):
    """`x` -> ``x`` in a "Returns:" section, before napoleon reads it.

    Napoleon splits a "Returns:" line at its first colon unless the colon sits in a role or in
    double backticks; formulas such as `p.shape[:-1]` hold colons.
    """
    in_returns = False
    for i, line in enumerate(lines):
        if line.strip() in _RETURN_HEADINGS:
            in_returns = True
        elif in_returns and line.strip() and not line.startswith((" ", "\t")):
            in_returns = False
        elif in_returns:
            lines[i] = _SINGLE_BACKTICKS.sub(r"``\1``", line)


def setup(app):
    # Runs before napoleon's handler (priority 500).
    app.connect("autodoc-process-docstring", _literal_returns, priority=400)


html_theme = "sphinx_book_theme"
html_title = "passk-interference"
html_theme_options = {"show_toc_level": 2}
