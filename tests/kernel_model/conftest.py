"""Fixtures for kernel-model tests: small machines that are closed after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from luod.hw.machine import Machine
from luod.kernel_model.kernel import Kernel

SMALL_RAM = 256 << 20


@pytest.fixture
def machine() -> Iterator[Machine]:
    m = Machine.create(SMALL_RAM)
    yield m
    m.close()


@pytest.fixture
def kernel(machine: Machine) -> Kernel:
    return Kernel.cold_boot(machine)
