"""Scenarios 17-24, 33 and 34 of reference/kernel.md §9: LUO across kexecs."""

from __future__ import annotations

import pytest

from luod.kernel_model.errors import KernelError
from luod.kernel_model.files.memfd import MemfdFile, Seal
from luod.kernel_model.images import resolve
from luod.kernel_model.kernel import Kernel

from .conftest import new_memfd, opened, update


def retrieve(kernel: Kernel, session: str, token: int) -> MemfdFile:
    luo = kernel.liveupdate()
    memfd = luo.retrieve_file(luo.incoming[session], token)
    assert isinstance(memfd, MemfdFile)
    return memfd


def test_simple_kexec(kernel: Kernel) -> None:
    luo = kernel.liveupdate()
    state = luo.create_session("kexec_simple_state")
    luo.preserve(state, 999, new_memfd(kernel, b"2"))
    test = luo.create_session("test-session")
    luo.preserve(test, 0x1A, new_memfd(kernel, b"hello kexec world"))
    assert kernel.liveupdate_number == 0
    nxt = opened(update(kernel))
    assert nxt.state == "updated"
    assert nxt.liveupdate_number == 1
    luo = nxt.liveupdate()
    st = luo.retrieve_session("kexec_simple_state")
    assert luo.retrieve_file(st, 999).read(0, 1) == b"2"  # type: ignore[attr-defined]
    ts = luo.retrieve_session("test-session")
    memfd = luo.retrieve_file(ts, 0x1A)
    assert isinstance(memfd, MemfdFile)
    assert memfd.size == 17 and memfd.read(0, 17) == b"hello kexec world"
    luo.finish_session(ts)
    assert nxt.state == "updated"
    luo.finish_session(st)
    assert nxt.state == "normal"


def test_multi_session(kernel: Kernel) -> None:
    luo = kernel.liveupdate()
    luo.create_session("multi-test-empty-1")
    luo.create_session("multi-test-empty-2")
    luo.preserve(luo.create_session("multi-test-files-1"), 0x1001, new_memfd(kernel, b"one"))
    two = luo.create_session("multi-test-files-2")
    luo.preserve(two, 0x2002, new_memfd(kernel, b"two"))
    luo.preserve(two, 0x3003, new_memfd(kernel, b"three"))
    nxt = opened(update(kernel))
    luo = nxt.liveupdate()
    assert sorted(luo.incoming) == sorted(
        ["multi-test-empty-1", "multi-test-empty-2", "multi-test-files-1", "multi-test-files-2"]
    )
    for name in list(luo.incoming):
        luo.retrieve_session(name)
    assert retrieve(nxt, "multi-test-files-2", 0x3003).read(0, 5) == b"three"
    assert retrieve(nxt, "multi-test-files-1", 0x1001).read(0, 3) == b"one"
    nxt.finish()
    assert nxt.state == "normal" and not luo.incoming


def test_luo_multi_session(kernel: Kernel) -> None:
    """Selftest luo_multi_session: a state session and four test sessions (two empty);
    stage 2 retrieves all five, verifies the three memfds and FINISHes every session."""
    luo = kernel.liveupdate()
    luo.preserve(luo.create_session("kexec_multi_state"), 998, new_memfd(kernel, b"2"))
    luo.create_session("multi-test-empty-1")
    luo.create_session("multi-test-empty-2")
    luo.preserve(luo.create_session("multi-test-files-1"), 0x1001, new_memfd(kernel, b"one"))
    two = luo.create_session("multi-test-files-2")
    luo.preserve(two, 0x2002, new_memfd(kernel, b"two"))
    luo.preserve(two, 0x3003, new_memfd(kernel, b"three"))
    nxt = opened(update(kernel))
    luo = nxt.liveupdate()
    state = luo.retrieve_session("kexec_multi_state")
    assert luo.retrieve_file(state, 998).read(0, 1) == b"2"  # type: ignore[attr-defined]
    names = ["multi-test-empty-1", "multi-test-empty-2", "multi-test-files-1"]
    sessions = {name: luo.retrieve_session(name) for name in [*names, "multi-test-files-2"]}
    assert not sessions["multi-test-empty-1"].files and not sessions["multi-test-empty-2"].files
    assert retrieve(nxt, "multi-test-files-1", 0x1001).read(0, 3) == b"one"
    assert retrieve(nxt, "multi-test-files-2", 0x2002).read(0, 3) == b"two"
    assert retrieve(nxt, "multi-test-files-2", 0x3003).read(0, 5) == b"three"
    for session in sessions.values():
        luo.finish_session(session)
        assert nxt.state == "updated"  # the state session is still unfinished
    luo.finish_session(state)
    assert nxt.state == "normal" and not luo.incoming


def test_not_found_and_retrieve_twice(kernel: Kernel) -> None:
    luo = kernel.liveupdate()
    luo.create_session("once")
    nxt = opened(update(kernel))
    with pytest.raises(KernelError) as info:
        nxt.liveupdate().retrieve_session("nope")
    assert info.value.errno_name == "ENOENT"
    nxt.liveupdate().retrieve_session("once")
    with pytest.raises(KernelError) as info:
        nxt.liveupdate().retrieve_session("once")
    assert info.value.errno_name == "EINVAL"


def test_cold_kernel_has_no_incoming(kernel: Kernel) -> None:
    with pytest.raises(KernelError) as info:
        opened(kernel).liveupdate().retrieve_session("kexec_simple_state")
    assert info.value.errno_name == "ENOENT"


def test_retrieve_fd_rules(kernel: Kernel) -> None:
    luo = kernel.liveupdate()
    s = luo.create_session("s")
    for token in (1, 2, 3):
        luo.preserve(s, token, new_memfd(kernel, bytes([token]) * 4))
    nxt = opened(update(kernel))
    luo = nxt.liveupdate()
    session = luo.retrieve_session("s")
    with pytest.raises(KernelError) as info:
        luo.retrieve_file(session, 99)
    assert info.value.errno_name == "ENOENT"
    for token in (3, 2, 1):  # reverse order works
        assert retrieve(nxt, "s", token).read(0, 4) == bytes([token]) * 4
    first, again = luo.retrieve_file(session, 1), luo.retrieve_file(session, 1)
    assert first is again  # the same struct file: writes through one show in the other
    assert isinstance(first, MemfdFile)
    first.write(0, b"zz")
    assert again.read(0, 2) == b"zz"  # type: ignore[attr-defined]


def test_unreclaimed_file_is_released_at_finish(kernel: Kernel) -> None:
    luo = kernel.liveupdate()
    s = luo.create_session("s")
    luo.preserve(s, 0xA, new_memfd(kernel, b"a" * 4096 * 4))
    b = new_memfd(kernel, b"b" * 4096 * 8)
    luo.preserve(s, 0xB, b)
    b_pfns = b.folio_arrays()[1]
    nxt = opened(update(kernel))
    luo = nxt.liveupdate()
    session = luo.retrieve_session("s")
    retrieve(nxt, "s", 0xA)
    free_before = nxt.mm.free_frames()
    luo.finish_session(session)
    assert nxt.mm.free_frames() >= free_before + 8
    assert nxt.mm.free_extents_now().contains(b_pfns).all()
    assert nxt.memory.read(int(b_pfns[0]))[:1] == b"\0"


def test_implicit_finish_on_close(kernel: Kernel) -> None:
    from luod.kernel_model.luo import uapi

    luo = kernel.liveupdate()
    luo.preserve(luo.create_session("s"), 5, new_memfd(kernel, b"x"))
    nxt = update(kernel)
    dev = uapi.LiveUpdateDevice(nxt)
    dfd = dev.open()
    arg = uapi.session_struct(b"s")
    dev.ioctl(dfd, uapi.RETRIEVE_SESSION, arg)
    sfd = int.from_bytes(arg[4:8], "little", signed=True)
    fdarg = uapi.fd_struct(0, 5)
    dev.ioctl(sfd, uapi.SESSION_RETRIEVE_FD, fdarg)
    nxt.close(sfd)
    assert "s" not in nxt.liveupdate().incoming
    assert nxt.state == "normal"


def test_memfd_details_sparse_pos_and_seals(kernel: Kernel) -> None:
    kernel = Kernel.cold_boot(kernel.machine, resolve("7.0.0"), kernel.config)
    luo = kernel.liveupdate()
    s = luo.create_session("s")
    sparse = new_memfd(kernel)
    sparse.truncate(1 << 30)
    sparse.write(12345 * 4096 + 7, b"one page written")
    sealed = new_memfd(kernel, b"sealed")
    sealed.add_seals(Seal.GROW | Seal.SHRINK)
    luo.preserve(s, 1, sparse)
    luo.preserve(s, 2, sealed)
    sparse.seek(4242)  # moved after preserve: captured at freeze
    kernel.load(resolve("7.0.0"))
    nxt = opened(update(kernel))
    luo = nxt.liveupdate()
    luo.retrieve_session("s")
    got = retrieve(nxt, "s", 1)
    assert (got.size, got.pos) == (1 << 30, 4242)
    assert got.read(12345 * 4096 + 7, 16) == b"one page written"
    assert got.read(0, 4096) == bytes(4096)
    assert got.read((1 << 30) - 4096, 4096) == bytes(4096)
    assert retrieve(nxt, "s", 2).seals == Seal.GROW | Seal.SHRINK  # memfd-v2
    assert luo.incoming["s"].files[1].compatible == "memfd-v2"


def test_memfd_v1_drops_seals(kernel: Kernel) -> None:
    machine = kernel.machine
    old = Kernel.cold_boot(machine, resolve("6.19.0"), kernel.config)
    luo = old.liveupdate()
    sealed = new_memfd(old, b"sealed")
    sealed.add_seals(Seal.GROW | Seal.SHRINK)
    luo.preserve(luo.create_session("s"), 2, sealed)
    nxt = opened(update(old))
    nxt.liveupdate().retrieve_session("s")
    got = retrieve(nxt, "s", 2)
    assert nxt.liveupdate().incoming["s"].files[0].compatible == "memfd-v1"
    assert got.seals == Seal(0)
    assert got.read(0, 6) == b"sealed"


def test_hugetlb_memfd_refused_without_its_handler(kernel: Kernel) -> None:
    """A 7.0.0 kernel has no hugetlb handler: the memfd handler takes shmem memfds only."""
    from luod.kernel_model.files.memfd import HugetlbMemfdFile

    old = Kernel.cold_boot(kernel.machine, resolve("7.0.0"), kernel.config)
    luo = old.liveupdate()
    huge = HugetlbMemfdFile(old.memory, old.mm, folio_order=9)
    with pytest.raises(KernelError) as info:
        luo.preserve(luo.create_session("s"), 1, huge)
    assert info.value.errno_name == "ENOENT"


def test_three_kexecs_represerving(kernel: Kernel) -> None:
    layout = kernel.mm.scratch
    memfd = new_memfd(kernel, b"survives every hop" * 1000)
    for hop in range(1, 4):
        luo = kernel.liveupdate()
        luo.preserve(luo.create_session(f"hop{hop}"), 7, memfd)
        kernel = opened(update(kernel))
        assert kernel.liveupdate_number == hop
        assert kernel.mm.scratch == layout
        luo = kernel.liveupdate()
        luo.retrieve_session(f"hop{hop}")
        memfd = retrieve(kernel, f"hop{hop}", 7)
        assert memfd.read(0, 18 * 1000) == b"survives every hop" * 1000
        # keep it: take it into the process, then finish the incoming session
        kernel.install(memfd)
        kernel.finish()
    assert kernel.liveupdate_number == 3


def test_sessions_created_before_the_incoming_ones_finish(kernel: Kernel) -> None:
    """The kernel keeps the incoming and outgoing lists apart: CREATE_SESSION works while
    incoming sessions are unfinished, also for a name an incoming session has; a retrieved
    file is still LUO's until its session finishes (EBUSY), then it may be preserved."""
    luo = kernel.liveupdate()
    luo.preserve(luo.create_session("s"), 1, new_memfd(kernel, b"carried"))
    nxt = opened(update(kernel))
    luo = nxt.liveupdate()
    assert nxt.state == "updated"
    fresh = luo.create_session("fresh")
    again = luo.create_session("s")
    assert sorted(luo.outgoing) == ["fresh", "s"] and "s" in luo.incoming
    luo.preserve(fresh, 1, new_memfd(nxt, b"new"))
    incoming = luo.retrieve_session("s")
    memfd = retrieve(nxt, "s", 1)
    with pytest.raises(KernelError) as info:
        luo.preserve(again, 1, memfd)
    assert info.value.errno_name == "EBUSY"
    nxt.install(memfd)  # keep it past the finish
    luo.finish_session(incoming)
    assert nxt.state == "normal"
    luo.preserve(again, 1, memfd)
    final = opened(update(nxt))
    assert sorted(final.liveupdate().incoming) == ["fresh", "s"]
    final.liveupdate().retrieve_session("s")
    assert retrieve(final, "s", 1).read(0, 7) == b"carried"


def test_finish_empties_the_file_set(kernel: Kernel) -> None:
    """After FINISH, RETRIEVE_FD gives ENOENT and a second FINISH returns 0."""
    from luod.kernel_model.luo import uapi

    luo = kernel.liveupdate()
    luo.preserve(luo.create_session("s"), 5, new_memfd(kernel, b"x"))
    nxt = update(kernel)
    dev = uapi.LiveUpdateDevice(nxt)
    arg = uapi.session_struct(b"s")
    dev.ioctl(dev.open(), uapi.RETRIEVE_SESSION, arg)
    sfd = int.from_bytes(arg[4:8], "little", signed=True)
    assert dev.ioctl(sfd, uapi.SESSION_RETRIEVE_FD, uapi.fd_struct(0, 5)) == 0
    assert dev.ioctl(sfd, uapi.SESSION_FINISH, uapi.finish_struct()) == 0
    with pytest.raises(KernelError) as info:
        dev.ioctl(sfd, uapi.SESSION_RETRIEVE_FD, uapi.fd_struct(0, 5))
    assert info.value.errno_name == "ENOENT"
    assert dev.ioctl(sfd, uapi.SESSION_FINISH, uapi.finish_struct()) == 0
    assert nxt.state == "normal" and not nxt.liveupdate().incoming
    nxt.close(sfd)
