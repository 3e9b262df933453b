"""Plain-text tables for human output: left-aligned columns, two spaces apart.

No colour and no box drawing: the output is often pasted or grepped, and a dependency
such as rich would cost more start-up time than the whole client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["cell", "table"]


def cell(value: object) -> str:
    """A table cell: `-` for None or empty, lists joined with commas, maps as `k=v`, text
    on one line."""
    if value is None or value in ("", [], {}):
        return "-"
    if isinstance(value, Mapping):
        return " ".join(f"{key}={cell(item)}" for key, item in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(cell(item) for item in value)
    return " ".join(str(value).split())


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """The lines of a table with a header row; columns as wide as their widest cell."""
    cells = [list(headers), *([cell(value) for value in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
