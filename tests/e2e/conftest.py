"""Real processes: the installed `luod` on a temporary socket, driven by `luoctl` (or the
blocking client) as subprocesses. Readiness is polled with a deadline, never slept for."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

BIN = Path(sys.executable).parent
LUOD = str(BIN / "luod")
LUOCTL = str(BIN / "luoctl")


def wait_for(predicate: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def accepts(path: Path) -> bool:
    import socket

    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
        return True
    except OSError:
        return False


@attrs.define
class LuodProcess:
    proc: subprocess.Popen[bytes]
    socket: Path
    workdir: Path

    def luoctl(
        self, *args: str, json_out: bool = True, check: bool = False, user: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [LUOCTL, "--socket", str(self.socket), *(["--json"] if json_out else []), *args]
        if user is not None:
            cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, cwd=self.workdir, check=False
        )
        if check:
            assert result.returncode == 0, result.stderr or result.stdout
        return result

    def json(self, *args: str) -> object:
        result = self.luoctl(*args, check=True)
        return json.loads(result.stdout)

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err.decode()


def start_luod(workdir: Path, *args: str, env: dict[str, str] | None = None) -> LuodProcess:
    sock = workdir / "luod.sock"
    proc = subprocess.Popen(
        [LUOD, "--socket", str(sock), "--log-format", "logfmt", "--ram", "16G", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    running = LuodProcess(proc, sock, workdir)
    try:
        wait_for(lambda: accepts(sock) or proc.poll() is not None, "luod to accept")
    except AssertionError:
        proc.kill()
        raise
    assert proc.poll() is None, proc.communicate()[1].decode()
    return running


@pytest.fixture
def traversable_venv() -> Iterator[None]:
    """Let other users reach the venv (and the checkout its editable install points into):
    CI clones into a private temporary directory. Adds o+x to each ancestor that lacks it,
    for the duration of the test, and restores the modes afterwards."""
    changed: list[tuple[Path, int]] = []
    for directory in Path(sys.executable).parent.resolve().parents:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            changed.append((directory, mode))
            directory.chmod(mode | stat.S_IXOTH)
    try:
        yield
    finally:
        for directory, mode in changed:
            directory.chmod(mode)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory other users can traverse (tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="luod-e2e-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def luod(workdir: Path) -> Iterator[LuodProcess]:
    running = start_luod(workdir)
    yield running
    if running.proc.poll() is None:
        running.proc.kill()
        running.proc.communicate()
