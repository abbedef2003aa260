"""Everything under tgiops/core/ is pure: no network, SSH, AWS, clock, environment or file I/O.

import-linter's contracts (pyproject.toml, run by scripts/test) forbid core from importing the
edges and the I/O libraries, transitively; this test adds what a contract cannot see: calls
(open, print, input) and the standard library's own I/O modules, in every core module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "tgiops" / "core"
FORBIDDEN_MODULES = {
    "os", "pathlib", "socket", "subprocess", "time", "datetime", "shutil", "tempfile", "io",
    "requests", "urllib", "http", "boto3", "botocore", "paramiko", "fabric", "invoke", "docker",
    "tenacity", "rich", "tgiops.edges", "tgiops.commands", "tgiops.cli",
}  # fmt: skip
FORBIDDEN_CALLS = {"open", "input", "print", "exec", "eval", "__import__"}
# A time is an input of a pure function, never read: a record's timestamp is formatted from the
# datetime its caller gives, status converts epoch seconds to a date. Only these use datetime,
# and a test below checks they never read the clock.
DATETIME_OK = {"record.py", "status_schema.py"}


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN_MODULES)


CORE_MODULES = sorted(CORE.rglob("*.py"))


def test_core_has_modules():
    assert len(CORE_MODULES) > 10  # the walk below sees the package


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_has_no_io(path):
    tree = ast.parse(path.read_text())
    bad = {m for m in _imports(tree) if _forbidden(m)}
    if path.name in DATETIME_OK:
        bad -= {"datetime"}
    assert not bad, f"tgiops/core/{path.relative_to(CORE)} imports {sorted(bad)}"
    calls = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not calls & FORBIDDEN_CALLS, f"{path.name} calls {sorted(calls & FORBIDDEN_CALLS)}"


def test_the_checker_would_catch_an_import():
    tree = ast.parse("import socket\nfrom tgiops.edges.ssh import RemoteHost\n")
    assert all(_forbidden(m) for m in _imports(tree))


@pytest.mark.parametrize("name", sorted(DATETIME_OK))
def test_core_never_reads_the_clock(name):
    tree = ast.parse((CORE / name).read_text())
    reads = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in {"now", "utcnow", "today", "time"}
    }
    assert not reads, f"tgiops/core/{name} reads the clock: {sorted(reads)}"
