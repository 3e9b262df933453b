"""A program using only `os` and `fcntl.ioctl` on /dev/liveupdate, under luod-run: any
language that calls libc reaches luod's device the same way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import start_luod, wait_for
from tests.run.conftest import LUOD_RUN, Runner, Toolchain

PROGRAM = Path(__file__).with_name("uapi_program.py")


def test_python_program_speaks_the_uapi(runner: Runner) -> None:
    done = runner.run(sys.executable, str(PROGRAM), "basic")
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {
        "second_open": "EBUSY",
        "session_cloexec": True,
        "double_preserve": "EBUSY",
        "name": "py-session",
        "resize_preserved": "EPERM",
        "dev_null": "ENOENT",
        "short_struct": "EINVAL",
        "unknown_nr": "EINVAL",
        "finish_outgoing": "EINVAL",
    }
    # The program's exit closed (unpreserved) its session; luod sees the last close of a
    # socket asynchronously, so another client observes it within moments, not at once.
    wait_for(lambda: runner.luod.json("session", "list") == [], "the session to go")


def test_python_program_across_a_kexec(runner: Runner) -> None:
    first = runner.run(sys.executable, str(PROGRAM), "stage1")
    assert first.returncode == 0, first.stderr
    runner.update()
    second = runner.run(sys.executable, str(PROGRAM), "stage2")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == {
        "content": "written after PRESERVE_FD",
        "size": 8192,
        "seals": True,
    }


def test_closing_a_retrieved_session_finishes_it(runner: Runner) -> None:
    assert runner.run(sys.executable, str(PROGRAM), "stage1").returncode == 0
    runner.update()
    done = runner.run(sys.executable, str(PROGRAM), "close_retrieved")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"after_close": "ENOENT"}
    wait_for(lambda: runner.luod.json("status")["state"] == "normal", "the finish")  # type: ignore[index]


def test_open_after_a_failed_deserialize_is_eio(toolchain: Toolchain, tmp_path: Path) -> None:
    luod = start_luod(tmp_path, "--enable-faults")
    try:
        broken = Runner(luod, toolchain)
        luod.luoctl("fault", "arm", "luo.deserialize", check=True)
        broken.update()
        done = broken.run(sys.executable, str(PROGRAM), "open")
        assert json.loads(done.stdout) == {"open": "EIO"}
    finally:
        luod.stop()


def test_a_close_during_an_update_waits_for_its_end(runner: Runner) -> None:
    """An outgoing session closed while an update is prepared goes only when the update
    is over (the kernel's close blocks); luod keeps serving meanwhile."""
    with subprocess.Popen(
        [LUOD_RUN, "--socket", str(runner.luod.socket), "--", sys.executable, str(PROGRAM), "hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=runner.toolchain.env,
    ) as holder:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "ready\n"
        runner.luod.luoctl("prepare", check=True)
        holder.stdin.write("go\n")
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    opened = runner.run(sys.executable, str(PROGRAM), "open")  # the endpoint looks again
    assert json.loads(opened.stdout) == {"open": "ok"}
    names = [s["name"] for s in runner.luod.json("session", "list")]  # type: ignore[attr-defined]
    assert names == ["held"]
    runner.luod.luoctl("cancel", check=True)
    runner.run(sys.executable, str(PROGRAM), "open")
    wait_for(lambda: runner.luod.json("session", "list") == [], "the deferred close")
