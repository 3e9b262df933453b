"""The shape of the tree, checked on the source: layers point down only, no import cycles,
small modules that say what they own.

Layers (DESIGN.md): `daemon -> kernel_model -> hw`, `daemon -> ipc`, `clients -> ipc`;
`luod.errnos` and `luod.units` are shared by every layer, `luod.cli` by the clients. Every
import counts, including those inside functions and under `TYPE_CHECKING`: a cycle hidden
behind a lazy import is a cycle a reader still has to untangle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TREES = {
    "luod": ROOT / "luod",
    "luoctl": ROOT / "clients/luoctl",
    "luod_vmm": ROOT / "clients/luod_vmm",
    "luod_run": ROOT / "clients/luod_run",
}
MAX_LINES = 400

# Layer -> prefixes it must not import.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "luod.hw": (
        "luod.kernel_model",
        "luod.daemon",
        "luod.ipc",
        "trio",
        "luoctl",
        "luod_vmm",
        "luod_run",
    ),
    "luod.kernel_model": ("luod.daemon", "luod.ipc", "trio", "luoctl", "luod_vmm", "luod_run"),
    "luod.ipc": ("luod.daemon", "luod.kernel_model", "luod.hw", "luoctl", "luod_vmm", "luod_run"),
    "luod.daemon": ("luoctl", "luod_vmm", "luod_run"),
    "luod.cli": (
        "luod.daemon",
        "luod.kernel_model",
        "luod.hw",
        "trio",
        "luoctl",
        "luod_vmm",
        "luod_run",
    ),
    "luoctl": ("luod.daemon", "luod.kernel_model", "luod.hw", "luod_vmm", "luod_run", "trio"),
    "luod_vmm": ("luod.daemon", "luod.kernel_model", "luod.hw", "luoctl", "luod_run"),
    "luod_run": ("luod.daemon", "luod.kernel_model", "luod.hw", "luoctl", "luod_vmm", "trio"),
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for top, base in TREES.items():
        for path in sorted(base.rglob("*.py")):
            parts = [top, *path.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    """Every module `name` imports, resolved to modules of the tree where it names one."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in MODULES else base


def _graph() -> dict[str, set[str]]:
    return {
        name: {dep for dep in _imports(name, path) if dep in MODULES and dep != name}
        for name, path in MODULES.items()
    }


def _layer(name: str) -> str | None:
    return next(
        (layer for layer in FORBIDDEN if name == layer or name.startswith(f"{layer}.")), None
    )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_layers_point_down(name: str) -> None:
    layer = _layer(name)
    if layer is None:
        return
    bad = sorted(
        dep
        for dep in _imports(name, MODULES[name])
        if any(dep == p or dep.startswith(f"{p}.") for p in FORBIDDEN[layer])
    )
    assert not bad, f"{name} ({layer}) must not import {', '.join(bad)}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    graph = _graph()
    # A package's __init__ that re-exports its submodules is not a cycle with them.
    for name in graph:
        if MODULES[name].name == "__init__.py":
            graph[name] = {d for d in graph[name] if not d.startswith(f"{name}.")}
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_small_module_that_says_what_it_owns(name: str) -> None:
    path = MODULES[name]
    text = path.read_text()
    lines = text.count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (at most {MAX_LINES})"
    tree = ast.parse(text)
    if path.name == "__init__.py" and not tree.body:
        return
    assert ast.get_docstring(tree), (
        f"{path.relative_to(ROOT)} needs a docstring saying what it owns"
    )
    assert any(
        isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body
    ) or not any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in tree.body), (
        f"{path.relative_to(ROOT)} needs `from __future__ import annotations`"
    )
