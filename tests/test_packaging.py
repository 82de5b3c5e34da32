"""The wheel holds every package of the tree: setuptools ships only the packages pyproject.toml lists."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    # [tool.setuptools] packages is an explicit list: a subpackage not named there is left out of the
    # wheel (and of `pip install .`), though the tests, run from the source tree, still import it.
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for top in ("rag", "training") for p in (ROOT / top).rglob("__init__.py")
             if "__pycache__" not in p.parts}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert {"rag.load", "rag.evaluate", "rag.ui"} <= found
