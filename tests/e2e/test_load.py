"""Load against a real `luod`: `bench/load.py` run small (50 clients, a few seconds, an
update every 0.3 s), and at full size behind the `slow` marker.

Every answer must be right: a result, or EBUSY during an update. Any other error, a
session preserved before a kexec that did not come back (or came back with other bytes),
or a session left behind at the end fails the run (the script exits 1 and lists them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

LOAD = Path(__file__).parents[2] / "bench" / "load.py"


def run_load(*args: str, timeout: float) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(LOAD), "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.stdout, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    assert doc["failures"] == [] and doc["lost"] == [], (doc["failures"], doc["lost"])
    assert result.returncode == 0, result.stderr
    return doc


def test_load_with_updates() -> None:
    doc = run_load("--clients", "50", "--seconds", "4", "--interval", "0.3", timeout=120)
    assert doc["updates"] >= 3
    assert doc["cycles"] > 50 and doc["ops"]["preserve"]["count"] > 50
    assert doc["reconnects"] >= 50  # every update ended every client's connection
    assert doc["recovered"] > 0  # sessions preserved at a kexec came back, bytes equal
    for op in ("create", "preserve", "close"):
        assert 0 < doc["ops"][op]["p50_ms"] <= doc["ops"][op]["p99_ms"]


@pytest.mark.slow
def test_load_full_size() -> None:
    doc = run_load("--clients", "200", "--seconds", "30", timeout=600)
    assert doc["updates"] >= 10 and doc["recovered"] > 0
