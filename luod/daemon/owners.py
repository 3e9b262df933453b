"""The ownership table: which uid each session is held for, and how it crosses a kexec.

Sessions are held by luod on behalf of their creator's uid (`Caller`, from SO_PEERCRED).
The table is userspace state, so it crosses a kexec the only way anything does: luod
preserves it as bytes in a memfd of its own session (`luod.owners`) at prepare, retrieves
it after the kexec and finishes that session at once, like the kernel selftests' state
session. Session names starting with `luod.` are reserved for it. A session whose owner is
unknown (the table was lost) belongs to root alone.
"""

from __future__ import annotations

import json

import attrs

from luod.daemon.errors import not_owner
from luod.kernel_model.errors import KernelError, NoSuchSession
from luod.kernel_model.faults import FaultInjector
from luod.kernel_model.kernel import Kernel
from luod.kernel_model.luo.core import Luo
from luod.kernel_model.memfd.file import MemfdFile

OWNERS_SESSION = "luod.owners"
RESERVED_PREFIX = "luod."


@attrs.frozen
class Caller:
    """A client, from SO_PEERCRED at accept time."""

    uid: int
    pid: int = 0
    gid: int | None = None

    @property
    def root(self) -> bool:
        return self.uid == 0


class Owners(dict[tuple[str, str], int]):
    """(direction, session name) -> the uid it is held for; absent means root's."""

    def owner(self, direction: str, name: str) -> int:
        return self.get((direction, name), 0)

    def may(self, caller: Caller, direction: str, name: str) -> bool:
        return caller.root or self.owner(direction, name) == caller.uid

    def check(self, caller: Caller, direction: str, name: str) -> None:
        """Refuse (`luod.NotOwner`, EPERM) a caller the session is not held for."""
        if not self.may(caller, direction, name):
            raise not_owner(
                f"{direction} session {name!r}", self.owner(direction, name), caller.uid
            )

    def missing(self, caller: Caller, luo: Luo, name: str, wanted: str) -> NoSuchSession:
        """What is true of a session that is not where the caller looked (`wanted`): it
        does not exist at all (another uid's is the same to the caller), or it exists in
        the other direction."""
        other = "outgoing" if wanted == "incoming" else "incoming"
        sessions = luo.outgoing if other == "outgoing" else luo.incoming
        if name not in sessions or name == OWNERS_SESSION or not self.may(caller, other, name):
            return NoSuchSession(f"no session {name!r}", obj=name)
        if other == "outgoing":
            return NoSuchSession(
                f"{name} is outgoing; only sessions from the previous kernel can be "
                "retrieved or finished",
                obj=name,
            )
        return NoSuchSession(
            f"{name} is incoming (from the previous kernel); retrieve it, or create a new "
            "session to preserve into",
            obj=name,
        )

    def forget_incoming(self) -> None:
        for key in [k for k in self if k[0] == "incoming"]:
            del self[key]

    def save(self, kernel: Kernel, luo: Luo) -> None:
        """Before prepare: preserve the outgoing half of the table as bytes."""
        if OWNERS_SESSION in luo.outgoing:
            luo.close_session(luo.outgoing[OWNERS_SESSION])
        table = {name: uid for (d, name), uid in self.items() if d == "outgoing"}
        memfd = MemfdFile(kernel.memory, kernel.mm, name=OWNERS_SESSION)
        memfd.write(0, json.dumps(table).encode())
        session = luo.create_session(OWNERS_SESSION)
        try:
            luo.preserve(session, 0, memfd)
        except BaseException:
            memfd.release()
            luo.close_session(session)
            raise

    def restore(self, kernel: Kernel, luo: Luo, faults: FaultInjector) -> KernelError | None:
        """After a boot: take the incoming half back from luod's own session and finish
        it. Never raises: whatever fails, the sessions themselves are restored, and the
        error (returned) says why they belong to root alone."""
        if OWNERS_SESSION not in luo.incoming:
            return None
        session = luo.retrieve_session(OWNERS_SESSION)
        error: KernelError | None = None
        try:
            faults.hit("update.restore", kernel.release)
            memfd = luo.retrieve_file(session, 0)
            assert isinstance(memfd, MemfdFile)
            table = json.loads(memfd.read(0, memfd.size) or b"{}")
            for name, uid in table.items():
                if name in luo.incoming:
                    self[("incoming", name)] = int(uid)
        except KernelError as exc:
            error = exc
        try:
            luo.finish_session(session)
        except KernelError as exc:
            # A veto leaves luod's own session incoming until a global finish takes it.
            error = error or exc
        return error
