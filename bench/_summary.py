"""The one summary of every bench's ratios: `record()` for the benches, a table for `make bench`.

Every bench script calls `record(bench, metric, value, target)` for each figure it wants in
the summary: the row is printed at once (flushed, so a long bench shows progress), and when
the environment variable LUOD_BENCH_SUMMARY names a file, one JSON line
{"bench", "metric", "value", "target", "unit"} is appended to it. `make bench` points that
variable at a temporary file, runs the benches, then `python bench/_summary.py FILE` prints
all of them as one table (name, value, target, met?).

A target is a string such as "<25", "<=5", ">=0.8" or "<1.10": the comparison is part of it,
so a reader sees which way is better. None means the figure is shown but has no target.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ENV = "LUOD_BENCH_SUMMARY"
_OPERATORS = ("<=", ">=", "<", ">")


def record(
    bench: str, metric: str, value: float, target: str | None = None, unit: str = "x"
) -> None:
    """Print one figure and, under `make bench`, append it to the summary file."""
    print(f"  [{bench}] {metric}: {value:.4g}{unit} (target {target or '-'})", flush=True)
    path = os.environ.get(ENV)
    if path:
        line = {"bench": bench, "metric": metric, "value": value, "target": target, "unit": unit}
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


def met(value: float, target: str | None) -> bool | None:
    """Whether `value` satisfies `target` ("<25", ">=0.8"...); None when there is none."""
    if not target:
        return None
    text = target.strip()
    for op in _OPERATORS:
        if text.startswith(op):
            bound = float(text[len(op) :])
            return {
                "<=": value <= bound,
                ">=": value >= bound,
                "<": value < bound,
                ">": value > bound,
            }[op]
    raise ValueError(f"bench target {target!r}: expected <, <=, > or >= then a number")


def table(lines: list[dict[str, object]]) -> str:
    """The summary, one row per recorded figure, in the order they were recorded."""
    head = f"{'bench':<10} {'metric':<52} {'value':>12} {'target':>10}  met?"
    rows = [head, "-" * len(head)]
    for line in lines:
        value = float(line["value"])  # type: ignore[arg-type]
        target = line.get("target")
        target_text = str(target) if target else ""
        verdict = met(value, target_text or None)
        mark = "-" if verdict is None else ("yes" if verdict else "NO")
        shown = f"{value:.4g}{line.get('unit') or ''}"
        rows.append(
            f"{line['bench']!s:<10} {line['metric']!s:<52} {shown:>12} {target_text:>10}  {mark}"
        )
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python bench/_summary.py FILE", file=sys.stderr)
        return 2
    path = Path(argv[0])
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = [json.loads(raw) for raw in text.splitlines() if raw.strip()]
    print(table(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
