"""PCI devices and their DMA engines: pattern, rate, faults, power states, replay."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from luod.hw.dma import GOLDEN, NS_PER_S, RECORD_SIZE, check_ring, make_records, record_times
from luod.hw.io_pgtable import PageTableBuilder
from luod.hw.iommu import FaultReason, IommuFault
from luod.hw.machine import Machine
from luod.hw.pci import PowerState
from tests.hw.conftest import BDF, OTHER_BDF, RAM, Frames, table_region
from tests.hw.dma import DATA_PFN, WINDOW_IOVA, ring_bytes, start_dma

MASK64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    z = x & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def fresh() -> tuple[Machine, PageTableBuilder]:
    machine = Machine.create(RAM, [BDF, OTHER_BDF])
    frames = Frames(*table_region(machine))
    return machine, PageTableBuilder(machine.memory, frames.alloc, frames.free)


# -- the pattern ----------------------------------------------------------------------------------


def test_record_format_is_byte_exact() -> None:
    seed, rate = 0xDEADBEEF, 3
    record = make_records(seed, rate, np.array([5]))[0].tobytes()
    seq, time_ns, *words = struct.unpack("<QQ6Q", record)
    assert seq == 5
    assert time_ns == -(-(5 + 1) * NS_PER_S // rate) == 2_000_000_000
    assert words == [splitmix64(seed + GOLDEN * (6 * 5 + i + 1)) for i in range(6)]


def test_record_times_do_not_overflow() -> None:
    seqs = np.array([0, 10**15, 2**62], dtype=np.int64)
    expected = [-(-(k + 1) * NS_PER_S // 7) for k in seqs.tolist()]
    assert [int(t) for t in record_times(seqs, 7)] == [t & MASK64 for t in expected]


def test_dma_pattern_verifies_after_advances(machine: Machine, builder: PageTableBuilder) -> None:
    _, engine = start_dma(machine, builder, BDF, pages=4)  # 256 slots, 1 record per us
    for _ in range(10):
        machine.advance(37_000)
    assert (engine.issued, engine.writes, engine.faults) == (370, 370, 0)
    check = engine.verify()
    assert check.ok and check.intact == 256 and check.unwritten == 0
    # Slot 3 holds the newest record for it: 256 + 3, written at 260 us of run time.
    seq, time_ns = struct.unpack_from("<QQ", ring_bytes(machine, 4), 3 * RECORD_SIZE)
    assert (seq, time_ns) == (259, 260_000)
    assert machine.pci[BDF].clock_ns == machine.now_ns == 370_000


def test_partly_written_ring(machine: Machine, builder: PageTableBuilder) -> None:
    _, engine = start_dma(machine, builder, BDF)
    machine.advance(10_500)
    check = engine.verify()
    assert (check.intact, check.unwritten, check.slots) == (10, 118, 128)
    assert check.ok


@settings(max_examples=40, deadline=None)
@given(
    rate=st.integers(1, NS_PER_S),
    steps=st.lists(st.integers(0, 3_000_000), max_size=8),
)
def test_rate_is_exact(rate: int, steps: list[int]) -> None:
    machine, builder = fresh()
    try:
        _, engine = start_dma(machine, builder, BDF, rate_hz=rate)
        elapsed = 0
        for ns in steps:
            machine.advance(ns)
            elapsed += ns
            assert engine.issued == engine.writes == elapsed * rate // NS_PER_S
        assert engine.run_ns == elapsed
        assert engine.verify().ok
    finally:
        machine.close()


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, (1 << 64) - 1),
    rate=st.integers(1, 50_000_000),
    steps=st.lists(st.integers(0, 200_000), min_size=1, max_size=6),
    cuts=st.lists(st.floats(0, 1), max_size=6),
)
def test_replay_is_deterministic_whatever_the_steps(
    seed: int, rate: int, steps: list[int], cuts: list[float]
) -> None:
    """Same seed and same total time: identical RAM and counters, however time was cut."""
    total = sum(steps)
    points = sorted({int(total * c) for c in cuts} | {0, total})
    other_steps = [b - a for a, b in itertools.pairwise(points)]
    results = []
    for plan in (steps, other_steps):
        machine, builder = fresh()
        try:
            # A window of 3 pages with the middle one unmapped: faults replay too.
            root, engine = start_dma(machine, builder, BDF, pages=3, seed=seed, rate_hz=rate)
            builder.unmap(root, WINDOW_IOVA + 4096, 4096)
            for ns in plan:
                machine.advance(ns)
            results.append(
                (
                    ring_bytes(machine, 3),
                    engine.issued,
                    engine.writes,
                    engine.faults,
                    machine.iommu.fault_count(BDF),
                )
            )
        finally:
            machine.close()
    assert results[0] == results[1]
    _, issued, writes, faults, counted = results[0]
    assert issued == writes + faults == total * rate // NS_PER_S
    assert counted == faults


# -- faults ---------------------------------------------------------------------------------------


def test_faults_do_not_stop_the_engine(machine: Machine, builder: PageTableBuilder) -> None:
    root, engine = start_dma(machine, builder, BDF)  # slots 0..63 page 0, 64..127 page 1
    builder.unmap(root, WINDOW_IOVA + 4096, 4096)
    machine.advance(1_000_000)  # 1000 records
    faulted = sum(1 for k in range(1000) if k % 128 >= 64)
    assert (engine.issued, engine.writes, engine.faults) == (1000, 1000 - faulted, faulted)
    assert machine.iommu.fault_counts(BDF) == {FaultReason.NOT_PRESENT: faulted}
    assert machine.iommu.fault_count(OTHER_BDF) == 0

    # Page 0 holds its newest records; the unmapped half of the ring never got any.
    first_page = check_ring(
        ring_bytes(machine, 1), seed=7, rate_hz=1_000_000, issued=1000, slots=128
    )
    assert first_page.ok and first_page.intact == 64
    assert ring_bytes(machine, 2)[4096:] == bytes(4096)
    with pytest.raises(IommuFault):
        engine.verify()  # an observer's read of the unmapped page: not counted
    assert machine.iommu.fault_count(BDF) == faulted

    # Map the page back: the engine, still running, fills it on the next pass.
    builder.map(root, WINDOW_IOVA + 4096, [(DATA_PFN + 1, 1)])
    machine.advance(64_000)
    assert engine.verify().consistent
    machine.advance(64_000)
    assert engine.verify().ok


def test_one_big_step_counts_every_record(machine: Machine, builder: PageTableBuilder) -> None:
    root, engine = start_dma(machine, builder, BDF, rate_hz=NS_PER_S)
    builder.unmap(root, WINDOW_IOVA + 4096, 4096)
    machine.advance(10_000_000)  # 10^7 records into 128 slots, half of them unmapped
    assert engine.issued == 10_000_000
    assert engine.faults == machine.iommu.fault_count(BDF) == 5_000_000
    assert engine.writes == 5_000_000
    check = check_ring(ring_bytes(machine, 1), seed=7, rate_hz=NS_PER_S, issued=10**7, slots=128)
    assert check.ok and check.intact == 64


def test_no_domain_faults(machine: Machine, builder: PageTableBuilder) -> None:
    _, engine = start_dma(machine, builder, BDF)
    machine.iommu.detach(BDF)
    machine.advance(5_000)
    assert (engine.writes, engine.faults) == (0, 5)
    assert machine.iommu.fault_counts(BDF) == {FaultReason.NO_DOMAIN: 5}


def test_read_only_mapping_faults_writes(machine: Machine, builder: PageTableBuilder) -> None:
    root = builder.create_root()
    builder.map(root, WINDOW_IOVA, [(DATA_PFN, 1)], write=False)
    machine.iommu.attach(BDF, root)
    engine = machine.pci[BDF].dma
    engine.start(WINDOW_IOVA, 4096, 1, 1_000_000)
    machine.advance(3_000)
    assert (engine.writes, engine.faults) == (0, 3)
    assert machine.iommu.fault_counts(BDF) == {FaultReason.READ_ONLY: 3}
    assert engine.verify().missing == 3  # reads are allowed, nothing landed


def test_aliased_pages_keep_the_later_record(machine: Machine) -> None:
    frames = Frames(*table_region(machine))
    builder = PageTableBuilder(machine.memory, frames.alloc, frames.free)
    root = builder.create_root()
    builder.map(root, WINDOW_IOVA, [(DATA_PFN, 1), (DATA_PFN, 1)])  # both pages, one frame
    machine.iommu.attach(BDF, root)
    engine = machine.pci[BDF].dma
    engine.start(WINDOW_IOVA, 8192, 3, 1_000_000)
    machine.advance(128_000)  # one pass, in one step: slots 64..127 overwrite 0..63
    frame = ring_bytes(machine, 1)
    second_half = check_ring(frame, seed=3, rate_hz=1_000_000, issued=128, slots=128, first_slot=64)
    assert second_half.ok and second_half.intact == 64


def test_corruption_is_found(machine: Machine, builder: PageTableBuilder) -> None:
    _, engine = start_dma(machine, builder, BDF)
    machine.advance(200_000)
    machine.memory.write(DATA_PFN, b"\xff", 5 * RECORD_SIZE + 40)
    check = engine.verify()
    assert (check.corrupt, check.first_corrupt, check.ok) == (1, 5, False)
    # A genuine record in the wrong slot is corrupt too.
    data = ring_bytes(machine)
    machine.memory.write(DATA_PFN, data[RECORD_SIZE : 2 * RECORD_SIZE], 9 * RECORD_SIZE)
    assert engine.verify().corrupt == 2
    # A stale record (an older pass) is genuine but not the newest.
    older = make_records(7, 1_000_000, np.array([20]))[0].tobytes()
    machine.memory.write(DATA_PFN, older, 20 * RECORD_SIZE)
    check = engine.verify()
    assert (check.stale, check.corrupt, check.consistent) == (1, 2, False)


# -- devices, power, the bus ----------------------------------------------------------------------


def test_d3hot_pauses_the_engine(machine: Machine, builder: PageTableBuilder) -> None:
    _, engine = start_dma(machine, builder, BDF)
    device = machine.pci[BDF]
    machine.advance(100_000)
    device.power = PowerState.D3HOT
    machine.advance(1_000_000)
    assert (engine.issued, engine.run_ns, device.clock_ns) == (100, 100_000, 1_100_000)
    device.power = PowerState.D0
    machine.advance(100_000)
    assert engine.issued == 200
    seq, time_ns = struct.unpack_from("<QQ", ring_bytes(machine), 71 * RECORD_SIZE)
    assert (seq, time_ns) == (199, 200_000)  # run time, not device clock
    assert engine.verify().ok


def test_machine_steps_every_device(machine: Machine, builder: PageTableBuilder) -> None:
    _, first = start_dma(machine, builder, BDF, rate_hz=1_000_000)
    _, second = start_dma(machine, builder, OTHER_BDF, rate_hz=3_000_000, data_pfn=0x3000)
    machine.advance(10_000)
    assert (first.issued, second.issued) == (10, 30)
    first.stop()
    machine.advance(10_000)
    assert (first.issued, second.issued) == (10, 60)
    assert first.verify().ok and second.verify().ok


def test_engine_arguments_and_reset(machine: Machine) -> None:
    device = machine.pci[BDF]
    with pytest.raises(ValueError, match="slots"):
        device.dma.start(10, 4096, 0, 1)
    with pytest.raises(ValueError, match="slots"):
        device.dma.start(0, 100, 0, 1)
    with pytest.raises(ValueError, match="seed"):
        device.dma.start(0, 64, -1, 1)
    with pytest.raises(ValueError, match="rate"):
        device.dma.start(0, 64, 0, NS_PER_S + 1)
    with pytest.raises(ValueError, match="never started"):
        device.dma.verify()
    with pytest.raises(ValueError):
        machine.advance(-1)
    device.dma.start(0, 64, 0, 1)
    device.interrupts_enabled = True
    device.power = PowerState.D3HOT
    device.reset()
    assert (device.power, device.interrupts_enabled, device.dma.running) == (
        PowerState.D0,
        False,
        False,
    )
    assert device.dma.window is None


def test_bus(machine: Machine) -> None:
    assert [d.bdf for d in machine.pci] == [BDF, OTHER_BDF]
    machine.pci.add("0000:00:1F.7")
    assert next(iter(machine.pci)).bdf == "0000:00:1f.7"
    assert "0000:00:1f.7" in machine.pci and "0000:09:00.0" not in machine.pci
    assert "garbage" not in machine.pci
    assert len(machine.pci) == 3
    with pytest.raises(ValueError, match="already"):
        machine.pci.add(BDF)
    with pytest.raises(KeyError):
        machine.pci["0000:09:00.0"]


def test_dump_and_load_carry_devices(
    machine: Machine, builder: PageTableBuilder, tmp_path: Path
) -> None:
    _, engine = start_dma(machine, builder, BDF)
    machine.pci[OTHER_BDF].power = PowerState.D3HOT
    machine.pci[OTHER_BDF].interrupts_enabled = True
    machine.advance(150_000)
    machine.dump(tmp_path)
    loaded = Machine.load(tmp_path)
    try:
        assert loaded.now_ns == 150_000
        assert loaded.pci[OTHER_BDF].power is PowerState.D3HOT
        assert loaded.pci[OTHER_BDF].interrupts_enabled
        machine.advance(70_000)
        loaded.advance(70_000)
        twin = loaded.pci[BDF].dma
        assert (twin.issued, twin.writes, twin.faults) == (engine.issued, engine.writes, 0)
        assert loaded.memory.read(DATA_PFN, 2) == ring_bytes(machine)
        assert twin.verify().ok
    finally:
        loaded.close()


def test_power_cycle_resets_devices_and_contexts(
    machine: Machine, builder: PageTableBuilder
) -> None:
    _, engine = start_dma(machine, builder, BDF)
    machine.advance(10_000)
    machine.power_cycle()
    assert machine.iommu.contexts() == {}
    assert not engine.running and engine.issued == 0
    assert len(machine.pci) == 2  # still plugged in
    assert ring_bytes(machine) == bytes(8192)
