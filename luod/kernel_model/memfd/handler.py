"""The memfd handler (`mm/memfd_luo.c`): the lifecycle of a preserved shmem memfd.

Lifecycle:
- preserve: freeze the mapping (size changes, fallocate and hole punching get EPERM;
  writes inside the size still land) and KHO-preserve every *populated* folio. Holes are
  left alone: whether they must be filled depends on the record format, which is only
  known once the next kernel is (negotiation happens at prepare).
- prepare: for a dense format (v1, v2: one entry per folio, so every page of the file must
  have a folio), fill every hole with a zeroed folio, as Linux's memfd_pin_folios does;
  for the sparse-aware v3, leave holes as holes. Then KHO-preserve every folio not yet
  preserved (the filled holes, and folios a write allocated in a hole after preserve)
  and write the record.
- freeze: refresh `pos`. If a write has populated a hole since prepare (possible only under
  v3, where holes remain), preserve the new folios and rewrite the record in place first,
  so nothing written before the freeze is lost (after it the workload is paused; a folio
  a write allocates then is not preserved).
- cancel: free the record and unpreserve what prepare and freeze added. Filled holes stay
  allocated (zeroed) in the memfd, as pinned pages would in Linux.
- retrieve: restore every listed folio and build a fresh memfd with size, pos, data (and
  seals, from v2 on). Under v3 the holes of the old file are holes of the new one.
- finish of a never-retrieved memfd: its folios are freed.

Timing change against Linux 6.19 (reference scenario 33 says holes are filled at
preserve): this model fills them at prepare, when the format is known. After the kexec the
two are indistinguishable under v1 and v2 (the holes read zero and are backed by folios);
the difference is visible only before prepare, as resident memory.

The record formats themselves are `memfd.records`.
"""

from __future__ import annotations

import errno
import struct
from typing import ClassVar

import attrs
import numpy as np

from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE
from luod.kernel_model.errors import KernelError
from luod.kernel_model.extents import Extents
from luod.kernel_model.luo.file import RETRIEVE_OK, FileHandler, IncomingFile, OutgoingFile
from luod.kernel_model.memfd import records
from luod.kernel_model.memfd.file import MemfdFile
from luod.kernel_model.memfd.records import (
    ENTRY_BYTES,
    EXTENT_BYTES,
    FLAG_ALLOW_SEALING,
    SEALED_FORMATS,
    SPARSE_FORMATS,
    V1,
    V2,
    V3,
    MemfdRecord,
    RecordUnusable,
)
from luod.kernel_model.memfd.seals import Seal
from luod.kernel_model.mm import FolioSource
from luod.kernel_model.vfs import File


@attrs.define
class PreservedMemfd:
    """The handler's runtime state of one preserved memfd (`OutgoingFile.private`)."""

    order: int
    runs: list[tuple[int, int]]  # (first pfn, folios) KHO-preserved at preserve
    held: Extents  # every frame KHO holds for this file: `runs` plus `added`
    added: list[tuple[int, int]] = attrs.field(factory=list)  # by prepare/freeze; cancel drops
    compatible: str | None = None  # the record's format, from prepare to cancel
    populated: int = 0  # folios the record lists
    header_pfn: int | None = None
    folio_pfn: int | None = None  # the entry table (folios or extents)
    folio_pages: int = 0


def _merge_runs(pfns: np.ndarray, counts: np.ndarray, order: int) -> list[tuple[int, int]]:
    """Coalesce page-cache runs whose folios also lie back to back physically."""
    out: list[tuple[int, int]] = []
    for pfn, n in zip(pfns.tolist(), counts.tolist(), strict=True):
        if out and out[-1][0] + (out[-1][1] << order) == pfn:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((pfn, n))
    return sorted(out)


def _frames(memfd: MemfdFile) -> Extents:
    _, pfns, counts, _ = memfd.folio_runs()
    return Extents.from_ranges(pfns, pfns + (counts << memfd.folio_order))


class MemfdHandler(FileHandler):
    file_type = "memfd"
    formats: ClassVar[tuple[str, ...]] = (V3, V2, V1)

    def can_preserve(self, file: File) -> bool:
        return type(file) is MemfdFile

    def sparse(self, compatible: str) -> bool:
        """Does this record format list populated extents only (holes stay holes)?"""
        return compatible in SPARSE_FORMATS

    def preserve(self, f: OutgoingFile) -> None:
        memfd = f.file
        assert isinstance(memfd, MemfdFile)
        memfd.freeze_mapping()
        try:
            _, pfns, counts, _ = memfd.folio_runs()
            runs = _merge_runs(pfns, counts, memfd.folio_order)
            self.kernel.kho_out.preserve_folio_runs(runs, memfd.folio_order)
        except BaseException:
            memfd.unfreeze_mapping()
            raise
        f.private = PreservedMemfd(memfd.folio_order, runs, _frames(memfd))

    def unpreserve(self, f: OutgoingFile) -> None:
        state: PreservedMemfd = f.private
        kho = self.kernel.kho_out
        kho.unpreserve_folio_runs(state.runs, state.order)
        if state.added:  # only if a prepare was never cancelled: cancel gives them back
            kho.unpreserve_folio_runs(state.added, state.order)
        assert isinstance(f.file, MemfdFile)
        f.file.unfreeze_mapping()

    def _catch_up(self, memfd: MemfdFile, state: PreservedMemfd) -> None:
        """KHO-preserve every folio of the page cache that KHO does not hold yet. The
        mapping is frozen, so folios only ever appear (filled or written holes), never go."""
        new = _frames(memfd) - state.held
        if not new:
            return
        runs = [(start, (end - start) >> state.order) for start, end in new]
        self.kernel.kho_out.preserve_folio_runs(runs, state.order)
        state.added += runs
        state.held = state.held | new

    def prepare(self, f: OutgoingFile, compatible: str) -> int:
        memfd, state = f.file, f.private
        assert isinstance(memfd, MemfdFile) and isinstance(state, PreservedMemfd)
        state.compatible = compatible
        try:
            if not self.sparse(compatible):
                memfd.fill_holes()  # a dense record has an entry for every folio of the size
            self._catch_up(memfd, state)
            state.header_pfn = self.kernel.kho_out.alloc_preserved(1)
            self._write_record(f, state)
        except BaseException:
            self.cancel(f)
            raise
        return state.header_pfn << PAGE_SHIFT

    def _write_record(self, f: OutgoingFile, state: PreservedMemfd) -> None:
        """(Re)write the entry table and the header, whose page stays where it is: the
        LUO file table points at it."""
        memfd = f.file
        assert isinstance(memfd, MemfdFile) and state.compatible is not None
        assert state.header_pfn is not None
        kho, memory = self.kernel.kho_out, self.kernel.memory
        if state.folio_pfn is not None:
            kho.free_preserved(state.folio_pfn, state.folio_pages)
            state.folio_pfn, state.folio_pages = None, 0
        table = records.entry_table(memfd, self.sparse(state.compatible))
        if table.size:
            state.folio_pages = -(-table.nbytes // PAGE_SIZE)
            state.folio_pfn = kho.alloc_preserved(state.folio_pages)
            memory.write(state.folio_pfn, table.data.cast("B"))
        state.populated = memfd.populated_folios()
        folios_phys = (state.folio_pfn or 0) << PAGE_SHIFT
        header = self.pack_header(f, state.compatible, table.shape[0], folios_phys, state)
        memory.write(state.header_pfn, header.ljust(PAGE_SIZE, b"\0"))

    def pack_header(
        self, f: OutgoingFile, compatible: str, nr: int, folios_phys: int, state: PreservedMemfd
    ) -> bytes:
        memfd = f.file
        assert isinstance(memfd, MemfdFile)
        return records.pack_header(
            memfd, compatible, nr, folios_phys, state.folio_pages, state.order, state.populated
        )

    def parse_header(self, compatible: str, raw: bytes) -> dict[str, int]:
        """pos, size, seals, flags, nr, folios_phys, folio_pages, order (+ extra fields)."""
        return records.parse_header(compatible, raw)

    def folio_source(self, record: MemfdRecord) -> FolioSource:
        """Where the retrieved file's folios come from and go back to."""
        return self.kernel.mm

    def new_file(self, f: IncomingFile, record: MemfdRecord) -> MemfdFile:
        memfd = MemfdFile(
            self.kernel.memory,
            self.folio_source(record),
            folio_order=record.order,
            allow_sealing=f.compatible == V1 or bool(record.flags & FLAG_ALLOW_SEALING),
        )
        memfd.pos = record.pos
        if f.compatible in SEALED_FORMATS:
            memfd.seals = Seal(record.seals)
        return memfd

    def cancel(self, f: OutgoingFile) -> None:
        state: PreservedMemfd = f.private
        kho = self.kernel.kho_out
        if state.header_pfn is not None:
            kho.free_preserved(state.header_pfn, 1)
            state.header_pfn = None
        if state.folio_pfn is not None:
            kho.free_preserved(state.folio_pfn, state.folio_pages)
            state.folio_pfn, state.folio_pages = None, 0
        if state.added:
            kho.unpreserve_folio_runs(state.added, state.order)
            state.added = []
            state.held = Extents.from_ranges(
                [p for p, _ in state.runs], [p + (n << state.order) for p, n in state.runs]
            )
        state.compatible, state.populated = None, 0

    def freeze(self, f: OutgoingFile) -> None:
        """Catch up with holes written since prepare, then refresh `pos`."""
        state: PreservedMemfd = f.private
        memfd = f.file
        assert isinstance(memfd, MemfdFile) and state.header_pfn is not None
        if memfd.populated_folios() != state.populated:
            self._catch_up(memfd, state)
            self._write_record(f, state)  # pos included
            return
        self.refresh_pos(f, state)

    def refresh_pos(self, f: OutgoingFile, state: PreservedMemfd) -> None:
        """Only `pos` may have moved since prepare: it leads every memfd header."""
        assert isinstance(f.file, MemfdFile) and state.header_pfn is not None
        self.kernel.memory.write(state.header_pfn, struct.pack("<Q", f.file.pos))

    # -- the next kernel ----------------------------------------------------------------------

    def _corrupt(self, f: IncomingFile, why: str) -> KernelError:
        return KernelError(
            f"memfd record of token {f.token:#x} is unusable: {why}",
            errno=errno.EIO,
            obj=f"{f.session.name}/{f.token:#x}",
        )

    def _read_record(self, f: IncomingFile) -> MemfdRecord:
        if isinstance(f.private, MemfdRecord):
            return f.private
        kho_in, memory = self.kernel.kho_in, self.kernel.memory
        assert kho_in is not None
        if f.data % PAGE_SIZE or not 0 < f.data < memory.size_bytes:
            raise self._corrupt(f, f"header address {f.data:#x} is invalid")
        sparse = self.sparse(f.compatible)
        entry_bytes = EXTENT_BYTES if sparse else ENTRY_BYTES
        pages: list[tuple[int, int]] = []
        try:
            kho_in.restore_pages(f.data >> PAGE_SHIFT, 1)
            pages.append((f.data >> PAGE_SHIFT, 1))
            header = self.parse_header(f.compatible, memory.read_at(f.data, 128))
            n, folios_phys, fpages = header["nr"], header["folios_phys"], header["folio_pages"]
            if n * entry_bytes > fpages * PAGE_SIZE or (n and folios_phys % PAGE_SIZE):
                raise self._corrupt(f, "entry table size or address is inconsistent")
            raw = np.zeros(0, dtype="<u8")
            if n:
                if folios_phys + fpages * PAGE_SIZE > memory.size_bytes:
                    raise self._corrupt(f, "entry table lies outside RAM")
                kho_in.restore_pages(folios_phys >> PAGE_SHIFT, fpages)
                pages.append((folios_phys >> PAGE_SHIFT, fpages))
                raw = np.frombuffer(memory.read_at(folios_phys, n * entry_bytes), dtype="<u8")
            order = header["order"]
            if sparse:
                indices, pfns, dirty = records.decode_extents(raw, header, memory.frames)
            else:
                indices, pfns, dirty = records.decode_entries(raw)
        except RecordUnusable as exc:
            self._free_pages(pages)
            raise self._corrupt(f, str(exc)) from None
        except KernelError:
            self._free_pages(pages)
            raise
        record = MemfdRecord(
            pos=header["pos"],
            size=header["size"],
            seals=header["seals"],
            flags=header["flags"],
            order=order,
            extra=header,
            indices=indices,
            pfns=pfns,
            dirty=dirty,
            pages=tuple(pages),
        )
        f.private = record
        return record

    def _free_pages(self, pages: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> None:
        for pfn, count in pages:
            self.kernel.mm.free_extent(pfn, count)

    def retrieve(self, f: IncomingFile) -> File:
        record = self._read_record(f)
        kho_in = self.kernel.kho_in
        assert kho_in is not None
        kho_in.restore_folios(record.pfns, record.order)
        memfd = self.new_file(f, record)
        memfd.adopt(record.indices, record.pfns, record.dirty)
        memfd.size = record.size
        self._free_pages(record.pages)
        f.private = None
        return memfd

    def finish(self, f: IncomingFile) -> None:
        if f.status == RETRIEVE_OK:
            return  # the retrieved memfd lives on in its process
        try:
            record = self._read_record(f)
            kho_in = self.kernel.kho_in
            assert kho_in is not None
            kho_in.restore_folios(record.pfns, record.order)
        except KernelError:
            return  # nothing usable to discard: the frames stay reserved until the next boot
        self.folio_source(record).free_extents(
            Extents.from_blocks(np.sort(record.pfns) >> record.order, record.order)
        )
        self._free_pages(record.pages)
        f.private = None
