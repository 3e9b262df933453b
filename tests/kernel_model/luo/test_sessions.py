"""Scenarios 1-16, 26 and 28 of reference/kernel.md §9: LUO without a kexec."""

from __future__ import annotations

import errno

import pytest

from luod.hw.machine import Machine
from luod.kernel_model.errors import KernelError
from luod.kernel_model.files.base import File
from luod.kernel_model.kernel import BootConfig, Kernel
from luod.kernel_model.luo import uapi
from luod.kernel_model.luo.handler import OutgoingFile
from luod.kernel_model.luo.state import Limits

from .conftest import new_memfd


def errno_of(exc: pytest.ExceptionInfo[KernelError]) -> str:
    return exc.value.errno_name


# 1, 2, 3 -----------------------------------------------------------------------------------


def test_open_close_and_exclusive(kernel: Kernel) -> None:
    dev = uapi.LiveUpdateDevice(kernel)
    fd = dev.open()
    with pytest.raises(KernelError) as info:
        dev.open()
    assert errno_of(info) == "EBUSY"
    kernel.close(fd)
    kernel.close(dev.open())


def test_device_absent_when_liveupdate_off(machine: Machine) -> None:
    kernel = Kernel.cold_boot(machine, config=BootConfig(liveupdate=False))
    with pytest.raises(KernelError) as info:
        uapi.LiveUpdateDevice(kernel).open()
    assert errno_of(info) == "ENOENT"


# 4, 5, 6, 7 --------------------------------------------------------------------------------


def test_duplicate_and_distinct_sessions(kernel: Kernel) -> None:
    luo = kernel.liveupdate()
    first = luo.create_session("duplicate-session-test")
    with pytest.raises(KernelError) as info:
        luo.create_session("duplicate-session-test")
    assert errno_of(info) == "EEXIST"
    assert luo.outgoing["duplicate-session-test"] is first
    luo.create_session("distinct-session-1")
    luo.create_session("distinct-session-2")
    assert len(luo.outgoing) == 3


def test_bad_names_and_get_name(kernel: Kernel) -> None:
    dev = uapi.LiveUpdateDevice(kernel)
    dfd = dev.open()
    for name in (b"", b"A" * 64):
        with pytest.raises(KernelError) as info:
            dev.ioctl(dfd, uapi.CREATE_SESSION, uapi.session_struct(name))
        assert errno_of(info) == "EINVAL"
    arg = uapi.session_struct(b"A" * 63)
    assert dev.ioctl(dfd, uapi.CREATE_SESSION, arg) == 0
    sfd = int.from_bytes(arg[4:8], "little", signed=True)
    got = bytearray(72)
    got[0:4] = (72).to_bytes(4, "little")
    dev.ioctl(sfd, uapi.SESSION_GET_NAME, got)
    assert bytes(got[8:71]) == b"A" * 63 and got[71] == 0


def _get_name(size: int, reserved: int = 0) -> bytearray:
    arg = bytearray(72)
    arg[0:8] = size.to_bytes(4, "little") + reserved.to_bytes(4, "little")
    return arg


def test_get_name_rules(kernel: Kernel) -> None:
    """A nonzero `reserved` is EINVAL; the minimum size is the kernel's table entry (16
    bytes), below the full 72, and the copy-back stops at the declared size."""
    dev = uapi.LiveUpdateDevice(kernel)
    arg = uapi.session_struct(b"a-session-name")
    dev.ioctl(dev.open(), uapi.CREATE_SESSION, arg)
    sfd = int.from_bytes(arg[4:8], "little", signed=True)
    for bad in (_get_name(72, reserved=1), _get_name(12), _get_name(4)):
        with pytest.raises(KernelError) as info:
            dev.ioctl(sfd, uapi.SESSION_GET_NAME, bad)
        assert errno_of(info) == "EINVAL"
    short = _get_name(16)
    assert dev.ioctl(sfd, uapi.SESSION_GET_NAME, short) == 0
    assert bytes(short[8:16]) == b"a-sessio" and not any(short[16:])
    full = _get_name(72)
    assert dev.ioctl(sfd, uapi.SESSION_GET_NAME, full) == 0
    assert bytes(full[8:23]) == b"a-session-name\0"


def test_struct_size_rules(kernel: Kernel) -> None:
    dev = uapi.LiveUpdateDevice(kernel)
    dfd = dev.open()
    with pytest.raises(KernelError) as info:
        dev.ioctl(dfd, uapi.CREATE_SESSION, uapi.session_struct(b"x", size=4))
    assert errno_of(info) == "EINVAL"
    big = uapi.session_struct(b"x", size=80)
    big[76] = 1
    with pytest.raises(KernelError) as info:
        dev.ioctl(dfd, uapi.CREATE_SESSION, big)
    assert errno_of(info) == "E2BIG"
    big[76] = 0
    assert dev.ioctl(dfd, uapi.CREATE_SESSION, big) == 0  # zero tail is fine
    sfd = int.from_bytes(big[4:8], "little", signed=True)
    # The kernel's range check: a number outside the fd's table is EINVAL, a device
    # number on a session fd and a session number on /dev/liveupdate too.
    for fd, cmd in (
        (sfd, uapi.io(0x7F)),
        (sfd, uapi.CREATE_SESSION),
        (sfd, uapi.io(0x44)),
        (dfd, uapi.SESSION_PRESERVE_FD),
        (dfd, uapi.io(0x02)),
    ):
        with pytest.raises(KernelError) as info:
            dev.ioctl(fd, cmd, uapi.fd_struct(0, 0))
        assert errno_of(info) == "EINVAL", hex(cmd)


def _iow(cmd: int, size: int) -> int:
    """`cmd` re-encoded as `_IOW`: direction write and a size, same type and number."""
    return cmd | 1 << 30 | size << 16


def test_command_word_is_decoded_whole(kernel: Kernel) -> None:
    """A number in range but a word that is not exactly `_IO(0xBA, nr)` is ENOTTY; a
    number out of range is EINVAL whatever the rest of the word says."""
    dev = uapi.LiveUpdateDevice(kernel)
    dfd = dev.open()
    arg = uapi.session_struct(b"s")
    dev.ioctl(dfd, uapi.CREATE_SESSION, arg)
    sfd = int.from_bytes(arg[4:8], "little", signed=True)
    memfd = kernel.memfd_create("m")
    for fd, cmd, code in (
        (dfd, _iow(uapi.CREATE_SESSION, 72), "ENOTTY"),
        (dfd, uapi.io(0x00, ioc_type=0xBB), "ENOTTY"),
        (sfd, _iow(uapi.SESSION_PRESERVE_FD, 16), "ENOTTY"),
        (sfd, uapi.io(0x40, ioc_type=0x00), "ENOTTY"),
        (sfd, _iow(uapi.io(0x7F), 16), "EINVAL"),
        (dfd, uapi.io(0x40, ioc_type=0xBB), "EINVAL"),
    ):
        with pytest.raises(KernelError) as info:
            dev.ioctl(fd, cmd, uapi.fd_struct(memfd, 1))
        assert errno_of(info) == code, hex(cmd)
    assert not kernel.liveupdate().outgoing["s"].files  # nothing was preserved
    assert dev.ioctl(sfd, uapi.SESSION_PRESERVE_FD, uapi.fd_struct(memfd, 1)) == 0


def test_session_direction_is_checked_before_the_size(kernel: Kernel) -> None:
    dev = uapi.LiveUpdateDevice(kernel)
    arg = uapi.session_struct(b"out")
    dev.ioctl(dev.open(), uapi.CREATE_SESSION, arg)
    sfd = int.from_bytes(arg[4:8], "little", signed=True)
    short = bytearray((4).to_bytes(4, "little")) + bytearray(12)
    for cmd in (uapi.SESSION_FINISH, uapi.SESSION_RETRIEVE_FD):
        for buf in (uapi.finish_struct(), short):
            with pytest.raises(KernelError) as info:
                dev.ioctl(sfd, cmd, bytearray(buf))
            assert errno_of(info) == "EINVAL" and "outgoing" in info.value.message
    with pytest.raises(KernelError) as info:
        dev.ioctl(sfd, uapi.SESSION_PRESERVE_FD, bytearray(short))
    assert errno_of(info) == "EINVAL" and "minimum 16" in info.value.message


# 8, 9, 10, 11 ------------------------------------------------------------------------------


def test_preserve_then_close_leaves_memfd_usable(kernel: Kernel) -> None:
    luo = kernel.liveupdate()
    session = luo.create_session("s")
    memfd = new_memfd(kernel, b"hello liveupdate")
    luo.preserve(session, 0x1234, memfd)
    luo.close_session(session)
    assert memfd.read(0, 16) == b"hello liveupdate"
    memfd.truncate(8192)  # the mapping is unfrozen again
    assert memfd.size == 8192


def test_frozen_mapping(kernel: Kernel) -> None:
    luo = kernel.liveupdate()
    memfd = new_memfd(kernel, b"x" * 5000)
    luo.preserve(luo.create_session("s"), 1, memfd)
    for attempt in (
        lambda: memfd.truncate(100),
        lambda: memfd.truncate(1 << 20),
        lambda: memfd.fallocate(0, 1 << 20),
        lambda: memfd.fallocate(0, 4096, punch_hole=True, keep_size=True),
        lambda: memfd.write(5000, b"past the end"),
    ):
        with pytest.raises(KernelError) as info:
            attempt()
        assert errno_of(info) == "EPERM"
    memfd.write(10, b"inside")
    assert memfd.read(10, 6) == b"inside"


def test_multiple_and_complex(kernel: Kernel) -> None:
    luo = kernel.liveupdate()
    s1, s2 = luo.create_session("one"), luo.create_session("two")
    a, b = new_memfd(kernel, b"A" * 100), new_memfd(kernel, b"B" * 100)
    luo.preserve(s1, 0xAAAA, a)
    luo.preserve(s1, 0xBBBB, b)
    c, d = new_memfd(kernel, b"C"), new_memfd(kernel)
    luo.preserve(s2, 0x1111, c)
    luo.preserve(s2, 0x2222, d)
    assert (a.read(0, 100), b.read(0, 100)) == (b"A" * 100, b"B" * 100)
    assert d.read(0, 10) == b""


def test_preserve_complex_scenario(kernel: Kernel) -> None:
    """Selftest preserve_complex_scenario: two sessions, each with one data memfd and one
    empty memfd; both sessions closed, the data intact and the empty ones read 0 bytes."""
    luo = kernel.liveupdate()
    s1, s2 = luo.create_session("complex-1"), luo.create_session("complex-2")
    data1, empty1 = new_memfd(kernel, b"data for session one"), new_memfd(kernel)
    data2, empty2 = new_memfd(kernel, b"data for session two"), new_memfd(kernel)
    luo.preserve(s1, 0x1111, data1)
    luo.preserve(s1, 0x2222, empty1)
    luo.preserve(s2, 0x3333, data2)
    luo.preserve(s2, 0x4444, empty2)
    assert [f.token for f in s1.files] == [0x1111, 0x2222]
    assert [f.token for f in s2.files] == [0x3333, 0x4444]
    luo.close_session(s1)
    luo.close_session(s2)
    assert data1.read(0, 20) == b"data for session one"
    assert data2.read(0, 20) == b"data for session two"
    assert (empty1.size, empty1.read(0, 10), empty2.read(0, 10)) == (0, b"", b"")


# 12, 13, 14, 15, 16 -------------------------------------------------------------------------


def test_unsupported_file(kernel: Kernel) -> None:
    luo = kernel.liveupdate()
    with pytest.raises(KernelError) as info:
        luo.preserve(luo.create_session("s"), 1, kernel.install(File()))  # like /dev/null
    assert errno_of(info) == "ENOENT"


def test_duplicate_token_and_double_preservation(kernel: Kernel) -> None:
    luo = kernel.liveupdate()
    s1, s2 = luo.create_session("one"), luo.create_session("two")
    m1, m2 = new_memfd(kernel, b"1"), new_memfd(kernel, b"2")
    luo.preserve(s1, 7, m1)
    with pytest.raises(KernelError) as info:
        luo.preserve(s1, 7, m2)
    assert errno_of(info) == "EEXIST"
    luo.preserve(s2, 7, m2)  # the same token in another session is fine
    with pytest.raises(KernelError) as info:
        luo.preserve(s2, 8, m1)
    assert errno_of(info) == "EBUSY"
    with pytest.raises(KernelError) as info:
        luo.preserve(s1, 9, m1)
    assert errno_of(info) == "EBUSY"


def test_bad_fd(kernel: Kernel) -> None:
    dev = uapi.LiveUpdateDevice(kernel)
    dfd = dev.open()
    arg = uapi.session_struct(b"s")
    dev.ioctl(dfd, uapi.CREATE_SESSION, arg)
    sfd = int.from_bytes(arg[4:8], "little", signed=True)
    for bad in (-1, 999):
        with pytest.raises(KernelError) as info:
            dev.ioctl(sfd, uapi.SESSION_PRESERVE_FD, uapi.fd_struct(bad, 1))
        assert errno_of(info) == "EBADF"
    mfd = kernel.memfd_create("m")
    dev.ioctl(sfd, uapi.SESSION_PRESERVE_FD, uapi.fd_struct(mfd, 1))
    kernel.close(mfd)  # LUO holds its own reference
    assert kernel.liveupdate().outgoing["s"].files[0].file.refs == 1


def test_capacity_with_619_limits(machine: Machine) -> None:
    kernel = Kernel.cold_boot(machine, config=BootConfig(limits=Limits.named("6.19")))
    luo = kernel.liveupdate()
    session = luo.create_session("full")
    for token in range(128):
        luo.preserve(session, token, new_memfd(kernel))
    with pytest.raises(KernelError) as info:
        luo.preserve(session, 128, new_memfd(kernel))
    assert errno_of(info) == "ENOSPC"
    for i in range(743):
        luo.create_session(f"s{i}")
    with pytest.raises(KernelError) as info:
        luo.create_session("one-too-many")
    assert errno_of(info) == "ENOMEM"


# 26, 28 ---------------------------------------------------------------------------------------


def test_cancel_by_close_runs_unpreserve_newest_first(kernel: Kernel) -> None:
    luo = kernel.liveupdate()
    session = luo.create_session("gone")
    order: list[int] = []
    memfds = [new_memfd(kernel, bytes([i]) * 10) for i in range(3)]
    for token, m in enumerate(memfds):
        luo.preserve(session, token, m)
    handler = session.files[0].handler
    real = handler.unpreserve

    def recording(f: OutgoingFile) -> None:
        order.append(f.token)
        real(f)

    handler.unpreserve = recording  # type: ignore[method-assign]
    luo.close_session(session)
    assert order == [2, 1, 0]
    assert kernel.kho_out.preserved.frame_count() == 1  # only the KHO root page
    keep = luo.create_session("kept")
    luo.preserve(keep, 1, new_memfd(kernel, b"k"))
    nxt = kernel
    nxt.prepare()
    nxt.freeze()
    nxt = nxt.kexec()
    with pytest.raises(KernelError) as info:
        nxt.liveupdate().retrieve_session("gone")
    assert errno_of(info) == "ENOENT"


def test_everything_refused_after_freeze(kernel: Kernel) -> None:
    luo = kernel.liveupdate()
    session = luo.create_session("s")
    memfd = new_memfd(kernel, b"x")
    luo.preserve(session, 1, memfd)
    kernel.prepare()
    kernel.freeze()
    for attempt in (
        lambda: luo.create_session("late"),
        lambda: luo.preserve(session, 2, new_memfd(kernel)),
        lambda: luo.unpreserve(session, 1),
        lambda: luo.close_session(session),
        lambda: kernel.load(kernel.image),
    ):
        with pytest.raises(KernelError) as info:
            attempt()
        assert info.value.errno == errno.EBUSY, info.value
    with pytest.raises(KernelError) as info:
        kernel.prepare()
    assert errno_of(info) == "EINVAL"
