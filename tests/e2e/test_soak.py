"""The soak (`bench/soak.py`): consecutive update cycles with `luod-vmm` and memfds on one
`luod`, each verified byte for byte. Three cycles in the fast suite (the script works and
every cycle verifies); a hundred behind the `slow` marker, where the daemon's memory at
cycle 100 must be within 10% of cycle 10's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SOAK = Path(__file__).parents[2] / "bench" / "soak.py"


def soak(cycles: int, timeout: float) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(SOAK), "--json", "--cycles", str(cycles)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.stdout, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    assert doc["failure"] is None, doc["failure"]
    assert result.returncode == 0, result.stderr
    assert doc["cycles"] == cycles
    for c in doc["per_cycle"]:
        assert c["bytes_checked"] >= 64 << 20  # all of the guest's memory, every cycle
        assert c["dma_writes_during_blackout"] > 0
        assert c["full_blackout_ms"] >= c["blackout_ms"] > 0
    return doc


def test_soak_three_cycles() -> None:
    soak(3, timeout=120)


@pytest.mark.slow
def test_soak_hundred_cycles_memory_is_flat() -> None:
    doc = soak(100, timeout=1800)
    rss = doc["rss_kib"]
    assert rss["100"] <= rss["10"] * 1.10, rss
