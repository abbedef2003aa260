"""One home for each of tgiops' names on a host (tgiops/core/layout.py): no module spells the
data dir, the unit marker, the lock path or the token secret's default as a literal of its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tgiops.core import layout

PACKAGE = Path(layout.__file__).resolve().parents[1]
VALUES = {
    name: value
    for name, value in vars(layout).items()
    if name.isupper() and isinstance(value, str) and len(value) > 6
}


def string_literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings
    ]  # fmt: skip


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_no_module_spells_a_layout_name_itself(path):
    if path.name == "layout.py":
        return
    for line, text in string_literals(path):
        for name, value in VALUES.items():
            assert text != value, f"{path.name}:{line} spells {name} ({value!r}): import it"


def test_the_layout_names_are_the_ones_the_readme_documents():
    assert layout.DEFAULT_DATA_DIR == "/var/lib/tgiops/data"
    assert layout.MANAGED_MARKER == "# Managed by tgiops"
    assert layout.UNIT_NAME_RE.fullmatch(layout.UNIT_PREFIX + "x")
    assert layout.LOCK_PATH.startswith(layout.LOCK_DIR + "/")
