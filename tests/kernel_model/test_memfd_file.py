"""The emulated memfd: contents in RAM frames, holes free, Linux's seal and frozen-mapping
errnos, and the folio views the live-update handler builds its records from.

The model-based test drives a memfd and a plain bytearray with the same random operations
(write, read, truncate, punch, fallocate, fill_holes) at offsets clustered around page and
folio boundaries, and after every step checks the contents and the page-cache invariants:
maximal sorted runs, frames owned exactly once, clean folios and bytes past EOF reading
zero.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from luod.hw.machine import Machine
from luod.hw.memory import PAGE_SIZE, PhysicalMemory
from luod.kernel_model.errors import KernelError, OutOfMemory
from luod.kernel_model.extents import Extents
from luod.kernel_model.memfd.file import MemfdFile
from luod.kernel_model.memfd.hugetlb import HugetlbMemfdFile
from luod.kernel_model.memfd.seals import Seal
from luod.kernel_model.mm import FrameAllocator, ScratchLayout

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
THP_ORDER = 9


def allocator(machine: Machine) -> FrameAllocator:
    return FrameAllocator(machine.memory, ScratchLayout.place(machine.memory.frames))


@pytest.fixture
def mm(machine: Machine) -> FrameAllocator:
    return allocator(machine)


@pytest.fixture
def big_machine() -> Iterator[Machine]:
    """64 GiB of emulated RAM: a sparse file, free until written."""
    m = Machine.create(64 * GiB)
    yield m
    m.close()


def pattern(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def expect_error(code: int, fn: Callable[[], Any], *, match: str | None = None) -> KernelError:
    with pytest.raises(KernelError, match=match) as info:
        fn()
    assert info.value.errno == code, str(info.value)
    return info.value


def check_invariants(f: MemfdFile, mm: FrameAllocator, free_before: int) -> None:
    """Page-cache invariants that must hold after every operation."""
    idx, pfn, cnt, dirty = f.folio_runs()
    order = f.folio_order
    assert (cnt > 0).all()
    if idx.size > 1:
        assert (idx[1:] >= idx[:-1] + cnt[:-1]).all(), "runs overlap or are unsorted"
        joinable = (
            (idx[:-1] + cnt[:-1] == idx[1:])
            & (pfn[:-1] + (cnt[:-1] << order) == pfn[1:])
            & (dirty[:-1] == dirty[1:])
        )
        assert not joinable.any(), "runs are not maximal"
    assert not (pfn % (1 << order)).any()
    frames = Extents.from_ranges(pfn, pfn + (cnt << order))
    assert frames.total() == int(cnt.sum()) << order, "two folios share frames"
    assert not (frames & mm.free_extents_now()), "a folio's frames are free"
    assert mm.free_frames() + frames.total() == free_before, "frames leaked"
    assert f.populated_folios() == int(cnt.sum())
    assert f.resident_bytes() == f.populated_folios() * f.folio_size
    # clean folios read zero; every byte at or past EOF reads zero
    indices, pfns, dirties = f.folio_arrays()
    for index, frame, is_dirty in zip(
        indices.tolist(), pfns.tolist(), dirties.tolist(), strict=True
    ):
        start = index * f.folio_size
        content = f.memory.read(frame, 1 << order)
        if not is_dirty:
            assert content == bytes(len(content)), f"clean folio {index} holds data"
        past = max(0, f.size - start)
        if past < len(content):
            assert content[past:] == bytes(len(content) - past), f"data past EOF in {index}"


def copy_of_data_ranges(f: MemfdFile) -> bytes:
    """The file rebuilt from its data ranges alone, as luod copies a retrieved memfd out;
    checks on the way that the ranges are sorted, disjoint, merged and inside the size."""
    out = bytearray(f.size)
    end = -1
    for offset, length in f.data_ranges():
        assert length > 0 and offset > end, "data ranges unsorted, overlapping or unmerged"
        end = offset + length
        assert end <= f.size, "a data range runs past EOF"
        out[offset:end] = f.read(offset, length)
    return bytes(out)


# -- model-based test ------------------------------------------------------------------------

_near = st.tuples(st.integers(0, 24), st.integers(-5000, 5000)).map(
    lambda t: max(0, t[0] * 256 * KiB + t[1])
)
_length = st.one_of(st.integers(1, 5000), st.integers(1, 3 * MiB))

_op = st.one_of(
    st.tuples(st.just("write"), _near, st.integers(1, 600 * KiB), st.integers(0, 2**31)),
    st.tuples(st.just("read"), _near, _length),
    st.tuples(st.just("truncate"), _near),
    st.tuples(st.just("punch"), _near, _length),
    st.tuples(st.just("fallocate"), _near, _length, st.booleans()),
    st.tuples(st.just("fill_holes")),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(order=st.sampled_from([0, THP_ORDER]), ops=st.lists(_op, min_size=1, max_size=12))
def test_memfd_matches_bytearray_model(order: int, ops: list[tuple[Any, ...]]) -> None:
    machine = Machine.create(96 * MiB)
    try:
        mm = allocator(machine)
        free_before = mm.free_frames()
        f = MemfdFile(machine.memory, mm, name="model", folio_order=order)
        model = bytearray()
        for op in ops:
            kind = op[0]
            if kind == "write":
                _, offset, n, seed = op
                data = pattern(n, seed)
                assert f.write(offset, data) == n
                if offset > len(model):
                    model.extend(bytes(offset - len(model)))
                model[offset : offset + n] = data
            elif kind == "read":
                _, offset, n = op
                assert f.read(offset, n) == bytes(model[offset : offset + n])
            elif kind == "truncate":
                _, size = op
                f.truncate(size)
                if size < len(model):
                    del model[size:]
                else:
                    model.extend(bytes(size - len(model)))
            elif kind == "punch":
                _, offset, n = op
                f.fallocate(offset, n, punch_hole=True)
                stop = min(offset + n, len(model))
                if stop > offset:
                    model[offset:stop] = bytes(stop - offset)
            elif kind == "fallocate":
                _, offset, n, keep_size = op
                f.fallocate(offset, n, keep_size=keep_size)
                if not keep_size and offset + n > len(model):
                    model.extend(bytes(offset + n - len(model)))
            else:
                before = f.populated_folios()
                added = f.fill_holes()
                assert f.populated_folios() == before + added
                covering = -(-len(model) // f.folio_size)
                indices, _, _ = f.folio_arrays()
                assert int((indices < covering).sum()) == covering
            assert f.size == len(model)
            assert f.read(0, len(model) + 1) == bytes(model)
            assert copy_of_data_ranges(f) == bytes(model)
            check_invariants(f, mm, free_before)
        f.release()
        assert mm.free_frames() == free_before
    finally:
        machine.close()


# -- data ranges -------------------------------------------------------------------------------


def test_data_ranges_skip_holes_and_unwritten_folios(machine: Machine, mm: FrameAllocator) -> None:
    f = MemfdFile(machine.memory, mm, name="sparse")
    assert f.data_ranges() == []
    f.write(0, b"head")
    f.fallocate(64 * KiB, 64 * KiB)  # folios that hold no data yet
    f.write(1 * MiB, b"tail")
    assert f.populated_folios() == 1 + 16 + 1
    # whole pages that hold data, the last one cut at EOF
    assert f.data_ranges() == [(0, PAGE_SIZE), (1 * MiB, 4)]
    f.truncate(2 * MiB)
    assert f.data_ranges() == [(0, PAGE_SIZE), (1 * MiB, PAGE_SIZE)]
    f.fallocate(0, PAGE_SIZE, punch_hole=True)
    assert f.data_ranges() == [(1 * MiB, PAGE_SIZE)]


def test_data_ranges_merge_neighbours_in_other_frames(machine: Machine, mm: FrameAllocator) -> None:
    """Folios next to each other in the file but not in RAM make one range."""
    f = MemfdFile(machine.memory, mm, name="a")
    other = MemfdFile(machine.memory, mm, name="b")
    f.write(0, pattern(PAGE_SIZE, 1))
    other.write(0, b"x")  # takes the frame after f's first one
    f.write(PAGE_SIZE, pattern(PAGE_SIZE, 2))
    idx, _, _, _ = f.folio_runs()
    assert idx.size == 2, "the two folios should lie apart in RAM"
    assert f.data_ranges() == [(0, 2 * PAGE_SIZE)]


def test_data_ranges_leave_out_lost_frames(machine: Machine, mm: FrameAllocator) -> None:
    f = MemfdFile(machine.memory, mm, name="lossy", folio_order=THP_ORDER)
    f.write(0, pattern(3 * PAGE_SIZE, 3))
    _, pfns, _, _ = f.folio_runs()
    machine.memory.zero(int(pfns[0]) + 1, 1)  # the frame lost its data, as over a kexec
    assert f.data_ranges() == [(0, PAGE_SIZE), (2 * PAGE_SIZE, PAGE_SIZE)]
    assert copy_of_data_ranges(f) == f.read(0, f.size)
    f.release()
    expect_error(errno.EBADF, f.data_ranges)


# -- holes, capacity and efficiency ----------------------------------------------------------


def test_holes_cost_nothing(big_machine: Machine) -> None:
    mm = allocator(big_machine)
    memory = big_machine.memory
    free = mm.free_frames()
    f = MemfdFile(memory, mm, name="huge")
    f.truncate(1 * TiB)  # bigger than RAM: size alone is free
    assert f.size == TiB
    assert f.populated_folios() == 0
    assert mm.free_frames() == free
    assert memory.resident_bytes() == 0
    assert f.read(TiB - 10, 100) == bytes(10)
    for i, offset in enumerate((0, 5 * GiB + 17, 700 * GiB, TiB - 3)):
        f.write(offset, f"page{i}".encode())
    assert f.populated_folios() == 5  # the last write straddles two pages
    assert f.resident_bytes() == 5 * PAGE_SIZE
    assert mm.free_frames() == free - 5
    assert memory.resident_bytes() == 5 * PAGE_SIZE
    assert f.read(5 * GiB + 10, 20) == bytes(7) + b"page1" + bytes(8)
    assert f.read(TiB - 3, 10) == b"page3"  # short at EOF (the write grew the size)
    assert f.size == TiB + 2
    f.release()
    assert mm.free_frames() == free


def test_thp_folios_cost_whole_folios(big_machine: Machine) -> None:
    mm = allocator(big_machine)
    f = MemfdFile(big_machine.memory, mm, name="thp", folio_order=THP_ORDER)
    f.write(3 * MiB, b"x")
    assert f.populated_folios() == 1
    assert f.resident_bytes() == 2 * MiB
    idx, pfn, cnt, dirty = f.folio_runs()
    assert idx.tolist() == [1] and cnt.tolist() == [1] and dirty.tolist() == [True]
    assert int(pfn[0]) % 512 == 0
    assert big_machine.memory.resident_bytes() == PAGE_SIZE  # only the written page


def test_fill_holes_on_large_sparse_memfd_is_fast_and_writes_nothing(
    big_machine: Machine,
) -> None:
    mm = allocator(big_machine)
    memory = big_machine.memory
    f = MemfdFile(memory, mm, name="guest", folio_order=THP_ORDER)
    f.truncate(32 * GiB)
    f.write(0, b"boot")
    f.write(17 * GiB + 5, b"data")
    resident = memory.resident_bytes()
    start = time.perf_counter()
    added = f.fill_holes()
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"fill_holes took {elapsed:.3f}s"
    assert added == 16384 - 2
    assert f.populated_folios() == 16384
    assert memory.resident_bytes() == resident  # frames assigned, nothing written
    indices, _, dirty = f.folio_arrays()
    assert indices.tolist() == list(range(16384))
    assert np.flatnonzero(dirty).tolist() == [0, (17 * GiB) >> 21]
    assert f.fill_holes() == 0
    assert f.read(17 * GiB, 16) == bytes(5) + b"data" + bytes(7)


def test_fill_holes_rounds_up_to_whole_folios(mm: FrameAllocator, machine: Machine) -> None:
    f = MemfdFile(machine.memory, mm, name="odd", folio_order=THP_ORDER)
    f.truncate(2 * MiB + 1)
    assert f.fill_holes() == 2
    g = MemfdFile(machine.memory, mm, name="empty")
    assert g.fill_holes() == 0  # zero-length memfd: no folios


class _Counting:
    """Wraps PhysicalMemory.write / read_at to count calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, memory: PhysicalMemory) -> None:
        self.writes = 0
        self.reads = 0
        write, read_at = memory.write, memory.read_at

        def counted_write(pfn: int, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
            self.writes += 1
            write(pfn, data, offset)

        def counted_read_at(phys: int, length: int) -> bytes:
            self.reads += 1
            return read_at(phys, length)

        monkeypatch.setattr(memory, "write", counted_write)
        monkeypatch.setattr(memory, "read_at", counted_read_at)


def test_large_write_and_read_copy_once_per_run(
    monkeypatch: pytest.MonkeyPatch, mm: FrameAllocator, machine: Machine
) -> None:
    f = MemfdFile(machine.memory, mm, name="bulk")
    data = pattern(64 * MiB, 1)
    counter = _Counting(monkeypatch, machine.memory)
    assert f.write(123, data) == len(data)
    runs = f.folio_runs()[0].size
    assert counter.writes == runs <= 4
    assert f.read(123, len(data)) == data
    assert counter.reads == runs
    # a hole in the middle costs no read
    f.fallocate(8 * MiB, 8 * MiB, punch_hole=True)
    counter.reads = 0
    got = f.read(0, 24 * MiB)
    assert got[8 * MiB : 16 * MiB] == bytes(8 * MiB)
    assert got[16 * MiB :] == data[16 * MiB - 123 : 24 * MiB - 123]
    assert counter.reads == f.folio_runs()[0].size


def test_failed_write_allocates_nothing(mm: FrameAllocator, machine: Machine) -> None:
    f = MemfdFile(machine.memory, mm, name="greedy")
    f.write(0, b"keep")
    free = mm.free_frames()
    runs = f.folio_runs()
    with pytest.raises(OutOfMemory) as info:
        f.write(PAGE_SIZE, bytes((free + 1) * PAGE_SIZE))
    assert info.value.errno == errno.ENOMEM
    assert mm.free_frames() == free
    assert f.size == 4
    assert all(np.array_equal(a, b) for a, b in zip(f.folio_runs(), runs, strict=True))
    f.truncate((free + 1) * PAGE_SIZE)
    with pytest.raises(OutOfMemory):
        f.fill_holes()
    assert mm.free_frames() == free
    assert f.read(0, 8) == b"keep" + bytes(4)


# -- truncate and punch ------------------------------------------------------------------------


def test_shrink_frees_folios_and_zeroes_the_cut_tail(mm: FrameAllocator, machine: Machine) -> None:
    free = mm.free_frames()
    f = MemfdFile(machine.memory, mm, name="cut", folio_order=THP_ORDER)
    f.write(0, b"\xff" * (5 * MiB))
    assert f.populated_folios() == 3
    f.truncate(2 * MiB + 1000)
    assert f.populated_folios() == 2
    assert mm.free_frames() == free - 2 * 512
    f.truncate(6 * MiB)  # grow: a hole, and the old tail reads zero
    assert f.populated_folios() == 2
    assert f.read(2 * MiB, 2000) == b"\xff" * 1000 + bytes(1000)
    assert f.read(4 * MiB, 100) == bytes(100)
    f.truncate(0)
    assert f.populated_folios() == 0
    assert mm.free_frames() == free


def test_punch_frees_whole_folios_and_zeroes_partial_ends(
    mm: FrameAllocator, machine: Machine
) -> None:
    f = MemfdFile(machine.memory, mm, name="punch")
    f.write(0, b"\xaa" * (10 * PAGE_SIZE))
    free = mm.free_frames()
    f.fallocate(PAGE_SIZE + 100, 3 * PAGE_SIZE)  # not a punch: fills nothing, size same
    assert mm.free_frames() == free and f.size == 10 * PAGE_SIZE
    f.fallocate(PAGE_SIZE + 100, 3 * PAGE_SIZE, punch_hole=True)
    assert f.size == 10 * PAGE_SIZE  # punching never changes the size
    assert mm.free_frames() == free + 2  # pages 2 and 3 are whole inside
    got = f.read(0, 5 * PAGE_SIZE)
    assert got[: PAGE_SIZE + 100] == b"\xaa" * (PAGE_SIZE + 100)
    assert got[PAGE_SIZE + 100 : 4 * PAGE_SIZE + 100] == bytes(3 * PAGE_SIZE)
    assert got[4 * PAGE_SIZE + 100 :] == b"\xaa" * (PAGE_SIZE - 100)
    idx = f.folio_runs()[0]
    assert idx.tolist() == [0, 4]


def test_fallocate_keep_size_allocates_past_eof(mm: FrameAllocator, machine: Machine) -> None:
    f = MemfdFile(machine.memory, mm, name="falloc")
    f.fallocate(0, 3 * PAGE_SIZE, keep_size=True)
    assert f.size == 0 and f.populated_folios() == 3
    assert not f.folio_runs()[3].any()  # allocated, not dirty
    f.fallocate(PAGE_SIZE, 10)
    assert f.size == PAGE_SIZE + 10 and f.populated_folios() == 3
    f.truncate(0)  # frees folios past EOF too
    assert f.populated_folios() == 0


# -- frozen mapping and seals -------------------------------------------------------------------


def test_frozen_mapping_allows_writes_within_size_only(
    mm: FrameAllocator, machine: Machine
) -> None:
    f = MemfdFile(machine.memory, mm, name="ram")
    f.truncate(3 * PAGE_SIZE)
    f.fill_holes()
    f.freeze_mapping()
    assert f.mapping_frozen
    assert f.write(PAGE_SIZE, b"still writable") == 14
    assert f.write(3 * PAGE_SIZE - 1, b"!") == 1
    err = expect_error(errno.EPERM, lambda: f.write(3 * PAGE_SIZE - 1, b"!!"))
    assert err.message.startswith(f'memfd "ram" (inode {f.inode}): ')
    assert "size is frozen while preserved" in err.message
    assert err.obj == f.describe() == f'memfd "ram" (inode {f.inode})'
    expect_error(errno.EPERM, lambda: f.truncate(PAGE_SIZE), match="frozen")
    expect_error(errno.EPERM, lambda: f.truncate(4 * PAGE_SIZE), match="frozen")
    f.truncate(3 * PAGE_SIZE)  # no change: allowed
    expect_error(errno.EPERM, lambda: f.fallocate(0, PAGE_SIZE, punch_hole=True))
    expect_error(errno.EPERM, lambda: f.fallocate(0, 10 * PAGE_SIZE))
    expect_error(errno.EPERM, lambda: f.fallocate(0, 10 * PAGE_SIZE, keep_size=True))
    expect_error(errno.EBUSY, lambda: f.add_seals(Seal.WRITE), match="pinned")
    f.add_seals(Seal.GROW)  # other seals are fine
    assert f.populated_folios() == 3 and f.size == 3 * PAGE_SIZE
    f.unfreeze_mapping()
    f.truncate(PAGE_SIZE)
    f.fallocate(0, PAGE_SIZE, punch_hole=True)
    f.add_seals(Seal.WRITE)


def test_grow_and_shrink_seals(mm: FrameAllocator, machine: Machine) -> None:
    f = MemfdFile(machine.memory, mm, name="sealed")
    f.write(0, bytes(2 * PAGE_SIZE))
    f.add_seals(Seal.GROW | Seal.SHRINK)
    assert f.seals == Seal.GROW | Seal.SHRINK
    expect_error(errno.EPERM, lambda: f.write(2 * PAGE_SIZE - 1, b"ab"), match="F_SEAL_GROW")
    expect_error(errno.EPERM, lambda: f.truncate(3 * PAGE_SIZE), match="F_SEAL_GROW")
    expect_error(errno.EPERM, lambda: f.truncate(PAGE_SIZE), match="F_SEAL_SHRINK")
    # Linux checks GROW against the end even with FALLOC_FL_KEEP_SIZE
    expect_error(errno.EPERM, lambda: f.fallocate(0, 3 * PAGE_SIZE, keep_size=True))
    f.fallocate(0, 2 * PAGE_SIZE)
    f.fallocate(0, PAGE_SIZE, punch_hole=True)  # not write sealed: punching is fine
    assert f.write(0, b"in place") == 8
    assert f.size == 2 * PAGE_SIZE


@pytest.mark.parametrize("seal", [Seal.WRITE, Seal.FUTURE_WRITE])
def test_write_seals(seal: Seal, mm: FrameAllocator, machine: Machine) -> None:
    f = MemfdFile(machine.memory, mm, name=seal.names()[0])
    f.write(0, b"before")
    f.add_seals(seal)
    expect_error(errno.EPERM, lambda: f.write(0, b"after"), match="write sealed")
    expect_error(errno.EPERM, lambda: f.fallocate(0, 1, punch_hole=True))
    assert f.write(0, b"") == 0  # nothing to write: no seal applies
    f.truncate(3)  # write seals do not stop resizing
    assert f.read(0, 10) == b"bef"


def test_seal_seal_and_sealing_not_allowed(mm: FrameAllocator, machine: Machine) -> None:
    f = MemfdFile(machine.memory, mm, name="locked")
    f.add_seals(Seal.SEAL)
    expect_error(errno.EPERM, lambda: f.add_seals(Seal.GROW), match="F_SEAL_SEAL")
    expect_error(errno.EPERM, lambda: f.add_seals(Seal(0)))
    g = MemfdFile(machine.memory, mm, name="plain", allow_sealing=False)
    assert g.seals == Seal.SEAL  # as F_GET_SEALS reports for a memfd without sealing
    expect_error(errno.EPERM, lambda: g.add_seals(Seal.WRITE), match="MFD_ALLOW_SEALING")


def test_seal_values_and_names() -> None:
    assert [s.value for s in Seal] == [0x1, 0x2, 0x4, 0x8, 0x10, 0x20]
    names = ["seal", "shrink", "grow", "write", "future_write", "exec"]
    everything = Seal.from_names(names)
    assert everything.value == 0x3F
    assert everything.names() == names
    assert Seal.from_names(["write", "grow"]).names() == ["grow", "write"]
    assert Seal.from_names([]) == Seal(0) and Seal(0).names() == []
    err = expect_error(errno.EINVAL, lambda: Seal.from_names(["grow", "bogus"]))
    assert "'bogus'" in err.message


def test_bad_arguments(mm: FrameAllocator, machine: Machine) -> None:
    f = MemfdFile(machine.memory, mm, name="args")
    expect_error(errno.EINVAL, lambda: f.seek(-1))
    assert f.seek(1 << 40) == 1 << 40 and f.pos == 1 << 40  # past EOF is fine
    expect_error(errno.EINVAL, lambda: f.write(-1, b"x"))
    expect_error(errno.EINVAL, lambda: f.read(-1, 1))
    expect_error(errno.EINVAL, lambda: f.truncate(-1))
    expect_error(errno.EINVAL, lambda: f.fallocate(0, 0))
    expect_error(errno.EINVAL, lambda: f.fallocate(-1, 10))
    expect_error(errno.EINVAL, lambda: f.write((1 << 63) - 2, b"xyz"))
    assert f.read(100, 10) == b""


# -- lifetime and live-update views -------------------------------------------------------------


def test_release_frees_frames_and_is_idempotent(mm: FrameAllocator, machine: Machine) -> None:
    free = mm.free_frames()
    f = MemfdFile(machine.memory, mm, name="gone", folio_order=THP_ORDER)
    f.write(0, pattern(5 * MiB, 3))
    _, pfns, _ = f.folio_arrays()
    assert mm.free_frames() == free - 3 * 512
    f.release()
    assert mm.free_frames() == free
    assert f.populated_folios() == 0
    for pfn in pfns.tolist():  # a free frame holds no data
        assert machine.memory.read(pfn, 512) == bytes(2 * MiB)
    f.release()
    assert mm.free_frames() == free
    expect_error(errno.EBADF, lambda: f.write(0, b"x"), match="released")


def test_release_through_the_last_reference(mm: FrameAllocator, machine: Machine) -> None:
    free = mm.free_frames()
    f = MemfdFile(machine.memory, mm, name="refs")
    f.write(0, b"x")
    f.get()
    f.get()
    f.put()
    assert mm.free_frames() == free - 1
    f.put()
    assert mm.free_frames() == free


def test_adopt_round_trips_folio_arrays(mm: FrameAllocator, machine: Machine) -> None:
    for order in (0, THP_ORDER):
        f = MemfdFile(machine.memory, mm, name="old", folio_order=order)
        f.write(3 * f.folio_size + 5, pattern(2 * f.folio_size, order))
        f.truncate(8 * f.folio_size)
        f.fill_holes()
        f.write(0, b"first")
        indices, pfns, dirty = f.folio_arrays()
        content = f.read(0, f.size)
        runs = f.folio_runs()
        # a fresh memfd after kexec: unnamed, records in any order
        g = MemfdFile(machine.memory, mm, folio_order=order)
        shuffle = np.random.default_rng(order).permutation(indices.size)
        g.adopt(indices[shuffle], pfns[shuffle], dirty[shuffle])
        g.size = f.size
        assert all(np.array_equal(a, b) for a, b in zip(g.folio_runs(), runs, strict=True))
        got = g.folio_arrays()
        assert all(np.array_equal(a, b) for a, b in zip(got, (indices, pfns, dirty), strict=True))
        assert g.read(0, g.size) == content
        assert g.describe() == f'memfd "" (inode {g.inode})'
        with pytest.raises(KernelError, match="already") as info:
            g.adopt(indices, pfns, dirty)
        assert info.value.errno == errno.EINVAL
        g.release()  # g owns the frames now; f's view of them is dropped unfreed


def test_adopt_rejects_bad_records(mm: FrameAllocator, machine: Machine) -> None:
    f = MemfdFile(machine.memory, mm, folio_order=THP_ORDER)
    no = np.zeros(2, dtype=np.bool_)
    expect_error(errno.EINVAL, lambda: f.adopt([1, 1], [512, 1024], no), match="twice")
    expect_error(errno.EINVAL, lambda: f.adopt([0, 1], [512, 1000], no), match="aligned")
    expect_error(errno.EINVAL, lambda: f.adopt([0, 1], [512, 512], no), match="share")
    expect_error(errno.EINVAL, lambda: f.adopt([0], [512, 1024], no))
    f.adopt([], [], [])
    assert f.populated_folios() == 0


def test_folio_arrays_of_a_fully_populated_memfd_are_vectorised(
    big_machine: Machine,
) -> None:
    """A 4 GiB memfd of 4 KiB folios: a million folios, a handful of runs."""
    mm = allocator(big_machine)
    f = MemfdFile(big_machine.memory, mm, name="dense")
    f.truncate(4 * GiB)
    assert f.fill_holes() == 1 << 20
    assert f.folio_runs()[0].size <= 4
    start = time.perf_counter()
    indices, pfns, dirty = f.folio_arrays()
    assert time.perf_counter() - start < 1.0
    assert indices.size == 1 << 20
    assert np.array_equal(indices, np.arange(1 << 20))
    assert not dirty.any()
    assert Extents.from_blocks(pfns, 0).total() == 1 << 20  # distinct frames


def test_hugetlb_memfd_uses_huge_pages_only(mm: FrameAllocator, machine: Machine) -> None:
    f = HugetlbMemfdFile(machine.memory, mm, name="huge")
    assert f.folio_order == THP_ORDER and isinstance(f, MemfdFile)
    assert f.describe() == f'memfd "huge" (hugetlb, inode {f.inode})'
    expect_error(errno.EINVAL, lambda: f.truncate(MiB), match="huge page")
    f.truncate(4 * MiB)
    assert f.fill_holes() == 2
    expect_error(
        errno.EINVAL, lambda: HugetlbMemfdFile(machine.memory, mm, folio_order=0), match="huge"
    )
