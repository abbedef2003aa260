"""The pure core imports no network, SSH, AWS, clock, environment or file I/O (design rule)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tgiops"
PURE = ["catalog", "hardware", "plan", "render", "probe", "engine", "output", "recovery"]
FORBIDDEN_MODULES = {
    "os",
    "pathlib",
    "socket",
    "subprocess",
    "time",
    "datetime",
    "shutil",
    "tempfile",
    "io",
    "requests",
    "urllib",
    "http",
    "boto3",
    "botocore",
    "paramiko",
    "fabric",
    "invoke",
    "docker",
    "tenacity",
    "tgiops.edges.ssh",
    "tgiops.edges.aws",
    "tgiops.edges.health",
    "tgiops.edges.resources",
}
FORBIDDEN_CALLS = {"open", "input", "print", "exec", "eval", "__import__"}


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("name", [n for n in PURE if (PACKAGE / f"{n}.py").exists()])
def test_pure_module_has_no_io(name):
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    bad = {
        m
        for m in _imports(tree)
        if m in FORBIDDEN_MODULES or m.split(".")[0] in FORBIDDEN_MODULES - {"tgiops"}
    }
    assert not bad, f"tgiops/{name}.py imports {sorted(bad)}"
    calls = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not calls & FORBIDDEN_CALLS, f"tgiops/{name}.py calls {sorted(calls & FORBIDDEN_CALLS)}"


def test_the_checker_would_catch_an_import():
    tree = ast.parse("import socket\nfrom tgiops.edges.ssh import RemoteHost\n")
    assert {"socket", "tgiops.edges.ssh"} <= _imports(tree)
