"""Fixtures for kernel-model tests: small machines that are closed after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from luod.hw.machine import Machine
from luod.kernel_model.images import KernelImage, resolve
from luod.kernel_model.kernel import BootConfig, Kernel

SMALL_RAM = 256 << 20
KHO_ONLY = BootConfig(liveupdate=False)  # KHO tests kexec without LUO's phases
# The KHO tests take the kho-v1 map apart byte by byte: they run the newest release that
# writes it (kho-v2 has its own tests, which switch the format explicitly).
KHO_V1: KernelImage = resolve("7.1.0")


@pytest.fixture
def machine() -> Iterator[Machine]:
    m = Machine.create(SMALL_RAM)
    yield m
    m.close()


@pytest.fixture
def kernel(machine: Machine) -> Kernel:
    """A cold-booted kernel with LUO off: KHO alone, kexec at will."""
    return Kernel.cold_boot(machine, KHO_V1, config=KHO_ONLY)
