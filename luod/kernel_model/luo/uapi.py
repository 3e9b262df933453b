"""The Linux 6.19 live-update uAPI over bytes: /dev/liveupdate and session fds.

Userspace talks to LUO through ioctls on two kinds of fds, each with a size-first struct
(reference/kernel.md §1.4). This module implements that contract on the model, for tests
and for clients that want the exact kernel interface:

| ioctl            | fd              | nr   | struct bytes | fields                          |
|------------------|-----------------|------|--------------|---------------------------------|
| CREATE_SESSION   | /dev/liveupdate | 0x00 | 72           | u32 size; s32 fd out; name[64]  |
| RETRIEVE_SESSION | /dev/liveupdate | 0x01 | 72           | same                            |
| PRESERVE_FD      | session         | 0x40 | 16           | u32 size; s32 fd in; u64 token  |
| RETRIEVE_FD      | session         | 0x41 | 16           | u32 size; s32 fd out; u64 token |
| FINISH           | session         | 0x42 | 8            | u32 size; u32 reserved (0)      |
| GET_NAME         | session         | 0x43 | 72           | u32 size; u32 reserved; name[64]|

`copy_struct_from_user` rules: a size below the struct's minimum is EINVAL; bytes past
what the kernel knows must be zero (E2BIG); the kernel copies back min(user, kernel) bytes.
An ioctl number outside a device's table is EINVAL; one in range but issued on the wrong
kind of fd is ENOTTY. /dev/liveupdate is exclusive (EBUSY on a second open).
"""

from __future__ import annotations

import contextlib
import errno
import struct

from luod.kernel_model.errors import KernelError
from luod.kernel_model.files.base import File
from luod.kernel_model.luo.core import Luo
from luod.kernel_model.luo.session import IncomingSession, OutgoingSession

CREATE_SESSION = 0x00
RETRIEVE_SESSION = 0x01
SESSION_PRESERVE_FD = 0x40
SESSION_RETRIEVE_FD = 0x41
SESSION_FINISH = 0x42
SESSION_GET_NAME = 0x43

_SESSION_STRUCT = struct.Struct("<Ii64s")
_FD_STRUCT = struct.Struct("<IiQ")
_FINISH_STRUCT = struct.Struct("<II")
_NAME_STRUCT = struct.Struct("<II64s")

DEVICE_TABLE = {CREATE_SESSION: _SESSION_STRUCT, RETRIEVE_SESSION: _SESSION_STRUCT}
SESSION_TABLE = {
    SESSION_PRESERVE_FD: _FD_STRUCT,
    SESSION_RETRIEVE_FD: _FD_STRUCT,
    SESSION_FINISH: _FINISH_STRUCT,
    SESSION_GET_NAME: _NAME_STRUCT,
}


class LuoDeviceFile(File):
    file_type = "liveupdate"

    def __init__(self, luo: Luo) -> None:
        super().__init__()
        self.luo = luo

    def release(self) -> None:
        self.luo.close_device()


class SessionFile(File):
    """A session fd: closing an outgoing one unpreserves its files; closing a retrieved
    incoming one finishes it (a vetoed finish leaves the session stuck)."""

    file_type = "luo_session"

    def __init__(self, luo: Luo, session: OutgoingSession | IncomingSession) -> None:
        super().__init__()
        self.luo = luo
        self.session = session

    def release(self) -> None:
        if isinstance(self.session, OutgoingSession):
            if not self.session.closed:
                self.luo.close_session(self.session)
        elif self.session.name in self.luo.incoming:
            # close() cannot fail: a vetoed finish leaves the session stuck (close_incoming)
            with contextlib.suppress(KernelError):
                self.luo.close_incoming(self.session)

    def describe(self) -> str:
        return f"[luo_session] {self.session.name}"


def copy_struct_from_user(buf: bytes | bytearray, layout: struct.Struct) -> bytes:
    if len(buf) < 4:
        raise KernelError("ioctl argument shorter than its size field", errno=errno.EINVAL)
    (size,) = struct.unpack_from("<I", buf)
    if size < layout.size or size > len(buf):
        raise KernelError(
            f"ioctl struct size {size} is below the minimum {layout.size}"
            if size < layout.size
            else f"ioctl struct size {size} exceeds the buffer",
            errno=errno.EINVAL,
        )
    if any(buf[layout.size : size]):
        raise KernelError(
            "ioctl struct has non-zero bytes the kernel does not know", errno=errno.E2BIG
        )
    return bytes(buf[: layout.size])


def _copy_back(buf: bytearray, data: bytes) -> None:
    (size,) = struct.unpack_from("<I", buf)
    n = min(size, len(data))
    buf[4:n] = data[4:n]


def _name(raw: bytes) -> bytes:
    head, nul, _ = raw.partition(b"\0")
    if not nul:
        raise KernelError("session name is not NUL-terminated within 64 bytes", errno=errno.EINVAL)
    return head


class LiveUpdateDevice:
    """ioctl dispatch on the fds of one kernel's process."""

    def __init__(self, kernel: object) -> None:
        from luod.kernel_model.kernel import Kernel

        assert isinstance(kernel, Kernel)
        self.kernel = kernel

    def open(self) -> int:
        luo = self.kernel.liveupdate()
        luo.open_device()
        return self.kernel.install(LuoDeviceFile(luo))

    def ioctl(self, fd: int, nr: int, buf: bytearray) -> int:
        file = self.kernel.file(fd)
        if isinstance(file, LuoDeviceFile):
            return self._device_ioctl(file, nr, buf)
        if isinstance(file, SessionFile):
            return self._session_ioctl(file, nr, buf)
        raise KernelError(f"ioctl {nr:#x} on {file.describe()}", errno=errno.ENOTTY)

    def _device_ioctl(self, dev: LuoDeviceFile, nr: int, buf: bytearray) -> int:
        if nr in SESSION_TABLE:
            raise KernelError(f"session ioctl {nr:#x} on /dev/liveupdate", errno=errno.ENOTTY)
        layout = DEVICE_TABLE.get(nr)
        if layout is None:
            raise KernelError(f"unknown /dev/liveupdate ioctl {nr:#x}", errno=errno.EINVAL)
        size, _, raw = layout.unpack(copy_struct_from_user(buf, layout))
        name = _name(raw)
        luo = dev.luo
        session = luo.create_session(name) if nr == CREATE_SESSION else luo.retrieve_session(name)
        new_fd = self.kernel.install(SessionFile(luo, session))
        _copy_back(buf, layout.pack(size, new_fd, raw))
        return 0

    def _session_ioctl(self, sf: SessionFile, nr: int, buf: bytearray) -> int:
        if nr in DEVICE_TABLE:
            raise KernelError(f"device ioctl {nr:#x} on a session fd", errno=errno.ENOTTY)
        layout = SESSION_TABLE.get(nr)
        if layout is None:
            raise KernelError(f"unknown session ioctl {nr:#x}", errno=errno.EINVAL)
        fields = layout.unpack(copy_struct_from_user(buf, layout))
        luo, session = sf.luo, sf.session
        if nr == SESSION_GET_NAME:
            _copy_back(buf, layout.pack(fields[0], 0, session.name.encode()))
            return 0
        if nr == SESSION_FINISH:
            if fields[1]:
                raise KernelError("FINISH reserved field must be zero", errno=errno.EINVAL)
            if not isinstance(session, IncomingSession):
                raise KernelError("FINISH on an outgoing session", errno=errno.EINVAL)
            luo.finish_session(session)
            return 0
        size, in_fd, token = fields
        if nr == SESSION_PRESERVE_FD:
            if not isinstance(session, OutgoingSession):
                raise KernelError("PRESERVE_FD on an incoming session", errno=errno.EINVAL)
            luo.preserve(session, token, in_fd)
            return 0
        if not isinstance(session, IncomingSession):
            raise KernelError("RETRIEVE_FD on an outgoing session", errno=errno.EINVAL)
        file = luo.retrieve_file(session, token)
        new_fd = self.kernel.install(file)
        _copy_back(buf, layout.pack(size, new_fd, token))
        return 0


def session_struct(name: bytes, *, size: int = _SESSION_STRUCT.size) -> bytearray:
    """A CREATE/RETRIEVE_SESSION argument declaring `size` (the buffer is never shorter
    than the kernel's struct, so a too-small size is the only thing wrong with it)."""
    buf = bytearray(max(size, _SESSION_STRUCT.size))
    struct.pack_into("<I", buf, 0, size)
    buf[8 : 8 + min(len(name), 64)] = name[:64]
    return buf


def fd_struct(fd: int, token: int) -> bytearray:
    return bytearray(_FD_STRUCT.pack(_FD_STRUCT.size, fd, token))


def finish_struct(reserved: int = 0) -> bytearray:
    return bytearray(_FINISH_STRUCT.pack(_FINISH_STRUCT.size, reserved))
