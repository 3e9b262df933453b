"""The installed `luoctl` console script as a real process: exit codes, streams, signals,
pipes and a really inherited fd. The fake daemon runs in this test process."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest

from .fake_daemon import Answer, FakeDaemon, memfd_with

LUOCTL = str(Path(sys.executable).parent / "luoctl")


def run(*args: str, pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [LUOCTL, *args], capture_output=True, timeout=60, check=False, pass_fds=pass_fds
    )


def test_unreachable_exits_69_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nobody.sock"
    result = run("--socket", str(path), "status")
    assert result.returncode == 69
    assert result.stdout == b""
    assert (
        result.stderr.decode() == f"luoctl: no luod socket at {path} (is luod running?) (ENOENT)\n"
    )


def test_json_is_one_document(daemon: FakeDaemon) -> None:
    daemon.answers["session.list"] = Answer(result={"sessions": [{"name": "a", "files": []}]})
    result = run("--socket", str(daemon.path), "session", "list", "--json")
    assert result.returncode == 0 and result.stderr == b""
    assert json.loads(result.stdout) == [{"name": "a", "files": []}]
    assert result.stdout.count(b"\n") == 1


def test_inherited_memfd_and_binary_stdout(daemon: FakeDaemon) -> None:
    content = os.urandom(3 * 4096 + 17)
    fd = os.memfd_create("passed-down")
    try:
        os.write(fd, content)
        result = run(
            "--socket", str(daemon.path), "memfd", "preserve", "vm1", "-t", "7", "--fd", str(fd),
            pass_fds=(fd,),
        )  # fmt: skip
    finally:
        os.close(fd)
    assert result.returncode == 0, result.stderr
    assert daemon.requests[-1].fd_contents == [content]

    daemon.answers["memfd.retrieve"] = Answer(
        result={"token": 7, "size": len(content), "pos": 0, "seals": []}, fds=memfd_with(content)
    )
    result = run("--socket", str(daemon.path), "memfd", "retrieve", "vm1", "-t", "7")
    assert result.returncode == 0 and result.stderr == b""
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(content).digest()


def _follow(
    daemon: FakeDaemon,
) -> tuple[subprocess.Popen[bytes], IO[bytes], list[dict[str, object]]]:
    """Start `events --follow` against a daemon that ticks every 20 ms; read three lines."""
    daemon.answers["events.subscribe"] = Answer(result={"subscribed": True}, tick_after=0.02)
    proc = subprocess.Popen(
        [LUOCTL, "--socket", str(daemon.path), "events", "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = [json.loads(proc.stdout.readline()) for _ in range(3)]
    return proc, proc.stderr, first


def test_follow_until_sigint(daemon: FakeDaemon) -> None:
    proc, stderr, first = _follow(daemon)
    try:
        assert first[0]["event"] == "subscribed"
        assert [item["event"] for item in first[1:]] == ["tick", "tick"]
        assert [item["n"] for item in first[1:]] == [0, 1]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert stderr.read() == b""
    finally:
        proc.kill()
        proc.communicate()


def test_follow_into_a_closed_pipe(daemon: FakeDaemon) -> None:
    proc, stderr, first = _follow(daemon)
    try:
        assert first[0]["event"] == "subscribed"
        assert proc.stdout is not None
        proc.stdout.close()  # `luoctl events --follow | head -3`
        assert proc.wait(timeout=10) == 0
        assert stderr.read() == b""
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize("argv", [["boot"], ["memfd", "preserve", "s", "-t", "x", "--from", "f"]])
def test_usage_errors(argv: list[str]) -> None:
    result = run("--socket", "/nonexistent", *argv)
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr.startswith(b"usage: luoctl ")
