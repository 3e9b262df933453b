"""The daemon's hold on the emulated machine: one running kernel, on behalf of every client.

`Host` is synchronous (the kernel model is): the trio layer above serialises calls into it.
It owns what luod owns as the userspace agent: the machine and the kernel running on it,
the open LUO device, every session fd (held for the uid that created it, so a client may
disconnect and come back: `owners`) and every object a client built (`objects`). Booting a
kernel (cold or after a kexec) replaces all of that userspace state at once (`adopt`).

The host also holds the fault injector (`faults`): it is the harness's, not a kernel's, so
every kernel the host boots gets it, and an armed fault survives a kexec. If luod cannot
restore its ownership table after a kexec, the sessions are still there but nobody owns
them: only root may take them, and `restore_error` says why.
"""

from __future__ import annotations

import contextlib
import errno
import functools
from collections.abc import Callable, Generator
from typing import Any

import attrs

from luod.daemon import memfd_bridge, views
from luod.daemon.errors import DaemonError
from luod.daemon.objects import ObjectTable
from luod.daemon.owners import OWNERS_SESSION, RESERVED_PREFIX, Caller, Owners
from luod.hw.machine import Machine
from luod.ipc.plans import ObjectSpec, Plan
from luod.kernel_model.errors import KernelError
from luod.kernel_model.faults import FaultInjector
from luod.kernel_model.images import KernelImage, resolve
from luod.kernel_model.kernel import BootConfig, Kernel
from luod.kernel_model.luo.core import Luo
from luod.kernel_model.luo.session import IncomingSession, OutgoingSession
from luod.kernel_model.luo.state import LuoState
from luod.kernel_model.memfd.file import MemfdFile
from luod.kernel_model.memfd.seals import Seal

__all__ = ["Host", "pci_bdfs"]


def pci_bdfs(count: int) -> list[str]:
    """The machine's PCI devices: functions 0-7 of buses 1, 2, ..."""
    return [f"0000:{1 + i // 8:02x}:00.{i % 8}" for i in range(count)]


class Host:
    def __init__(
        self,
        *,
        ram: int,
        image: KernelImage,
        config: BootConfig,
        pci: int = 0,
        faults: FaultInjector | None = None,
        machine: Machine | None = None,
        cold_reason: str | None = None,
    ) -> None:
        """`machine`: the one to run on (default: a new one with `pci` devices). If its
        handover register is set (a luod restart), the kernel boots from it like the next
        kernel after a kexec; otherwise cold (`cold_reason`: why, for `status`)."""
        self.config = config
        self.faults = faults or FaultInjector()
        self.machine = machine or Machine.create(ram, pci_devices=pci_bdfs(pci))
        if self.machine.handover.peek() is None:
            self.kernel = Kernel.cold_boot(
                self.machine, image, config, reason=cold_reason, faults=self.faults
            )
        else:
            self.kernel = Kernel.boot(self.machine, image, config, faults=self.faults)
        self.owners = Owners()
        self.objects = ObjectTable()
        self.device_error: str | None = None
        self.restore_error: KernelError | None = None
        self._start_userspace()

    def close(self) -> None:
        self.machine.close()

    # -- boot and kexec ----------------------------------------------------------------------

    def _start_userspace(self) -> None:
        """What luod does when it starts on a kernel: open /dev/liveupdate (deserializing
        the incoming sessions) and take back the ownership table."""
        self.device_error = None
        self.restore_error = None
        try:
            self.kernel.liveupdate().open_device()
        except KernelError as exc:
            self.device_error = exc.message
            return
        self.restore_error = self.owners.restore(self.kernel, self.luo, self.faults)

    def adopt(self, kernel: Kernel) -> None:
        """The kernel a kexec or a cold boot produced replaces the old one; every session
        fd and file of the old userspace is gone with it."""
        self.kernel = kernel
        self.owners = Owners()
        self.objects.clear()
        self._start_userspace()

    def boot_cold(self, image: KernelImage | None) -> Kernel:
        kernel = Kernel.cold_boot(
            self.machine, image or self.kernel.image, self.config, faults=self.faults
        )
        self.adopt(kernel)
        return kernel

    @property
    def luo(self) -> Luo:
        if self.device_error is not None:
            raise DaemonError(
                "LuoUnavailable", self.device_error, errno=errno.EIO, obj="/dev/liveupdate"
            )
        return self.kernel.liveupdate()

    # -- sessions -------------------------------------------------------------------------

    def outgoing(self, caller: Caller, name: str) -> OutgoingSession:
        session = self.luo.outgoing.get(name)
        if session is None or name == OWNERS_SESSION:
            raise self.owners.missing(caller, self.luo, name, "outgoing")
        self.owners.check(caller, "outgoing", name)
        return session

    def incoming(self, caller: Caller, name: str) -> IncomingSession:
        session = self.luo.incoming.get(name)
        if session is None or name == OWNERS_SESSION:
            raise self.owners.missing(caller, self.luo, name, "incoming")
        self.owners.check(caller, "incoming", name)
        return session

    def retrieved(self, caller: Caller, name: str) -> IncomingSession:
        """An incoming session the caller has retrieved (its files come after it)."""
        session = self.incoming(caller, name)
        if not session.retrieved:
            raise DaemonError(
                "NotRetrieved",
                f"retrieve session {name!r} before its files",
                errno=errno.EINVAL,
                obj=name,
            )
        return session

    def session_create(self, caller: Caller, name: str) -> dict[str, Any]:
        if name.startswith(RESERVED_PREFIX):
            raise DaemonError(
                "ReservedName",
                f"session names starting with {RESERVED_PREFIX!r} are luod's own",
                errno=errno.EINVAL,
                obj=name,
            )
        session = self.luo.create_session(name)
        self.owners[("outgoing", session.name)] = caller.uid
        return self.session_object(session)

    def session_close(self, caller: Caller, name: str) -> None:
        session = self.outgoing(caller, name)
        self.luo.close_session(session)
        self.owners.pop(("outgoing", name), None)

    def session_retrieve(self, caller: Caller, name: str) -> dict[str, Any]:
        self.incoming(caller, name)
        return self.session_object(self.luo.retrieve_session(name))

    def session_finish(self, caller: Caller, name: str) -> None:
        self.luo.finish_session(self.incoming(caller, name))
        self.owners.pop(("incoming", name), None)

    def finish_all(self, caller: Caller) -> None:
        for name in self.luo.incoming:
            if name != OWNERS_SESSION:
                self.owners.check(caller, "incoming", name)
        self.kernel.finish()
        self.owners.forget_incoming()

    def session_object(self, session: OutgoingSession | IncomingSession) -> dict[str, Any]:
        return views.session_object(session, self.owners)

    def sessions(self, caller: Caller | None = None) -> list[dict[str, Any]]:
        if self.device_error is not None:
            return []
        luo = self.kernel.luo
        if luo is None:
            return []
        out = []
        for direction, table in (("outgoing", luo.outgoing), ("incoming", luo.incoming)):
            for name, session in table.items():
                if name == OWNERS_SESSION:
                    continue
                if caller is None or self.owners.may(caller, direction, name):
                    out.append(self.session_object(session))
        return out

    # -- memfds ---------------------------------------------------------------------------

    def memfd_from_fd(
        self,
        caller: Caller,
        session_name: str,
        token: int,
        source: int,
        *,
        size: int | None,
        seals: list[str],
        name: str = "",
        page_size: int = 4096,
    ) -> Generator[tuple[int, int], None, dict[str, Any]]:
        """Copy the bytes of a real fd into a new emulated memfd (of `page_size` pages:
        2 MiB and 1 GiB come from the hugetlb pools) and preserve it; returns {token,
        size, seals, type}. A generator: it yields (bytes done, bytes in all) after each
        chunk so that the caller may serve others in between (`memfd_bridge.run_steps`
        runs it in one go). Whatever ran meanwhile is checked after: a kexec drops the
        copy (its frames went with the old kernel), and the session is looked up again
        before the preserve."""
        where = f"{session_name}/{token:#x}"
        self.outgoing(caller, session_name)
        memfd_bridge.check_source(source, where)
        extra = Seal.from_names(seals)
        kernel = self.kernel
        memfd = kernel.new_memfd(name or session_name, page_size=page_size)
        try:
            with memfd_bridge.reading_source(where):
                seals_in = memfd_bridge.source_seals(source) | extra
                fill = memfd_bridge.fill_steps(memfd, source, size, seals_in)
                for step in fill:
                    yield step
                    if self.kernel is not kernel:
                        raise DaemonError(
                            "KernelChanged",
                            f"the kernel changed while copying into {where}; nothing was preserved",
                            errno=errno.EBUSY,
                            obj=where,
                        )
            session = self.outgoing(caller, session_name)
            self.luo.preserve(session, token, memfd)
        except BaseException:
            if self.kernel is kernel:
                memfd.release()
            raise
        return {
            "token": token,
            "size": memfd.size,
            "seals": memfd.seals.names(),
            "type": session.by_token(token).handler.file_type,  # memfd or memfd-hugetlb
        }

    def memfd_to_fd(
        self, caller: Caller, session_name: str, token: int
    ) -> tuple[dict[str, Any], int]:
        """Retrieve an incoming memfd and copy it into a new real memfd (returned open)."""
        session = self.retrieved(caller, session_name)
        file = self.luo.retrieve_file(session, token)
        if not isinstance(file, MemfdFile):
            raise DaemonError(
                "NotAMemfd",
                f"token {token:#x} of session {session_name!r} is a {file.file_type}",
                errno=errno.EINVAL,
                obj=f"{session_name}/{token:#x}",
            )
        fd = memfd_bridge.to_real_memfd(file, session_name)
        info = {"token": token, "size": file.size, "pos": file.pos, "seals": file.seals.names()}
        return info, fd

    def file_unpreserve(self, caller: Caller, session_name: str, token: int) -> None:
        self.luo.unpreserve(self.outgoing(caller, session_name), token)
        for obj in self.objects.of(caller.uid):
            if obj.preserved == (session_name, token):
                obj.preserved = None

    def file_reclaim(self, caller: Caller, session_name: str, token: int) -> dict[str, Any]:
        session = self.incoming(caller, session_name)
        self.luo.reclaim(session, token)
        return {"token": token, "reclaimed": True}

    # -- objects ---------------------------------------------------------------------------

    def object_create(
        self, caller: Caller, spec: ObjectSpec, data_fd: int | None
    ) -> dict[str, Any]:
        obj = self.objects.create(self.kernel, caller.uid, spec, data_fd)
        return obj.as_json()

    def object_preserve(
        self, caller: Caller, session_name: str, token: int, name: str
    ) -> dict[str, Any]:
        session = self.outgoing(caller, session_name)
        self.objects.check_order(caller.uid, name, session_name)
        obj = self.objects.get(caller.uid, name)
        self.luo.preserve(session, token, obj.file)
        obj.preserved = (session_name, token)
        return {"session": session_name, "token": token, "type": obj.type, "name": name}

    def object_close(self, caller: Caller, name: str) -> None:
        self.objects.close(self.kernel, caller.uid, name)

    def apply(self, caller: Caller, plan: Plan) -> dict[str, Any]:
        """Create, then preserve in the plan's order; on any failure release it all."""
        ordered = ObjectTable.validate_plan(plan)
        created: list[str] = []
        new_sessions: list[str] = []
        preserved: list[tuple[str, int]] = []
        try:
            for spec in ordered:
                self.objects.create(self.kernel, caller.uid, spec, None)
                created.append(spec.name)
            for session in plan.session:
                if session.name not in self.luo.outgoing:
                    self.session_create(caller, session.name)
                    new_sessions.append(session.name)
                for spec in session.object:
                    assert spec.token is not None
                    self.object_preserve(caller, session.name, spec.token, spec.name)
                    preserved.append((session.name, spec.token))
        except BaseException:
            # Best effort, every step: a step of the rollback that fails (an injected
            # unpreserve fault, say) must not stop the others, nor replace the first cause.
            steps: list[Callable[[], None]] = [
                *(
                    functools.partial(self.file_unpreserve, caller, session_name, token)
                    for session_name, token in reversed(preserved)
                ),
                *(
                    functools.partial(self.session_close, caller, session_name)
                    for session_name in reversed(new_sessions)
                ),
                *(
                    functools.partial(self.objects.close, self.kernel, caller.uid, name)
                    for name in reversed(created)
                ),
            ]
            for step in steps:
                with contextlib.suppress(KernelError, DaemonError):
                    step()
            raise
        return {"sessions": [self.session_object(self.luo.outgoing[s.name]) for s in plan.session]}

    def file_retrieve(self, caller: Caller, session_name: str, token: int) -> dict[str, Any]:
        session = self.retrieved(caller, session_name)
        file = self.luo.retrieve_file(session, token)
        f = session.by_token(token)
        return {"token": token, "type": file.file_type, "format": f.compatible}

    # -- the global events ------------------------------------------------------------------

    def image(self, target: str) -> KernelImage:
        return resolve(target)

    def prepare(self) -> None:
        if self.kernel.state == LuoState.NORMAL.value:
            self.owners.save(self.kernel, self.luo)
        self.kernel.prepare()

    def set_write(self, compatible: str, enabled: bool) -> dict[str, Any]:
        """`kernel write FORMAT on|off`: the running kernel's switch, read at prepare."""
        kernel = self.kernel
        if compatible not in kernel.image.reads and compatible not in {
            c for _, formats in kernel.image.profiles for c in formats
        }:
            raise DaemonError(
                "UnknownFormat",
                f"kernel {kernel.release} has no format {compatible!r}",
                errno=errno.ENOENT,
                obj=compatible,
            )
        if kernel.state != LuoState.NORMAL.value:
            raise DaemonError(
                "UpdateInProgress",
                f"write switches are fixed while the state is {kernel.state}",
                errno=errno.EBUSY,
                obj=compatible,
            )
        switches = dict(kernel.image.write_switches)
        switches[compatible] = enabled
        image = attrs.evolve(kernel.image, write_switches=tuple(sorted(switches.items())))
        kernel.image = image
        if kernel.luo is not None:
            kernel.luo.image = image
        return {"format": compatible, "enabled": enabled, "writable": image.writable()}
