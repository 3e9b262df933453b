"""One emulated kernel instance, from boot to kexec.

A kernel is built from the machine alone (`Kernel.boot`): it reads the handover register,
and either adopts a KHO handover (reserving every preserved frame, losing the rest) or
boots cold (losing everything). `kexec` finalizes the outgoing state into RAM, marks this
instance dead and boots a new one from the same machine: no Python object crosses.

Boot order, as Linux does it: parse the handover while touching nothing; release every
byte not preserved; allocate only from scratch (the kernel image lands there) until the
preserved frames are reserved; then allocate normally, never from scratch.
"""

from __future__ import annotations

from typing import Literal

import attrs

from luod.hw.machine import Machine
from luod.hw.memory import PAGE_SHIFT
from luod.kernel_model.errors import KernelDead
from luod.kernel_model.extents import Extents
from luod.kernel_model.images import DEFAULT_IMAGE, KernelImage
from luod.kernel_model.kho.incoming import KhoIn, KhoRootRejected
from luod.kernel_model.kho.outgoing import KhoOut
from luod.kernel_model.mm import FrameAllocator, ScratchConfig, ScratchLayout

KERNEL_IMAGE_FRAMES = 16


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
        mm: FrameAllocator,
        kho_in: KhoIn | None,
        report: BootReport,
    ) -> None:
        self.machine = machine
        self.image = image
        self.mm = mm
        self.kho_in = kho_in
        self.boot_report = report
        self.image_pfn = mm.alloc_extent(KERNEL_IMAGE_FRAMES)
        machine.memory.write(self.image_pfn, image.release.encode())
        if kho_in is not None:
            mm.reserve(kho_in.preserved_extents)
        mm.leave_scratch_only()
        self._kho_out = KhoOut(machine.memory, mm, image.kho_write)
        self.alive = True

    @property
    def release(self) -> str:
        return self.image.release

    @property
    def kho_out(self) -> KhoOut:
        self.check_alive()
        return self._kho_out

    def check_alive(self) -> None:
        if not self.alive:
            raise KernelDead(f"kernel {self.release} is gone (it kexec'd)")

    # -- boot -------------------------------------------------------------------------------

    @classmethod
    def cold_boot(
        cls,
        machine: Machine,
        image: KernelImage = DEFAULT_IMAGE,
        *,
        scratch: ScratchConfig | None = None,
        reason: str | None = None,
    ) -> Kernel:
        """Power-on: all memory lost, scratch placed afresh."""
        machine.power_cycle()
        layout = ScratchLayout.place(machine.memory.frames, scratch)
        mm = FrameAllocator(machine.memory, layout)
        return cls(machine, image, mm, None, BootReport("cold", reason=reason))

    @classmethod
    def boot(
        cls,
        machine: Machine,
        image: KernelImage = DEFAULT_IMAGE,
        *,
        scratch: ScratchConfig | None = None,
    ) -> Kernel:
        """Boot from whatever the handover register says."""
        root = machine.handover.take()
        if root is None:
            return cls.cold_boot(machine, image, scratch=scratch, reason="no KHO handover")
        try:
            kho_in = KhoIn.parse(machine.memory, root, image.reads_kho())
        except KhoRootRejected as exc:
            return cls.cold_boot(machine, image, scratch=scratch, reason=exc.reason)
        memory = machine.memory
        data = Extents(*memory.data_extents())
        lost = data - kho_in.preserved_extents
        memory.zero_extents(lost.starts, lost.ends)
        mm = FrameAllocator(memory, kho_in.scratch, scratch_only=True)
        report = BootReport(
            "kho",
            handover=root,
            preserved_frames=kho_in.preserved_extents.total(),
            released_extents=len(lost),
        )
        return cls(machine, image, mm, kho_in, report)

    # -- kexec ------------------------------------------------------------------------------

    def kexec(self, image: KernelImage | None = None) -> Kernel:
        """Hand over to `image` (default: the same) and return the new kernel."""
        kho = self.kho_out
        root = kho.root_phys if kho.finalized else kho.finalize()
        self.machine.handover.load(root)
        self.alive = False
        return Kernel.boot(self.machine, image or self.image)

    @property
    def root_phys(self) -> int:
        return self._kho_out.root_pfn << PAGE_SHIFT
