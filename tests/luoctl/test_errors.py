"""Failures: each kind ends with its CLI.md exit code, one stderr line without --json, and
exactly one error document on stdout with it."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from luoctl.failures import Failure, classify
from luoctl.main import main
from luod.cli.exitcodes import ExitCode
from luod.ipc.errors import ConnectionLost, DaemonTimeout, PermissionDenied

from .conftest import Luoctl
from .fake_daemon import Answer, FakeDaemon, error

INCOMPATIBLE = error("luod.Incompatible", "ENOEXEC", "6.19.0 cannot read memfd-v2", "6.19.0")
NOT_OWNER = error("luod.NotOwner", "EPERM", "session vm1 belongs to uid 1000, not to uid 0", "vm1")
EXISTS = error("luod.SessionExists", "EEXIST", "session 'vm1' already exists", "vm1")


@pytest.mark.parametrize(
    "argv",
    [["check", "--to", "6.19.0"], ["load", "6.19.0"], ["update", "--to", "6.19.0"], ["kexec"]],
)
def test_incompatible_is_3(daemon: FakeDaemon, luoctl: Luoctl, argv: list[str]) -> None:
    daemon.answers[argv[0]] = INCOMPATIBLE
    run = luoctl(*argv)
    assert run.code == ExitCode.INCOMPATIBLE and run.out == ""
    assert run.err == "luoctl: 6.19.0 cannot read memfd-v2 (ENOEXEC)\n"


def test_incompatible_elsewhere_is_1(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["prepare"] = INCOMPATIBLE
    assert luoctl("prepare").code == ExitCode.FAILED


def test_not_owner_is_77(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["session.close"] = NOT_OWNER
    run = luoctl("session", "close", "vm1", json=True)
    assert run.code == ExitCode.NOPERM and run.err == ""
    assert run.json() == {
        "error": {
            "name": "luod.NotOwner",
            "errno": "EPERM",
            "message": "session vm1 belongs to uid 1000, not to uid 0",
            "object": "vm1",
        }
    }


def test_refusal_is_1_with_one_line(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["session.create"] = EXISTS
    run = luoctl("session", "create", "vm1")
    assert run.code == ExitCode.FAILED and run.out == ""
    assert run.err == "luoctl: session 'vm1' already exists (EEXIST)\n"


def test_error_json_document(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["session.create"] = EXISTS
    run = luoctl("session", "create", "vm1", json=True)
    assert run.code == 1 and run.err == ""
    assert run.json() == {
        "error": {
            "name": "luod.SessionExists",
            "errno": "EEXIST",
            "message": "session 'vm1' already exists",
            "object": "vm1",
        }
    }


def test_object_is_named_when_the_message_does_not(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["freeze"] = error("luod.Busy", None, "a participant\nsaid no", "vmm-7")
    run = luoctl("freeze")
    assert run.err == "luoctl: a participant said no [vmm-7]\n"


def test_bad_params_from_the_daemon_is_1(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["status"] = error("luod.BadParams", "EINVAL", "invalid params", "status")
    assert luoctl("status").code == 1


class TestUnreachable:
    def test_no_socket(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "absent.sock"
        assert main(["--socket", str(path), "status"]) == ExitCode.UNAVAILABLE
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == f"luoctl: no luod socket at {path} (is luod running?) (ENOENT)\n"

    def test_no_socket_json(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "absent.sock"
        assert main(["--json", "--socket", str(path), "status"]) == ExitCode.UNAVAILABLE
        captured = capsys.readouterr()
        assert captured.err == ""
        assert captured.out.count("\n") == 1
        assert '"name": "luoctl.DaemonUnreachable"' in captured.out
        assert f'"object": "{path}"' in captured.out

    def test_stale_socket(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "stale.sock"
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(path))
        stale.close()  # the file stays, nobody listens
        assert main(["--socket", str(path), "status"]) == ExitCode.UNAVAILABLE
        assert "(ECONNREFUSED)" in capsys.readouterr().err

    @pytest.fixture
    def mute(self, tmp_path: Path) -> Iterator[Path]:
        """A socket that accepts connections (backlog) and never says welcome."""
        path = tmp_path / "mute.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(4)
        yield path
        listener.close()

    def test_no_welcome_is_69(self, mute: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code = main(["--socket", str(mute), "--timeout", "0.2", "status"])
        assert code == ExitCode.UNAVAILABLE
        assert (
            capsys.readouterr().err
            == f"luoctl: luod at {mute} did not answer within 0.2 s (ETIMEDOUT)\n"
        )

    def test_permission_denied_is_77(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        def refuse(_sock: socket.socket, _address: object) -> None:
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(socket.socket, "connect", refuse)  # root ignores file modes
        assert main(["--socket", str(tmp_path / "s"), "status"]) == ExitCode.NOPERM
        err = capsys.readouterr().err
        path = tmp_path / "s"
        assert err == f"luoctl: permission denied connecting to the luod socket {path} (EACCES)\n"


def test_reply_timeout_is_1(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["status"] = Answer(result={}, delay=0.5)
    run = luoctl("status", timeout=0.1)
    assert run.code == ExitCode.FAILED
    assert (
        run.err == "luoctl: luod did not answer status within 0.1 s (see --timeout) (ETIMEDOUT)\n"
    )


def test_hang_up_mid_request_is_1(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["status"] = Answer(hang_up=True)
    run = luoctl("status", json=True)
    assert run.code == ExitCode.FAILED
    assert run.json()["error"]["name"] == "luoctl.ConnectionLost"


def test_interrupt_is_130(
    daemon: FakeDaemon, luoctl: Luoctl, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("luoctl.link.DaemonLink.call", interrupted)
    run = luoctl("status")
    assert run.code == ExitCode.INTERRUPTED
    assert run.err.startswith("luoctl: interrupted during status") and run.out == ""


class TestClassify:
    def test_transport_fallbacks(self) -> None:
        timeout = classify(DaemonTimeout("slow"), "status")
        lost = classify(ConnectionLost("gone"), "status")
        assert timeout is not None and (timeout.code, timeout.errno) == (1, "ETIMEDOUT")
        assert lost is not None and (lost.code, lost.errno) == (1, "ECONNRESET")

    def test_permission_denied(self) -> None:
        failure = classify(PermissionDenied("no", path="/s", errno=errno.EACCES), None)
        assert failure == Failure(ExitCode.NOPERM, "luoctl.PermissionDenied", "EACCES", "no", "/s")

    def test_bugs_are_not_classified(self) -> None:
        assert classify(ZeroDivisionError(), "status") is None
