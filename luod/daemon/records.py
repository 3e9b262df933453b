"""Run records in `--state-dir`: did the previous daemon stop cleanly, and the last update.

A daemon crash is a machine crash: the next start is a cold boot, and `status` says the
previous boot ended without a clean shutdown. The record is written at start (clean=false)
and rewritten with clean=true at a clean shutdown; finding clean=false at start means the
previous run died. Without a state dir nothing is recorded.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"


class RunRecords:
    def __init__(self, state_dir: Path | None) -> None:
        self.state_dir = state_dir
        self.previous: dict[str, Any] | None = None
        self.previous_unclean = False
        self.last_update: dict[str, Any] | None = None

    def _write(self, record: dict[str, Any]) -> None:
        if self.state_dir is None:
            return
        path = self.state_dir / RUN_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, path)

    def start(self) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.previous = json.loads((self.state_dir / RUN_FILE).read_text())
        except (OSError, ValueError):
            self.previous = None
        if self.previous is not None:
            self.previous_unclean = not self.previous.get("clean", False)
            self.last_update = self.previous.get("last_update")
        self._write(self._record(clean=False))

    def _record(self, *, clean: bool) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "started": time.time(),
            "clean": clean,
            "last_update": self.last_update,
        }

    def update_finished(self, record: dict[str, Any]) -> None:
        self.last_update = record
        self._write(self._record(clean=False))

    def stop(self) -> None:
        self._write(self._record(clean=True))

    def status(self) -> dict[str, Any]:
        return {
            "state_dir": None if self.state_dir is None else str(self.state_dir),
            "previous_boot_unclean": self.previous_unclean,
        }
