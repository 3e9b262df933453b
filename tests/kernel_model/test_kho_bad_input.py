"""Hostile handovers: the next kernel names the cause and boots cold, never crashes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from luod.hw.machine import Machine
from luod.hw.memory import PAGE_SIZE
from luod.kernel_model.kernel import Kernel

from .conftest import KHO_V1, SMALL_RAM


def prepared(machine: Machine) -> tuple[Kernel, int, int]:
    """A kernel with one preserved page of data, finalized; returns (kernel, root, pfn)."""
    kernel = Kernel.cold_boot(machine, KHO_V1)
    pfn = kernel.mm.alloc_folio(0)
    machine.memory.write(pfn, b"precious")
    kernel.kho_out.preserve_folio(pfn)
    root = kernel.kho_out.finalize()
    machine.handover.load(root)
    return kernel, root, pfn


def boot_cold_with(machine: Machine, pfn: int, reason: str) -> None:
    nxt = Kernel.boot(machine, KHO_V1)
    assert nxt.boot_report.kind == "cold"
    assert nxt.boot_report.reason is not None
    assert reason in nxt.boot_report.reason
    assert machine.memory.read(pfn)[:8] == bytes(8), "a cold boot loses preserved memory"


def test_wrong_compatible(machine: Machine) -> None:
    _, root, pfn = prepared(machine)
    blob = bytearray(machine.memory.read_at(root, PAGE_SIZE))
    at = blob.index(b"kho-v1")
    blob[at : at + 6] = b"kho-v9"
    machine.memory.write(root >> 12, bytes(blob))
    boot_cold_with(machine, pfn, "'kho-v9'")


def test_bad_magic(machine: Machine) -> None:
    _, root, pfn = prepared(machine)
    machine.memory.write(root >> 12, b"\xde\xad\xbe\xef")
    boot_cold_with(machine, pfn, "magic")


def test_corrupted_root_blob(machine: Machine) -> None:
    _, root, pfn = prepared(machine)
    machine.memory.write(root >> 12, b"\xff" * 64, offset=40)
    boot_cold_with(machine, pfn, "corrupt")


def test_truncated_map(machine: Machine) -> None:
    kernel, root, pfn = prepared(machine)
    map_phys = kernel.kho_out.root_phys  # find the map through the blob, as the kernel does
    from luod.kernel_model.fdt import decode_fdt

    tree = decode_fdt(machine.memory.read_at(root, PAGE_SIZE))
    map_phys = tree.get_u64("preserved-memory-map")
    # the chunk's next pointer runs off the end of RAM
    machine.memory.write(map_phys >> 12, struct.pack("<Q", SMALL_RAM + PAGE_SIZE))
    boot_cold_with(machine, pfn, "truncated map")


def test_bitmap_pointer_outside_ram(machine: Machine) -> None:
    _, root, pfn = prepared(machine)
    from luod.kernel_model.fdt import decode_fdt

    map_phys = decode_fdt(machine.memory.read_at(root, PAGE_SIZE)).get_u64("preserved-memory-map")
    machine.memory.write(map_phys >> 12, struct.pack("<Q", SMALL_RAM * 4), offset=24)
    boot_cold_with(machine, pfn, "truncated map")


def test_cyclic_map(machine: Machine) -> None:
    _, root, pfn = prepared(machine)
    from luod.kernel_model.fdt import decode_fdt

    map_phys = decode_fdt(machine.memory.read_at(root, PAGE_SIZE)).get_u64("preserved-memory-map")
    machine.memory.write(map_phys >> 12, struct.pack("<Q", map_phys))
    boot_cold_with(machine, pfn, "loops")


@pytest.mark.parametrize("root", [1, SMALL_RAM, -(1 << 12) % (1 << 64)])
def test_handover_address_outside_ram(machine: Machine, root: int) -> None:
    prepared(machine)
    machine.handover.load(root % (1 << 63))
    nxt = Kernel.boot(machine, KHO_V1)
    assert nxt.boot_report.kind == "cold"
    assert "outside RAM" in (nxt.boot_report.reason or "")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_handover_never_crashes(data: st.DataObject) -> None:
    machine = Machine.create(64 << 20)
    try:
        _, root, _ = prepared(machine)
        from luod.kernel_model.fdt import decode_fdt

        map_phys = decode_fdt(machine.memory.read_at(root, PAGE_SIZE)).get_u64(
            "preserved-memory-map"
        )
        target = data.draw(st.sampled_from([root, map_phys]))
        page = bytearray(machine.memory.read_at(target, PAGE_SIZE))
        for _ in range(data.draw(st.integers(1, 8))):
            at = data.draw(st.integers(0, 255))
            page[at] = data.draw(st.integers(0, 255))
        machine.memory.write(target >> 12, bytes(page))
        nxt = Kernel.boot(machine, KHO_V1)
        if nxt.boot_report.kind == "kho":
            # whatever the damage, an accepted handover is self-consistent
            assert nxt.kho_in is not None
            assert not (nxt.kho_in.preserved_extents & nxt.mm.scratch_extents)
        else:
            assert nxt.boot_report.reason
    finally:
        machine.close()


def test_firmware_frames_in_the_map_boot_cold(machine: Machine) -> None:
    """A map marking the first MiB (firmware's) is rejected like one marking scratch."""
    kernel = Kernel.cold_boot(machine, KHO_V1)
    kernel.kho_out.preserved.add_folios([16], 0)  # behind the API's back: a forged map
    machine.handover.load(kernel.kho_out.finalize())
    nxt = Kernel.boot(machine, KHO_V1)
    assert nxt.boot_report.kind == "cold"
    assert "firmware" in (nxt.boot_report.reason or "")
