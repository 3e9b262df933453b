"""Scenarios 16 (2026 mode) and 19: the 2026 limits, as the selftests exercise them
(kernel.md §6): 2000 sessions and 500 memfds in one session, with and without a kexec."""

from __future__ import annotations

from luod.hw.machine import Machine
from luod.kernel_model.kernel import BootConfig, Kernel
from luod.kernel_model.luo.state import Limits

from .conftest import new_memfd, opened, update

LIMITS_2026 = Limits.named("unlimited")


def kernel_2026(machine: Machine) -> Kernel:
    kernel = Kernel.cold_boot(machine, config=BootConfig(limits=LIMITS_2026))
    assert kernel.liveupdate().limits == Limits(None, None)  # chained blocks: no fixed caps
    return kernel


def test_preserve_many_sessions(machine: Machine) -> None:
    """Selftest preserve_many_sessions: create and close 2000 sessions."""
    kernel = kernel_2026(machine)
    luo = kernel.liveupdate()
    sessions = [luo.create_session(f"many-test-{i}") for i in range(2000)]
    assert len(luo.outgoing) == 2000
    for session in sessions:
        luo.close_session(session)
    assert not luo.outgoing


def test_preserve_many_files(machine: Machine) -> None:
    """Selftest preserve_many_files: 500 memfds preserved in one session, then closed."""
    kernel = kernel_2026(machine)
    luo = kernel.liveupdate()
    session = luo.create_session("many_files_session")
    memfds = [new_memfd(kernel, f"file-data-{i}".encode()) for i in range(500)]
    for i, memfd in enumerate(memfds):
        luo.preserve(session, i, memfd)
    assert len(session.files) == 500
    luo.close_session(session)
    assert kernel.kho_out.preserved.frame_count() == 1  # only the KHO root page
    assert memfds[499].read(0, 13) == b"file-data-499"


def test_many_sessions_and_files(kernel: Kernel) -> None:
    luo = kernel.liveupdate()
    for i in range(2000):
        luo.create_session(f"many-test-{i}")
    files = luo.create_session("many_files_session")
    for i in range(500):
        luo.preserve(files, i, new_memfd(kernel, f"file-data-{i}".encode()))
    nxt = opened(update(kernel))
    luo = nxt.liveupdate()
    assert len(luo.incoming) == 2001
    session = luo.retrieve_session("many_files_session")
    for i in range(500):
        want = f"file-data-{i}".encode()
        assert luo.retrieve_file(session, i).read(0, len(want)) == want  # type: ignore[attr-defined]
    for i in range(2000):
        luo.finish_session(luo.retrieve_session(f"many-test-{i}"))
    luo.finish_session(session)
    assert nxt.state == "normal"
