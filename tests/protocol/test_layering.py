"""Layering and style rules of `luod.ipc`, checked on the source: only the two trio
adapter modules import trio; nothing imports the daemon, the kernel model or the machine;
cattrs is never imported at module level (the blocking client stays light); every module
has a docstring and `from __future__ import annotations`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import luod.ipc

PACKAGE = Path(luod.ipc.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))
TRIO_MODULES = {"async_transport.py", "async_client.py"}
FORBIDDEN_EVERYWHERE = ("luod.daemon", "luod.kernel_model", "luod.hw", "numpy", "structlog")


def imports(tree: ast.Module, *, top_level_only: bool) -> set[str]:
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_rules(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{path.name} needs a module docstring"
    everything = imports(tree, top_level_only=False)
    assert "__future__" in everything
    for name in everything:
        assert not name.startswith(FORBIDDEN_EVERYWHERE), f"{path.name} imports {name}"
        if name == "trio" or name.startswith("trio."):
            assert path.name in TRIO_MODULES, f"{path.name} must not import trio"
        if name.startswith("luod.ipc.") and f"{name.rpartition('.')[2]}.py" in TRIO_MODULES:
            assert path.name in TRIO_MODULES, f"{path.name} must not import {name}"
    top = imports(tree, top_level_only=True)
    assert not any(n == "cattrs" or n.startswith("cattrs.") for n in top), (
        f"{path.name} imports cattrs at module level"
    )
