"""luod.daemon.main: the daemon's command line and its signal-driven lifetime."""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from luod.daemon.listener import NoSocketPath, default_socket_path
from luod.daemon.main import build_parser, main, parse_hugetlb

M, G = 1 << 20, 1 << 30


def test_defaults_match_the_cli_contract() -> None:
    """With no flags: 64G RAM, 2M=2048,1G=16 hugetlb, unlimited limits, auto/info logs."""
    args = build_parser().parse_args([])
    assert args.ram == 64 * G
    assert args.hugetlb == {2 * M: 2048, G: 16}
    assert args.limits == "unlimited"
    assert args.enable_faults is False
    assert (args.log_format, args.log_level) == ("auto", "info")
    assert (args.socket, args.state_dir, args.kernel) == (None, None, None)


def test_every_flag_parses() -> None:
    """Each flag of CLI.md is accepted and converted."""
    args = build_parser().parse_args(
        [
            "--socket=/tmp/x.sock",
            "--state-dir=/tmp/state",
            "--kernel=6.19.0",
            "--ram=1GiB",
            "--hugetlb=1G=2",
            "--limits=6.19",
            "--enable-faults",
            "--log-format=json",
            "--log-level=debug",
        ]
    )
    assert args.socket == Path("/tmp/x.sock")
    assert args.state_dir == Path("/tmp/state")
    assert args.kernel == "6.19.0"
    assert args.ram == G
    assert args.hugetlb == {2 * M: 0, G: 2}
    assert args.limits == "6.19"
    assert args.enable_faults is True
    assert (args.log_format, args.log_level) == ("json", "debug")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2M=2048,1G=16", {2 * M: 2048, G: 16}),
        ("1G=16,2M=2048", {2 * M: 2048, G: 16}),
        (" 2MiB = 4 , 1g=0 ", {2 * M: 4, G: 0}),
        ("2m=1", {2 * M: 1, G: 0}),
    ],
)
def test_parse_hugetlb_accepts(text: str, expected: dict[int, int]) -> None:
    """Both page sizes in any order and spelling; an omitted size gets 0 pages."""
    assert parse_hugetlb(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected SIZE=COUNT"),
        ("2M", "expected SIZE=COUNT"),
        ("2M=1,", "expected SIZE=COUNT"),
        ("4K=1", "page size '4K'"),
        ("3M=1", "page size '3M'"),
        ("huge=1", "page size 'huge'"),
        ("2M=-1", "page count '-1'"),
        ("2M=x", "page count 'x'"),
        ("2M=", "page count ''"),
        ("2M=1,2MiB=2", "given twice"),
    ],
)
def test_parse_hugetlb_rejects_with_clear_message(text: str, message: str) -> None:
    """Bad pools are usage errors whose message names the offending part."""
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_hugetlb(text)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ram=lots"], "invalid size 'lots'"),
        (["--ram=0"], "positive multiple of 4K"),
        (["--ram=1000"], "positive multiple of 4K"),
        (["--hugetlb=2M=x"], "page count 'x'"),
        (["--limits=6.18"], "invalid choice"),
        (["--log-format=xml"], "invalid choice"),
        (["--log-level=trace"], "invalid choice"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Invalid flags exit 2 before anything boots, with the reason on stderr."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_default_socket_path_follows_cli_md() -> None:
    """$LUOD_SOCKET, else /run/luod for root, else $XDG_RUNTIME_DIR/luod, else nothing."""
    assert default_socket_path({"LUOD_SOCKET": "/s"}, 0) == Path("/s")
    assert default_socket_path({}, 0) == Path("/run/luod/luod.sock")
    assert default_socket_path({"XDG_RUNTIME_DIR": "/run/user/7"}, 7) == Path(
        "/run/user/7/luod/luod.sock"
    )
    with pytest.raises(NoSocketPath):
        default_socket_path({}, 7)


# Runs the real main() in a child process with the machine boot replaced by a stub, so the
# signal handling is tested independently of the emulated machine. The stub reports on
# stderr when it starts and then dawdles (to let a test signal a booting daemon) or fails.
_CHILD = textwrap.dedent(
    """
    import sys, time
    from luod.daemon import boot

    real_build = boot.build_host

    def slow_build(ram_bytes, kernel, **kwargs):
        print("BOOTING", file=sys.stderr, flush=True)
        if sys.argv[1] == "fail":
            raise RuntimeError("no such machine")
        time.sleep(float(sys.argv[1]))
        return real_build(ram_bytes, kernel, **kwargs)

    boot.build_host = slow_build
    from luod.daemon.main import main
    sys.exit(main(sys.argv[2:]))
    """
)


class _Daemon:
    """The child's stderr, read unbuffered (so `communicate` can take over afterwards)."""

    def __init__(self, boot_delay: float | str, socket: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(boot_delay), "--log-format=logfmt", "--ram=1G"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "LUOD_SOCKET": str(socket)},
        )
        self.seen = b""

    def read_until(self, marker: str, timeout: float = 30.0) -> str:
        """Read stderr until `marker` appears; return everything read so far."""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        while marker.encode() not in self.seen:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(remaining, 0))
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:
                raise AssertionError(f"{marker!r} never logged; stderr: {self.seen.decode()}")
            self.seen += chunk
        return self.seen.decode()

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        """Wait for exit; return the status and the whole stderr."""
        _, rest = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, (self.seen + rest).decode()


@pytest.fixture
def daemons() -> Iterator[list[_Daemon]]:
    """Started children are killed at teardown if a test left them running."""
    started: list[_Daemon] = []
    yield started
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
        daemon.proc.communicate()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly(
    signum: signal.Signals, daemons: list[_Daemon], tmp_path: Path
) -> None:
    """After machine_up, SIGTERM or SIGINT logs shutdown and exits 0."""
    daemons.append(daemon := _Daemon(boot_delay=0, socket=tmp_path / "luod.sock"))
    up = daemon.read_until("event=machine_up").splitlines()[-1]
    assert "ram=1G" in up
    assert "release=" in up
    daemon.proc.send_signal(signum)
    status, err = daemon.finish()
    assert status == 0, err
    assert "event=shutdown" in err
    assert f"signal={signum.name}" in err


def test_signal_during_boot_is_held_until_the_loop_runs(
    daemons: list[_Daemon], tmp_path: Path
) -> None:
    """A SIGTERM that arrives while the machine boots is not fatal: boot ends, then exit 0."""
    daemons.append(daemon := _Daemon(boot_delay=1.0, socket=tmp_path / "luod.sock"))
    daemon.read_until("BOOTING")
    daemon.proc.send_signal(signal.SIGTERM)
    status, err = daemon.finish()
    assert status == 0, err
    assert err.index("event=machine_up") < err.index("event=shutdown")


def test_boot_failure_is_logged_and_exits_1(daemons: list[_Daemon], tmp_path: Path) -> None:
    """An exception from the machine boot is logged with its traceback; exit status 1."""
    daemons.append(daemon := _Daemon(boot_delay="fail", socket=tmp_path / "luod.sock"))
    status, err = daemon.finish()
    assert status == 1, err
    assert "event=boot_failed" in err
    assert "RuntimeError: no such machine" in err
