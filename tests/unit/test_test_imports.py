"""Test modules share helpers through tests/support, never by importing one another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Every module the source imports by absolute name, at any level."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("path", sorted(TESTS.rglob("*.py")), ids=lambda p: str(p.relative_to(TESTS)))
def test_no_module_imports_a_test_module(path):
    """No file under tests/ imports a test module (tests.*.test_*): shared helpers live in
    tests/support or a conftest."""
    test_modules = {name for name in imported_modules(path)
                    if name.startswith("tests.") and name.rpartition(".")[2].startswith("test_")}
    assert test_modules == set(), f"{path.relative_to(TESTS)} imports {sorted(test_modules)}"
