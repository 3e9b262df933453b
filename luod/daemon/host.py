"""The daemon's hold on the emulated machine: one running kernel, on behalf of every client.

`Host` is synchronous (the kernel model is): the trio layer above serialises calls into it.
It owns what luod owns as the userspace agent: the open LUO device, every session fd (held
for the uid that created the session, so a client may disconnect and come back), and the
ownership table. That table is userspace state, so it crosses a kexec the only way
anything does: luod preserves it as bytes in a memfd of its own session (`luod.owners`),
retrieves it after the kexec and finishes that session at once, like the kernel
selftests' state session. Session names starting with `luod.` are reserved for it.

The host also holds the fault injector (`faults`): it is the harness's, not a kernel's, so
every kernel the host boots gets it, and an armed fault survives a kexec. If luod cannot
restore its ownership table after a kexec, the sessions are still there but nobody owns
them: only root may take them, and `restore_error` says why.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import stat
from collections.abc import Callable
from typing import Any

import attrs

from luod.daemon.errors import DaemonError, not_owner
from luod.daemon.objects import ObjectTable, copy_fd_into
from luod.hw.iommu import IommuFault
from luod.hw.machine import Machine
from luod.hw.memory import PAGE_SHIFT
from luod.hw.pci import PciDevice, RingCheck
from luod.ipc.methods import ObjectSpec, Plan
from luod.kernel_model.catalog import KHO, LUO
from luod.kernel_model.errors import KernelError, NoSuchSession
from luod.kernel_model.extents import Extents
from luod.kernel_model.faults import FaultInjector
from luod.kernel_model.files.memfd import MemfdFile, Seal
from luod.kernel_model.images import KernelImage, bundled_images, resolve
from luod.kernel_model.kernel import BootConfig, Kernel
from luod.kernel_model.luo.core import Luo
from luod.kernel_model.luo.session import IncomingSession, OutgoingSession
from luod.kernel_model.luo.state import LuoState
from luod.kernel_model.matrix import matrix as compatibility_matrix
from luod.kernel_model.negotiate import LayerProblem, choose, formats_of

OWNERS_SESSION = "luod.owners"
RESERVED_PREFIX = "luod."
COPY_CHUNK = 8 << 20
_SEAL_BITS = {
    "seal": fcntl.F_SEAL_SEAL,
    "shrink": fcntl.F_SEAL_SHRINK,
    "grow": fcntl.F_SEAL_GROW,
    "write": fcntl.F_SEAL_WRITE,
    "future_write": getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x10),
    "exec": getattr(fcntl, "F_SEAL_EXEC", 0x20),
}


@attrs.frozen
class Caller:
    """A client, from SO_PEERCRED at accept time."""

    uid: int
    pid: int = 0

    @property
    def root(self) -> bool:
        return self.uid == 0


def _is_memfd(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")
    except OSError:
        return False


def _error_json(exc: KernelError) -> dict[str, Any]:
    return {"name": f"luod.{exc.name}", "errno": exc.errno_name, "message": exc.message}


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
    ) -> None:
        self.machine = Machine.create(ram, pci_devices=pci_bdfs(pci))
        self.config = config
        self.faults = faults or FaultInjector()
        self.kernel = Kernel.cold_boot(self.machine, image, config, faults=self.faults)
        self.owners: dict[tuple[str, str], int] = {}
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
        self._restore_owners()

    def _restore_owners(self) -> None:
        luo = self.luo
        if OWNERS_SESSION not in luo.incoming:
            return
        session = luo.retrieve_session(OWNERS_SESSION)
        # Never raises: whatever fails here, the sessions themselves are restored; without
        # the table they belong to root alone (recorded in `restore_error`).
        try:
            self.faults.hit("update.restore", self.kernel.release)
            memfd = luo.retrieve_file(session, 0)
            assert isinstance(memfd, MemfdFile)
            table = json.loads(memfd.read(0, memfd.size) or b"{}")
            for name, uid in table.items():
                if name in luo.incoming:
                    self.owners[("incoming", name)] = int(uid)
        except KernelError as exc:
            self.restore_error = exc
        try:
            luo.finish_session(session)
        except KernelError as exc:
            # A veto leaves luod's own session incoming until a global finish takes it.
            self.restore_error = self.restore_error or exc

    def save_owners(self) -> None:
        """Before prepare: preserve the outgoing ownership table as bytes."""
        luo = self.luo
        if OWNERS_SESSION in luo.outgoing:
            luo.close_session(luo.outgoing[OWNERS_SESSION])
        table = {name: uid for (d, name), uid in self.owners.items() if d == "outgoing"}
        memfd = MemfdFile(self.kernel.memory, self.kernel.mm, name=OWNERS_SESSION)
        memfd.write(0, json.dumps(table).encode())
        session = luo.create_session(OWNERS_SESSION)
        try:
            luo.preserve(session, 0, memfd)
        except BaseException:
            memfd.release()
            luo.close_session(session)
            raise

    def adopt(self, kernel: Kernel) -> None:
        """The kernel a kexec or a cold boot produced replaces the old one; every session
        fd and file of the old userspace is gone with it."""
        self.kernel = kernel
        self.owners = {}
        self.objects.clear()
        self._start_userspace()

    def boot_cold(self, image: KernelImage | None) -> Kernel:
        kernel = Kernel.cold_boot(
            self.machine, image or self.kernel.image, self.config, faults=self.faults
        )
        self.adopt(kernel)
        return kernel

    def boot_damage(self, handed_over: list[str]) -> list[dict[str, Any]]:
        """Right after a kexec: what of the sessions `handed_over` the new kernel lost as a
        whole (cold boot, panic, unusable LUO device, a session missing, owners unknown),
        one entry per session, each naming the first cause."""
        kernel = self.kernel
        names = [n for n in handed_over if n != OWNERS_SESSION]

        def each(step: str, name: str, errno_: str | None, message: str) -> list[dict[str, Any]]:
            error = {"name": f"luod.{name}", "errno": errno_, "message": message}
            return [{"session": s, "token": None, "step": step, "error": error} for s in names]

        if kernel.boot_report.kind == "cold":
            reason = kernel.boot_report.reason or "no reason given"
            return each("boot", "ColdBoot", None, f"the next kernel booted cold: {reason}")
        if kernel.panicked is not None:
            return each("boot", "KernelPanicked", "EIO", kernel.panicked)
        if self.device_error is not None:
            return each("deserialize", "LuoUnavailable", "EIO", self.device_error)
        luo = self.kernel.liveupdate()
        damage = [
            {
                "session": name,
                "token": None,
                "step": "boot",
                "error": {
                    "name": "luod.NoSuchSession",
                    "errno": "ENOENT",
                    "message": f"session {name!r} was handed over but did not arrive",
                },
            }
            for name in names
            if name not in luo.incoming
        ]
        if self.restore_error is not None:
            exc = self.restore_error
            damage += [
                {
                    "session": name,
                    "token": None,
                    "step": "restore",
                    "error": {
                        **_error_json(exc),
                        "message": f"owner unknown, only root may take it: {exc.message}",
                    },
                }
                for name in names
                if name in luo.incoming
            ]
        return damage

    @property
    def luo(self) -> Luo:
        if self.device_error is not None:
            raise DaemonError(
                "LuoUnavailable", self.device_error, errno=errno.EIO, obj="/dev/liveupdate"
            )
        return self.kernel.liveupdate()

    # -- sessions -------------------------------------------------------------------------

    def _check_owner(self, caller: Caller, direction: str, name: str) -> None:
        owner = self.owners.get((direction, name), 0)
        if not caller.root and owner != caller.uid:
            raise not_owner(f"{direction} session {name!r}", owner, caller.uid)

    def outgoing(self, caller: Caller, name: str) -> OutgoingSession:
        session = self.luo.outgoing.get(name)
        if session is None or name == OWNERS_SESSION:
            raise NoSuchSession(f"no outgoing session {name!r}", obj=name)
        self._check_owner(caller, "outgoing", name)
        return session

    def incoming(self, caller: Caller, name: str) -> IncomingSession:
        session = self.luo.incoming.get(name)
        if session is None or name == OWNERS_SESSION:
            raise NoSuchSession(f"no incoming session {name!r}", obj=name)
        self._check_owner(caller, "incoming", name)
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
                self._check_owner(caller, "incoming", name)
        self.kernel.finish()
        self.owners = {k: v for k, v in self.owners.items() if k[0] != "incoming"}

    def session_object(self, session: OutgoingSession | IncomingSession) -> dict[str, Any]:
        if isinstance(session, OutgoingSession):
            direction = "outgoing"
            files: list[dict[str, Any]] = [
                {"token": f.token, "type": f.handler.file_type, "format": f.compatible}
                for f in session.files
            ]
            extra: dict[str, Any] = {}
        else:
            direction = "incoming"
            files = [
                {
                    "token": f.token,
                    "type": f.handler.file_type,
                    "format": f.compatible,
                    "retrieved": f.status > 0,
                    "error": None if f.error is None else _error_json(f.error),
                }
                for f in session.files
            ]
            extra = {"retrieved": session.retrieved, "stuck": session.stuck}
        return {
            "name": session.name,
            "direction": direction,
            "owner": self.owners.get((direction, session.name), 0),
            "files": files,
            **extra,
        }

    def sessions(self, caller: Caller | None = None) -> list[dict[str, Any]]:
        if self.device_error is not None:
            return []
        luo = self.kernel.luo
        if luo is None:
            return []
        out = []
        for direction, table in (("outgoing", luo.outgoing), ("incoming", luo.incoming)):
            for name, session in table.items():
                owner = self.owners.get((direction, name), 0)
                if name == OWNERS_SESSION:
                    continue
                if caller is None or caller.root or owner == caller.uid:
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
    ) -> dict[str, Any]:
        """Copy the bytes of a real fd into a new emulated memfd and preserve it."""
        session = self.outgoing(caller, session_name)
        st = os.fstat(source)
        if not stat.S_ISREG(st.st_mode):
            raise DaemonError(
                "BadSource",
                "the memfd source must be a regular file or a memfd",
                errno=errno.EINVAL,
                obj=f"{session_name}/{token:#x}",
            )
        memfd = self.copy_in(source, name or session_name, size=size, seals=Seal.from_names(seals))
        try:
            self.luo.preserve(session, token, memfd)
        except BaseException:
            memfd.release()
            raise
        return {"token": token, "size": memfd.size, "seals": memfd.seals.names()}

    def copy_in(self, source: int, name: str, *, size: int | None, seals: Seal) -> MemfdFile:
        """A new emulated memfd holding the bytes and content seals of the real fd
        `source` (plus `seals`), not yet preserved."""
        source_seals = Seal(0)
        if _is_memfd(source):
            # Content seals travel with the copy. SEAL itself does not: Linux reports it
            # for every memfd made without MFD_ALLOW_SEALING; ask for it with --seal.
            source_seals = Seal(fcntl.fcntl(source, fcntl.F_GET_SEALS)) & ~Seal.SEAL
        memfd = self.kernel.new_memfd(name)
        try:
            copy_fd_into(memfd, source, size)
            if size is not None:
                memfd.truncate(size)
            if source_seals | seals:
                memfd.add_seals(source_seals | seals)
        except BaseException:
            memfd.release()
            raise
        return memfd

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
        fd = self.copy_out(file, session_name)
        info = {"token": token, "size": file.size, "pos": file.pos, "seals": file.seals.names()}
        return info, fd

    def copy_out(self, file: MemfdFile, name: str) -> int:
        """A new real memfd (returned open, close-on-exec) with the size, bytes, seals and
        offset of the emulated memfd `file`."""
        fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, file.size)
            self._copy_out(file, fd)
            bits = 0
            for seal in file.seals.names():
                bits |= _SEAL_BITS[seal]
            if bits:
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, bits)
            os.lseek(fd, file.pos, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _copy_out(self, file: MemfdFile, fd: int) -> None:
        """Copy only the bytes that exist: the file's frames that hold data in emulated RAM
        (a hole, a filled-but-unwritten page or a lost page reads zero anyway), so a sparse
        terabyte costs what was written."""
        memory = self.kernel.memory
        data = Extents(*memory.data_extents())
        index, pfns, counts, _ = file.folio_runs()
        shift = file.folio_order
        for idx, pfn, n in zip(index.tolist(), pfns.tolist(), counts.tolist(), strict=True):
            frames = Extents.of(pfn, pfn + (n << shift)) & data
            for lo, hi in frames:
                start = ((idx << shift) + lo - pfn) << PAGE_SHIFT
                end = min(start + ((hi - lo) << PAGE_SHIFT), file.size)
                for at in range(start, end, COPY_CHUNK):
                    os.pwrite(fd, file.read(at, min(COPY_CHUNK, end - at)), at)

    def file_unpreserve(self, caller: Caller, session_name: str, token: int) -> None:
        self.luo.unpreserve(self.outgoing(caller, session_name), token)
        for obj in self.objects.of(caller.uid):
            if obj.preserved == (session_name, token):
                obj.preserved = None

    def file_reclaim(self, caller: Caller, session_name: str, token: int) -> dict[str, Any]:
        session = self.incoming(caller, session_name)
        self.luo.reclaim(session, token)
        return {"token": token, "reclaimed": True}

    # -- devices -----------------------------------------------------------------------------

    def device(self, bdf: str) -> PciDevice:
        try:
            return self.machine.pci[bdf]
        except (KeyError, ValueError):
            raise DaemonError(
                "NoSuchDevice",
                f"no PCI device at {bdf} (luod --pci N plugs in N devices)",
                errno=errno.ENOENT,
                obj=bdf,
            ) from None

    def device_object(self, bdf: str) -> dict[str, Any]:
        dev = self.device(bdf)
        dma = dev.dma
        check: RingCheck | None = None
        ring_error = None
        if dma.window is not None:
            try:
                check = dma.verify()
            except IommuFault as exc:  # the window no longer translates: say so, do not fail
                ring_error = str(exc)
        return {
            "bdf": dev.bdf,
            "power": dev.power.value,
            "irq": dev.interrupts_enabled,
            "iommu_domain": self.machine.iommu.root_of(dev.bdf),
            "dma": {
                "running": dma.running,
                "window": None if dma.window is None else [dma.window.iova, dma.window.length],
                "issued": dma.issued,
                "writes": dma.writes,
                "faults": dma.faults,
                "ring_ok": None if check is None else check.ok,
                "ring_consistent": None if check is None else check.consistent,
                "ring_error": ring_error,
            },
        }

    # -- objects ---------------------------------------------------------------------------

    def object_create(
        self, caller: Caller, spec: ObjectSpec, data_fd: int | None
    ) -> dict[str, Any]:
        obj = self.objects.create(self.kernel, caller.uid, spec, data_fd, copy_fd_into)
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
                self.objects.create(self.kernel, caller.uid, spec, None, copy_fd_into)
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

    # -- images and compatibility -------------------------------------------------------------

    def image(self, target: str) -> KernelImage:
        return resolve(target)

    def check(self, target: KernelImage) -> dict[str, Any]:
        """Can everything preserved now be handed to `target`? One entry per preserved
        object, plus the machine-wide layers `prepare` will negotiate too: the KHO and LUO
        roots, every FLB in use, and the memfd that carries luod's ownership table (it is
        preserved at every prepare, even with no other file)."""
        running = self.kernel.image
        problems: list[dict[str, Any]] = []
        objects: list[dict[str, Any]] = []

        def machine_wide(layer: str, formats: list[str], what: str = "") -> None:
            result = choose(running, target, layer, formats)
            if isinstance(result, LayerProblem):
                problems.append(
                    {
                        "format": layer,
                        "reason": what + result.reason,
                        "session": None,
                        "token": None,
                        "type": None,
                    }
                )

        luo = self.kernel.luo
        if luo is None:
            for layer in (KHO, LUO):
                machine_wide(layer, formats_of(layer))
            return {
                "compatible": not problems,
                "target": target.release,
                "problems": problems,
                "objects": objects,
            }
        files = [
            (session.name, f)
            for session in luo.outgoing.values()
            if session.name != OWNERS_SESSION
            for f in session.files
        ]
        file_layers = {f.handler.layer for _, f in files}
        for layer, formats in luo.layers_in_use().items():
            if layer not in file_layers and (layer in (KHO, LUO) or layer.startswith("flb:")):
                machine_wide(layer, formats)
        owners = luo.handler_for_type("memfd")
        if owners is not None and owners.layer not in file_layers:
            machine_wide(owners.layer, list(owners.formats), "luod's ownership table: ")
        for session_name, f in files:
            result = choose(running, target, f.handler.layer, f.handler.formats)
            entry = {"session": session_name, "token": f.token, "type": f.handler.file_type}
            if isinstance(result, LayerProblem):
                problems.append({**entry, "format": f.handler.layer, "reason": result.reason})
                objects.append({**entry, "format": None, "reason": result.reason})
            else:
                objects.append({**entry, "format": result, "reason": None})
        return {
            "compatible": not problems,
            "target": target.release,
            "problems": problems,
            "objects": objects,
        }

    def matrix(self, targets: list[str]) -> dict[str, Any]:
        """`kernel matrix`: the bundled releases plus the images `targets` name."""
        images = list(bundled_images())
        for target in targets:
            image = resolve(target)
            if image not in images:
                images.append(image)
        return compatibility_matrix(images)

    # -- the global events ------------------------------------------------------------------

    def prepare(self) -> None:
        if self.kernel.state == LuoState.NORMAL.value:
            self.save_owners()
        self.kernel.prepare()

    def image_catalog(self, image: KernelImage) -> dict[str, Any]:
        return {
            "release": image.release,
            "summary": image.summary,
            "reads": sorted(image.reads),
            "profiles": {name: list(formats) for name, formats in image.profiles},
            "write": {c: on for c, on in image.write_switches},
            "writable": image.writable(),
            "source": image.source,
        }

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

    def images(self) -> list[dict[str, Any]]:
        return [self.image_catalog(i) for i in bundled_images()]
