"""luoctl's short path (`luoctl.quick`): `status` prints what the full path prints, loads
none of the full path's modules, and leaves everything it does not handle to the full path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import luoctl.main
from luoctl.main import main
from luoctl.quick import _parse

from .fake_daemon import Answer, FakeDaemon, error

STATUS = {
    "state": "normal",
    "kernel": {"release": "6.19.0", "liveupdate_number": 0},
    "machine": {"ram": 1 << 30, "resident": 4096, "pci_devices": 2},
    "sessions": [],
}

# Modules of the full path: each one the short path loads costs every `luoctl status`.
FULL_PATH_MODULES = ("argparse", "attrs", "attr", "cattrs", "luoctl.cli", "luod.ipc.messages")


def _full(argv: list[str]) -> int:
    return luoctl.main._full(argv)


@pytest.mark.parametrize("json", [False, True])
def test_short_path_prints_what_the_full_path_prints(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], json: bool
) -> None:
    daemon.answers["status"] = Answer(result=STATUS)
    argv = ["--socket", str(daemon.path), *(["--json"] if json else []), "status"]
    assert _full(argv) == 0
    daemon.wait_idle()
    full = capsys.readouterr()
    assert main(argv) == 0
    daemon.wait_idle()
    short = capsys.readouterr()
    assert (short.out, short.err) == (full.out, full.err) and "normal" in short.out
    assert daemon.methods() == ["status", "status"] and daemon.clients == ["luoctl", "luoctl"]


def test_status_takes_the_short_path(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon.answers["status"] = Answer(result=STATUS)

    def no_full_path(argv: list[str]) -> int:
        raise AssertionError(f"the full path ran for {argv}")

    monkeypatch.setattr(luoctl.main, "_full", no_full_path)
    for argv in (
        ["--socket", str(daemon.path), "status"],
        [f"--socket={daemon.path}", "status", "--json"],
        ["--json", "--socket", str(daemon.path), "status"],
    ):
        assert main(argv) == 0
    assert daemon.methods() == ["status"] * 3


def test_an_error_reply_is_reported_by_the_full_path(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["status"] = error("luod.Busy", "EBUSY", "busy right now", "machine")
    argv = ["--socket", str(daemon.path), "status"]
    assert _full(argv) == 1
    daemon.wait_idle()
    full = capsys.readouterr()
    assert main(argv) == 1
    daemon.wait_idle()
    assert capsys.readouterr() == full and "busy right now" in full.err
    # The short path's call, then the full path's: status changes nothing.
    assert daemon.methods() == ["status"] * 3


def test_no_daemon_is_reported_by_the_full_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--socket", str(tmp_path / "none.sock"), "status"]
    assert main(argv) == 69
    assert "none.sock" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "parsed"),
    [
        (["status"], ("status", None, False)),
        (["--json", "status"], ("status", None, True)),
        (["status", "--json"], ("status", None, True)),
        (["--socket", "/s", "status"], ("status", "/s", False)),
        (["--socket=/s", "--json", "status"], ("status", "/s", True)),
        (["--timeout", "5", "status"], None),  # the full path's options
        (["--so", "/s", "status"], None),  # argparse's abbreviations
        (["--socket", "/s", "--socket", "/t", "status"], None),
        (["--socket", "-x", "status"], None),
        (["--socket=", "status"], None),
        (["--json=1", "status"], None),
        (["status", "--socket", "/s"], None),
        (["status", "extra"], None),
        (["--", "status"], None),
        (["session", "list"], None),
        (["--help"], None),
        ([], None),
    ],
)
def test_only_the_short_forms_take_the_short_path(
    argv: list[str], parsed: tuple[str, str | None, bool] | None
) -> None:
    assert _parse(argv) == parsed


def test_short_path_loads_none_of_the_full_path(daemon: FakeDaemon) -> None:
    """The installed console script, `luoctl status` against a daemon: no argparse, attrs,
    cattrs or envelope classes among the modules it imported."""
    daemon.answers["status"] = Answer(result=STATUS)
    script = Path(sys.executable).parent / "luoctl"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(script), "--socket", str(daemon.path), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "normal" in result.stdout
    modules = {
        line.split("|")[2].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert "luod.ipc.oneshot" in modules  # the import really was traced
    loaded = sorted(m for m in modules if m.startswith(FULL_PATH_MODULES))
    assert loaded == []
