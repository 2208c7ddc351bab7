"""Sphinx configuration of the aionetdicom user guide.

Build (warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
# The package is normally installed (``pip install -e .``); this makes a plain checkout
# work too.
sys.path.insert(0, str(HERE.parent / "src"))

import aionetdicom  # noqa: E402

if TYPE_CHECKING:
    from sphinx.application import Sphinx

project = "aionetdicom"
author = "aionetdicom developers"
copyright = "aionetdicom developers"
release = aionetdicom.__version__
version = ".".join(release.split(".")[:2])

# Only Sphinx's own extensions. No intersphinx: the build must work offline.
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

root_doc = "index"
exclude_patterns = ["_build"]
templates_path: list[str] = []

# Type hints and ``:class:`` roles naming pydicom, anyio or the standard library cannot
# be resolved offline: the build is strict about markup (-W), not about unresolved
# cross-references (``python -m sphinx -n`` lists them).
nitpicky = False

autodoc_member_order = "bysource"
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
# Show defaults as written in the source (``STORAGE_SOP_CLASSES``), not as their
# expanded values (hundreds of UIDs).
autodoc_preserve_defaults = True
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"

html_theme = "alabaster"
html_title = f"aionetdicom {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "asyncio-native DICOM networking on anyio",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
pygments_style = "sphinx"


def _drop_object_base(
    app: Sphinx, name: str, obj: object, options: object, bases: list[type]
) -> None:
    """No "Bases: object" under every plain class."""
    if bases == [object]:
        bases.clear()


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-bases", _drop_object_base)
