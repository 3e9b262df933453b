"""Scenario 19: 2000 sessions and 500 memfds in one session survive a kexec."""

from __future__ import annotations

from luod.kernel_model.kernel import Kernel

from .conftest import new_memfd, opened, update


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
