"""Preserved memory across kexecs: exactly the preserved frames keep their data."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from luod.hw.machine import Machine
from luod.hw.memory import PAGE_SIZE
from luod.kernel_model.errors import KernelDead, RestoreRefused
from luod.kernel_model.kernel import Kernel

from .conftest import KHO_ONLY, SMALL_RAM

folio_specs = st.lists(st.tuples(st.sampled_from([0, 0, 1, 3, 9]), st.integers(1, 6)), max_size=8)


Folios = dict[int, tuple[int, bytes]]


def populate(kernel: Kernel, specs: list[tuple[int, int]], seed: int) -> tuple[Folios, Folios]:
    """Allocate folios, write random data into every frame, preserve every other group.

    Returns (preserved, dropped): pfn -> (order, bytes) of each folio."""
    rng = np.random.default_rng(seed)
    preserved: Folios = {}
    dropped: Folios = {}
    for i, (order, count) in enumerate(specs):
        pfns = kernel.mm.alloc_folios(order, count)
        for pfn in pfns.tolist():
            data = rng.integers(1, 256, (1 << order) * PAGE_SIZE, dtype=np.uint8).tobytes()
            kernel.machine.memory.write(pfn, data)
            (preserved if i % 2 == 0 else dropped)[pfn] = (order, data)
        if i % 2 == 0:
            kernel.kho_out.preserve_folios(pfns, order)
    return preserved, dropped


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(folio_specs, st.integers(0, 2**32 - 1), st.sampled_from([1, 3]))
def test_exactly_the_preserved_frames_survive(
    specs: list[tuple[int, int]], seed: int, hops: int
) -> None:
    machine = Machine.create(SMALL_RAM)
    try:
        kernel = Kernel.cold_boot(machine, config=KHO_ONLY)
        preserved, dropped = populate(kernel, specs, seed)
        for _ in range(hops):
            kernel = kernel.kexec()
            assert kernel.boot_report.kind == "kho", kernel.boot_report.reason
            assert kernel.kho_in is not None
            for pfn, (order, data) in preserved.items():
                assert machine.memory.read(pfn, 1 << order) == data
            for pfn, (order, _) in dropped.items():
                assert machine.memory.read(pfn, 1 << order) == bytes((1 << order) * PAGE_SIZE)
            # the next kernel owns the restored folios and hands them on again
            for pfn, (order, _) in preserved.items():
                kernel.kho_in.restore_folio(pfn, order)
                kernel.kho_out.preserve_folio(pfn, order)
        # Lost memory is a hole: the only data left in RAM is preserved folios plus the
        # running kernel's own pages (its image, its KHO root blob, and the incoming root
        # blob it keeps, as Linux keeps kho_in's FDT).
        assert kernel.kho_in is not None
        own = {kernel.image_pfn, kernel.kho_out.root_pfn, kernel.kho_in.root_phys >> 12}
        expected = {p + i for p, (o, _) in preserved.items() for i in range(1 << o)}
        starts, ends = machine.memory.data_extents()
        holding = {
            f for s, e in zip(starts.tolist(), ends.tolist(), strict=True) for f in range(s, e)
        }
        assert holding - own <= expected
    finally:
        machine.close()


def test_scratch_layout_is_reused_on_every_kexec(kernel: Kernel) -> None:
    layout = kernel.mm.scratch
    for _ in range(3):
        kernel = kernel.kexec()
        assert kernel.boot_report.kind == "kho"
        assert kernel.mm.scratch == layout


def test_kho_boot_places_kernel_in_scratch_before_reserving(kernel: Kernel) -> None:
    assert not kernel.mm.scratch_extents.contains([kernel.image_pfn])[0], "cold boot: normal RAM"
    nxt = kernel.kexec()
    assert nxt.mm.scratch_extents.contains([nxt.image_pfn])[0]
    assert not nxt.mm.scratch_only
    later = nxt.mm.alloc_extent(4)
    assert not nxt.mm.scratch_extents.contains([later])[0]


def test_preserved_frames_are_reserved_in_the_next_kernel(kernel: Kernel) -> None:
    pfns = kernel.mm.alloc_folios(0, 64)
    kernel.kho_out.preserve_folios(pfns, 0)
    nxt = kernel.kexec()
    # allocate everything that is free: none of it may be a preserved frame
    free = nxt.mm.free_extents_now()
    assert not free.contains(pfns).any()


def test_restore_checks(kernel: Kernel) -> None:
    folio = kernel.mm.alloc_folio(9)
    page = kernel.mm.alloc_folio(0)
    never = kernel.mm.alloc_folio(0)
    kernel.kho_out.preserve_folio(folio, 9)
    kernel.kho_out.preserve_folio(page, 0)
    kho_in = kernel.kexec().kho_in
    assert kho_in is not None
    with pytest.raises(RestoreRefused, match="never preserved"):
        kho_in.restore_folio(never, 0)
    with pytest.raises(RestoreRefused, match="granularity"):
        kho_in.restore_folio(folio, 0)
    with pytest.raises(RestoreRefused, match="granularity"):
        kho_in.restore_pages(folio, 512 - 8)
    kho_in.restore_folio(folio, 9)
    with pytest.raises(RestoreRefused, match="already restored"):
        kho_in.restore_folio(folio, 9)
    kho_in.restore_pages(page, 1)
    assert not kho_in.unrestored()


def test_preserve_pages_restored_as_pages(kernel: Kernel) -> None:
    pfn = kernel.mm.alloc_extent(1000)
    kernel.machine.memory.write(pfn, os.urandom(1000 * PAGE_SIZE))
    data = kernel.machine.memory.read(pfn, 1000)
    kernel.kho_out.preserve_pages(pfn, 1000)
    nxt = kernel.kexec()
    assert nxt.kho_in is not None
    nxt.kho_in.restore_pages(pfn, 1000)
    assert kernel.machine.memory.read(pfn, 1000) == data


def test_the_old_kernel_is_dead_after_kexec(kernel: Kernel) -> None:
    kernel.kexec()
    with pytest.raises(KernelDead):
        _ = kernel.kho_out
