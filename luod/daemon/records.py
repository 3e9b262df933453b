"""Run records in `--state-dir`: did the previous daemon stop cleanly, and what it was doing.

A daemon crash is a machine crash: the next start is a cold boot, and `status` says the
previous boot ended without a clean shutdown. The record (`run.json`) is written at start
(clean=false), at every update phase (`in_flight`: which phase is running and which
sessions and files are at stake, by name and token) and at the end of each update, and
rewritten with clean=true at a clean shutdown. Finding clean=false at start means the
previous run died: if an update was in flight, `last_update` becomes the crash report (the
phase it died in and every session and file lost with the machine).

Every write is durable before it counts: a temporary file is written and fsynced, renamed
over the record, and the directory is fsynced, so a crash leaves the old record or the new
one, never a torn one. A record that cannot be read anyway (not a regular file, not JSON,
not this schema) is moved aside as `run.json.corrupt-TIMESTAMP` with a warning and counts
as an unclean previous boot; the daemon starts regardless. Without a state dir nothing is
recorded.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("luod.records")

RUN_FILE = "run.json"
CORRUPT_SUFFIX = ".corrupt-"


class CorruptRecord(ValueError):
    """The run record exists but is not one: the message says what is wrong with it."""


def write_durably(path: Path, data: bytes) -> None:
    """Replace `path` by `data` so that a crash leaves either the old or the new content:
    write a temporary file, fsync it, rename it over `path`, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def move_aside(path: Path, why: str) -> dict[str, str]:
    """Rename a damaged state file out of the way (`NAME.corrupt-TIMESTAMP`), with a warning
    naming the file and the cause; returns {file, moved_to, error}."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}{CORRUPT_SUFFIX}{stamp}")
    n = 1
    while aside.exists() or aside.is_symlink():
        n += 1
        aside = path.with_name(f"{path.name}{CORRUPT_SUFFIX}{stamp}.{n}")
    os.replace(path, aside)
    log.warning("state_file_corrupt", file=str(path), moved_to=str(aside), error=why)
    return {"file": str(path), "moved_to": str(aside), "error": why}


def _optional_map(record: dict[str, Any], key: str) -> None:
    if record.get(key) is not None and not isinstance(record[key], dict):
        raise CorruptRecord(f"{key!r} is {type(record[key]).__name__}, not an object or null")


def parse_record(text: bytes) -> dict[str, Any]:
    """A run record from its bytes, checked against the schema; CorruptRecord if not."""
    try:
        record = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptRecord(f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise CorruptRecord(f"a JSON {type(record).__name__}, not an object")
    if not isinstance(record.get("clean"), bool):
        raise CorruptRecord("'clean' is missing or not a boolean")
    for key in ("last_update", "in_flight", "restart"):
        _optional_map(record, key)
    in_flight = record.get("in_flight")
    if in_flight is not None and not (
        isinstance(in_flight.get("phase"), str) and isinstance(in_flight.get("sessions"), list)
    ):
        raise CorruptRecord("'in_flight' lacks its phase or sessions")
    return record


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at `path`; None if there is none. CorruptRecord for anything that is
    there but unreadable (a directory, a FIFO, bad permissions, bad bytes, bad schema)."""
    try:
        return parse_record(read_regular_file(path))
    except FileNotFoundError:
        return None


def read_regular_file(path: Path) -> bytes:
    """The bytes of the regular file `path`: FileNotFoundError if there is none,
    CorruptRecord if it is something else or cannot be read (the message says which)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CorruptRecord(f"cannot open: {exc.strerror}") from None
    try:
        if not (os.fstat(fd).st_mode & 0o170000 == 0o100000):
            raise CorruptRecord("not a regular file")
        with os.fdopen(os.dup(fd), "rb") as f:
            text = f.read()
    except OSError as exc:
        raise CorruptRecord(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    return text


def crash_report(previous: dict[str, Any]) -> dict[str, Any]:
    """What the previous run lost by dying during an update: the phase and every session
    and file that was at stake, in the shape of an update's record (`damage`)."""
    flight = previous["in_flight"]
    phase = flight["phase"]
    reason = f"luod died during {phase} (pid {previous.get('pid')}): the machine rebooted cold"
    error = {"name": "luod.Crashed", "errno": None, "message": reason, "object": None}
    lost = [s for s in flight["sessions"] if isinstance(s, dict) and "name" in s]
    damage = [
        {
            "session": s["name"],
            "token": None,
            "step": phase,
            "error": {**error, "object": s["name"]},
        }
        for s in lost
    ]
    return {
        "update_id": flight.get("update_id"),
        "from": flight.get("from"),
        "to": flight.get("target"),
        "kind": flight.get("kind", "update"),
        "crashed": True,
        "died_in": phase,
        "phase_started_at": flight.get("at"),
        "lost": lost,
        "damage": damage,
        "boot": {"kind": "cold", "reason": reason},
        "resumed": False,
        "late": [],
    }


class RunRecords:
    def __init__(self, state_dir: Path | None) -> None:
        self.state_dir = state_dir
        self.previous: dict[str, Any] | None = None
        self.previous_unclean = False
        self.last_update: dict[str, Any] | None = None
        self.in_flight: dict[str, Any] | None = None
        self.moved_aside: list[dict[str, str]] = []
        self.handover_refused: str | None = None  # set by main: a restart's handover unused
        self.restart: dict[str, Any] | None = None  # a planned restart left for the next run
        self.started = time.time()

    @property
    def path(self) -> Path | None:
        return None if self.state_dir is None else self.state_dir / RUN_FILE

    def _write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        write_durably(self.path, json.dumps(record, indent=2).encode())

    def start(self) -> None:
        """Read the previous run's record (moving a corrupt one aside) and write ours."""
        if self.state_dir is None or self.path is None:
            return
        state_dir = self.state_dir
        if (state_dir.exists() or state_dir.is_symlink()) and not state_dir.is_dir():
            self.moved_aside.append(move_aside(self.state_dir, "not a directory"))
            self.previous_unclean = True
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.previous = read_record(self.path)
        except CorruptRecord as exc:
            self.moved_aside.append(move_aside(self.path, str(exc)))
            self.previous = None
            self.previous_unclean = True
        if self.previous is not None:
            self.previous_unclean = not self.previous["clean"]
            self.last_update = self.previous.get("last_update")
            if self.previous_unclean and self.previous.get("in_flight"):
                self.last_update = crash_report(self.previous)
                log.warning(
                    "previous_run_crashed",
                    phase=self.last_update["died_in"],
                    lost=[s["name"] for s in self.last_update["lost"]],
                )
        self._write(self._record(clean=False))

    def unclean_reason(self) -> str | None:
        """Why this start is a cold boot after an unclean end (None if it ended cleanly)."""
        if not self.previous_unclean:
            return None
        if self.previous is not None and self.previous.get("in_flight"):
            return str(crash_report(self.previous)["boot"]["reason"])
        if self.moved_aside and self.previous is None:
            return "the previous run's record was unreadable (moved aside)"
        return "the previous luod did not stop cleanly: the machine rebooted cold"

    def planned_restart(self) -> dict[str, Any] | None:
        """The previous run's restart note, if it stopped cleanly to be restarted."""
        if self.previous is None or self.previous_unclean:
            return None
        return self.previous.get("restart")

    def _record(self, *, clean: bool) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "started": self.started,
            "clean": clean,
            "last_update": self.last_update,
            "in_flight": self.in_flight,
            "restart": self.restart,
        }

    def phase(
        self,
        phase: str,
        *,
        update_id: int | None,
        start_release: str,
        target: str | None,
        sessions: list[dict[str, Any]],
        kind: str = "update",
    ) -> None:
        """An update phase begins: durably say which, and what a crash now would lose."""
        self.in_flight = {
            "kind": kind,
            "update_id": update_id,
            "phase": phase,
            "from": start_release,
            "target": target,
            "sessions": sessions,
            "at": time.time(),
        }
        self._write(self._record(clean=False))

    def settled(self) -> None:
        """No update in flight any more (it was cancelled, or the machine booted on)."""
        if self.in_flight is not None:
            self.in_flight = None
            self._write(self._record(clean=False))

    def update_finished(self, record: dict[str, Any]) -> None:
        self.last_update = record
        self.in_flight = None
        self._write(self._record(clean=False))

    def stop(self, restart: dict[str, Any] | None = None) -> None:
        """A clean shutdown; `restart` notes that the machine waits for the next run."""
        self.restart = restart
        self.in_flight = None
        self._write(self._record(clean=True))

    def status(self) -> dict[str, Any]:
        return {
            "state_dir": None if self.state_dir is None else str(self.state_dir),
            "previous_boot_unclean": self.previous_unclean,
            "state_moved_aside": [dict(m) for m in self.moved_aside],
            "handover_refused": self.handover_refused,
        }
