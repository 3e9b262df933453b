"""`memfd preserve` sends the right fd and params; `memfd retrieve` copies the received
memfd's bytes from offset 0, hashes them, and closes every fd it got."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from luoctl.human import human_bytes
from luoctl.main import main

from .conftest import Luoctl
from .fake_daemon import Answer, FakeDaemon, memfd_with

CONTENT = bytes(range(256)) * 40 + b"\xff\x00tail"  # not UTF-8: a binary-safe path


def fds_to(prefix: str) -> list[str]:
    """This process's fds whose /proc link starts with `prefix` (a path, `/memfd:NAME`).

    Compared by target, not by number: the fake daemon's threads open and close sockets
    concurrently."""
    links = []
    for name in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            continue  # the listdir's own fd, closed by now
    return [link for link in links if link.startswith(prefix)]


RETRIEVED = "/memfd:fake-retrieved"


class TestPreserve:
    def test_from_file(self, daemon: FakeDaemon, luoctl: Luoctl, tmp_path: Path) -> None:
        source = tmp_path / "guest.bin"
        source.write_bytes(CONTENT)
        daemon.answers["memfd.preserve"] = Answer(
            result={"token": 1, "size": len(CONTENT), "seals": ["seal"]}
        )
        run = luoctl(
            "memfd", "preserve", "vm1", "--token", "1", "--from", str(source), "--seal", "seal",
            json=True,
        )  # fmt: skip
        assert run.code == 0, run.err
        assert fds_to(str(source)) == []  # the file we opened is closed again
        assert run.json() == {"session": "vm1", "token": 1, "size": len(CONTENT), "seals": ["seal"]}
        seen = daemon.requests[-1]
        assert seen.params == {"session": "vm1", "token": 1, "size": None, "seals": ["seal"]}
        assert seen.fd_contents == [CONTENT] and seen.fd_is_memfd == [False]

    def test_progress_for_a_person_at_a_terminal(
        self,
        daemon: FakeDaemon,
        luoctl: Luoctl,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        source = tmp_path / "guest.bin"
        source.write_bytes(CONTENT)
        half = {"session": "vm1", "token": 1, "copied": len(CONTENT) // 2, "total": len(CONTENT)}
        daemon.answers["memfd.preserve"] = Answer(
            result={"token": 1, "size": len(CONTENT), "seals": []},
            events_before=[("memfd.progress", half)],
        )
        run = luoctl("memfd", "preserve", "vm1", "-t", "1", "--from", str(source))
        assert run.err == "" and "progress" not in daemon.requests[-1].params
        monkeypatch.setattr("luoctl.progress.stderr_is_terminal", lambda: True)
        monkeypatch.setattr("luoctl.progress.stdout_is_terminal", lambda: True)
        run = luoctl("memfd", "preserve", "vm1", "-t", "1", "--from", str(source), json=True)
        assert run.err == "" and "progress" not in daemon.requests[-1].params  # --json: never
        run = luoctl("memfd", "preserve", "vm1", "-t", "1", "--from", str(source))
        assert run.code == 0, run.err
        assert daemon.requests[-1].params["progress"] is True
        total = human_bytes(len(CONTENT))
        assert run.err.startswith(f"luoctl: copied {human_bytes(len(CONTENT) // 2)} of {total}")
        assert run.err.endswith(f"luoctl: copied {total} of {total} (100%)\n")

    def test_options(self, daemon: FakeDaemon, luoctl: Luoctl, tmp_path: Path) -> None:
        source = tmp_path / "f"
        source.write_bytes(b"abc")
        run = luoctl(
            "memfd", "preserve", "vm1", "-t", "0x2", "--from", str(source), "--size", "64K",
            "--seal", "write,grow", "--seal", "seal,write", "--name", "ram", "--page-size", "2M",
        )  # fmt: skip
        assert run.code == 0 and run.err == ""
        assert daemon.requests[-1].params == {
            "session": "vm1",
            "token": 2,
            "size": 64 << 10,
            "seals": ["write", "grow", "seal"],
            "name": "ram",
            "page_size": 2 << 20,
        }
        # The fake answered {}: the document falls back to what was asked.
        assert (
            run.out
            == "preserved memfd token 2 in session vm1: 65536 bytes, seals write,grow,seal\n"
        )

    def test_inherited_memfd(self, daemon: FakeDaemon, luoctl: Luoctl) -> None:
        fd = os.memfd_create("mine")
        try:
            os.write(fd, b"inherited bytes")
            run = luoctl("memfd", "preserve", "vm1", "-t", "5", "--fd", str(fd), json=True)
            assert run.code == 0, run.err
            os.fstat(fd)  # still open: an inherited fd belongs to the caller
        finally:
            os.close(fd)
        assert run.json() == {"session": "vm1", "token": 5, "size": 15, "seals": []}
        assert daemon.requests[-1].fd_contents == [b"inherited bytes"]
        assert daemon.requests[-1].fd_is_memfd == [True]

    def test_missing_file_fails_before_connecting(
        self, daemon: FakeDaemon, luoctl: Luoctl, tmp_path: Path
    ) -> None:
        run = luoctl("memfd", "preserve", "vm1", "-t", "1", "--from", str(tmp_path / "nope"))
        assert run.code == 1 and run.out == ""
        assert (
            run.err
            == f"luoctl: cannot open {tmp_path / 'nope'}: No such file or directory (ENOENT)\n"
        )
        assert daemon.requests == [] and daemon.clients == []

    def test_directory_is_refused(self, luoctl: Luoctl, tmp_path: Path) -> None:
        run = luoctl("memfd", "preserve", "vm1", "-t", "1", "--from", str(tmp_path), json=True)
        assert run.code == 1
        assert run.json()["error"]["message"] == f"{tmp_path} is not a regular file"


class TestRetrieve:
    @pytest.fixture(autouse=True)
    def script(self, daemon: FakeDaemon) -> Iterator[None]:
        # A memfd positioned past its start: the copy must still begin at offset 0.
        daemon.answers["memfd.retrieve"] = Answer(
            result={"token": 9, "size": len(CONTENT), "pos": 100, "seals": ["grow"]},
            fds=memfd_with(CONTENT, pos=100),
        )
        yield

    def test_output_file(self, daemon: FakeDaemon, luoctl: Luoctl, tmp_path: Path) -> None:
        out = tmp_path / "out.bin"
        out.write_bytes(b"old content that is longer than nothing" * 1000)  # truncated
        run = luoctl("memfd", "retrieve", "vm1", "--token", "9", "--output", str(out), json=True)
        assert run.code == 0, run.err
        assert fds_to(RETRIEVED) == [] and fds_to(str(out)) == []  # all closed
        assert out.read_bytes() == CONTENT
        assert run.json() == {
            "session": "vm1",
            "token": 9,
            "size": len(CONTENT),
            "pos": 100,
            "seals": ["grow"],
            "sha256": hashlib.sha256(CONTENT).hexdigest(),
            "output": str(out),
        }
        assert daemon.requests[-1].params == {"session": "vm1", "token": 9}

    def test_human_report(self, luoctl: Luoctl, tmp_path: Path) -> None:
        out = tmp_path / "o"
        run = luoctl("memfd", "retrieve", "vm1", "-t", "9", "-o", str(out))
        assert run.err == ""
        assert run.out.splitlines() == [
            f"retrieved memfd token 9 of session vm1: {len(CONTENT)} bytes, seals grow",
            f"sha256 {hashlib.sha256(CONTENT).hexdigest()}",
            f"written to {out}",
        ]

    def test_bytes_to_a_pipe(
        self, daemon: FakeDaemon, capsysbinary: pytest.CaptureFixture[bytes]
    ) -> None:
        code = main(["--socket", str(daemon.path), "memfd", "retrieve", "vm1", "-t", "9"])
        captured = capsysbinary.readouterr()
        assert code == 0
        assert captured.out == CONTENT and captured.err == b""

    def test_json_without_output_writes_no_bytes(self, luoctl: Luoctl) -> None:
        run = luoctl("memfd", "retrieve", "vm1", "-t", "9", json=True)
        document = run.json()
        assert document["sha256"] == hashlib.sha256(CONTENT).hexdigest()
        assert document["output"] is None

    def test_terminal_only_reports(self, luoctl: Luoctl, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("luoctl.memfd.stdout_is_terminal", lambda: True)
        run = luoctl("memfd", "retrieve", "vm1", "-t", "9")
        assert run.code == 0
        assert run.out.splitlines()[-1] == "not written: stdout is a terminal (use --output FILE)"

    def test_progress_only_for_a_person_at_a_terminal(
        self, luoctl: Luoctl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        out = tmp_path / "o"
        monkeypatch.setattr("luoctl.progress.stderr_is_terminal", lambda: True)
        run = luoctl("memfd", "retrieve", "vm1", "-t", "9", "-o", str(out), json=True)
        assert run.err == ""  # --json: never
        run = luoctl("memfd", "retrieve", "vm1", "-t", "9", "-o", str(out))
        assert run.err == ""  # stdout is not a terminal: never
        monkeypatch.setattr("luoctl.progress.stdout_is_terminal", lambda: True)
        run = luoctl("memfd", "retrieve", "vm1", "-t", "9", "-o", str(out))
        assert run.code == 0 and out.read_bytes() == CONTENT
        assert run.err.endswith(f"luoctl: copied {human_bytes(len(CONTENT))} of "
                                f"{human_bytes(len(CONTENT))} (100%)\n")  # fmt: skip
        assert run.out.splitlines()[-1] == f"written to {out}"

    def test_unwritable_output(self, luoctl: Luoctl, tmp_path: Path) -> None:
        run = luoctl("memfd", "retrieve", "vm1", "-t", "9", "-o", str(tmp_path / "no" / "x"))
        assert run.code == 1 and run.out == ""
        assert run.err.startswith(f"luoctl: cannot write {tmp_path / 'no' / 'x'}: ")
        assert run.err.endswith("(ENOENT)\n")
        assert fds_to(RETRIEVED) == []

    def test_reply_without_fd(self, daemon: FakeDaemon, luoctl: Luoctl) -> None:
        daemon.answers["memfd.retrieve"] = Answer(result={"token": 9, "size": 0})
        run = luoctl("memfd", "retrieve", "vm1", "-t", "9", json=True)
        assert run.code == 1
        assert run.json()["error"]["errno"] == "EBADF"
