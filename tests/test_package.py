"""The package as released: its modules compile on every Python it declares."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import ROOT

MODULES = sorted((ROOT / "server").rglob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_docstrings_are_utf_8(module: Path) -> None:
    # Python 3.13 dedents docstrings as UTF-8 when compiling: a lone surrogate written as an escape
    # ("\ud83d", not "\\ud83d") makes the whole module fail to import there, though 3.11 accepts it.
    tree = ast.parse(module.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            docstring = ast.get_docstring(node, clean=False)
            if docstring is not None:
                docstring.encode("utf-8")  # raises UnicodeEncodeError as the 3.13 compiler would
