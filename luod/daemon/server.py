"""The trio service: accept connections, run each one, dispatch requests to the host.

`serve(daemon, listener, task_status=...)` is what `nursery.start` waits for: it reports
started once the listener accepts. Each connection gets one reader (the only task that
receives) and one writer (the only task that sends, fed by a bounded channel, so a client
that stops reading applies backpressure to its own requests, never to the daemon).
Requests run as tasks, at most `MAX_IN_FLIGHT` per connection. Received fds belong to the
request and are closed when it is done, whatever happens.

Access to the kernel model is serialised by trio itself: the model is synchronous and
every handler runs it without awaiting in between; the orchestrator's lock keeps updates
apart.

Fault injection (`fault.*`) is an admin interface for tests, ours and users': refused with
`luod.FaultsDisabled` unless the daemon was started with `--enable-faults`, and then only for
root or the daemon's own uid. A fired fault is published as a `fault.fired` event.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio

from luod import __version__
from luod.daemon.clock import DeviceClock
from luod.daemon.devliveupdate import UapiEndpoint
from luod.daemon.errors import DaemonError, wire_error
from luod.daemon.events import DROPPED, EventBus, Subscriber
from luod.daemon.host import Caller, Host
from luod.daemon.orchestrator import Orchestrator, Participant
from luod.daemon.records import RunRecords
from luod.hw.pci import PowerState
from luod.ipc import methods as m
from luod.ipc.connection import CLOSED, Connection, Role
from luod.ipc.errors import ConnectionLost, ProtocolError, RemoteProtocolError
from luod.ipc.fdpass import close_fds
from luod.ipc.messages import ErrorReply, Event, Reply, Request
from luod.ipc.methods import METHODS
from luod.ipc.trio_stream import FramedStream
from luod.kernel_model.errors import KernelError
from luod.kernel_model.faults import Fired

log = structlog.get_logger("luod.server")

MAX_IN_FLIGHT = 64
# Methods that wait (barriers, deadlines) run as tasks; every other one runs inline.
WAITING_METHODS = frozenset({"update", "kexec"})
DRAIN_SECONDS = 2.0
# An events follower the bus has dropped gets this long to read up to its final
# `events.dropped` before the daemon closes its connection (it may not read at all).
DROP_GRACE_SECONDS = 5.0
SEND_QUEUE = 256
SERVER_NAME = f"luod {__version__}"

Outgoing = Reply | ErrorReply | Event
Handler = Callable[["ClientConnection", Any, Request], Awaitable[tuple[Any, list[int]]]]


class ClientConnection:
    def __init__(self, daemon: Daemon, stream: FramedStream, caller: Caller, conn_id: int) -> None:
        self.daemon = daemon
        self.stream = stream
        self.caller = caller
        self.id = conn_id
        self.participant: Participant | None = None
        self.subscriber: Subscriber | None = None
        self.holds_files = False  # created or retrieved sessions/files: dies with a kexec
        self._send, self._receive = trio.open_memory_channel[Outgoing](SEND_QUEUE)
        self._scope = trio.CancelScope()
        self._slots = trio.Semaphore(MAX_IN_FLIGHT)
        self._nursery: trio.Nursery | None = None
        self._dropping = False
        self.requests = 0

    def drop(self, reason: str) -> None:
        """End this connection. What is already queued (a reply, a final event) is flushed
        first, for at most DRAIN_SECONDS, so the client learns why; then it closes."""
        log.info("connection_dropped", conn=self.id, reason=reason)
        self._dropping = True
        self._send.close()
        self._scope.deadline = min(self._scope.deadline, trio.current_time() + DRAIN_SECONDS)

    def send_event_nowait(self, name: str, **data: Any) -> None:
        """Queue an event for this client; a client whose queue is full is dropped."""
        event = Event(event=name, ts=time.time(), data=data)
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.drop("send queue full")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def run(self) -> None:
        with self._scope:
            try:
                await self.stream.accept_hello(SERVER_NAME)
            except (ProtocolError, ConnectionLost, trio.BrokenResourceError):
                return
            async with trio.open_nursery() as outer:
                outer.start_soon(self._writer)
                try:
                    async with trio.open_nursery() as handlers:
                        self._nursery = handlers
                        await self._reader(handlers)
                        handlers.cancel_scope.cancel()
                finally:
                    # Reading is over: let the writer flush what is queued (a final error
                    # reply, say), but never wait long for a client that does not read.
                    self._send.close()
                    outer.cancel_scope.deadline = trio.current_time() + DRAIN_SECONDS

    def follow(self, sub: Subscriber) -> None:
        """Forward bus events to this client until it is dropped or disconnects."""
        assert self._nursery is not None
        self.subscriber = sub
        self._nursery.start_soon(self._forward, sub)

    async def _forward(self, sub: Subscriber) -> None:
        # Awaiting the send queue lets a slow reader fall behind on the bus, which drops
        # it with a final event once it is `capacity` events behind; the daemon never waits.
        async for event in sub:
            try:
                await self._send.send(Event(event=event.event, ts=event.ts, data=event.data))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            if event.event == DROPPED:  # the bus's final event is queued: flush it, then go
                self.drop("fell behind on events")
                return

    async def _writer(self) -> None:
        async with self._receive:
            receive = self._receive.receive  # not `async for`: one coroutine less per reply
            while True:
                try:
                    message = await receive()
                except trio.EndOfChannel:
                    if self._dropping:  # everything queued before the drop is out
                        self._scope.cancel()
                    return
                try:
                    await self.stream.send(message)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._scope.cancel()
                    return
                except ProtocolError as exc:
                    log.warning("unsendable", conn=self.id, error=str(exc))
                finally:
                    if isinstance(message, Reply):
                        close_fds(message.fds)

    async def _reader(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                message = await self.stream.receive()
            except RemoteProtocolError as exc:
                log.info("protocol_error", conn=self.id, error=str(exc))
                with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                    self._send.send_nowait(ErrorReply(id=None, error=exc.info()))
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if message is CLOSED:
                return
            if not isinstance(message, Request):
                continue
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                await self._slots.acquire()
            if message.method in WAITING_METHODS:
                nursery.start_soon(self._handle, message)
            else:
                # Most methods run the synchronous model and never wait: answering them
                # here saves a task per request, and keeps replies in request order.
                # (`receive` checkpoints now and then even when frames are buffered, so a
                # client pipelining a burst of requests cannot hold the scheduler.)
                await self._handle(message)

    async def _handle(self, request: Request) -> None:
        try:
            self.requests += 1
            reply: Outgoing
            try:
                params = METHODS.structure(request)
                handler = HANDLERS[request.method]
                result, fds = await handler(self, params, request)
                reply = Reply(id=request.id, result=result, fds=fds)
            except (DaemonError, KernelError, RemoteProtocolError) as exc:
                reply = _error(request.id, exc)
            except Exception as exc:  # a bug: answer it, log it, keep serving
                log.exception("request_failed", conn=self.id, method=request.method)
                reply = _error(request.id, exc)
            try:
                try:
                    self._send.send_nowait(reply)
                except trio.WouldBlock:  # the client is not reading: wait for room
                    await self._send.send(reply)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                if isinstance(reply, Reply):
                    close_fds(reply.fds)
        finally:
            close_fds(request.fds)
            self._slots.release()


def _error(request_id: int, exc: BaseException) -> ErrorReply:
    from luod.ipc.errors import ErrorInfo

    if isinstance(exc, RemoteProtocolError):
        return ErrorReply(id=request_id, error=exc.info())
    info = wire_error(exc)
    return ErrorReply(
        id=request_id,
        error=ErrorInfo(
            name=info["name"] or "luod.InternalError",
            errno=info["errno"],
            message=info["message"] or "",
            object=info["object"],
        ),
    )


class Daemon:
    """Everything one luod process serves: the host, events, the orchestrator."""

    def __init__(
        self,
        host: Host,
        *,
        records: RunRecords | None = None,
        status_hook: Callable[[str], object] = lambda s: None,
        faults_enabled: bool = False,
        event_capacity: int = 1024,
        drop_grace: float = DROP_GRACE_SECONDS,
    ) -> None:
        self.host = host
        self.bus = EventBus(capacity=event_capacity)
        self.faults_enabled = faults_enabled
        self.drop_grace = drop_grace
        self.nursery: trio.Nursery | None = None  # set by `serve`: daemon-wide tasks
        host.faults.on_fire = self._fault_fired
        self.clock = DeviceClock(host.machine)
        self.records = records or RunRecords(None)
        self.connections: dict[int, ClientConnection] = {}
        self._ids = itertools.count(1)
        self.orchestrator = Orchestrator(
            host,
            self.bus,
            on_update_record=self.records.update_finished,
            on_kexec=self._userspace_dies,
            status_hook=status_hook,
            clock=self.clock,
        )
        if self.records.last_update is not None:
            self.orchestrator.last_update = self.records.last_update
        self.uapi = UapiEndpoint(host, self.orchestrator)
        self.orchestrator.before_freeze = self.uapi.live.sync

    def _fault_fired(self, fired: Fired) -> None:
        log.info("fault_fired", point=fired.point, subject=fired.subject)
        self.bus.publish("fault.fired", point=fired.point, subject=fired.subject)

    def drop_later(self, conn: ClientConnection, reason: str) -> None:
        """End `conn` after the grace period unless it has ended by then."""

        async def drop() -> None:
            await trio.sleep(self.drop_grace)
            if self.connections.get(conn.id) is conn:
                conn.drop(reason)

        if self.nursery is not None:
            self.nursery.start_soon(drop)
        else:
            conn.drop(reason)

    def _userspace_dies(self, keep: object = None) -> None:
        """A kexec or power cycle ends emulated userspace: participants and connections
        holding emulated files are dropped; `keep` (who asked) and control-only ones stay."""
        self.uapi.userspace_dies()
        for conn in list(self.connections.values()):
            if conn is keep:
                conn.holds_files = False
                continue
            if conn.participant is not None or conn.holds_files:
                conn.drop("kexec: userspace ends")

    async def handle_stream(self, stream: trio.SocketStream) -> None:
        framed = FramedStream(stream, Connection(Role.SERVER))
        try:
            creds = framed.peer_credentials()
            caller = Caller(uid=creds.uid, pid=creds.pid)
        except (RuntimeError, OSError):
            caller = Caller(uid=os.getuid())
        conn = ClientConnection(self, framed, caller, next(self._ids))
        self.connections[conn.id] = conn
        with structlog.contextvars.bound_contextvars(
            conn=conn.id, peer_uid=caller.uid, peer_pid=caller.pid
        ):
            log.debug("connection_open")
            try:
                await conn.run()
            finally:
                self.connections.pop(conn.id, None)
                self.orchestrator.disconnected(conn)
                if conn.subscriber is not None:
                    conn.subscriber.close()
                with trio.CancelScope(shield=True):
                    await framed.aclose()
                log.debug("connection_closed", requests=conn.requests)

    # -- status ---------------------------------------------------------------------------

    def status(self, caller: Caller) -> dict[str, Any]:
        host = self.host
        kernel = host.kernel
        orch = self.orchestrator
        orch.refresh_damage()
        return {
            "state": kernel.state,
            "kernel": {
                "release": kernel.release,
                "liveupdate_number": kernel.liveupdate_number,
                "boot": {"kind": kernel.boot_report.kind, "reason": kernel.boot_report.reason},
                "panic": kernel.panicked,
            },
            "loaded": kernel.loaded.release if kernel.loaded is not None else None,
            "sessions": host.sessions(caller),
            "participants": [p.as_json() for p in orch.participants.values()],
            "blocking": orch.blocking(),
            "last_update": orch.last_update,
            "last_cancel": orch.last_cancel,
            "machine": {
                "ram": host.machine.memory.size_bytes,
                "resident": host.machine.memory.resident_bytes(),
            },
            "device_error": host.device_error,
            "daemon": {"version": __version__, "pid": os.getpid(), **self.records.status()},
        }


# -- method handlers --------------------------------------------------------------------------

HANDLERS: dict[str, Handler] = {}


def handles(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        assert name in METHODS, f"{name} is not in the method table"
        HANDLERS[name] = fn
        return fn

    return register


Result = tuple[Any, list[int]]


@handles("status")
async def _status(c: ClientConnection, p: m.Status, r: Request) -> Result:
    return c.daemon.status(c.caller), []


@handles("kernel.list")
async def _kernel_list(c: ClientConnection, p: m.KernelList, r: Request) -> Result:
    return {"images": c.daemon.host.images()}, []


@handles("kernel.show")
async def _kernel_show(c: ClientConnection, p: m.KernelShow, r: Request) -> Result:
    host = c.daemon.host
    return host.image_catalog(host.image(p.target)), []


@handles("kernel.matrix")
async def _kernel_matrix(c: ClientConnection, p: m.KernelMatrix, r: Request) -> Result:
    return c.daemon.host.matrix(p.targets), []


@handles("kernel.write")
async def _kernel_write(c: ClientConnection, p: m.KernelWrite, r: Request) -> Result:
    return c.daemon.host.set_write(p.format, p.enabled), []


@handles("load")
async def _load(c: ClientConnection, p: m.Load, r: Request) -> Result:
    host = c.daemon.host
    image = host.image(p.target)
    report = host.check(image)
    if not report["compatible"] and not p.force:
        raise c.daemon.orchestrator._incompatible(report)
    host.kernel.load(image)
    c.daemon.bus.publish("loaded", release=image.release)
    return {
        "loaded": image.release,
        "compatible": report["compatible"],
        "problems": report["problems"],
    }, []


@handles("check")
async def _check(c: ClientConnection, p: m.Check, r: Request) -> Result:
    host = c.daemon.host
    return host.check(host.image(p.target)), []


@handles("session.create")
async def _session_create(c: ClientConnection, p: m.SessionCreate, r: Request) -> Result:
    c.holds_files = True
    result = c.daemon.host.session_create(c.caller, p.name)
    c.daemon.bus.publish("session.created", name=p.name, uid=c.caller.uid)
    return result, []


@handles("session.list")
async def _session_list(c: ClientConnection, p: m.SessionList, r: Request) -> Result:
    return {"sessions": c.daemon.host.sessions(c.caller)}, []


@handles("session.show")
async def _session_show(c: ClientConnection, p: m.SessionShow, r: Request) -> Result:
    host = c.daemon.host
    if p.direction != "incoming":
        try:
            return host.session_object(host.outgoing(c.caller, p.name)), []
        except KernelError:
            if p.direction == "outgoing":
                raise
    return host.session_object(host.incoming(c.caller, p.name)), []


@handles("session.close")
async def _session_close(c: ClientConnection, p: m.SessionClose, r: Request) -> Result:
    c.daemon.host.session_close(c.caller, p.name)
    c.daemon.bus.publish("session.closed", name=p.name)
    return {}, []


@handles("session.retrieve")
async def _session_retrieve(c: ClientConnection, p: m.SessionRetrieve, r: Request) -> Result:
    c.holds_files = True
    result = c.daemon.host.session_retrieve(c.caller, p.name)
    c.daemon.bus.publish("session.retrieved", name=p.name)
    return result, []


@handles("session.finish")
async def _session_finish(c: ClientConnection, p: m.SessionFinish, r: Request) -> Result:
    c.daemon.host.session_finish(c.caller, p.name)
    c.daemon.bus.publish("session.finished", name=p.name, state=c.daemon.host.kernel.state)
    return {}, []


@handles("memfd.preserve")
async def _memfd_preserve(c: ClientConnection, p: m.MemfdPreserve, r: Request) -> Result:
    if len(r.fds) != 1:
        raise DaemonError(
            "MissingFds",
            f"memfd.preserve needs exactly one fd, got {len(r.fds)}",
            errno=errno.EBADF,
        )
    if p.page_size != 4096:
        raise DaemonError(
            "BadParams", f"page size {p.page_size} is not supported for a memfd", errno=errno.EINVAL
        )
    c.holds_files = True
    result = c.daemon.host.memfd_from_fd(
        c.caller, p.session, p.token, r.fds[0], size=p.size, seals=p.seals, name=p.name
    )
    c.daemon.bus.publish("file.preserved", session=p.session, token=p.token, type="memfd")
    return result, []


@handles("memfd.retrieve")
async def _memfd_retrieve(c: ClientConnection, p: m.MemfdRetrieve, r: Request) -> Result:
    c.holds_files = True
    info, fd = c.daemon.host.memfd_to_fd(c.caller, p.session, p.token)
    return info, [fd]


@handles("file.unpreserve")
async def _file_unpreserve(c: ClientConnection, p: m.FileUnpreserve, r: Request) -> Result:
    c.daemon.host.file_unpreserve(c.caller, p.session, p.token)
    c.daemon.bus.publish("file.unpreserved", session=p.session, token=p.token)
    return {}, []


@handles("file.retrieve")
async def _file_retrieve(c: ClientConnection, p: m.FileRetrieve, r: Request) -> Result:
    c.holds_files = True
    return c.daemon.host.file_retrieve(c.caller, p.session, p.token), []


@handles("prepare")
async def _prepare(c: ClientConnection, p: m.Prepare, r: Request) -> Result:
    host = c.daemon.host
    host.prepare()
    luo = host.kernel.liveupdate()
    c.daemon.bus.publish("prepared", target=luo.target.release if luo.target else None)
    return {
        "state": host.kernel.state,
        "target": luo.target.release if luo.target else None,
        "formats": dict(luo.formats),
    }, []


@handles("freeze")
async def _freeze(c: ClientConnection, p: m.Freeze, r: Request) -> Result:
    c.daemon.uapi.live.sync()
    c.daemon.host.kernel.freeze()
    c.daemon.bus.publish("frozen")
    return {"state": c.daemon.host.kernel.state}, []


@handles("cancel")
async def _cancel(c: ClientConnection, p: m.Cancel, r: Request) -> Result:
    c.daemon.host.kernel.cancel()
    c.daemon.bus.publish("cancelled", reason="requested")
    return {"state": c.daemon.host.kernel.state}, []


@handles("finish")
async def _finish(c: ClientConnection, p: m.Finish, r: Request) -> Result:
    c.daemon.host.finish_all(c.caller)
    c.daemon.bus.publish("finished")
    return {"state": c.daemon.host.kernel.state}, []


@handles("kexec")
async def _kexec(c: ClientConnection, p: m.Kexec, r: Request) -> Result:
    return await c.daemon.orchestrator.kexec(p.target, force=p.force, requester=c), []


@handles("update")
async def _update(c: ClientConnection, p: m.Update, r: Request) -> Result:
    orch = c.daemon.orchestrator
    return await orch.update(p.target, timeout=p.timeout, force=p.force, requester=c), []


@handles("boot.cold")
async def _boot_cold(c: ClientConnection, p: m.BootCold, r: Request) -> Result:
    daemon = c.daemon
    if daemon.orchestrator.lock.locked():
        raise DaemonError("UpdateInProgress", "an update is running", errno=errno.EBUSY)
    image = daemon.host.image(p.target) if p.target else None
    daemon._userspace_dies(keep=c)
    kernel = daemon.host.boot_cold(image)
    daemon.bus.publish("boot.cold", release=kernel.release)
    return {"release": kernel.release, "state": kernel.state}, []


@handles("uapi.attach")
async def _uapi_attach(c: ClientConnection, p: m.UapiAttach, r: Request) -> Result:
    return {}, [c.daemon.uapi.attach(c.caller.uid)]


@handles("events.subscribe")
async def _events_subscribe(c: ClientConnection, p: m.EventsSubscribe, r: Request) -> Result:
    if c.subscriber is None:
        daemon = c.daemon
        c.follow(daemon.bus.subscribe(on_drop=lambda: daemon.drop_later(c, "fell behind")))
    recent = [e.as_json() for e in c.daemon.bus.recent()]
    return {"subscribed": True, "recent": recent}, []


@handles("participant.register")
async def _participant_register(
    c: ClientConnection, p: m.ParticipantRegister, r: Request
) -> Result:
    host = c.daemon.host
    for name in p.sessions:
        host.outgoing(c.caller, name)  # must exist and be the caller's
    c.participant = c.daemon.orchestrator.register(c, p.name, p.sessions)
    return {"name": p.name}, []


@handles("participant.ready")
async def _participant_ready(c: ClientConnection, p: m.ParticipantReady, r: Request) -> Result:
    if c.participant is None:
        raise DaemonError("NotAParticipant", "register before reporting ready", errno=errno.EINVAL)
    c.daemon.orchestrator.ready(c.participant)
    return {}, []


@handles("participant.resumed")
async def _participant_resumed(c: ClientConnection, p: m.ParticipantResumed, r: Request) -> Result:
    c.daemon.orchestrator.resumed(c, p.name)
    return {}, []


@handles("participant.ack")
async def _participant_ack(c: ClientConnection, p: m.ParticipantAck, r: Request) -> Result:
    c.daemon.orchestrator.ack(c, p.update_id, p.phase, p.ok, p.reason)
    return {}, []


@handles("file.reclaim")
async def _file_reclaim(c: ClientConnection, p: m.FileReclaim, r: Request) -> Result:
    result = c.daemon.host.file_reclaim(c.caller, p.session, p.token)
    c.daemon.bus.publish("file.reclaimed", session=p.session, token=p.token)
    return result, []


@handles("device.set")
async def _device_set(c: ClientConnection, p: m.DeviceSet, r: Request) -> Result:
    host = c.daemon.host
    device = host.device(p.bdf)
    if p.irq is not None:
        device.interrupts_enabled = p.irq
    if p.power is not None:
        device.power = PowerState(p.power)
    return host.device_object(p.bdf), []


@handles("device.dma")
async def _device_dma(c: ClientConnection, p: m.DeviceDma, r: Request) -> Result:
    host = c.daemon.host
    device = host.device(p.bdf)
    c.daemon.clock.tick()
    if p.length:
        device.dma.start(p.iova, p.length, p.seed, p.rate)
    else:
        device.dma.stop()
    return host.device_object(p.bdf), []


@handles("device.show")
async def _device_show(c: ClientConnection, p: m.DeviceShow, r: Request) -> Result:
    c.daemon.clock.tick()
    return c.daemon.host.device_object(p.bdf), []


@handles("object.create")
async def _object_create(c: ClientConnection, p: m.ObjectCreate, r: Request) -> Result:
    if len(r.fds) > 1:
        raise DaemonError("MissingFds", "object.create takes at most one fd", errno=errno.EBADF)
    c.holds_files = True
    return c.daemon.host.object_create(c.caller, p.object, r.fds[0] if r.fds else None), []


@handles("object.preserve")
async def _object_preserve(c: ClientConnection, p: m.ObjectPreserve, r: Request) -> Result:
    result = c.daemon.host.object_preserve(c.caller, p.session, p.token, p.name)
    c.daemon.bus.publish("file.preserved", **result)
    return result, []


@handles("object.list")
async def _object_list(c: ClientConnection, p: m.ObjectList, r: Request) -> Result:
    objects = c.daemon.host.objects.of(c.caller.uid)
    return {"objects": [o.as_json() for o in objects]}, []


@handles("object.close")
async def _object_close(c: ClientConnection, p: m.ObjectClose, r: Request) -> Result:
    c.daemon.host.object_close(c.caller, p.name)
    return {}, []


@handles("apply")
async def _apply(c: ClientConnection, p: m.Apply, r: Request) -> Result:
    c.holds_files = True
    result = c.daemon.host.apply(c.caller, p.plan)
    c.daemon.bus.publish("plan.applied", sessions=[s["name"] for s in result["sessions"]])
    return result, []


def _admin(c: ClientConnection, method: str) -> None:
    if not c.daemon.faults_enabled:
        raise DaemonError(
            "FaultsDisabled",
            f"{method} is refused: fault injection is off (start luod with --enable-faults)",
            errno=errno.EPERM,
        )
    if not c.caller.root and c.caller.uid != os.getuid():
        raise DaemonError(
            "NotPermitted",
            f"{method} is for root or uid {os.getuid()}, not uid {c.caller.uid}",
            errno=errno.EPERM,
        )


@handles("fault.arm")
async def _fault_arm(c: ClientConnection, p: m.FaultArm, r: Request) -> Result:
    _admin(c, "fault.arm")
    arm = c.daemon.host.faults.arm(p.point, count=p.count, errno=p.errno, match=p.match)
    c.daemon.bus.publish("fault.armed", **arm.as_json())
    return arm.as_json(), []


@handles("fault.list")
async def _fault_list(c: ClientConnection, p: m.FaultList, r: Request) -> Result:
    _admin(c, "fault.list")
    return {"enabled": True, **c.daemon.host.faults.as_json()}, []


@handles("fault.clear")
async def _fault_clear(c: ClientConnection, p: m.FaultClear, r: Request) -> Result:
    _admin(c, "fault.clear")
    cleared = c.daemon.host.faults.clear(p.point)
    c.daemon.bus.publish("fault.cleared", point=p.point, cleared=cleared)
    return {"cleared": cleared}, []


async def serve(
    daemon: Daemon,
    listener: trio.SocketListener,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve connections until cancelled."""
    async with trio.open_nursery() as nursery:
        daemon.nursery = daemon.orchestrator.nursery = daemon.uapi.nursery = nursery
        nursery.start_soon(daemon.clock.run)
        task_status.started()
        await trio.serve_listeners(daemon.handle_stream, [listener], handler_nursery=nursery)
