"""The command line alone: every command parses to its key, bad input is exit 2, and the
socket rule, exit codes and tables of commands agree with each other."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from luoctl.cli import build_parser
from luoctl.commands import COMMANDS
from luoctl.main import main
from luoctl.sockets import ROOT_SOCKET, default_socket_path
from luod.cli import argtypes
from luod.cli.exitcodes import ExitCode

# Every command of CLI.md's table,
# as (argv, command key).
COMMAND_LINES: list[tuple[list[str], str]] = [
    (["status"], "status"),
    (["kernel", "list"], "kernel.list"),
    (["kernel", "show", "6.19.0"], "kernel.show"),
    (["kernel", "matrix"], "kernel.matrix"),
    (["kernel", "matrix", "old.toml", "7.3.0"], "kernel.matrix"),
    (["kernel", "write", "memfd-v2", "off"], "kernel.write"),
    (["load", "7.0.0"], "load"),
    (["session", "create", "vm1"], "session.create"),
    (["session", "list"], "session.list"),
    (["session", "show", "vm1"], "session.show"),
    (["session", "close", "vm1"], "session.close"),
    (["session", "retrieve", "vm1"], "session.retrieve"),
    (["session", "finish", "vm1"], "session.finish"),
    (["memfd", "preserve", "vm1", "--token", "1", "--from", "/etc/hostname"], "memfd.preserve"),
    (["memfd", "retrieve", "vm1", "--token", "0x10", "--output", "x"], "memfd.retrieve"),
    (["file", "unpreserve", "vm1", "--token", "1"], "file.unpreserve"),
    (["file", "retrieve", "vm1", "--token", "1"], "file.retrieve"),
    (["file", "reclaim", "vm1", "--token", "2"], "file.reclaim"),
    (["apply", "plan.toml"], "apply"),
    (["check", "--to", "7.0.0"], "check"),
    (["prepare"], "prepare"),
    (["freeze"], "freeze"),
    (["cancel"], "cancel"),
    (["finish"], "finish"),
    (["kexec"], "kexec"),
    (["kexec", "--to", "7.0.0", "--force"], "kexec"),
    (["update", "--to", "7.0.0", "--timeout", "20", "--force"], "update"),
    (["boot", "--cold"], "boot.cold"),
    (["boot", "--cold", "--kernel", "6.19.0"], "boot.cold"),
    (["fault", "list"], "fault.list"),
    (["fault", "arm", "handler.prepare"], "fault.arm"),
    (
        ["fault", "arm", "handler.retrieve", "--always", "--errno", "EBUSY", "--match", "vm1/1"],
        "fault.arm",
    ),
    (["fault", "clear"], "fault.clear"),
    (["fault", "clear", "handler.prepare"], "fault.clear"),
    (["events"], "events"),
    (["events", "--follow"], "events"),
    (["device", "list"], "device.list"),
    (["kho", "dump"], "kho.dump"),
    (["kho", "dump", "--incoming", "--output", "blob.dtb"], "kho.dump"),
    (["daemon", "restart"], "daemon.restart"),
]


@pytest.mark.parametrize(
    ("argv", "key"), COMMAND_LINES, ids=[" ".join(a) for a, _ in COMMAND_LINES]
)
def test_every_command_parses(argv: list[str], key: str) -> None:
    args = build_parser().parse_args(argv)
    assert args.run == key
    assert args.json is False and args.timeout == 30.0 and args.socket is None


def test_every_key_has_code_and_renderer() -> None:
    keys = {key for _, key in COMMAND_LINES}
    assert keys == set(COMMANDS)
    rendered = {key for key, entry in COMMANDS.items() if entry.render is not None}
    assert rendered == keys - {"events"}  # events prints its own lines


def test_global_options() -> None:
    args = build_parser().parse_args(["--socket", "/s", "--json", "--timeout", "2.5", "status"])
    assert (args.socket, args.json, args.timeout) == ("/s", True, 2.5)


def test_json_after_the_command() -> None:
    assert build_parser().parse_args(["status", "--json"]).json is True
    # ... and a --json before the command is not reset by the subcommand's default.
    assert build_parser().parse_args(["--json", "session", "list"]).json is True


def test_update_timeout_is_not_the_global_one() -> None:
    args = build_parser().parse_args(["--timeout", "3", "update", "--to", "x", "--timeout", "90"])
    assert (args.timeout, args.update_timeout) == (3.0, 90.0)


def test_parsed_values() -> None:
    args = build_parser().parse_args(
        [
            *("memfd", "preserve", "s", "-t", "0xff", "--from", "f", "--size", "2M"),
            *("--seal", "seal,write", "--seal", "grow,seal", "--page-size", "2M"),
        ]
    )
    assert (args.token, args.size, args.page_size) == (255, 2 << 20, 2 << 20)
    # Repeats are kept here and collapse in the request (see test_commands).
    assert args.seals == ["seal", "write", "grow", "seal"]
    assert build_parser().parse_args(["kernel", "write", "f", "on"]).switch == "on"


class TestArgTypes:
    @pytest.mark.parametrize(
        ("text", "value"), [("0", 0), ("42", 42), ("0x2A", 42), ("0xffffffffffffffff", 2**64 - 1)]
    )
    def test_token(self, text: str, value: int) -> None:
        assert argtypes.token(text) == value

    @pytest.mark.parametrize(
        "text", ["-1", "18446744073709551616", "0x1" + "0" * 16, "abc", "1.5", ""]
    )
    def test_bad_token(self, text: str) -> None:
        with pytest.raises(Exception, match="invalid token"):
            argtypes.token(text)

    def test_seals(self) -> None:
        assert argtypes.seal_list("seal, write,,future_write,seal") == [
            "seal",
            "write",
            "future_write",
        ]
        assert argtypes.seal_list("") == []

    def test_seconds(self) -> None:
        assert argtypes.seconds("0.5") == 0.5
        for bad in ("0", "-1", "inf", "nan", "x"):
            with pytest.raises(Exception, match="invalid duration"):
                argtypes.seconds(bad)


def _usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run argv (no daemon needed: usage errors come first); assert exit 2; stderr."""
    assert main(argv) == ExitCode.USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["file", "retrieve", "s", "--token", "-5"], "invalid token '-5'"),
        (["file", "retrieve", "s", "--token", str(2**64)], "invalid token"),
        (["file", "retrieve", "s", "--token", "0xg"], "invalid token '0xg'"),
        (["file", "retrieve", "s"], "--token"),
        (["memfd", "preserve", "s", "-t", "1", "--from", "f", "--size", "2MB"], "invalid size"),
        (["memfd", "preserve", "s", "-t", "1", "--from", "f", "--size", "-1"], "invalid size"),
        (["memfd", "preserve", "s", "-t", "1", "--from", "f", "--seal", "seal,nail"], "'nail'"),
        (["memfd", "preserve", "s", "-t", "1"], "--from"),
        (["memfd", "preserve", "s", "-t", "1", "--fd", "x"], "invalid fd 'x'"),
        (["boot"], "--cold"),
        (["boot", "--kernel", "6.19.0"], "--cold"),
        (["kernel", "write", "memfd-v2", "maybe"], "invalid choice"),
        (["kernel"], "required"),
        (["--timeout", "0", "status"], "invalid duration"),
        (["check"], "--to"),
        (["update"], "--to"),
        (["nosuch"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _usage(argv, capsys)
    assert needle in err
    assert err.startswith("usage: luoctl")


class TestFdOption:
    @pytest.fixture
    def regular_fd(self) -> Iterator[int]:
        fd = os.open("/proc/self/status", os.O_RDONLY)
        yield fd
        os.close(fd)

    def test_fd_must_be_a_memfd(self, regular_fd: int, capsys: pytest.CaptureFixture[str]) -> None:
        err = _usage(["memfd", "preserve", "s", "-t", "1", "--fd", str(regular_fd)], capsys)
        assert f"fd {regular_fd} is not a memfd" in err

    def test_fd_must_be_open(self, capsys: pytest.CaptureFixture[str]) -> None:
        fd = os.open("/dev/null", os.O_RDONLY)
        os.close(fd)
        err = _usage(["memfd", "preserve", "s", "-t", "1", "--fd", str(fd)], capsys)
        assert f"fd {fd} is not open" in err

    def test_from_and_fd_exclude_each_other(self, capsys: pytest.CaptureFixture[str]) -> None:
        fd = os.memfd_create("both")
        try:
            argv = ["memfd", "preserve", "s", "-t", "1", "--from", "f", "--fd", str(fd)]
            assert "not allowed with argument" in _usage(argv, capsys)
        finally:
            os.close(fd)

    def test_memfd_is_accepted(self) -> None:
        fd = os.memfd_create("ok")
        try:
            args = build_parser().parse_args(["memfd", "preserve", "s", "-t", "1", "--fd", str(fd)])
            assert args.fd == fd
        finally:
            os.close(fd)


def test_usage_error_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "boot"]) == ExitCode.USAGE
    captured = capsys.readouterr()
    assert captured.err == ""
    error = json.loads(captured.out)["error"]
    assert error["name"] == "luoctl.Usage" and error["errno"] == "EINVAL"
    assert "--cold" in error["message"] and "object" in error


def test_no_command_prints_help_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == ExitCode.USAGE
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("usage: luoctl ")


def test_help_and_version_return_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("luoctl ")
    assert main(["memfd", "retrieve", "--help"]) == 0
    assert "--output" in capsys.readouterr().out


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, _ in COMMAND_LINES:
        words = [w for w in argv if not w.startswith("-")][:2]
        if words[0] not in (
            "kernel",
            "session",
            "memfd",
            "file",
            "fault",
            "device",
            "kho",
            "daemon",
        ):
            words = words[:1]
        assert main([*words, "--help"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: luoctl {' '.join(words)}")
        assert "--json" in out


class TestSocketPath:
    def test_env_wins(self) -> None:
        assert default_socket_path({"LUOD_SOCKET": "/x.sock"}, euid=0) == "/x.sock"

    def test_root(self) -> None:
        assert default_socket_path({"XDG_RUNTIME_DIR": "/run/user/0"}, euid=0) == ROOT_SOCKET

    def test_user(self) -> None:
        path = default_socket_path({"LUOD_SOCKET": "", "XDG_RUNTIME_DIR": "/run/user/1000"}, 1000)
        assert path == "/run/user/1000/luod/luod.sock"

    def test_none_is_a_usage_error(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.delenv("LUOD_SOCKET", raising=False)
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
        monkeypatch.setattr(os, "geteuid", lambda: 1000)
        assert main(["status"]) == ExitCode.USAGE
        captured = capsys.readouterr()
        assert captured.out == "" and "pass --socket" in captured.err
        assert captured.err.count("\n") == 1


def test_exit_codes_are_the_contract() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0,
        "FAILED": 1,
        "USAGE": 2,
        "INCOMPATIBLE": 3,
        "UNAVAILABLE": 69,
        "SOFTWARE": 70,
        "NOPERM": 77,
        "INTERRUPTED": 130,
    }
