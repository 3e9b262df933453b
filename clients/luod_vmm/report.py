"""What `resume` found, as one record: per-device DMA checks, memory checks, the verdict.

Owned here so the verdict has one definition (`ResumeReport.verified`: no problem was
recorded, and every check that must have run did) and two renderings: `as_json` (the one
JSON object of `resume --json`, with the keys CLI.md promises: `verified`,
`bytes_checked`, `dma_writes`, `dma_writes_during_blackout`, `dma_faults`) and `summary`
(one line for humans).
"""

from __future__ import annotations

from typing import Any

import attrs

from luod.units import format_size
from luod_vmm.options import VmmOptions
from luod_vmm.verify import MemoryCheck

__all__ = ["DeviceCheck", "ResumeReport"]


@attrs.define
class DeviceCheck:
    """One device after the kexec, from `device.show`: its DMA must have gone on."""

    bdf: str
    running: bool
    writes: int
    faults: int
    ring_ok: bool | None
    ring_consistent: bool | None
    writes_before: int  # at the first look, right after retrieval
    show_error: str | None = None

    @property
    def problem(self) -> str | None:
        if self.show_error is not None:
            return f"device {self.bdf}: device.show failed: {self.show_error}"
        issues = []
        if not self.running:
            issues.append("its DMA engine is not running")
        if self.faults:
            issues.append(f"{self.faults} DMA faults")
        if self.ring_ok is not True:
            issues.append("its DMA ring is not intact")
        if self.writes <= self.writes_before:
            issues.append(f"its writes did not increase ({self.writes})")
        return f"device {self.bdf}: {', '.join(issues)}" if issues else None

    def as_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "ok": self.problem is None}


@attrs.define
class ResumeReport:
    name: str
    options: VmmOptions | None = None
    ram: MemoryCheck | None = None
    gmem: MemoryCheck | None = None
    devices: list[DeviceCheck] = attrs.Factory(list)
    dma_writes_during_blackout: int = 0
    update: dict[str, Any] | None = None
    finished: bool = False
    resumed: bool = False
    problems: list[str] = attrs.Factory(list)
    timings_ms: dict[str, float] = attrs.Factory(dict)

    def problem(self, text: str) -> None:
        self.problems.append(" ".join(text.split()))

    @property
    def verified(self) -> bool:
        options = self.options
        if self.problems or options is None or self.ram is None or not self.ram.ok:
            return False
        if options.guest_memfd and (self.gmem is None or not self.gmem.ok):
            return False
        return (
            self.finished
            and len(self.devices) == options.vfio
            and all(d.problem is None for d in self.devices)
        )

    @property
    def bytes_checked(self) -> int:
        """Guest bytes accounted for: every byte of ram (and guest_memfd) was either read
        and compared, or lies in a hole and so reads zero."""
        return sum(m.size for m in (self.ram, self.gmem) if m is not None)

    @property
    def dma_writes(self) -> int:
        return sum(d.writes for d in self.devices)

    @property
    def dma_faults(self) -> int:
        return sum(d.faults for d in self.devices)

    def as_json(self) -> dict[str, Any]:
        options = self.options
        return {
            "name": self.name,
            "verified": self.verified,
            "bytes_checked": self.bytes_checked,
            "bytes_read": sum(m.bytes_read for m in (self.ram, self.gmem) if m is not None),
            "dma_writes": self.dma_writes,
            "dma_writes_during_blackout": self.dma_writes_during_blackout,
            "dma_faults": self.dma_faults,
            "options": None if options is None else attrs.asdict(options),
            "ram": None if self.ram is None else self.ram.as_json(),
            "guest_memfd": None if self.gmem is None else self.gmem.as_json(),
            "devices": [d.as_json() for d in self.devices],
            "update": self.update,
            "finished": self.finished,
            "resumed": self.resumed,
            "problems": list(self.problems),
            "timings_ms": dict(self.timings_ms),
        }

    def summary(self) -> str:
        if not self.verified:
            first = self.problems[0] if self.problems else "a check did not run"
            extra = len(self.problems) - 1
            more = f" (and {extra} more problems)" if extra > 0 else ""
            return f"{self.name}: NOT verified: {first}{more}"
        devices = len(self.devices)
        return (
            f"{self.name}: verified: {format_size(self.bytes_checked)} of guest memory checked; "
            f"{devices} device{'' if devices == 1 else 's'}: {self.dma_writes} DMA writes "
            f"({self.dma_writes_during_blackout} during the blackout), {self.dma_faults} faults"
        )
