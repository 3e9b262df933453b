"""One emulated kernel instance, from boot to kexec.

A kernel is built from the machine alone (`Kernel.boot`): it reads the handover register,
and either adopts a KHO handover (reserving every preserved frame, losing the rest) or
boots cold (losing everything). `kexec` hands the outgoing state over through RAM, marks
this instance dead and boots a new one from the same machine: no Python object crosses.
What does cross besides RAM is the next kernel's command line (`BootConfig`), as
`kexec -l --reuse-cmdline` passes it, and the test harness's fault injector (`faults`), which
belongs to whoever runs the machine, not to any kernel: an armed fault fires in the next
kernel's boot as it would in this one.

Boot order, as Linux does it: parse the KHO handover while touching nothing; release every
byte not preserved; allocate only from scratch (the kernel image lands there) until the
preserved frames are reserved; read the LUO root (an unreadable one panics the kernel);
register the file handlers; then serve. The single emulated process (luod) holds every
file through `files`; it starts empty, since a kexec ends userspace.
"""

from __future__ import annotations

import errno
from typing import Literal

import attrs

from luod.hw.machine import Machine
from luod.hw.memory import PAGE_SIZE, PhysicalMemory
from luod.kernel_model.catalog import LUO
from luod.kernel_model.errors import (
    BadPageSize,
    KernelDead,
    KernelError,
    KernelPanicked,
    LuoDisabled,
    UpdateInProgress,
    WrongState,
)
from luod.kernel_model.extents import Extents
from luod.kernel_model.faults import FaultInjector, InjectedFault
from luod.kernel_model.filetypes import default_flbs, default_handlers
from luod.kernel_model.images import KernelImage, default_image
from luod.kernel_model.kho.incoming import KhoIn, KhoRootRejected
from luod.kernel_model.kho.outgoing import KhoOut
from luod.kernel_model.luo import serialize
from luod.kernel_model.luo.core import Luo
from luod.kernel_model.luo.state import Limits, LuoState
from luod.kernel_model.memfd.file import MemfdFile
from luod.kernel_model.memfd.hugetlb import HugetlbMemfdFile
from luod.kernel_model.memfd.hugetlb_pool import HUGE_ORDERS, HugetlbPools
from luod.kernel_model.mm import FrameAllocator, ScratchConfig, ScratchLayout
from luod.kernel_model.vfs import File, FileTable

KERNEL_IMAGE_FRAMES = 16


@attrs.frozen
class BootConfig:
    """The kernel command line: what every kernel booted on this machine is told."""

    scratch: ScratchConfig = attrs.field(factory=ScratchConfig)
    liveupdate: bool = True  # `liveupdate=on`
    limits: Limits = attrs.field(factory=Limits)
    hugetlb: tuple[tuple[int, int], ...] = ()  # (page size, count): `hugepages=`


@attrs.frozen
class BootReport:
    """How this kernel came up; `reason` explains a cold boot that was not asked for."""

    kind: Literal["cold", "kho"]
    reason: str | None = None
    handover: int | None = None
    preserved_frames: int = 0
    released_extents: int = 0


class Kernel:
    def __init__(
        self,
        machine: Machine,
        image: KernelImage,
        config: BootConfig,
        mm: FrameAllocator,
        kho_in: KhoIn | None,
        report: BootReport,
        faults: FaultInjector | None = None,
    ) -> None:
        self.machine = machine
        self.faults = faults
        self.image = image
        self.config = config
        self.mm = mm
        self.kho_in = kho_in
        self.boot_report = report
        self.alive = True
        self.panicked: str | None = None
        self.files = FileTable()
        self.loaded: KernelImage | None = None
        self.image_pfn = mm.alloc_extent(KERNEL_IMAGE_FRAMES)
        machine.memory.write(self.image_pfn, image.release.encode())
        if kho_in is not None:
            mm.reserve(kho_in.preserved_extents)
        mm.leave_scratch_only()
        self.hugetlb = HugetlbPools(mm, config.hugetlb)
        self._kho_out = KhoOut(machine.memory, mm, image.kho_write)
        self.luo: Luo | None = None
        if config.liveupdate:
            self._start_luo()

    def _start_luo(self) -> None:
        root = None
        if self.kho_in is not None:
            try:
                if self.faults is not None:
                    self.faults.hit("boot.luo-root", self.image.release)
                root = serialize.read_root(self.memory, self.kho_in, self.image.reads_for(LUO))
            except (serialize.LuoRootUnreadable, InjectedFault) as exc:
                self.panicked = f"Kernel panic - not syncing: {exc}"
                return
        self.luo = Luo(
            self, self.image, limits=self.config.limits, incoming=root, resolve_fd=self.files.get
        )
        if self.faults is not None:
            self.luo.fault = self.faults.hit
        # A kernel has the handlers its image knows: one is built in when the image reads
        # one of its formats (a 6.19 kernel has no hugetlb handler, so such a memfd gets
        # ENOENT at preserve, as Linux without it does).
        for handler in default_handlers(self):
            if set(handler.formats) & self.image.reads:
                self.luo.register_handler(handler)
        for file_type, flb in default_flbs(self):
            if flb.compatible in self.image.reads and self.luo.handler_for_type(file_type):
                self.luo.register_flb(file_type, flb)

    # -- services the handlers use ----------------------------------------------------------

    @property
    def memory(self) -> PhysicalMemory:
        return self.machine.memory

    @property
    def kho_out(self) -> KhoOut:
        self.check_alive()
        return self._kho_out

    @property
    def release(self) -> str:
        return self.image.release

    def check_alive(self) -> None:
        if not self.alive:
            raise KernelDead(f"kernel {self.release} is gone (it kexec'd)")
        if self.panicked is not None:
            raise KernelPanicked(self.panicked)

    def liveupdate(self) -> Luo:
        """LUO, or ENOENT as for a missing /dev/liveupdate."""
        self.check_alive()
        if self.luo is None:
            raise LuoDisabled(
                "/dev/liveupdate does not exist: live update is off", obj="/dev/liveupdate"
            )
        return self.luo

    @property
    def state(self) -> str:
        if self.panicked is not None:
            return LuoState.PANICKED.value
        return self.luo.state.value if self.luo is not None else LuoState.NORMAL.value

    @property
    def liveupdate_number(self) -> int:
        return self.luo.liveupdate_number if self.luo is not None else 0

    # -- the emulated process's files --------------------------------------------------------

    def new_memfd(
        self,
        name: str = "",
        *,
        page_size: int = PAGE_SIZE,
        folio_order: int = 0,
        allow_sealing: bool = True,
    ) -> MemfdFile:
        """A memfd not yet installed in the process. 4 KiB pages make a shmem memfd, whose
        folios may be large (`folio_order`); 2 MiB or 1 GiB pages (MFD_HUGETLB with
        MFD_HUGE_2MB/1GB) a hugetlb memfd whose folios are huge pages from the pool of that
        size. Any other page size is BadPageSize (EINVAL)."""
        self.check_alive()
        if page_size == PAGE_SIZE:
            return MemfdFile(
                self.memory,
                self.mm,
                name=name,
                folio_order=folio_order,
                allow_sealing=allow_sealing,
            )
        order = HUGE_ORDERS.get(page_size)
        if order is None:
            raise BadPageSize(
                f"memfd {name!r}: page size {page_size} is not 4K, 2M or 1G", obj=name
            )
        if folio_order:
            raise KernelError(
                f"memfd {name!r}: a folio order applies to 4K pages only, not to "
                f"{page_size}-byte huge pages",
                errno=errno.EINVAL,
                obj=name,
            )
        return HugetlbMemfdFile(
            self.memory,
            self.hugetlb.pool(order),
            name=name,
            folio_order=order,
            allow_sealing=allow_sealing,
        )

    def memfd_create(
        self,
        name: str = "",
        *,
        page_size: int = PAGE_SIZE,
        folio_order: int = 0,
        allow_sealing: bool = True,
    ) -> int:
        """memfd_create(2): a new memfd (see `new_memfd`) installed in the process; returns
        its fd."""
        memfd = self.new_memfd(
            name, page_size=page_size, folio_order=folio_order, allow_sealing=allow_sealing
        )
        return self.files.install(memfd)

    def file(self, fd: int) -> File:
        self.check_alive()
        return self.files.get(fd)

    def install(self, file: File) -> int:
        self.check_alive()
        return self.files.install(file)

    def close(self, fd: int) -> None:
        self.check_alive()
        self.files.close(fd)

    # -- staging and the global events --------------------------------------------------------

    def load(self, image: KernelImage) -> None:
        """`kexec -l`: stage the next kernel; refused once an update is prepared."""
        self.check_alive()
        if self.luo is not None and self.luo.state in (LuoState.PREPARED, LuoState.FROZEN):
            raise UpdateInProgress(
                f"cannot load {image.release}: an update to "
                f"{self.luo.target.release if self.luo.target else '?'} is {self.luo.state.value}"
            )
        self.loaded = image

    def prepare(self) -> None:
        """Prepare for the loaded image; with nothing loaded, stage the running release."""
        luo = self.liveupdate()
        if luo.state is not LuoState.NORMAL:
            raise WrongState(f"prepare needs state normal, not {luo.state.value}")
        if self.loaded is None:
            self.loaded = self.image
        luo.prepare(self.loaded)

    def freeze(self) -> None:
        self.liveupdate().freeze()

    def cancel(self) -> None:
        self.liveupdate().cancel()

    def finish(self) -> None:
        self.liveupdate().finish()

    # -- boot -------------------------------------------------------------------------------

    @classmethod
    def cold_boot(
        cls,
        machine: Machine,
        image: KernelImage | None = None,
        config: BootConfig | None = None,
        *,
        reason: str | None = None,
        faults: FaultInjector | None = None,
    ) -> Kernel:
        """Power-on: all memory lost, scratch placed afresh."""
        config = config or BootConfig()
        machine.power_cycle()
        layout = ScratchLayout.place(machine.memory.frames, config.scratch)
        mm = FrameAllocator(machine.memory, layout)
        report = BootReport("cold", reason=reason)
        return cls(machine, image or default_image(), config, mm, None, report, faults)

    @classmethod
    def boot(
        cls,
        machine: Machine,
        image: KernelImage | None = None,
        config: BootConfig | None = None,
        *,
        faults: FaultInjector | None = None,
    ) -> Kernel:
        """Boot from whatever the handover register says."""
        image = image or default_image()
        config = config or BootConfig()
        root = machine.handover.take()
        if root is None:
            return cls.cold_boot(machine, image, config, reason="no KHO handover", faults=faults)
        try:
            if faults is not None:
                faults.hit("boot.kho-parse", image.release)
            kho_in = KhoIn.parse(machine.memory, root, image.reads_kho())
        except KhoRootRejected as exc:
            return cls.cold_boot(machine, image, config, reason=exc.reason, faults=faults)
        except InjectedFault as exc:
            return cls.cold_boot(machine, image, config, reason=exc.message, faults=faults)
        memory = machine.memory
        kept = kho_in.preserved_extents
        lost = Extents.from_ranges(*memory.data_extents_outside(kept.starts, kept.ends))
        memory.zero_extents(lost.starts, lost.ends)
        mm = FrameAllocator(memory, kho_in.scratch, scratch_only=True)
        report = BootReport(
            "kho",
            handover=root,
            preserved_frames=kho_in.preserved_extents.total(),
            released_extents=len(lost),
        )
        return cls(machine, image, config, mm, kho_in, report, faults)

    # -- kexec ------------------------------------------------------------------------------

    def kexec(self, image: KernelImage | None = None) -> Kernel:
        """Hand over and return the new kernel. With LUO on, only from FROZEN, into the
        image prepared for; with LUO off (KHO alone), into `image`, else the loaded one,
        else the running one again."""
        target = self.hand_over(image)
        return Kernel.boot(self.machine, target, self.config, faults=self.faults)

    def hand_over(self, image: KernelImage | None = None) -> KernelImage:
        """The first half of `kexec`: finalize KHO, put the root's address in the handover
        register and die; returns the image the next kernel is to be. Whoever boots the
        machine next (this process, or a restarted luod) calls `Kernel.boot`."""
        self.check_alive()
        if self.luo is not None:
            if self.luo.state is not LuoState.FROZEN:
                raise WrongState(f"kexec needs state frozen, not {self.luo.state.value}")
            target = self.luo.target
            assert target is not None
        else:
            target = image or self.loaded or self.image
        kho = self._kho_out
        root = kho.root_phys if kho.finalized else kho.finalize()
        self.machine.handover.load(root)
        self.alive = False
        return target
