"""luod-run end to end: a real luod, programs under the real `luod-run`. The interposer and
the C test programs are built once per session (the system compiler; skipped without one)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from luod_run.build import BuildError, compiler, interposer
from tests.e2e.conftest import LuodProcess, start_luod

LUOD_RUN = str(Path(sys.executable).parent / "luod-run")
C_DIR = Path(__file__).with_name("c")
PROGRAMS = ("liveupdate_test", "luo_kexec")


@attrs.frozen
class Toolchain:
    env: dict[str, str]
    programs: dict[str, Path]


@pytest.fixture(scope="session")
def toolchain(tmp_path_factory: pytest.TempPathFactory) -> Toolchain:
    out = tmp_path_factory.mktemp("luod-run")
    env = {**os.environ, "LUOD_RUN_CACHE": str(out / "cache")}
    try:
        cc = compiler(env)
        interposer(env)
    except BuildError as exc:
        pytest.skip(str(exc))
    programs = {}
    for name in PROGRAMS:
        programs[name] = out / name
        subprocess.run(
            # Fortified, as distributions build: open() then goes through __open_2 & co.
            [
                cc,
                "-O2",
                "-D_FORTIFY_SOURCE=2",
                "-Wall",
                "-o",
                str(programs[name]),
                str(C_DIR / f"{name}.c"),
            ],
            check=True,
        )
    return Toolchain(env, programs)


@attrs.frozen
class Runner:
    luod: LuodProcess
    toolchain: Toolchain

    def run(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [LUOD_RUN, "--socket", str(self.luod.socket), "--", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.toolchain.env,
            cwd=self.luod.workdir,
            check=False,
        )

    def program(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.toolchain.programs[name]), *args)

    def kexecs(self) -> int:
        """The running kernel's live-update number."""
        return int(self.luod.json("status")["kernel"]["liveupdate_number"])  # type: ignore[index]

    def update(self) -> None:
        """`luoctl update` into the running release, as the operator does between stages."""
        release = str(self.luod.json("status")["kernel"]["release"])  # type: ignore[index]
        self.luod.luoctl("update", "--to", release, check=True)


@pytest.fixture(scope="session")
def runner(toolchain: Toolchain) -> Iterator[Runner]:
    """One luod for every test here (starting one costs seconds): each test leaves no
    session behind and compares the live-update number with its own start."""
    workdir = Path(tempfile.mkdtemp(prefix="luod-run-"))
    running = start_luod(workdir)
    yield Runner(running, toolchain)
    if running.proc.poll() is None:
        running.proc.kill()
        running.proc.communicate()
    shutil.rmtree(workdir, ignore_errors=True)
