"""`Luo`: the Live Update Orchestrator of one kernel instance.

It owns the registered handlers and FLBs, the outgoing and incoming sessions and the
global state, and drives every handler through preserve and unpreserve here, through the
update phases in `update` and through retrieve and finish in `incoming`, with the
kernel's errno rules (reference/kernel.md §1-2, §9).

Invariants:
- preserve, unpreserve and outgoing-session changes are refused (EBUSY) only while an
  update is PREPARED or FROZEN: after a kexec the outgoing and incoming lists are apart,
  as in the kernel, so sessions are created before the incoming ones finish; after a
  successful freeze nothing changes until the kexec;
- an object (a handler's `get_id`) is preserved at most once across all sessions, and a
  retrieved incoming file counts as preserved until its session finishes;
- handlers and FLBs are registered only while no session exists (EBUSY).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

from luod.kernel_model.errors import (
    DeviceBusy,
    FileAlreadyPreserved,
    HandlerRegistration,
    KernelError,
    NoHandler,
    NoSuchToken,
    SessionExists,
    SessionFull,
    TokenExists,
    TooManySessions,
    UpdateInProgress,
)
from luod.kernel_model.images import KernelImage
from luod.kernel_model.luo import serialize
from luod.kernel_model.luo.faultpoints import FaultHook
from luod.kernel_model.luo.file import (
    FileHandler,
    IncomingFile,
    KernelServices,
    OutgoingFile,
    OutgoingSessionView,
)
from luod.kernel_model.luo.flb import Flb, FlbRegistry
from luod.kernel_model.luo.incoming import Damage, IncomingSide
from luod.kernel_model.luo.serialize import IncomingRoot
from luod.kernel_model.luo.session import IncomingSession, OutgoingSession, check_session_name
from luod.kernel_model.luo.state import Limits, LuoState
from luod.kernel_model.luo.update import UpdatePhases

if TYPE_CHECKING:
    from luod.kernel_model.vfs import File


class Luo(UpdatePhases, IncomingSide):
    """LUO of one kernel: registration, the device, the outgoing sessions and the
    in-kernel API; the update phases and the incoming side come from its mixins."""

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
        self.flbs = FlbRegistry()
        self.outgoing: dict[str, OutgoingSession] = {}
        self.incoming: dict[str, IncomingSession] = {}
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
        self.flbs.links[handler.file_type] = []

    def unregister_handler(self, file_type: str) -> None:
        self._quiescent(f"unregister handler {file_type!r}")
        for h in self.handlers:
            if h.file_type == file_type:
                self.handlers.remove(h)
                del self.flbs.links[file_type]
                return
        raise HandlerRegistration(f"no handler {file_type!r}", errno=errno.ENOENT)

    def register_flb(self, file_type: str, flb: Flb) -> None:
        self._quiescent(f"register FLB {flb.compatible!r}")
        self.flbs.register(file_type, flb)

    def unregister_flb(self, file_type: str, compatible: str) -> None:
        self._quiescent(f"unregister FLB {compatible!r}")
        self.flbs.unregister(file_type, compatible)

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
            for compatible in self.flbs.links[handler.file_type]:
                self.flbs.get(compatible)
                taken.append(compatible)
            self._hit_file("handler.preserve", f)
            handler.preserve(f)
        except BaseException:
            for compatible in reversed(taken):
                self.flbs.put(compatible)
            file.put()
            raise
        session.add(f)
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
        session = f.session
        assert isinstance(session, OutgoingSession)  # the view handlers see of it
        session.remove(f)
        del self._preserved[(f.handler.file_type, f.handler.get_id(f.file))]
        for compatible in reversed(self.flbs.links[f.handler.file_type]):
            self.flbs.put(compatible)
        f.file.put()

    def close_session(self, session: OutgoingSession) -> None:
        """Closing an outgoing session unpreserves every file, newest first."""
        self._mutable(f"close session {session.name!r}")
        for f in reversed(list(session.files)):
            self._unpreserve(f)
        session.closed = True
        del self.outgoing[session.name]

    # -- the in-kernel API dependent handlers use (kernel.md §2.1, §2.2) -------------------------

    def outgoing_token(self, session: OutgoingSessionView, file: File) -> int:
        """`liveupdate_get_token_outgoing`: the token of `file` in `session`, or ENOENT
        when it is not preserved there (a dependency must come first, in the same session)."""
        for f in session.files:
            if f.file is file:
                return f.token
        raise NoSuchToken(
            f"{file.describe()} is not preserved in session {session.name!r}",
            obj=session.name,
        )

    def outgoing_flb(self, compatible: str) -> object:
        return self.flbs.outgoing_obj(compatible)

    def outgoing_flbs(self) -> dict[str, int]:
        """FLB name -> number of dependent files (for inspection and tests)."""
        return {c: s.count for c, s in self.flbs.outgoing.items()}
