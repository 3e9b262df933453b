"""Methods on the machine and its kernels: `status`, the image catalog, the KHO handover
and the PCI devices."""

from __future__ import annotations

from typing import Literal

import attrs

from luod.ipc.methods.table import METHODS


@METHODS.method("status", access="anyone")
@attrs.frozen
class Status:
    """Result: state, kernel {release, liveupdate_number, boot}, loaded, sessions,
    participants, blocking, last_update, last_cancel, machine {ram, resident,
    pci_devices (`device.list` lists them)}.
    `last_update.damage`: what its kernel could not restore ([{session, token, step,
    error}], kept current); `last_cancel`: the last update cancelled before its kexec
    {update_id, target, error (the first cause), rollback}; incoming files' `error`."""


@METHODS.method("kernel.list", access="anyone")
@attrs.frozen
class KernelList:
    """Result: {images: [{release, summary, reads, profiles}]}, oldest first."""


@METHODS.method("kernel.show", access="anyone")
@attrs.frozen
class KernelShow:
    """Result: one image: {release, summary, reads, profiles, write, source}."""

    target: str


@METHODS.method("kernel.matrix", access="anyone")
@attrs.frozen
class KernelMatrix:
    """Which ordered pairs of kernels can update into each other, per object type: the
    bundled releases (default write switches) plus `targets` (releases or image files).
    Result: {releases, types, pairs: [{from, to, compatible, refused: [TYPE], types: {TYPE:
    {format, formats, writes, reason}}}]}; compatible: every type the source writes goes
    through (`writes` false: not applicable); `refused` lists the others."""

    targets: list[str] = attrs.field(factory=list)


@METHODS.method("kernel.write", access="admin")
@attrs.frozen
class KernelWrite:
    """Flip the running kernel's write switch for one format. Result: {format, enabled}."""

    format: str
    enabled: bool


@METHODS.method("device.set", access="owner")
@attrs.frozen
class DeviceSet:
    """A PCI device's state: interrupts on or off, power state. Result: the device."""

    bdf: str
    irq: bool | None = None
    power: Literal["D0", "D3hot"] | None = None


@METHODS.method("device.dma", access="owner")
@attrs.frozen
class DeviceDma:
    """Start (or stop, with length 0) a device's DMA engine writing a verifiable pattern
    into [iova, iova + length) through the IOMMU. Result: the device."""

    bdf: str
    iova: int = 0
    length: int = 0
    seed: int = 0
    rate: int = 1_000_000


@METHODS.method("device.show", access="anyone")
@attrs.frozen
class DeviceShow:
    """Result: {bdf, power, irq, dma: {writes, faults, writes_during_blackout, ...}}."""

    bdf: str


@METHODS.method("device.list", access="anyone")
@attrs.frozen
class DeviceList:
    """Result: {devices: [device.show's object + held_by: {session, direction, token} or
    null], hugetlb: [{page_size, requested, total, free}]}: everything a plan may name."""


@METHODS.method("kho.dump", access="anyone")
@attrs.frozen
class KhoDump:
    """A KHO root blob, the flattened device tree the next kernel reads (`dtc -I dtb`).
    `source`: "outgoing" (written at freeze), "incoming" (the one this kernel booted from),
    or null for the first of the two there is. Result: {source, compatible, size, blob
    (bytes)}; luod.NoHandover (ENOENT) when there is none."""

    source: Literal["outgoing", "incoming"] | None = None


@METHODS.method("daemon.restart", access="admin", waits=True)
@attrs.frozen
class DaemonRestart:
    """Restart luod itself, keeping the machine: prepare and freeze with the participants'
    barrier (a refusal cancels it: luod runs on), the handover as for a kexec into the
    same release, then luod re-execs with the same argv and boots the next kernel from it.
    Result: {update_id, release, sessions (names handed over), participants, pid}. The
    connection then closes; reconnect and retrieve as after any update."""
