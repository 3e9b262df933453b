"""luod-run's endpoint: the interposer's calls, answered from luod's one uAPI model.

`attach(uid)` makes a gateway for one luod-run invocation (sent to it by the `uapi.attach`
method). Through it the program opens /dev/liveupdate (a new channel; exclusive: EBUSY while
another is open; EIO when the running kernel could not deserialize its incoming data),
announces its processes, asks whether a memfd is frozen, and reboots. ioctls on the device
and session channels go to `LiveUpdateDevice.ioctl`, the same dispatch, struct rules and
errnos as the rest of luod (reference/kernel.md §1.4); this module only moves bytes and fds
between real descriptors and the emulated kernel's.

Closing is the kernel's: the program's last reference to a channel gone, luod closes the
emulated fd, so an outgoing session is unpreserved and a retrieved one finished. Because a
close is seen asynchronously, any answer that another fd's close could change (EBUSY,
EEXIST, EINVAL) is computed again once channels already hung up are reaped (`settle`).
An outgoing session closed while an update is prepared or frozen cannot go (the kernel's
close waits): its release is retried when the update is over.

reboot(LINUX_REBOOT_CMD_KEXEC) runs the update into the loaded target (the kexec when
already frozen), for root or luod's own uid only, as the kernel wants CAP_SYS_BOOT.

A kexec ends userspace (`userspace_dies`): live memfds are copied one last time, every
process luod-run started is killed (the one calling reboot exits 0 by itself), every
channel is closed. Nothing of the old kernel is released: it is handed over as it is.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import struct

import structlog
import trio

from luod.daemon import memfd_bridge
from luod.daemon.devliveupdate.channels import Channel, Gateway, Message, hung_up
from luod.daemon.devliveupdate.livefiles import LiveFiles
from luod.daemon.devliveupdate.wire import (
    F_BADFD,
    F_FAULT,
    F_TAIL,
    OP_HELLO,
    OP_IOCTL,
    OP_OPEN,
    OP_REBOOT,
    OP_RESIZE,
    answer,
)
from luod.daemon.errors import DaemonError
from luod.daemon.host import Host
from luod.daemon.orchestrator import Orchestrator
from luod.kernel_model.errors import KernelError
from luod.kernel_model.luo import uapi
from luod.kernel_model.luo.session import IncomingSession, OutgoingSession
from luod.kernel_model.memfd.file import MemfdFile
from luod.kernel_model.vfs import File

log = structlog.get_logger("luod.devliveupdate")

FD_FIELD = 4  # every fd in or out of the uAPI structs sits right after `size`
NAME_FIELD = slice(8, 72)
RACY = frozenset({errno.EBUSY, errno.EEXIST, errno.EINVAL})


class ProgramDevice(uapi.LuoDeviceFile):
    """The program's /dev/liveupdate. luod itself keeps the model's device open (it
    deserialized at boot), so exclusivity among programs is the endpoint's."""

    def release(self) -> None:
        pass


def _errno_of(exc: BaseException) -> int:
    code = getattr(exc, "errno", None)
    return code if isinstance(code, int) and code > 0 else errno.EIO


class UapiEndpoint:
    def __init__(self, host: Host, orchestrator: Orchestrator) -> None:
        self.host = host
        self.orchestrator = orchestrator
        self.nursery: trio.Nursery | None = None
        self.channels: set[Channel] = set()
        self.gateways: list[Gateway] = []
        self.device: Channel | None = None
        self.live = LiveFiles(host)
        self._rebooting: int | None = None
        self._deferred: list[tuple[File, list[File]]] = []  # releases waiting for an update
        # One fd per session and per preserved file: the selftests' 2000 sessions need room.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    # -- channels ---------------------------------------------------------------------------

    def attach(self, uid: int, *, admin: bool) -> int:
        """A new gateway for a luod-run invocation by `uid` (`admin`: may reboot): the
        program's end (an open fd the caller sends and closes)."""
        gateway = Gateway(uid, admin)
        self.gateways.append(gateway)
        return self._open(Channel.pair("gateway", gateway)).detach()

    def _open(self, pair: tuple[Channel, socket.socket]) -> socket.socket:
        channel, theirs = pair
        assert self.nursery is not None, "serve() sets the nursery before any request"
        self.channels.add(channel)
        self.nursery.start_soon(self._serve, channel)
        return theirs

    async def _serve(self, channel: Channel) -> None:
        while (message := await channel.receive()) is not None:
            try:
                await self._handle(channel, message)
            finally:
                if message.fd is not None:
                    os.close(message.fd)
        try:
            self._release(channel)
        except Exception:  # a bug must not take the daemon down with one program's fd
            log.exception("uapi_release_failed", kind=channel.kind)

    def settle(self) -> int:
        """Release every channel whose program side is gone; how many were."""
        self._retry_deferred()
        gone = hung_up(self.channels)
        for channel in gone:
            self._release(channel)
        return len(gone)

    def _release(self, channel: Channel) -> None:
        if channel not in self.channels:
            return
        self.channels.discard(channel)
        channel.close()
        if channel is self.device:
            self.device = None
        self._hand_back(channel)
        gateway = channel.gateway
        if channel.kind == "gateway" and gateway in self.gateways and gateway.forget_exited():
            self.gateways.remove(gateway)
        if channel.kfd is None:
            return
        kernel = self.host.kernel
        file = kernel.file(channel.kfd)
        files: list[File] = []
        if isinstance(file, uapi.SessionFile) and isinstance(file.session, OutgoingSession):
            files = [f.file for f in file.session.files]
        try:
            kernel.close(channel.kfd)
        except KernelError:
            # An outgoing session cannot go while an update is prepared or frozen: the
            # kernel's close waits for the update's end, so the release is retried then.
            self._deferred.append((file, files))
            return
        self._released(file, files)

    def _released(self, file: File, files: list[File]) -> None:
        if isinstance(file, uapi.SessionFile):
            self._forget_owner(file.session)
        self.live.unpreserved(files)

    def _retry_deferred(self) -> None:
        waiting, self._deferred = self._deferred, []
        for file, files in waiting:
            try:
                file.release()
            except KernelError:
                self._deferred.append((file, files))
            else:
                self._released(file, files)

    def _forget_owner(self, session: OutgoingSession | IncomingSession) -> None:
        direction = "outgoing" if isinstance(session, OutgoingSession) else "incoming"
        self.host.owners.pop((direction, session.name), None)

    def userspace_dies(self) -> None:
        """A kexec or a power cycle: see the module docstring."""
        self.live.release()
        self._deferred.clear()  # they cross: the kernel's close never returned
        for gateway in self.gateways:
            gateway.kill(spare=self._rebooting)
        self.gateways.clear()
        for channel in list(self.channels):
            channel.kfd = None  # the old kernel goes as it is: nothing is closed in it
            self._release(channel)
        self.device = None

    # -- requests ---------------------------------------------------------------------------

    async def _handle(self, channel: Channel, message: Message) -> None:
        if message.pid:
            channel.gateway.announce(message.pid)
        if message.op == OP_HELLO:
            return
        self._retry_deferred()
        reply_fd: socket.socket | int | None = None
        via = message.fd if channel.kind == "gateway" else None  # the request's reply socket
        try:
            if message.op == OP_IOCTL and channel.kind != "gateway":
                data, fd_at, reply_fd = self._ioctl(channel, message)
                channel.send(answer(0, data, fd_at), _fileno(reply_fd))
                return
            if channel.kind != "gateway":
                raise KernelError("not a request for this fd", errno=errno.ENOTTY)
            if message.op == OP_OPEN:
                reply_fd = self._open_device(channel.gateway)
            elif message.op == OP_RESIZE:
                dev, ino = struct.unpack_from("<QQ", message.payload)
                if self._frozen((dev, ino)):
                    raise KernelError(
                        "the memfd is preserved: its size is frozen", errno=errno.EPERM
                    )
            elif message.op == OP_REBOOT:
                await self._reboot(channel.gateway, message.pid)
            else:
                raise KernelError(
                    f"ioctl {message.cmd:#x} on luod-run's gateway", errno=errno.ENOTTY
                )
            channel.send(answer(0), _fileno(reply_fd), via=via)
        except (KernelError, DaemonError) as exc:
            channel.send(answer(_errno_of(exc)), via=via)
        except Exception as exc:  # a bug: the program gets EIO, luod keeps serving
            log.exception("uapi_request_failed", op=message.op, cmd=message.cmd)
            channel.send(answer(_errno_of(exc)), via=via)
        finally:
            if isinstance(reply_fd, socket.socket):
                reply_fd.close()

    def _frozen(self, key: tuple[int, int]) -> bool:
        if not self.live.frozen(key):
            return False
        self.settle()  # its session may have been closed a moment ago
        return self.live.frozen(key)

    def _open_device(self, gateway: Gateway) -> socket.socket:
        if self.host.device_error is not None:
            raise KernelError(self.host.device_error, errno=errno.EIO)
        if self.device is not None:
            self.settle()  # the holder may have closed it a moment ago
        if self.device is not None:
            raise KernelError("/dev/liveupdate is open already", errno=errno.EBUSY)
        channel, theirs = Channel.pair("device", gateway)
        channel.kfd = self.host.kernel.install(ProgramDevice(self.host.kernel.liveupdate()))
        self.device = channel
        return self._open((channel, theirs))

    async def _reboot(self, gateway: Gateway, pid: int) -> None:
        # The kernel wants CAP_SYS_BOOT; luod's rule for updates is its admins' (access.py).
        if not gateway.admin:
            raise KernelError(f"uid {gateway.uid} may not reboot the machine", errno=errno.EPERM)
        kernel = self.host.kernel
        self._rebooting = pid
        try:
            if kernel.state == "frozen":
                await self.orchestrator.kexec(None, force=False)
            else:
                target = kernel.loaded.release if kernel.loaded is not None else kernel.release
                await self.orchestrator.update(target, timeout=None, force=False)
        finally:
            self._rebooting = None

    def _ioctl(
        self, channel: Channel, message: Message
    ) -> tuple[bytes, int, socket.socket | int | None]:
        """One ioctl on a device or session channel: (bytes to copy back, where the new
        fd's number goes, the new fd)."""
        assert channel.kfd is not None
        cmd = message.cmd
        if message.flags & F_FAULT:
            self._fault(channel, cmd)
        buf = bytearray(message.payload)
        if message.size > len(buf):  # past PAYLOAD_MAX: only "is the rest zero" matters
            if message.flags & F_TAIL:
                buf.append(1)
            struct.pack_into("<I", buf, 0, len(buf))
        kernel = self.host.kernel
        preserving = cmd == uapi.SESSION_PRESERVE_FD and channel.kind == "session" and len(buf) >= 8
        kfd, key, file = -1, None, None
        if preserving and message.fd is not None:
            file, key = self.live.model_file(message.fd)
            kfd = kernel.install(file)
        if preserving:
            struct.pack_into("<i", buf, FD_FIELD, kfd if not message.flags & F_BADFD else -1)
        try:
            self._checked(channel, cmd, buf)
            self._call(channel.kfd, cmd, buf)
        finally:
            if kfd >= 0:
                kernel.close(kfd)
        if (
            preserving
            and key is not None
            and isinstance(file, MemfdFile)
            and message.fd is not None
        ):
            self.live.preserved(key, file, message.fd)
        if cmd == uapi.SESSION_FINISH and channel.kind == "session":
            session = self.host.kernel.file(channel.kfd)
            assert isinstance(session, uapi.SessionFile)
            self._forget_owner(session.session)
            self._hand_back(channel)
        out = message.payload[:4] + bytes(buf[4 : len(message.payload)])
        if cmd in (uapi.CREATE_SESSION, uapi.RETRIEVE_SESSION) and channel.kind == "device":
            return out, FD_FIELD, self._new_session(channel, buf)
        if cmd == uapi.SESSION_RETRIEVE_FD and channel.kind == "session":
            return out, FD_FIELD, self._retrieved_fd(channel, buf)
        return (out if cmd == uapi.SESSION_GET_NAME else b""), -1, None

    def _fault(self, channel: Channel, cmd: int) -> None:
        """A NULL argument. The kernel checks the number's range first (EINVAL: the model
        answers that, given no argument at all), then reading the size faults (EFAULT)."""
        ops: tuple[uapi.IoctlOp, ...]
        if channel.kind == "device":
            ops, base = uapi.DEVICE_OPS, uapi.CMD_BASE
        else:
            ops, base = uapi.SESSION_OPS, uapi.CMD_SESSION_BASE
        if not 0 <= (cmd & 0xFF) - base < len(ops):
            assert channel.kfd is not None
            self._call(channel.kfd, cmd, bytearray())
        # A bad user pointer is the transport's finding, not a state of the model.
        raise DaemonError("BadAddress", "the ioctl argument is not readable", errno=errno.EFAULT)

    def _call(self, kfd: int, cmd: int, buf: bytearray) -> None:
        device = uapi.LiveUpdateDevice(self.host.kernel)
        try:
            device.ioctl(kfd, cmd, buf)
        except KernelError as exc:
            if exc.errno in RACY and self.settle():
                device.ioctl(kfd, cmd, buf)
            else:
                raise

    def _checked(self, channel: Channel, cmd: int, buf: bytearray) -> None:
        """luod's own rules on names: `luod.` is reserved, and a session of another uid is
        not the caller's to retrieve."""
        if channel.kind != "device" or len(buf) < 72:
            return
        name = bytes(buf[NAME_FIELD]).partition(b"\0")[0].decode(errors="replace")
        if cmd == uapi.CREATE_SESSION and name.startswith("luod."):
            raise KernelError(
                "session names starting with 'luod.' are luod's own", errno=errno.EINVAL
            )
        if cmd == uapi.RETRIEVE_SESSION and name in self.host.luo.incoming:
            owner = self.host.owners.get(("incoming", name), 0)
            uid = channel.gateway.uid
            if uid not in (0, owner):
                raise KernelError(f"session {name!r} belongs to uid {owner}", errno=errno.EPERM)

    def _new_session(self, device: Channel, buf: bytearray) -> socket.socket:
        (kfd,) = struct.unpack_from("<i", buf, FD_FIELD)
        file = self.host.kernel.file(kfd)
        assert isinstance(file, uapi.SessionFile)
        session = file.session
        direction = "outgoing" if isinstance(session, OutgoingSession) else "incoming"
        self.host.owners[(direction, session.name)] = device.gateway.uid
        channel, theirs = Channel.pair("session", device.gateway)
        channel.kfd = kfd
        return self._open((channel, theirs))

    def _retrieved_fd(self, channel: Channel, buf: bytearray) -> int:
        (kfd,) = struct.unpack_from("<i", buf, FD_FIELD)
        (token,) = struct.unpack_from("<Q", buf, 8)
        kernel = self.host.kernel
        file = kernel.file(kfd)
        kernel.close(kfd)  # LUO keeps its own reference; the real memfd stands for it
        if token not in channel.retrieved:
            if not isinstance(file, MemfdFile):
                raise KernelError(
                    f"luod-run hands out memfds only, not {file.describe()}", errno=errno.EOPNOTSUPP
                )
            fd = memfd_bridge.to_real_memfd(file, "")
            channel.retrieved[token] = (file, fd)
            self.live.handed_out(fd, file)
        return channel.retrieved[token][1]

    def _hand_back(self, channel: Channel) -> None:
        """The session finished (or went): its files are no longer LUO's."""
        self.live.finished([file for file, _ in channel.retrieved.values()])
        for _, fd in channel.retrieved.values():
            os.close(fd)
        channel.retrieved.clear()


def _fileno(fd: socket.socket | int | None) -> int | None:
    return fd.fileno() if isinstance(fd, socket.socket) else fd
