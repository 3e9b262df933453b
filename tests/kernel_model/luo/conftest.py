"""Helpers for LUO scenario tests: kernels with LUO on, memfds with data, full updates."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from luod.hw.machine import Machine
from luod.kernel_model.kernel import BootConfig, Kernel
from luod.kernel_model.memfd.file import MemfdFile

RAM = 4 << 30  # sparse: costs only what is written


@pytest.fixture
def machine() -> Iterator[Machine]:
    m = Machine.create(RAM)
    yield m
    m.close()


@pytest.fixture
def kernel(machine: Machine) -> Kernel:
    return Kernel.cold_boot(machine, config=BootConfig())


def new_memfd(kernel: Kernel, data: bytes = b"", *, name: str = "", order: int = 0) -> MemfdFile:
    """A memfd with `data`, installed in the process (luod holds it)."""
    fd = kernel.memfd_create(name, folio_order=order)
    memfd = kernel.file(fd)
    assert isinstance(memfd, MemfdFile)
    if data:
        memfd.write(0, data)
    return memfd


def update(kernel: Kernel) -> Kernel:
    """prepare, freeze and kexec into the loaded (or running) image."""
    kernel.prepare()
    kernel.freeze()
    nxt = kernel.kexec()
    assert nxt.boot_report.kind == "kho", nxt.boot_report.reason
    return nxt


def opened(kernel: Kernel) -> Kernel:
    """Open /dev/liveupdate once, as luod does at start: deserializes the incoming side."""
    kernel.liveupdate().open_device()
    return kernel
