"""The Linux 6.19 live-update uAPI over bytes: /dev/liveupdate and session fds.

Userspace talks to LUO through ioctls on two kinds of fds, each with a size-first struct
(reference/kernel.md §1.4). This module implements that contract on the model, for tests
and for clients that want the exact kernel interface:

| ioctl            | fd              | nr   | bytes (min) | fields                           |
|------------------|-----------------|------|-------------|----------------------------------|
| CREATE_SESSION   | /dev/liveupdate | 0x00 | 72 (72)     | u32 size; s32 fd out; name[64]   |
| RETRIEVE_SESSION | /dev/liveupdate | 0x01 | 72 (72)     | same                             |
| PRESERVE_FD      | outgoing        | 0x40 | 16 (16)     | u32 size; s32 fd in; u64 token   |
| RETRIEVE_FD      | incoming        | 0x41 | 16 (16)     | u32 size; s32 fd out; u64 token  |
| FINISH           | incoming        | 0x42 | 8 (8)       | u32 size; u32 reserved (0)       |
| GET_NAME         | either          | 0x43 | 72 (16)     | u32 size; u32 reserved (0); name |

Every command word is `_IO(0xBA, nr)` (direction none, size 0). Dispatch follows the
kernel's op tables (`luo_ioctl`, `luo_session_ioctl`), in the kernel's order:
1. `nr` outside the fd's table (a session number on /dev/liveupdate, a device number on a
   session fd, an unknown number) -> EINVAL;
2. the word is not exactly the table's `_IO(0xBA, nr)` (another type, a direction or a
   size encoded) -> ENOTTY;
3. on a session fd, an op for the other direction (FINISH or RETRIEVE_FD on an outgoing
   session, PRESERVE_FD on an incoming one) -> EINVAL;
4. `copy_struct_from_user`: a size below the op's minimum (offsetofend of its last
   mandatory field) is EINVAL; a shorter struct than the kernel's is zero-filled; bytes
   past what the kernel knows must be zero (E2BIG); the kernel copies back
   min(user, kernel) bytes.
/dev/liveupdate is exclusive (EBUSY on a second open).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import struct

import attrs

from luod.kernel_model.errors import KernelError
from luod.kernel_model.files.base import File
from luod.kernel_model.luo.core import Luo
from luod.kernel_model.luo.session import IncomingSession, OutgoingSession

LIVEUPDATE_IOCTL_TYPE = 0xBA
CMD_BASE = 0x00
CMD_SESSION_BASE = 0x40


def io(nr: int, *, ioc_type: int = LIVEUPDATE_IOCTL_TYPE) -> int:
    """`_IO(ioc_type, nr)`: direction bits and size bits zero."""
    return (ioc_type << 8) | nr


CREATE_SESSION = io(0x00)
RETRIEVE_SESSION = io(0x01)
SESSION_PRESERVE_FD = io(0x40)
SESSION_RETRIEVE_FD = io(0x41)
SESSION_FINISH = io(0x42)
SESSION_GET_NAME = io(0x43)

_SESSION_STRUCT = struct.Struct("<Ii64s")
_FD_STRUCT = struct.Struct("<IiQ")
_FINISH_STRUCT = struct.Struct("<II")
_NAME_STRUCT = struct.Struct("<II64s")


class Direction(enum.Enum):
    """Which sessions a session ioctl applies to (the kernel's `luo_ioctl_type`)."""

    INCOMING = "incoming"
    OUTGOING = "outgoing"
    ALL = "all"


@attrs.frozen
class IoctlOp:
    cmd: int
    layout: struct.Struct
    min_size: int  # offsetofend of the last mandatory field, as the kernel's table says
    direction: Direction = Direction.ALL


DEVICE_OPS = (
    IoctlOp(CREATE_SESSION, _SESSION_STRUCT, _SESSION_STRUCT.size),
    IoctlOp(RETRIEVE_SESSION, _SESSION_STRUCT, _SESSION_STRUCT.size),
)
SESSION_OPS = (
    IoctlOp(SESSION_PRESERVE_FD, _FD_STRUCT, _FD_STRUCT.size, Direction.OUTGOING),
    IoctlOp(SESSION_RETRIEVE_FD, _FD_STRUCT, _FD_STRUCT.size, Direction.INCOMING),
    IoctlOp(SESSION_FINISH, _FINISH_STRUCT, _FINISH_STRUCT.size, Direction.INCOMING),
    # The kernel's table gives GET_NAME the bounds of `liveupdate_session_retrieve_fd`
    # up to its `token`: 16 bytes; a shorter copy-back truncates the name.
    IoctlOp(SESSION_GET_NAME, _NAME_STRUCT, _FD_STRUCT.size),
)


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


def user_size(buf: bytes | bytearray) -> int:
    """The struct size userspace declares (the first u32 of the argument)."""
    if len(buf) < 4:
        raise KernelError("ioctl argument shorter than its size field", errno=errno.EINVAL)
    (size,) = struct.unpack_from("<I", buf)
    return int(size)


def copy_struct_from_user(buf: bytes | bytearray, op: IoctlOp) -> bytes:
    """The kernel's view of the argument: `op.layout.size` bytes, zero-filled past what
    userspace declared."""
    size, layout = user_size(buf), op.layout
    if size < op.min_size:
        raise KernelError(
            f"ioctl struct size {size} is below the minimum {op.min_size}", errno=errno.EINVAL
        )
    if size > len(buf):
        raise KernelError(f"ioctl struct size {size} exceeds the buffer", errno=errno.EINVAL)
    if any(buf[layout.size : size]):
        raise KernelError(
            "ioctl struct has non-zero bytes the kernel does not know", errno=errno.E2BIG
        )
    return bytes(buf[: min(size, layout.size)]).ljust(layout.size, b"\0")


def lookup(
    ops: tuple[IoctlOp, ...], base: int, cmd: int, buf: bytes | bytearray, where: str
) -> IoctlOp:
    """Steps 1 and 2 of the dispatch: the table entry for `cmd`'s number, which must be
    exactly `cmd` (the kernel reads the size field in between)."""
    index = (cmd & 0xFF) - base
    if not 0 <= index < len(ops):
        raise KernelError(f"ioctl {cmd:#x} is not in the {where} table", errno=errno.EINVAL)
    user_size(buf)
    op = ops[index]
    if op.cmd != cmd:
        raise KernelError(
            f"ioctl {cmd:#x} is not _IO({LIVEUPDATE_IOCTL_TYPE:#x}, {cmd & 0xFF:#x})",
            errno=errno.ENOTTY,
        )
    return op


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

    def ioctl(self, fd: int, cmd: int, buf: bytearray) -> int:
        file = self.kernel.file(fd)
        if isinstance(file, LuoDeviceFile):
            return self._device_ioctl(file, cmd, buf)
        if isinstance(file, SessionFile):
            return self._session_ioctl(file, cmd, buf)
        raise KernelError(f"ioctl {cmd:#x} on {file.describe()}", errno=errno.ENOTTY)

    def _device_ioctl(self, dev: LuoDeviceFile, cmd: int, buf: bytearray) -> int:
        op = lookup(DEVICE_OPS, CMD_BASE, cmd, buf, "/dev/liveupdate")
        size, _, raw = op.layout.unpack(copy_struct_from_user(buf, op))
        name = _name(raw)
        luo = dev.luo
        session = luo.create_session(name) if cmd == CREATE_SESSION else luo.retrieve_session(name)
        new_fd = self.kernel.install(SessionFile(luo, session))
        _copy_back(buf, op.layout.pack(size, new_fd, raw))
        return 0

    def _session_ioctl(self, sf: SessionFile, cmd: int, buf: bytearray) -> int:
        op = lookup(SESSION_OPS, CMD_SESSION_BASE, cmd, buf, "session")
        luo, session = sf.luo, sf.session
        direction = (
            Direction.INCOMING if isinstance(session, IncomingSession) else Direction.OUTGOING
        )
        if op.direction not in (Direction.ALL, direction):
            raise KernelError(
                f"ioctl {cmd:#x} is for {op.direction.value} sessions, "
                f"{session.name!r} is {direction.value}",
                errno=errno.EINVAL,
            )
        fields = op.layout.unpack(copy_struct_from_user(buf, op))
        if cmd == SESSION_GET_NAME:
            if fields[1]:
                raise KernelError("GET_NAME reserved field must be zero", errno=errno.EINVAL)
            _copy_back(buf, op.layout.pack(fields[0], 0, session.name.encode()))
            return 0
        if cmd == SESSION_FINISH:
            if fields[1]:
                raise KernelError("FINISH reserved field must be zero", errno=errno.EINVAL)
            assert isinstance(session, IncomingSession)
            luo.finish_session(session)
            return 0
        size, in_fd, token = fields
        if cmd == SESSION_PRESERVE_FD:
            assert isinstance(session, OutgoingSession)
            luo.preserve(session, token, in_fd)
            return 0
        assert isinstance(session, IncomingSession)
        file = luo.retrieve_file(session, token)
        new_fd = self.kernel.install(file)
        _copy_back(buf, op.layout.pack(size, new_fd, token))
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
