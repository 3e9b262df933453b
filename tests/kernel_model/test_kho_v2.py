"""The `kho-v2` radix tree: round trips, byte layout, kexec with it, and hostile trees.

The tree is checked against an independent decoder written here in plain Python (keys built
with the formula of the format, table entries read with `int.from_bytes`), so a writer and
reader that agreed on a wrong layout would still fail.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from luod.hw.machine import Machine
from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory
from luod.kernel_model.errors import KernelError
from luod.kernel_model.extents import Extents
from luod.kernel_model.fdt import decode_fdt
from luod.kernel_model.images import KernelImage, parse_image
from luod.kernel_model.kernel import Kernel
from luod.kernel_model.kho import memmap_v1, memmap_v2
from luod.kernel_model.kho.incoming import KhoIn, KhoRootRejected
from luod.kernel_model.kho.preserved import PreservedSet
from luod.kernel_model.mm import MAX_ORDER

from .conftest import KHO_ONLY, SMALL_RAM

V2_IMAGE: KernelImage = parse_image(
    """
release = "7.1.0-khov2"
summary = "test image: stateless KHO with the radix-tree map"
reads = ["kho-v1", "kho-v2", "luo-v1", "memfd-v1", "memfd-v2"]
[profiles]
current = ["kho-v2", "luo-v1", "memfd-v2"]
""",
    "test kho-v2 image",
)

# -- an independent decoder ---------------------------------------------------------------


def key_of(pfn: int, order: int) -> int:
    return (1 << (64 - (PAGE_SHIFT + order))) | (pfn >> order)


def u64s(memory: PhysicalMemory, phys: int) -> list[int]:
    page = memory.read_at(phys, PAGE_SIZE)
    return [int.from_bytes(page[i : i + 8], "little") for i in range(0, PAGE_SIZE, 8)]


class Node:
    def __init__(self, level: int, phys: int, prefix: int) -> None:
        self.level, self.phys, self.prefix = level, phys, prefix


def walk(memory: PhysicalMemory, root: int) -> Iterator[Node]:
    """Every node, top-down; levels 5..1 are tables of pointers, level 0 leaves."""
    todo = [Node(5, root, 0)]
    while todo:
        node = todo.pop()
        yield node
        if node.level:
            for slot, entry in enumerate(u64s(memory, node.phys)):
                if entry:
                    todo.append(Node(node.level - 1, entry, (node.prefix << 9) | slot))


def decoded_keys(memory: PhysicalMemory, root: int) -> set[int]:
    keys: set[int] = set()
    for node in walk(memory, root):
        if node.level == 0:
            page = memory.read_at(node.phys, PAGE_SIZE)
            bits = np.flatnonzero(np.unpackbits(np.frombuffer(page, np.uint8), bitorder="little"))
            keys.update((node.prefix << 15) | b for b in bits.tolist())
    return keys


def expected_keys(preserved: PreservedSet) -> set[int]:
    return {
        key_of(int(b) << bitmap.order, bitmap.order)
        for bitmap in preserved.orders
        for b in bitmap.blocks().tolist()
    }


def expected_pages(keys: set[int]) -> int:
    """The root plus one node per distinct key prefix on levels 4..0."""
    return 1 + sum(len({k >> (15 + 9 * level) for k in keys}) for level in range(5))


# -- round trip ---------------------------------------------------------------------------

# (order, where in RAM as a fraction of 2**20, how many back-to-back folios)
folio_runs = st.lists(
    st.tuples(
        st.sampled_from([0, 0, 0, 1, 2, 5, 9, 9, 13, MAX_ORDER]),
        st.integers(0, (1 << 20) - 1),
        st.integers(1, 2500),
    ),
    max_size=10,
)


def preserve_runs(frames: int, runs: list[tuple[int, int, int]]) -> PreservedSet:
    preserved = PreservedSet(frames)
    for order, where, wanted in runs:
        pfn = ((where * frames) >> 20) >> order << order
        count = min(wanted, (frames - pfn) >> order)
        with contextlib.suppress(KernelError):  # overlaps an earlier run: skip it
            preserved.add_folio_runs([(pfn, count)], order)
    return preserved


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(folio_runs, st.sampled_from([SMALL_RAM, (5 << 30) + 3 * PAGE_SIZE]))
def test_round_trip(runs: list[tuple[int, int, int]], ram: int) -> None:
    machine = Machine.create(ram)
    try:
        kernel = Kernel.cold_boot(machine, config=KHO_ONLY)
        preserved = preserve_runs(machine.memory.frames, runs)
        root, used = memmap_v2.write(preserved, kernel.mm, machine.memory)
        back = memmap_v2.read(machine.memory, root)
        for order in range(MAX_ORDER + 1):
            assert np.array_equal(back.orders[order].blocks(), preserved.orders[order].blocks())
        keys = expected_keys(preserved)
        assert decoded_keys(machine.memory, root) == keys
        assert used.total() == expected_pages(keys)
        assert len(used) == 1, "all nodes in one contiguous extent"
    finally:
        machine.close()


def test_only_leaves_hold_bits_and_every_page_is_a_node(kernel: Kernel) -> None:
    memory = kernel.machine.memory
    preserved = preserve_runs(memory.frames, [(0, 7, 40000), (3, 900_000, 70), (9, 700_000, 3)])
    root, used = memmap_v2.write(preserved, kernel.mm, memory)
    nodes = list(walk(memory, root))
    # every table entry is 0 or a page-aligned pointer to a page of the tree
    for node in nodes:
        if node.level:
            for entry in u64s(memory, node.phys):
                assert entry == 0 or (entry % PAGE_SIZE == 0 and used.contains([entry >> 12])[0])
    assert sorted(n.phys >> PAGE_SHIFT for n in nodes) == list(range(*next(iter(used))))
    # the bits in the leaves are exactly the preserved blocks, one bit each
    popcount = sum(
        int(np.unpackbits(np.frombuffer(memory.read_at(n.phys, PAGE_SIZE), np.uint8)).sum())
        for n in nodes
        if n.level == 0
    )
    assert popcount == sum(b.count for b in preserved.orders) == 40000 + 70 + 3
    # the root's only entries are 2 (order-0 keys: bit 52) and 0 (orders 2 and up)
    assert [i for i, e in enumerate(u64s(memory, root)) if e] == [0, 2]
    # and kho-v1 lays the same set out differently
    _, v1_used = memmap_v1.write(preserved, kernel.mm, memory)
    v1_bytes = b"".join(memory.read(s, e - s) for s, e in v1_used)
    assert v1_bytes != memory.read(int(used.starts[0]), used.total())


def test_cost_grows_with_what_is_preserved_not_with_ram() -> None:
    machine = Machine.create(1 << 40)
    try:
        kernel = Kernel.cold_boot(machine, config=KHO_ONLY)
        root, used = memmap_v2.write(PreservedSet(machine.memory.frames), kernel.mm, machine.memory)
        assert used.total() == 1, "nothing preserved: the root page alone"
        assert memmap_v2.read(machine.memory, root).frame_count() == 0
        # KhoOut always preserves its root blob page: one order-0 path, 6 pages, any RAM
        root, used = memmap_v2.write(kernel.kho_out.preserved, kernel.mm, machine.memory)
        assert used.total() == 6
    finally:
        machine.close()


def test_falls_back_to_scattered_pages_when_ram_is_fragmented(kernel: Kernel) -> None:
    memory = kernel.machine.memory
    preserved = preserve_runs(memory.frames, [(0, 0, 1), (0, 600_000, 1), (5, 300_000, 1)])
    # no contiguous room: take all of normal memory, then free every other of 64 frames
    free = kernel.mm.free_extents_now() - kernel.mm.scratch_extents
    for start, end in free:
        kernel.mm.alloc_folios(0, end - start)
    holes = np.arange(0x8000, 0x8000 + 64, 2, dtype=np.int64)  # 32 single free frames
    kernel.mm.free_folios(holes, 0)
    root, used = memmap_v2.write(preserved, kernel.mm, memory)
    assert len(used) > 1
    assert decoded_keys(memory, root) == expected_keys(preserved)
    assert memmap_v2.read(memory, root).extents() == preserved.extents()


# -- kexec ----------------------------------------------------------------------------------


def root_blob_compatible(machine: Machine, root: int) -> str:
    return decode_fdt(machine.memory.read_at(root, PAGE_SIZE)).get_str("compatible")


def test_kexec_with_kho_v2(kernel: Kernel) -> None:
    machine = kernel.machine
    kernel.kho_out.set_format("kho-v2")
    kept: dict[int, tuple[int, bytes]] = {}
    for order, count in ((0, 5), (3, 2), (9, 1), (1, 3)):
        for pfn in kernel.mm.alloc_folios(order, count).tolist():
            data = os.urandom((1 << order) * PAGE_SIZE)
            machine.memory.write(pfn, data)
            kernel.kho_out.preserve_folio(pfn, order)
            kept[pfn] = (order, data)
    lost = kernel.mm.alloc_folio(0)
    machine.memory.write(lost, b"not preserved")
    for hop in range(2):
        root = kernel.kho_out.finalize()
        assert root_blob_compatible(machine, root) == "kho-v2"
        kernel = kernel.kexec(V2_IMAGE)
        assert kernel.boot_report.kind == "kho", kernel.boot_report.reason
        assert kernel.kho_in is not None and kernel.kho_in.compatible == "kho-v2"
        assert kernel.kho_out.compatible == "kho-v2", "the image writes what it prefers"
        for pfn, (order, data) in kept.items():
            assert machine.memory.read(pfn, 1 << order) == data
            kernel.kho_in.restore_folio(pfn, order)
            kernel.kho_out.preserve_folio(pfn, order)
        if hop == 0:
            assert machine.memory.read(lost) == bytes(PAGE_SIZE)
    # a kernel that reads only kho-v1 cannot take a kho-v2 handover: it boots cold
    kernel.kho_out.finalize()
    cold = kernel.kexec(parse_image(V1_ONLY, "test kho-v1 image"))
    assert cold.boot_report.kind == "cold"
    assert "'kho-v2'" in (cold.boot_report.reason or "")


V1_ONLY = """
release = "6.19.0-test"
reads = ["kho-v1", "luo-v1", "memfd-v1"]
[profiles]
current = ["kho-v1", "luo-v1", "memfd-v1"]
"""


# -- hostile trees ---------------------------------------------------------------------------


def handed_over(machine: Machine, order: int = 0) -> tuple[int, int]:
    """A kho-v2 handover with one preserved folio of data; returns (map root, folio pfn)."""
    kernel = Kernel.cold_boot(machine, config=KHO_ONLY)
    kernel.kho_out.set_format("kho-v2")
    pfn = kernel.mm.alloc_folio(order)
    machine.memory.write(pfn, b"precious")
    kernel.kho_out.preserve_folio(pfn, order)
    root = kernel.kho_out.finalize()
    machine.handover.load(root)
    tree = decode_fdt(machine.memory.read_at(root, PAGE_SIZE))
    return tree.get_u64("preserved-memory-map"), pfn


def path(machine: Machine, root: int, pfn: int, order: int) -> list[int]:
    """Physical addresses of the nodes from the root (index 0, level 5) down to the leaf
    (index 5) that holds the key of the folio at `pfn`, following the key's indices."""
    key = key_of(pfn, order)
    nodes = [root]
    for level in range(5, 0, -1):
        slot = (key >> (15 + 9 * (level - 1))) & 511
        nodes.append(u64s(machine.memory, nodes[-1])[slot])
        assert nodes[-1], f"no level-{level - 1} node for the key"
    return nodes


def set_entry(machine: Machine, table: int, slot: int, value: int) -> None:
    machine.memory.write(table >> PAGE_SHIFT, value.to_bytes(8, "little"), offset=8 * slot)


def used_slot(machine: Machine, table: int) -> int:
    return next(i for i, e in enumerate(u64s(machine.memory, table)) if e)


def boots_cold(machine: Machine, pfn: int, *reasons: str) -> None:
    nxt = Kernel.boot(machine, V2_IMAGE, KHO_ONLY)
    assert nxt.boot_report.kind == "cold"
    reason = nxt.boot_report.reason or ""
    assert "preserved-memory map is corrupt" in reason
    for part in reasons:
        assert part in reason, reason
    assert machine.memory.read(pfn)[:8] == bytes(8), "a cold boot loses preserved memory"


def test_pointer_outside_ram(machine: Machine) -> None:
    root, pfn = handed_over(machine)
    set_entry(machine, root, 2, SMALL_RAM)  # the order-0 subtree, one page past RAM
    boots_cold(machine, pfn, "level-5 node", "entry 2", "outside RAM")


def test_pointer_with_high_bit_is_outside_ram(machine: Machine) -> None:
    root, pfn = handed_over(machine)
    set_entry(machine, root, 2, 1 << 63)  # not a negative number: far outside RAM
    boots_cold(machine, pfn, "outside RAM")


def test_misaligned_pointer(machine: Machine) -> None:
    root, pfn = handed_over(machine)
    *_, l1, leaf = path(machine, root, pfn, 0)
    set_entry(machine, l1, (key_of(pfn, 0) >> 15) & 511, leaf + 8)
    boots_cold(machine, pfn, f"level-1 node at {l1:#x}", "misaligned")


def test_cycle(machine: Machine) -> None:
    root, pfn = handed_over(machine)
    _, _, l3, _, l1, _ = path(machine, root, pfn, 0)
    set_entry(machine, l1, (key_of(pfn, 0) >> 15) & 511, l3)  # the leaf's slot: its grandparent
    boots_cold(machine, pfn, "cycle", f"level-1 node at {l1:#x}", f"level-3 node at {l3:#x}")


def test_self_loop_is_a_cycle(machine: Machine) -> None:
    root, pfn = handed_over(machine)
    l4 = path(machine, root, pfn, 0)[1]
    set_entry(machine, l4, (key_of(pfn, 0) >> 42) & 511, l4)
    boots_cold(machine, pfn, "cycle", f"level-4 node at {l4:#x} points back to its ancestor")


def test_shared_node(machine: Machine) -> None:
    root, pfn = handed_over(machine)
    l4 = path(machine, root, pfn, 0)[1]
    set_entry(machine, root, 1, l4)  # order-1 keys lead into the order-0 subtree as well
    boots_cold(machine, pfn, "shared node", f"page {l4:#x} is reachable twice")


def test_shared_node_across_levels(machine: Machine) -> None:
    # order-1 folio: its path leaves the root at slot 1, the root blob page's at slot 2
    root, pfn = handed_over(machine, order=1)
    l2_order1 = path(machine, root, pfn, 1)[3]
    l1_order0 = path(machine, root, (machine.handover.peek() or 0) >> PAGE_SHIFT, 0)[4]
    set_entry(machine, l1_order0, 1, l2_order1)  # slot 1: blocks 32768.., inside RAM
    boots_cold(machine, pfn, "shared node", f"{l2_order1:#x}", "as a level-2 node")


def test_two_entries_share_a_leaf(machine: Machine) -> None:
    root, pfn = handed_over(machine)
    *_, l1, leaf = path(machine, root, pfn, 0)
    set_entry(machine, l1, 1, leaf)
    set_entry(machine, l1, 0, leaf)
    boots_cold(machine, pfn, "shared node", f"page {leaf:#x} is reachable twice")


def test_bits_beyond_ram(machine: Machine) -> None:
    root, pfn = handed_over(machine, order=9)
    leaf = path(machine, root, pfn, 9)[5]
    first_beyond = (SMALL_RAM >> PAGE_SHIFT) >> 9  # order-9 block 128: past the end of RAM
    machine.memory.write(leaf >> PAGE_SHIFT, b"\x01", offset=first_beyond // 8)
    boots_cold(machine, pfn, "beyond the end of RAM", f"order-9 block {first_beyond:#x}")


def test_subtree_beyond_ram(machine: Machine) -> None:
    root, pfn = handed_over(machine)
    l1 = path(machine, root, pfn, 0)[4]
    set_entry(machine, l1, 2, l1)  # order-0 blocks 65536.. do not exist in 256 MiB
    boots_cold(machine, pfn, "entry 2", "beyond the end of RAM")


def test_keys_too_deep(machine: Machine) -> None:
    root, pfn = handed_over(machine)
    l4 = path(machine, root, pfn, 0)[1]
    set_entry(machine, root, 4, l4)  # key bit 53: above any order bit
    boots_cold(machine, pfn, "entry 4", "too deep")


def test_order_above_max(machine: Machine) -> None:
    # an order-11 key (bit 41) passes through the level-3 node of prefix 0, whose slots
    # 0 and 1 (key bits 33 and below) could only hold orders 19 and up
    root, pfn = handed_over(machine, order=11)
    _, _, l3, l2, _, _ = path(machine, root, pfn, 11)
    set_entry(machine, l3, 1, l2)
    boots_cold(machine, pfn, "entry 1", f"order above {MAX_ORDER}")


@pytest.mark.parametrize("map_root", [0, 8, SMALL_RAM])
def test_bad_root(machine: Machine, map_root: int) -> None:
    root, pfn = handed_over(machine)
    blob = bytearray(machine.memory.read_at(machine.handover.peek() or 0, PAGE_SIZE))
    at = blob.index(root.to_bytes(8, "big"))  # FDT cells are big-endian
    blob[at : at + 8] = map_root.to_bytes(8, "big")
    machine.memory.write((machine.handover.peek() or 0) >> PAGE_SHIFT, bytes(blob))
    boots_cold(machine, pfn, "radix tree root")


def test_extents_of_read_set_match(kernel: Kernel) -> None:
    memory = kernel.machine.memory
    preserved = preserve_runs(memory.frames, [(MAX_ORDER - 10, 3, 2), (0, 999_999, 1)])
    root, _ = memmap_v2.write(preserved, kernel.mm, memory)
    assert memmap_v2.read(memory, root).extents() == preserved.extents() != Extents.empty()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_tree_never_crashes(data: st.DataObject) -> None:
    machine = Machine.create(64 << 20)
    try:
        root, _ = handed_over(machine, order=data.draw(st.sampled_from([0, 1, 9])))
        nodes = [n.phys for n in walk(machine.memory, root)]
        for _ in range(data.draw(st.integers(1, 6))):
            target = data.draw(st.sampled_from(nodes))
            word = data.draw(st.integers(0, PAGE_SIZE // 8 - 1))
            value = data.draw(
                st.one_of(
                    st.sampled_from(nodes),
                    st.integers(0, (1 << 64) - 1),
                    st.integers(0, (64 << 20) - 1),
                )
            )
            set_entry(machine, target, word, value)
        # The reader alone (what `Kernel.boot` runs first): it must reject or return a set
        # that lies in RAM, clear of scratch, never raise anything else.
        try:
            kho = KhoIn.parse(machine.memory, machine.handover.peek() or 0, {"kho-v2"})
        except KhoRootRejected as exc:
            assert exc.reason
        else:
            assert not (kho.preserved_extents & kho.scratch.extents())
            assert kho.preserved_extents.total() == kho.preserved.frame_count()
            assert int(kho.preserved_extents.ends[-1]) <= machine.memory.frames
    finally:
        machine.close()
