"""The machine and its kernels, read-only or nearly: `status`, the image catalog, the KHO
handover (`kho.dump`) and the PCI devices (`device.list` for plans; `device.*` drive a
device's interrupts, power and DMA engine for tests and VMMs).
"""

from __future__ import annotations

from luod.daemon import compat, devices, handover
from luod.daemon.connection import ClientConnection
from luod.daemon.dispatch import MethodGroup, Result
from luod.hw.pci import PowerState
from luod.ipc import methods as m
from luod.ipc.messages import Request

group = MethodGroup("machine")


@group("status")
async def _status(c: ClientConnection, p: m.Status, r: Request) -> Result:
    access = c.access.as_json() | c.daemon.policy.as_json()
    return {**c.daemon.status(c.caller), "access": access}, []


@group("kernel.list")
async def _kernel_list(c: ClientConnection, p: m.KernelList, r: Request) -> Result:
    return {"images": compat.images()}, []


@group("kernel.show")
async def _kernel_show(c: ClientConnection, p: m.KernelShow, r: Request) -> Result:
    host = c.daemon.host
    return compat.catalog(host.image(p.target)), []


@group("kernel.matrix")
async def _kernel_matrix(c: ClientConnection, p: m.KernelMatrix, r: Request) -> Result:
    return compat.matrix(p.targets), []


@group("device.set")
async def _device_set(c: ClientConnection, p: m.DeviceSet, r: Request) -> Result:
    host = c.daemon.host
    device = devices.device(host.machine, p.bdf)
    c.daemon.clock.catch_up()  # the time so far ran in the old power state
    if p.irq is not None:
        device.interrupts_enabled = p.irq
    if p.power is not None:
        device.power = PowerState(p.power)
    c.daemon.clock.wake()
    return devices.device_object(host.machine, p.bdf), []


@group("device.dma")
async def _device_dma(c: ClientConnection, p: m.DeviceDma, r: Request) -> Result:
    host = c.daemon.host
    device = devices.device(host.machine, p.bdf)
    c.daemon.clock.catch_up()  # the time so far ran with the old window
    if p.length:
        device.dma.start(p.iova, p.length, p.seed, p.rate)
        c.daemon.clock.wake()
    else:
        device.dma.stop()
    return devices.device_object(host.machine, p.bdf), []


@group("device.show")
async def _device_show(c: ClientConnection, p: m.DeviceShow, r: Request) -> Result:
    c.daemon.clock.tick()
    return devices.device_object(c.daemon.host.machine, p.bdf), []


@group("device.list")
async def _device_list(c: ClientConnection, p: m.DeviceList, r: Request) -> Result:
    c.daemon.clock.tick()
    host = c.daemon.host
    return devices.device_list(host.kernel, sessions_readable=host.device_error is None), []


@group("kho.dump")
async def _kho_dump(c: ClientConnection, p: m.KhoDump, r: Request) -> Result:
    return handover.kho_dump(c.daemon.host.kernel, p.source), []
