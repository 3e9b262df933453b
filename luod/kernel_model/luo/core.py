"""`Luo`: the Live Update Orchestrator of one kernel instance.

It owns the global state, the outgoing and incoming sessions, the registered handlers and
FLBs, and drives every handler through preserve, prepare, freeze, cancel, retrieve and
finish with the kernel's errno rules (reference/kernel.md §1-2, §9).

Invariants:
- preserve, unpreserve and outgoing-session changes are refused (EBUSY) only while an
  update is PREPARED or FROZEN: after a kexec the outgoing and incoming lists are apart,
  as in the kernel, so sessions are created before the incoming ones finish; after a
  successful freeze nothing changes until the kexec;
- a failure inside prepare or freeze runs the cancel path before the error is returned, so
  the state is NORMAL again and every file is as it was before prepare;
- an object (a handler's `get_id`) is preserved at most once across all sessions, and a
  retrieved incoming file counts as preserved until its session finishes;
- the incoming side is deserialized once, on first use of the device; a failure there is
  remembered, and every later use fails with EIO;
- rollback never stops halfway: the ops a cancel runs (a handler's unfreeze and cancel)
  cannot fail in Linux, so an error from one is recorded in `rollback_errors` and the
  rollback goes on with every other file;
- after the kexec, what cannot be restored is recorded per session and file in `damage`
  (a failed retrieve, a failed finish) while every other session goes on.

Every step calls the fault hook first (`fault`, a `FaultInjector.hit` handed over by the
kernel; see `luod.kernel_model.faults` for the points and what a fault at each does).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from luod.errnos import errno_name
from luod.kernel_model import catalog
from luod.kernel_model.errors import (
    DeviceBusy,
    FileAlreadyPreserved,
    FinishVetoed,
    HandlerRegistration,
    KernelError,
    LuoUnavailable,
    NoHandler,
    NoIncomingData,
    NoSuchSession,
    NoSuchToken,
    SessionAlreadyRetrieved,
    SessionExists,
    SessionFull,
    TokenExists,
    TooManySessions,
    UpdateInProgress,
    WrongState,
)
from luod.kernel_model.faults import InjectedFault, file_subject
from luod.kernel_model.images import KernelImage
from luod.kernel_model.luo import serialize
from luod.kernel_model.luo.handler import (
    RETRIEVE_OK,
    FileHandler,
    Flb,
    IncomingFile,
    IncomingFlb,
    KernelServices,
    OutgoingFile,
    OutgoingFlb,
)
from luod.kernel_model.luo.serialize import FileRecord, FlbRecord, IncomingRoot, SessionRecord
from luod.kernel_model.luo.session import IncomingSession, OutgoingSession, check_session_name
from luod.kernel_model.luo.state import Limits, LuoState
from luod.kernel_model.negotiate import negotiate

if TYPE_CHECKING:
    from luod.kernel_model.files.base import File

FLB_MAX = 63
FaultHook = Callable[[str, str, Collection[str]], None]  # (point, subject, labels)


@attrs.frozen
class Damage:
    """One thing the next kernel could not restore: a session or one file of it, the step
    that failed (`retrieve`, `finish`, ...) and the error, first cause first."""

    session: str
    token: int | None
    step: str
    error: KernelError

    def as_json(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "token": self.token,
            "step": self.step,
            "error": {
                "name": f"luod.{self.error.name}",
                "errno": errno_name(self.error.errno),
                "message": self.error.message,
            },
        }


class Luo:
    def __init__(
        self,
        kernel: KernelServices,
        image: KernelImage,
        *,
        limits: Limits,
        incoming: IncomingRoot | None,
        resolve_fd: Callable[[int], File],
    ) -> None:
        self.kernel = kernel
        self.image = image
        self.limits = limits
        self._resolve_fd = resolve_fd
        self._incoming_root = incoming
        self.liveupdate_number = incoming.liveupdate_number if incoming else 0
        self.state = LuoState.UPDATED if incoming else LuoState.NORMAL
        self.handlers: list[FileHandler] = []
        self._flb_types: dict[str, Flb] = {}
        self._handler_flbs: dict[str, list[str]] = {}
        self.outgoing: dict[str, OutgoingSession] = {}
        self.incoming: dict[str, IncomingSession] = {}
        self._out_flbs: dict[str, OutgoingFlb] = {}
        self._in_flbs: dict[str, IncomingFlb] = {}
        self._preserved: dict[tuple[str, int], OutgoingFile | IncomingFile] = {}
        self._deserialized = incoming is None
        self._broken: str | None = None
        self._written: serialize.WrittenLuo | None = None
        self.device_open = False
        self.target: KernelImage | None = None
        self.formats: dict[str, str] = {}
        self.fault: FaultHook | None = None  # the fault injector's hit, if any
        self.rollback_errors: list[KernelError] = []  # complaints during the last cancel
        self.damage: list[Damage] = []  # what this kernel could not restore

    # -- registration ---------------------------------------------------------------------

    def _quiescent(self, what: str) -> None:
        if self.outgoing or self.incoming:
            raise HandlerRegistration(f"cannot {what} while sessions exist", errno=errno.EBUSY)

    def register_handler(self, handler: FileHandler) -> None:
        self._quiescent(f"register handler {handler.file_type!r}")
        missing = handler.missing_ops()
        if missing:
            raise HandlerRegistration(
                f"handler {handler.file_type!r} lacks required ops: {', '.join(missing)}"
            )
        for other in self.handlers:
            if other.file_type == handler.file_type or set(other.formats) & set(handler.formats):
                raise HandlerRegistration(
                    f"handler {handler.file_type!r} is registered already", errno=errno.EEXIST
                )
        self.handlers.append(handler)
        self._handler_flbs[handler.file_type] = []

    def unregister_handler(self, file_type: str) -> None:
        self._quiescent(f"unregister handler {file_type!r}")
        for h in self.handlers:
            if h.file_type == file_type:
                self.handlers.remove(h)
                del self._handler_flbs[file_type]
                return
        raise HandlerRegistration(f"no handler {file_type!r}", errno=errno.ENOENT)

    def register_flb(self, file_type: str, flb: Flb) -> None:
        self._quiescent(f"register FLB {flb.compatible!r}")
        if file_type not in self._handler_flbs:
            raise HandlerRegistration(
                f"no handler {file_type!r} to link FLB to", errno=errno.ENOENT
            )
        links = self._handler_flbs[file_type]
        if flb.compatible in links:
            raise HandlerRegistration(
                f"FLB {flb.compatible!r} is linked to {file_type!r} already", errno=errno.EEXIST
            )
        known = self._flb_types.get(flb.compatible)
        if known is not None and known is not flb:
            raise HandlerRegistration(
                f"another FLB named {flb.compatible!r} exists", errno=errno.EEXIST
            )
        if known is None and len(self._flb_types) >= FLB_MAX:
            raise HandlerRegistration("the FLB table is full", errno=errno.ENOSPC)
        self._flb_types[flb.compatible] = flb
        links.append(flb.compatible)

    def unregister_flb(self, file_type: str, compatible: str) -> None:
        self._quiescent(f"unregister FLB {compatible!r}")
        links = self._handler_flbs.get(file_type, [])
        if compatible not in links:
            raise HandlerRegistration(f"FLB {compatible!r} is not linked", errno=errno.ENOENT)
        links.remove(compatible)
        if not any(compatible in lk for lk in self._handler_flbs.values()):
            del self._flb_types[compatible]

    def handler_for_type(self, file_type: str) -> FileHandler | None:
        return next((h for h in self.handlers if h.file_type == file_type), None)

    # -- the device -----------------------------------------------------------------------

    def open_device(self) -> None:
        """First open deserializes the incoming sessions; /dev/liveupdate is exclusive."""
        if self.device_open:
            raise DeviceBusy("/dev/liveupdate is open already", obj="/dev/liveupdate")
        self._deserialize()
        self.device_open = True

    def close_device(self) -> None:
        self.device_open = False

    def _deserialize(self) -> None:
        if self._broken is not None:
            raise LuoUnavailable(self._broken, obj="/dev/liveupdate")
        if self._deserialized:
            return
        root = self._incoming_root
        assert root is not None and self.kernel.kho_in is not None
        memory, kho_in = self.kernel.memory, self.kernel.kho_in
        try:
            self._hit("luo.deserialize", self.image.release)
            sessions, flbs, pages = serialize.read_tables(memory, kho_in, root)
            for flb in flbs:
                if flb.compatible not in self.image.reads:
                    raise serialize.LuoTablesCorrupt(f"no FLB reads format {flb.compatible!r}")
            for record in sessions:
                for f in record.files:
                    if self._handler_for_format(f.compatible) is None:
                        raise serialize.LuoTablesCorrupt(
                            f"no handler reads format {f.compatible!r} "
                            f"(session {record.name!r}, token {f.token:#x})"
                        )
        except (serialize.LuoTablesCorrupt, InjectedFault) as exc:
            self._broken = f"incoming live-update data unusable: {exc}"
            raise LuoUnavailable(self._broken, obj="/dev/liveupdate") from exc
        for record in sessions:
            session = IncomingSession(record.name)
            for f in record.files:
                handler = self._handler_for_format(f.compatible)
                assert handler is not None
                session.files.append(IncomingFile(session, f.token, f.compatible, f.data, handler))
            self.incoming[record.name] = session
        for r in flbs:
            self._in_flbs[r.compatible] = IncomingFlb(
                self._flb_types.get(r.compatible), r.compatible, r.data, r.count
            )
        for pfn, npages in [*pages, root.pages]:
            self.kernel.mm.free_extent(pfn, npages)
        self._deserialized = True
        self._settle_updated()

    def _handler_for_format(self, compatible: str) -> FileHandler | None:
        if compatible not in self.image.reads:
            return None
        return next((h for h in self.handlers if compatible in h.formats), None)

    def _settle_updated(self) -> None:
        if self.state is LuoState.UPDATED and not self.incoming:
            self.state = LuoState.NORMAL

    # -- outgoing sessions ----------------------------------------------------------------

    def _mutable(self, what: str) -> None:
        if self.state in (LuoState.PREPARED, LuoState.FROZEN):
            raise UpdateInProgress(f"cannot {what}: live update state is {self.state.value}")

    def create_session(self, name: str | bytes) -> OutgoingSession:
        raw = check_session_name(name)
        self._deserialize()
        text = raw.decode(errors="replace")
        self._mutable(f"create session {text!r}")
        if text in self.outgoing:
            raise SessionExists(f"session {text!r} exists", obj=text)
        limit = self.limits.max_sessions
        if limit is not None and len(self.outgoing) >= limit:
            raise TooManySessions(f"session table is full ({limit} sessions)", obj=text)
        session = OutgoingSession(text)
        self.outgoing[text] = session
        return session

    def preserve(self, session: OutgoingSession, token: int, target: File | int) -> OutgoingFile:
        """PRESERVE_FD, with Linux's order of checks; `target` is a file or an fd."""
        self._mutable(f"preserve into session {session.name!r}")
        where = f"{session.name}/{token:#x}"
        if not 0 <= token < 1 << 64:
            raise KernelError(f"token {token} is not a u64", obj=where)
        if session.has_token(token):
            raise TokenExists(f"session {session.name!r} has token {token:#x} already", obj=where)
        limit = self.limits.max_files_per_session
        if limit is not None and len(session.files) >= limit:
            raise SessionFull(f"session {session.name!r} is full ({limit} files)", obj=where)
        file = self._resolve_fd(target) if isinstance(target, int) else target
        handler = next((h for h in self.handlers if h.can_preserve(file)), None)
        if handler is not None:
            key = (handler.file_type, handler.get_id(file))
            other = self._preserved.get(key)
            if other is not None:
                raise FileAlreadyPreserved(
                    f"{file.describe()} is preserved already "
                    f"(session {other.session.name!r}, token {other.token:#x})",
                    obj=where,
                )
        if handler is None:
            raise NoHandler(f"no live-update handler for {file.describe()}", obj=where)
        f = OutgoingFile(session, token, file.get(), handler)
        taken: list[str] = []
        try:
            for compatible in self._handler_flbs[handler.file_type]:
                self._flb_get(compatible)
                taken.append(compatible)
            self._hit_file("handler.preserve", f)
            handler.preserve(f)
        except BaseException:
            for compatible in reversed(taken):
                self._flb_put(compatible)
            file.put()
            raise
        session.files.append(f)
        self._preserved[key] = f
        return f

    def unpreserve(self, session: OutgoingSession, token: int) -> None:
        """Refused while another file of the session depends on this one (EBUSY)."""
        self._mutable(f"unpreserve from session {session.name!r}")
        f = session.by_token(token)
        users = [g.token for g in session.files if f.file in g.handler.dependencies(g)]
        if users:
            raise FileAlreadyPreserved(
                f"token {token:#x} of session {session.name!r} is needed by token(s) "
                f"{', '.join(f'{t:#x}' for t in users)}: unpreserve those first",
                obj=f"{session.name}/{token:#x}",
            )
        self._unpreserve(f)

    def _unpreserve(self, f: OutgoingFile) -> None:
        self._hit_file("handler.unpreserve", f)
        f.handler.unpreserve(f)
        f.session.files.remove(f)
        del self._preserved[(f.handler.file_type, f.handler.get_id(f.file))]
        for compatible in reversed(self._handler_flbs[f.handler.file_type]):
            self._flb_put(compatible)
        f.file.put()

    def close_session(self, session: OutgoingSession) -> None:
        """Closing an outgoing session unpreserves every file, newest first."""
        self._mutable(f"close session {session.name!r}")
        for f in reversed(list(session.files)):
            self._unpreserve(f)
        session.closed = True
        del self.outgoing[session.name]

    def _flb_get(self, compatible: str) -> None:
        state = self._out_flbs.get(compatible)
        if state is None:
            flb = self._flb_types[compatible]
            data, obj = flb.preserve()
            state = self._out_flbs[compatible] = OutgoingFlb(flb, 0, data, obj)
        state.count += 1

    def _flb_put(self, compatible: str) -> None:
        state = self._out_flbs[compatible]
        state.count -= 1
        if state.count == 0:
            state.flb.unpreserve(state.data, state.obj)
            del self._out_flbs[compatible]

    # -- the in-kernel API dependent handlers use (kernel.md §2.1) --------------------------

    def outgoing_token(self, session: OutgoingSession, file: File) -> int:
        """`liveupdate_get_token_outgoing`: the token of `file` in `session`, or ENOENT
        when it is not preserved there (a dependency must come first, in the same session)."""
        for f in session.files:
            if f.file is file:
                return f.token
        raise NoSuchToken(
            f"{file.describe()} is not preserved in session {session.name!r}",
            obj=session.name,
        )

    def incoming_file(self, session: IncomingSession, token: int) -> File:
        """`liveupdate_get_file_incoming`: a dependency's retrieved file (retrieving it)."""
        return self.retrieve_file(session, token)

    def outgoing_flb(self, compatible: str) -> object:
        state = self._out_flbs.get(compatible)
        if state is None:
            raise NoIncomingData(f"FLB {compatible!r} is not preserved", errno=errno.ENOENT)
        return state.obj

    def outgoing_flbs(self) -> dict[str, int]:
        """FLB name -> number of dependent files (for inspection and tests)."""
        return {c: s.count for c, s in self._out_flbs.items()}

    # -- global events ----------------------------------------------------------------------

    def _files(self) -> Iterator[OutgoingFile]:
        for session in self.outgoing.values():
            yield from session.files

    def _hit(self, point: str, subject: str, labels: Collection[str] = ()) -> None:
        if self.fault is not None:
            self.fault(point, subject, labels)

    def _hit_file(self, point: str, f: OutgoingFile | IncomingFile) -> None:
        if self.fault is not None:
            self.fault(point, *file_subject(f.handler.file_type, f.session.name, f.token))

    def _rollback(self, point: str, f: OutgoingFile, op: Callable[[OutgoingFile], None]) -> None:
        """Run a rollback op that Linux gives no way to fail: a complaint (an injected
        fault, or an error from the op) is recorded and the rollback goes on."""
        try:
            self._hit_file(point, f)
        except KernelError as exc:
            self.rollback_errors.append(exc)
        try:
            op(f)
        except KernelError as exc:
            self.rollback_errors.append(exc)

    def layers_in_use(self) -> dict[str, list[str]]:
        """Each layer the next kernel must read, with the formats implemented for it."""
        layers: dict[str, list[str]] = {
            catalog.KHO: catalog_formats(catalog.KHO),
            catalog.LUO: list(serialize.ROOT_FORMATS),
        }
        for f in self._files():
            layers[f.handler.layer] = list(f.handler.formats)
        for compatible in self._out_flbs:
            layers[catalog.FORMAT_LAYERS.get(compatible, f"flb:{compatible}")] = [compatible]
        return layers

    def prepare(self, target: KernelImage) -> None:
        """Write every record in the formats `target` reads; NORMAL -> PREPARED."""
        if self.state is not LuoState.NORMAL:
            raise WrongState(f"prepare needs state normal, not {self.state.value}")
        chosen = negotiate(self.image, target, self.layers_in_use())
        prepared: list[OutgoingFile] = []
        try:
            for f in self._files():
                self._hit_file("handler.prepare", f)
                f.compatible = chosen[f.handler.layer]
                f.data = f.handler.prepare(f, f.compatible)
                prepared.append(f)
            self._hit("luo.prepare", target.release)
            limits = self.limits
            self._written = serialize.write(
                self.kernel.kho_out,
                self.kernel.memory,
                self.liveupdate_number + 1,
                [
                    SessionRecord(
                        s.name,
                        tuple(
                            FileRecord(f.compatible or "", f.data or 0, f.token) for f in s.files
                        ),
                    )
                    for s in self.outgoing.values()
                ],
                [FlbRecord(c, s.data, s.count) for c, s in self._out_flbs.items()],
                compatible=chosen[catalog.LUO],
                session_pages=16 if limits.max_sessions is not None else None,
                file_pages=2 if limits.max_files_per_session is not None else None,
            )
            self.kernel.kho_out.set_format(chosen[catalog.KHO])
        except BaseException:
            self.rollback_errors = []
            self._discard_records(prepared)
            raise
        self.target = target
        self.formats = chosen
        self.state = LuoState.PREPARED

    def freeze(self) -> None:
        """Freeze every file oldest first, then finalize KHO; PREPARED -> FROZEN.

        Any failure unfreezes what was frozen and cancels the whole update."""
        if self.state is not LuoState.PREPARED:
            raise WrongState(f"freeze needs state prepared, not {self.state.value}")
        try:
            for f in self._files():
                self._hit_file("handler.freeze", f)
                f.handler.freeze(f)
                f.frozen = True
            self._hit("kho.finalize", self.target.release if self.target else self.image.release)
            self.kernel.kho_out.finalize()
        except BaseException:
            self.cancel()
            raise
        self.state = LuoState.FROZEN

    def cancel(self) -> None:
        """Back to NORMAL from PREPARED or FROZEN; every file stays preserved and usable."""
        if self.state not in (LuoState.PREPARED, LuoState.FROZEN):
            raise WrongState(f"cancel needs state prepared or frozen, not {self.state.value}")
        self.rollback_errors = []
        for f in reversed(list(self._files())):
            if f.frozen:
                self._rollback("handler.unfreeze", f, f.handler.unfreeze)
                f.frozen = False
        if self.kernel.kho_out.finalized:
            self.kernel.kho_out.abort()
        self._discard_records([f for f in self._files() if f.data is not None])
        self.target = None
        self.formats = {}
        self.state = LuoState.NORMAL

    def _discard_records(self, prepared: list[OutgoingFile]) -> None:
        for f in reversed(prepared):
            self._rollback("handler.cancel", f, f.handler.cancel)
            f.data = None
            f.compatible = None
        if self._written is not None:
            serialize.discard(self.kernel.kho_out, self._written)
            self._written = None

    # -- incoming sessions ------------------------------------------------------------------

    def retrieve_session(self, name: str | bytes) -> IncomingSession:
        raw = check_session_name(name)
        self._deserialize()
        text = raw.decode(errors="replace")
        session = self.incoming.get(text)
        if session is None:
            raise NoSuchSession(f"no incoming session {text!r}", obj=text)
        if session.retrieved or session.stuck:
            raise SessionAlreadyRetrieved(f"session {text!r} was retrieved already", obj=text)
        session.retrieved = True
        return session

    def retrieve_file(self, session: IncomingSession, token: int) -> File:
        """RETRIEVE_FD: the first call runs the handler; later calls give the same file;
        a failure is remembered and returned every time."""
        self._deserialize()
        f = session.by_token(token)
        if f.status < 0:
            assert f.error is not None
            raise f.error
        if f.status == RETRIEVE_OK:
            assert f.file is not None
            return f.file
        try:
            self._hit_file("handler.retrieve", f)
            file = f.handler.retrieve(f)
        except KernelError as exc:
            f.status, f.error = -exc.errno, exc
            self.damage.append(Damage(session.name, f.token, "retrieve", exc))
            raise
        f.file = file.get()
        f.status = RETRIEVE_OK
        self._preserved[(f.handler.file_type, f.handler.get_id(file))] = f
        return file

    def reclaim(self, session: IncomingSession, token: int) -> None:
        """Hand a retrieved file's preserved kernel state back to userspace's control (an
        iommufd's domain, once its re-created mappings match the preserved tables)."""
        f = session.by_token(token)
        if f.status != RETRIEVE_OK:
            raise KernelError(
                f"retrieve token {token:#x} of session {session.name!r} before reclaiming it",
                obj=f"{session.name}/{token:#x}",
            )
        reclaim = getattr(f.handler, "reclaim", None)
        if reclaim is None:
            raise KernelError(
                f"token {token:#x} is a {f.handler.file_type}: nothing to reclaim",
                obj=f"{session.name}/{token:#x}",
            )
        reclaim(f)

    def finish_session(self, session: IncomingSession) -> None:
        """SESSION_FINISH: atomic; any can_finish veto -> EBUSY and nothing changes. It
        empties the session's file set, so a second FINISH has nothing to do (0) and
        RETRIEVE_FD finds no token (ENOENT)."""
        self._veto_check([session])
        self._finish(session)
        self._settle_updated()

    def _veto_check(self, sessions: list[IncomingSession]) -> None:
        for session in sessions:
            for f in session.files:
                self._hit_file("handler.can_finish", f)
                if not f.handler.can_finish(f):
                    raise FinishVetoed(
                        f"session {session.name!r}: token {f.token:#x} cannot finish yet",
                        obj=f"{session.name}/{f.token:#x}",
                    )

    def _finish(self, session: IncomingSession) -> None:
        for f in reversed(session.files):
            try:
                self._hit_file("handler.finish", f)
                f.handler.finish(f)
            except KernelError as exc:
                # Past the point of no return nothing is rolled back: the session finishes
                # with its other files; what this one held stays reserved until next boot.
                self.damage.append(Damage(session.name, f.token, "finish", exc))
            if f.file is not None:
                del self._preserved[(f.handler.file_type, f.handler.get_id(f.file))]
                f.file.put()
            flbs = self._handler_flbs.get(f.handler.file_type, [])
            for compatible in flbs:
                self._flb_done(compatible)
        session.files.clear()
        if self.incoming.get(session.name) is session:
            del self.incoming[session.name]

    def close_incoming(self, session: IncomingSession) -> None:
        """Closing a retrieved session finishes it; a veto leaves it stuck until the next
        update (it cannot be retrieved again) and returns the error."""
        try:
            self.finish_session(session)
        except FinishVetoed:
            session.stuck = True
            raise

    def finish(self) -> None:
        """Global finish: every incoming session, atomically; UPDATED -> NORMAL."""
        if self.state is not LuoState.UPDATED:
            raise WrongState(f"finish needs state updated, not {self.state.value}")
        self._deserialize()
        sessions = list(self.incoming.values())
        self._veto_check(sessions)
        for session in sessions:
            self._finish(session)
        self.state = LuoState.NORMAL

    # -- incoming FLBs ------------------------------------------------------------------------

    def flb_get_incoming(self, compatible: str) -> object:
        self._deserialize()
        state = self._in_flbs.get(compatible)
        if state is None or state.flb is None:
            raise NoIncomingData(
                f"FLB {compatible!r} is not in the incoming set", errno=errno.ENOENT, obj=compatible
            )
        if state.finished:
            raise NoIncomingData(f"FLB {compatible!r} has finished", obj=compatible)
        if not state.retrieved:
            state.obj = state.flb.retrieve(state.data)
            state.retrieved = True
        return state.obj

    def incoming_flbs(self) -> dict[str, IncomingFlb]:
        return dict(self._in_flbs)

    def _flb_done(self, compatible: str) -> None:
        state = self._in_flbs.get(compatible)
        if state is None or state.finished or state.flb is None:
            return
        state.count -= 1
        if state.count <= 0:
            if not state.retrieved:
                state.obj = state.flb.retrieve(state.data)
                state.retrieved = True
            state.flb.finish(state.data, state.obj)
            state.finished = True


def catalog_formats(layer: str) -> list[str]:
    return [c for c, lay in catalog.FORMAT_LAYERS.items() if lay == layer]
