"""luod-run's own exit statuses (CLI.md): the program's, 69, 70."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.run.conftest import LUOD_RUN, Runner, Toolchain


def test_exit_status_is_the_programs(runner: Runner) -> None:
    assert runner.run("sh", "-c", "exit 7").returncode == 7


def test_daemon_unreachable_exits_69(toolchain: Toolchain, tmp_path: Path) -> None:
    done = subprocess.run(
        [LUOD_RUN, "--socket", str(tmp_path / "none.sock"), "--", "true"],
        capture_output=True,
        text=True,
        env=toolchain.env,
        check=False,
    )
    assert done.returncode == 69
    assert "cannot reach luod" in done.stderr


def test_no_compiler_exits_70_and_says_so(toolchain: Toolchain, tmp_path: Path) -> None:
    env = {**toolchain.env, "PATH": str(tmp_path), "CC": "", "LUOD_RUN_CACHE": str(tmp_path)}
    done = subprocess.run(
        [LUOD_RUN, "--socket", str(tmp_path / "none.sock"), "--", "true"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 70
    assert "needs a C compiler" in done.stderr
