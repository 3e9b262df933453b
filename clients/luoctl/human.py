"""Human rendering of command results: the primitives every renderer is built from.

Owns how `luoctl` prints values without `--json` (sizes, maps and lists on one line,
`label: value` fields, milliseconds) and the generic rendering of a document no command
renders itself. The renderers proper live beside their concept (`human_machine`,
`human_sessions`) and attach to their command entries (`commands.COMMANDS`). Renderers
read documents defensively (`.get`, `-` for what is missing): the daemon may add, omit or
reshape keys beyond CLI.md's contract, and a missing key must never turn a success into a
traceback. The JSON document is the complete answer; this is the readable summary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from luoctl.table import cell
from luod.units import format_size

__all__ = ["Renderer", "as_list", "as_map", "fields", "generic", "human_bytes", "inline", "ms"]

Renderer = Callable[[Any], list[str]]


def as_map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def human_bytes(value: object) -> str:
    """`64G` when exact, else one decimal in the largest unit that fits (`1.5M`)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return cell(value)
    exact = format_size(value)
    if not exact.isdigit() or value < 1024:
        return exact
    for suffix, unit in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value >= unit:
            return f"{value / unit:.1f}{suffix}"
    return exact  # pragma: no cover - value >= 1024 always finds K


def inline(value: object) -> str:
    """A value on one line: maps as `k=v, ...`, lists comma-joined."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={inline(v)}" for k, v in value.items()) or "-"
    return cell(value)


def ms(value: object) -> str:
    return f"{value:.1f} ms" if isinstance(value, int | float) else cell(value)


def fields(pairs: list[tuple[str, object]]) -> list[str]:
    width = max(len(label) for label, _ in pairs) + 1
    return [f"{label + ':':<{width}} {inline(value)}" for label, value in pairs]


def generic(document: object) -> list[str]:
    """`key: value` lines for a document no renderer knows (one line for a non-map)."""
    mapping = as_map(document)
    return fields(list(mapping.items())) if mapping else [inline(document)]
