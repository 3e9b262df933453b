"""KHO preservation rules on the outgoing side (kernel.md §3.2, scenario 40)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from luod.kernel_model.errors import (
    AlreadyPreserved,
    BadAlignment,
    FrameInScratch,
    KhoFinalized,
    NoSuchSubtree,
    NotPreserved,
    RootBlobFull,
    SubtreeExists,
)
from luod.kernel_model.kernel import Kernel
from luod.kernel_model.kho.preserved import split_aligned
from luod.kernel_model.mm import MAX_ORDER


@given(st.integers(0, 1 << 30), st.integers(1, 1 << 22))
def test_split_aligned_is_exact_and_natural(pfn: int, npages: int) -> None:
    runs = split_aligned(pfn, npages)
    pos = pfn
    for order, first, count in runs:
        assert 0 <= order <= MAX_ORDER
        assert first << order == pos, "runs are contiguous and naturally aligned"
        assert count == 1 or order == MAX_ORDER
        pos += count << order
    assert pos == pfn + npages
    # largest blocks first: no two consecutive single blocks could merge into one
    for (o1, f1, c1), (o2, _, _) in itertools.pairwise(runs):
        if o1 == o2 and c1 == 1 and o1 < MAX_ORDER:
            assert (f1 & 1) == 1


def test_scratch_frames_refused(kernel: Kernel) -> None:
    lowmem = kernel.mm.scratch.regions[0]
    with pytest.raises(FrameInScratch) as info:
        kernel.kho_out.preserve_folio(lowmem.start + 4)
    assert info.value.errno_name == "EINVAL"
    with pytest.raises(FrameInScratch):
        kernel.kho_out.preserve_pages(lowmem.start - 2, 4)  # straddles into scratch
    # scattered folios (the block path), only the last of 300 in scratch: named exactly
    normal = kernel.mm.alloc_folios(0, 600)[::2]
    before = kernel.kho_out.preserved.folio_count()
    with pytest.raises(FrameInScratch, match=f"{lowmem.start + 8:#x}"):
        kernel.kho_out.preserve_folios([lowmem.start + 8, *normal[:299].tolist()], 0)
    assert kernel.kho_out.preserved.folio_count() == before


def test_double_preservation_refused_at_any_order(kernel: Kernel) -> None:
    kho = kernel.kho_out
    big = kernel.mm.alloc_folio(9)
    kho.preserve_folio(big, 9)
    with pytest.raises(AlreadyPreserved) as info:
        kho.preserve_folio(big, 9)
    assert info.value.errno_name == "EEXIST"
    with pytest.raises(AlreadyPreserved):
        kho.preserve_folio(big + 5, 0)  # a page inside the 2 MiB folio
    small = kernel.mm.alloc_folio(10)
    kho.preserve_folio(small + 3, 0)
    with pytest.raises(AlreadyPreserved):
        kho.preserve_folio(small, 10)  # a folio covering that page
    with pytest.raises(AlreadyPreserved):
        kho.preserve_pages(small, 8)
    with pytest.raises(AlreadyPreserved, match="given twice"):
        kho.preserve_folios([small + 8, small + 8], 0)


def test_alignment_and_unpreserve_rules(kernel: Kernel) -> None:
    kho = kernel.kho_out
    pfn = kernel.mm.alloc_folio(9)
    with pytest.raises(BadAlignment):
        kho.preserve_folio(pfn + 1, 9)
    with pytest.raises(NotPreserved) as info:
        kho.unpreserve_folio(pfn, 9)
    assert info.value.errno_name == "ENOENT"
    kho.preserve_pages(pfn, 300)
    with pytest.raises(NotPreserved):
        kho.unpreserve_pages(pfn, 200)  # not the range that was preserved
    kho.unpreserve_pages(pfn, 300)
    kho.preserve_folio(pfn, 9)  # the frames are free for preservation again
    assert kho.preserved.frame_count() == 1 + 512  # + the root blob page


def test_finalize_freezes_until_abort(kernel: Kernel) -> None:
    kho = kernel.kho_out
    pfn = kernel.mm.alloc_folio(0)
    kho.preserve_folio(pfn)
    free_before = kernel.mm.free_frames()
    kho.finalize()
    assert kernel.mm.free_frames() < free_before, "the map takes pages"
    for attempt in (
        lambda: kho.preserve_folio(pfn + 1),
        lambda: kho.unpreserve_folio(pfn),
        lambda: kho.add_subtree("x", 0, 0),
        kho.finalize,
    ):
        with pytest.raises(KhoFinalized) as info:
            attempt()
        assert info.value.errno_name == "EBUSY"
    kho.abort()
    assert kernel.mm.free_frames() == free_before
    kho.unpreserve_folio(pfn)


def test_subtrees(kernel: Kernel) -> None:
    kho = kernel.kho_out
    kho.add_subtree("LUO", 0x1000, 64)
    with pytest.raises(SubtreeExists):
        kho.add_subtree("LUO", 0x2000, 64)
    with pytest.raises(NoSuchSubtree):
        kho.remove_subtree("nope")
    kho.remove_subtree("LUO")
    with pytest.raises(RootBlobFull) as info:
        for i in range(200):
            kho.add_subtree(f"subtree-{i:03d}", 0x1000 * i, 4096)
    assert info.value.errno_name == "ENOMEM"
    assert len(kho.subtrees) < 200
    kho.finalize()  # what did fit still fits one page


def test_scattered_folios_take_the_per_block_path_with_the_same_rules(kernel: Kernel) -> None:
    """More runs than the range path handles: every rule holds block by block too."""
    from luod.kernel_model.kho.preserved import PreservedSet

    kho = kernel.kho_out
    pfns = kernel.mm.alloc_folios(0, 2 * (PreservedSet.RANGE_PATH_MAX_RUNS + 50))[::2]
    kho.preserve_folios(pfns, 0)
    with pytest.raises(AlreadyPreserved, match=f"{int(pfns[7]):#x}"):
        kho.preserve_folios(pfns[7:], 0)
    big = kernel.mm.alloc_folio(9)
    kho.preserve_folio(big, 9)
    scattered = kernel.mm.alloc_folios(0, 600)[::2]
    with pytest.raises(AlreadyPreserved):  # scattered pages, one inside the 2 MiB folio
        kho.preserve_folios([*scattered.tolist(), big + 1], 0)
    kho.preserve_folios(scattered, 0)  # nothing of the refused call was taken
    scratch = kernel.mm.scratch.regions[1].start
    with pytest.raises(FrameInScratch):
        kho.preserve_folios(list(range(scratch, scratch + 2 * 300, 2)), 0)
    with pytest.raises(NotPreserved):
        kho.unpreserve_folios(pfns + 1, 0)
    kho.unpreserve_folios(pfns, 0)
    assert kho.preserved.frame_count() == 1 + 512 + 300
