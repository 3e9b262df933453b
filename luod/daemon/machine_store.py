"""Where the emulated machine waits while luod itself restarts: its RAM and its handover.

Two things must outlive the process for a restart to keep the machine: emulated RAM and
the handover (the machine's registers, with the KHO root's address, plus luod's own
userspace state, as bytes: `HANDOVER_FORMAT`). They are found again by name:

- fds named `luod-ram` and `luod-handover` in `$LISTEN_FDS`: systemd's fd store passes
  them back (luod pushed them with `FDSTORE=1`), and so does luod itself when it re-execs
  (`exec_self`, `luoctl daemon restart`: same pid, same argv, the fds inherited);
- otherwise files in `--state-dir`: RAM is the sparse file `ram.img` itself (every write
  lands there, nothing is copied at restart), the handover is `handover.cbor`, written
  durably at a restart that exits and read once (and removed) by the next start, which
  takes it only if `run.json` says the previous run stopped cleanly to be restarted.

Without either, a restart that exits cannot keep the machine (`can_keep_across_exit`).
A handover that is missing, unreadable or for another RAM size means a cold boot, with the
reason logged and kept (`refused`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import cbor2
import structlog

from luod.daemon import sdnotify
from luod.daemon.records import CorruptRecord, move_aside, read_regular_file, write_durably

if TYPE_CHECKING:  # numpy: loaded only once signals are blocked (see luod.daemon.main)
    from luod.hw.memory import PhysicalMemory

log = structlog.get_logger("luod.restart")

RAM_NAME = "luod-ram"
HANDOVER_NAME = "luod-handover"
RAM_FILE = "ram.img"
HANDOVER_FILE = "handover.cbor"
HANDOVER_FORMAT = "luod-restart-v1"
_FD_FLOOR = 64  # where fds are parked while they are renumbered from 3 for the exec


def split_listen_fds(fds: list[tuple[int, str]]) -> tuple[list[tuple[int, str]], dict[str, int]]:
    """`$LISTEN_FDS` as (the sockets to serve, {name: fd} of the machine's own fds)."""
    ours = {name: fd for fd, name in fds if name in (RAM_NAME, HANDOVER_NAME)}
    return [(fd, name) for fd, name in fds if name not in ours], ours


def decode_handover(data: bytes, ram_bytes: int) -> dict[str, Any]:
    """The handover's content; ValueError naming what is wrong with it."""
    try:
        blob = cbor2.loads(data)
    except Exception as exc:
        raise ValueError(f"not CBOR: {exc}") from None
    if not isinstance(blob, dict) or blob.get("format") != HANDOVER_FORMAT:
        raise ValueError(f"not a {HANDOVER_FORMAT} handover")
    if blob.get("ram_bytes") != ram_bytes:
        raise ValueError(f"kept for {blob.get('ram_bytes')} bytes of RAM, not {ram_bytes}")
    if not isinstance(blob.get("registers"), dict):
        raise ValueError("no machine registers in it")
    return blob


def _read_fd(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


class MachineStore:
    """This run's hold on the place its machine is kept, and on what the last run left."""

    def __init__(self, state_dir: Path | None, passed: dict[str, int]) -> None:
        self.state_dir = state_dir
        self.passed = dict(passed)  # {name: fd} from $LISTEN_FDS (fd store or our re-exec)
        self.supervised = sdnotify.under_supervisor()
        self.refused: str | None = None  # why a handover that was there was not used
        self.moved_aside: list[dict[str, str]] = []

    def can_keep_across_exit(self) -> bool:
        return self.state_dir is not None or self.supervised

    def open_memory(self, ram_bytes: int) -> PhysicalMemory:
        """The RAM: the one passed in, else the state dir's file, else a fresh memfd."""
        from luod.hw.memory import PhysicalMemory

        fd = self.passed.pop(RAM_NAME, None)
        if fd is not None:
            return PhysicalMemory(ram_bytes, fd=fd)
        if self.state_dir is not None:
            return PhysicalMemory.backed_by(self.state_dir / RAM_FILE, ram_bytes)
        return PhysicalMemory(ram_bytes)

    def take_handover(self, ram_bytes: int, *, planned: bool) -> dict[str, Any] | None:
        """What the last run handed over, read once: consumed (closed, removed from the fd
        store, unlinked) whatever it holds. `planned`: the run record says the previous run
        stopped cleanly for a restart (a state dir's file counts only then)."""
        data: bytes | None = None
        fd = self.passed.pop(HANDOVER_NAME, None)
        if fd is not None:
            try:
                data = _read_fd(fd)
            except OSError as exc:
                self.refused = f"the {HANDOVER_NAME} fd cannot be read: {exc.strerror}"
            finally:
                os.close(fd)
            if self.supervised:
                sdnotify.remove_stored_fd(HANDOVER_NAME)
        path = None if self.state_dir is None else self.state_dir / HANDOVER_FILE
        from_file = False
        if path is not None and (path.exists() or path.is_symlink()):
            if data is None and planned:
                try:
                    data, from_file = read_regular_file(path), True
                except CorruptRecord as exc:
                    self.refused = f"{path}: {exc}"
                    self.moved_aside.append(move_aside(path, str(exc)))
            elif data is None:  # left by a run that did not stop cleanly: stale
                self.refused = f"{path} is stale: the previous run did not stop cleanly"
        blob: dict[str, Any] | None = None
        if data is not None:
            try:
                blob = decode_handover(data, ram_bytes)
            except ValueError as exc:
                self.refused = f"the handover of the previous run is unusable: {exc}"
                if from_file and path is not None:
                    self.moved_aside.append(move_aside(path, str(exc)))
        if self.refused is not None:
            log.warning("handover_refused", error=self.refused)
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()  # read once, whatever it held
        return blob

    def after_boot(self, memory: PhysicalMemory) -> None:
        """Under systemd, put the RAM in the fd store, so a restart (or `systemctl
        restart`) finds it; systemd keeps one copy per name across our restarts."""
        if self.supervised:
            sdnotify.remove_stored_fd(RAM_NAME)  # the copy from an earlier run, if any
            sdnotify.store_fd(memory.fileno(), RAM_NAME)

    def keep_for_next_start(self, blob: bytes) -> None:
        """A restart that exits: leave the handover where the next start looks. OSError
        if the state dir cannot be written."""
        if self.supervised:
            fd = os.memfd_create(HANDOVER_NAME, os.MFD_CLOEXEC)
            try:
                os.write(fd, blob)
                sdnotify.store_fd(fd, HANDOVER_NAME)
            finally:
                os.close(fd)
        if self.state_dir is not None:
            write_durably(self.state_dir / HANDOVER_FILE, blob)


def exec_self(blob: bytes, memory: PhysicalMemory, sockets: list[tuple[int, str]]) -> NoReturn:
    """Re-exec this luod with the same argv, passing `sockets` (activated ones, kept
    listening), the RAM and the handover as `$LISTEN_FDS` with names, from fd 3 on."""
    handover = os.memfd_create(HANDOVER_NAME, 0)
    os.write(handover, blob)
    passing = [*sockets, (memory.fileno(), RAM_NAME), (handover, HANDOVER_NAME)]
    parked = [(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _FD_FLOOR), name) for fd, name in passing]
    for index, (fd, _) in enumerate(parked):
        os.dup2(fd, sdnotify.SD_LISTEN_FDS_START + index, inheritable=True)
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ["LISTEN_FDS"] = str(len(parked))
    os.environ["LISTEN_FDNAMES"] = ":".join(name for _, name in parked)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
