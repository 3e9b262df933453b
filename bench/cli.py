"""The start-up cost of one `luoctl status` and one `luoctl --json status` against
`python -c pass`, measured side by side in one run against a real luod. Not a test:
prints a table. Run: `.venv/bin/python bench/cli.py [--runs 30]`.

Each command runs `--runs` times, the three alternating (so a burst of load from other
processes hits all alike), after one warm-up round each; the median is kept. The runs have
a warm bytecode cache (`PYTHONDONTWRITEBYTECODE` dropped), as an installed luoctl has:
without it every run would also time compiling luoctl's sources. Target: each luoctl
command at most 2x `python -c pass`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TARGET = 2.0


def wait_socket(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.01)


def median_runs(cmds: list[list[str]], runs: int) -> list[float]:
    """Median wall time of each command, the commands alternating, after one warm-up."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times: list[list[float]] = [[] for _ in cmds]
    for i in range(runs + 1):
        for cmd, samples in zip(cmds, times, strict=True):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            if i:  # the first round writes the bytecode cache
                samples.append(time.perf_counter() - start)
    return [statistics.median(samples) for samples in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of each command")
    opts = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="luod-bench-"))
    path = workdir / "luod.sock"
    luod = subprocess.Popen(
        [str(BIN / "luod"), "--socket", str(path), "--ram", "1G", "--log-level", "warning"],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_socket(path)
        luoctl = [str(BIN / "luoctl"), "--socket", str(path)]
        base, human, json = median_runs(
            [[sys.executable, "-c", "pass"], [*luoctl, "status"], [*luoctl, "--json", "status"]],
            opts.runs,
        )
        print(f"one invocation, median of {opts.runs} (warm bytecode cache); target <= {TARGET}x\n")
        print(f"{'command':<22} {'ms':>7} {'ratio':>6}")
        print(f"{'python -c pass':<22} {base * 1000:>7.1f} {1:>6.2f}")
        print(f"{'luoctl status':<22} {human * 1000:>7.1f} {human / base:>6.2f}")
        print(f"{'luoctl --json status':<22} {json * 1000:>7.1f} {json / base:>6.2f}")
    finally:
        luod.terminate()
        luod.wait(timeout=30)
        if path.exists():
            path.unlink()
        os.rmdir(workdir)


if __name__ == "__main__":
    main()
