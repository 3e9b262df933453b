"""LUO's incoming side: the sessions and files the last kernel handed over.

The incoming tables are deserialized once, on first use of the device; a failure there is
remembered, and every later use fails with EIO. A session is retrieved once; RETRIEVE_FD
runs a handler's retrieve at most once per file (a failure is remembered and returned every
time); SESSION_FINISH is atomic: any can_finish veto -> EBUSY and nothing changes.
After the kexec, what cannot be restored is recorded per session and file in `damage` (a
failed retrieve, a failed finish) while every other session goes on.
"""

from __future__ import annotations

from typing import Any

import attrs

from luod.errnos import errno_name
from luod.kernel_model.errors import (
    FinishVetoed,
    KernelError,
    LuoUnavailable,
    NoSuchSession,
    SessionAlreadyRetrieved,
    WrongState,
)
from luod.kernel_model.faults import InjectedFault
from luod.kernel_model.images import KernelImage
from luod.kernel_model.luo import serialize
from luod.kernel_model.luo.faultpoints import FaultPoints
from luod.kernel_model.luo.file import (
    RETRIEVE_OK,
    FileHandler,
    IncomingFile,
    IncomingSessionView,
    KernelServices,
    OutgoingFile,
)
from luod.kernel_model.luo.flb import FlbRegistry, IncomingFlb
from luod.kernel_model.luo.serialize import IncomingRoot
from luod.kernel_model.luo.session import IncomingSession, check_session_name
from luod.kernel_model.luo.state import LuoState
from luod.kernel_model.vfs import File


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


class IncomingSide(FaultPoints):
    """Mixin of `Luo`: deserialize, retrieve and finish what the last kernel preserved."""

    kernel: KernelServices
    image: KernelImage
    state: LuoState
    handlers: list[FileHandler]
    flbs: FlbRegistry
    incoming: dict[str, IncomingSession]
    damage: list[Damage]  # what this kernel could not restore
    # (handler file type, get_id) -> the file preserved, or retrieved and not yet finished
    _preserved: dict[tuple[str, int], OutgoingFile | IncomingFile]
    _incoming_root: IncomingRoot | None
    _deserialized: bool
    _broken: str | None

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
        self.flbs.adopt((r.compatible, r.data, r.count) for r in flbs)
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

    def retrieve_file(self, session: IncomingSessionView, token: int) -> File:
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
            for compatible in self.flbs.links.get(f.handler.file_type, []):
                self.flbs.done(compatible)
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

    # -- the in-kernel API dependent handlers use (kernel.md §2.1, §2.2) ------------------

    def incoming_file(self, session: IncomingSessionView, token: int) -> File:
        """`liveupdate_get_file_incoming`: a dependency's retrieved file (retrieving it)."""
        return self.retrieve_file(session, token)

    def flb_get_incoming(self, compatible: str) -> object:
        self._deserialize()
        return self.flbs.get_incoming(compatible)

    def incoming_flbs(self) -> dict[str, IncomingFlb]:
        return dict(self.flbs.incoming)
