"""Fixtures for luoctl's tests: a fake daemon on a temporary socket, and a runner that
calls `luoctl.main.main` in-process with that socket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from luoctl.main import main

from .fake_daemon import FakeDaemon


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[FakeDaemon]:
    fake = FakeDaemon(tmp_path / "luod.sock")
    try:
        yield fake
    finally:
        fake.close()


@dataclass
class Run:
    """The end of an in-process run: exit status and what went to stdout and stderr."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout as exactly one JSON document (fails the test otherwise)."""
        lines = self.out.splitlines()
        assert len(lines) == 1, f"expected one JSON line, got {self.out!r}"
        return json.loads(lines[0])


class Luoctl:
    """Runs luoctl in-process against the fake daemon's socket."""

    def __init__(self, daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
        self.daemon = daemon
        self.capsys = capsys

    def __call__(self, *argv: str, json: bool = False, timeout: float = 5) -> Run:
        args = ["--socket", str(self.daemon.path), "--timeout", str(timeout)]
        if json:
            args.append("--json")
        self.capsys.readouterr()  # drop anything printed before
        code = main([*args, *argv])
        self.daemon.wait_idle()
        captured = self.capsys.readouterr()
        return Run(int(code), captured.out, captured.err)


@pytest.fixture
def luoctl(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> Luoctl:
    return Luoctl(daemon, capsys)
