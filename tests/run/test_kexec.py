"""The two-stage kexec tests (reference/kernel.md §6.2) under luod-run: stage 1 preserves
and forks a holder, the operator runs `luoctl update`, stage 2 retrieves, verifies and
finishes; and the variant whose program calls reboot(RB_KEXEC) itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from luod_run.build import compiler, interposer
from tests.e2e.conftest import traversable_venv, wait_for
from tests.run.conftest import LUOD_RUN, Runner

__all__ = ["traversable_venv"]  # the e2e fixture, used here

REBOOT_C = r"""
#include <errno.h>
#include <stdio.h>
#include <sys/reboot.h>
int main(void) { int r = reboot(RB_KEXEC); printf("%d %d\n", r, errno); return 0; }
"""


@pytest.mark.parametrize("test", ["simple", "multi", "stress_sessions", "stress_files"])
def test_two_stage(runner: Runner, test: str) -> None:
    first = runner.program("luo_kexec", test)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "stage 1 done: run the kexec\n"
    before = runner.kexecs()
    runner.update()
    second = runner.program("luo_kexec", test, "--stage", "2")
    assert second.returncode == 0, second.stderr
    assert second.stdout == "TEST PASSED\n"
    assert runner.kexecs() == before + 1
    status = runner.luod.json("status")
    assert status["sessions"] == [] and status["state"] == "normal"  # type: ignore[index]


def test_reboot_rb_kexec_from_the_program(runner: Runner) -> None:
    before = runner.kexecs()
    first = runner.program("luo_kexec", "reboot")
    assert first.returncode == 0, first.stderr  # reboot() did not return: the machine went
    assert runner.kexecs() == before + 1
    second = runner.program("luo_kexec", "reboot", "--stage", "2")
    assert second.returncode == 0, second.stderr
    assert second.stdout == "TEST PASSED\n"


def test_the_kexec_ends_the_holder(runner: Runner) -> None:
    """Userspace dies at a kexec: the holder stage 1 left behind is gone after it."""
    assert runner.program("luo_kexec", "simple").returncode == 0
    holders = _holders()
    assert holders, "stage 1 left no holder"
    runner.update()
    wait_for(lambda: not set(holders) & set(_holders()), "the holder to die")
    assert runner.program("luo_kexec", "simple", "--stage", "2").returncode == 0


def test_other_reboot_commands_are_refused(runner: Runner) -> None:
    before = runner.kexecs()
    done = runner.run(
        "python3",
        "-c",
        "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True);"
        "r = libc.reboot(0x4321FEDC); print(r, ctypes.get_errno())",
    )
    assert done.stdout.split() == ["-1", "1"]  # EPERM; the machine is untouched
    assert runner.kexecs() == before


def _holders() -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"/luo_kexec") and argv[1:2] == [b"simple"]:
            found.append(int(pid))
    return found


@pytest.mark.usefixtures("traversable_venv")
def test_reboot_needs_root_or_luods_uid(
    runner: Runner, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """As the kernel wants CAP_SYS_BOOT: another uid's reboot(RB_KEXEC) is EPERM."""
    if os.getuid() != 0:
        pytest.skip("needs root to run a program as nobody")
    shared = Path(tempfile.mkdtemp(prefix="luod-run-nobody-"))
    try:
        shared.chmod(0o755)
        runner.luod.workdir.chmod(0o755)
        os.chmod(runner.luod.socket, 0o666)
        env = {**runner.toolchain.env, "LUOD_RUN_CACHE": str(shared / "cache")}
        interposer(env)
        (shared / "cache").chmod(0o755)
        (shared / "reboot.c").write_text(REBOOT_C)
        subprocess.run(
            [compiler(env), "-o", str(shared / "reboot"), str(shared / "reboot.c")], check=True
        )
        before = runner.kexecs()
        done = subprocess.run(
            [
                *("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"),
                *(LUOD_RUN, "--socket", str(runner.luod.socket), "--", str(shared / "reboot")),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=shared,
            timeout=60,
            check=False,
        )
        assert done.stdout.split() == ["-1", "1"], done.stderr  # EPERM
        assert runner.kexecs() == before
    finally:
        os.chmod(runner.luod.socket, 0o600)
        shutil.rmtree(shared, ignore_errors=True)
