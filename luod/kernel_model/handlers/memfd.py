"""The memfd handler (`mm/memfd_luo.c`): formats `memfd-v1` and `memfd-v2`.

preserve: freeze the mapping (size changes and hole punching get EPERM; writes inside the
size still land), fill every hole (frames assigned, nothing written), preserve each folio
through KHO. prepare: write the record in the negotiated format. freeze: refresh `pos`.
retrieve: restore every folio and build a fresh memfd with size, pos and data (and seals,
from `memfd-v2` only). finish of a never-retrieved memfd: its folios are freed.

Record (little-endian, in preserved pages; `data` is the header's physical address):
  memfd-v1 header: u64 pos, u64 size, u64 nr_folios, u64 folios phys, u32 folio pages,
                   u16 reserved, u16 folio order                               (40 bytes)
  memfd-v2 header: u64 pos, u64 size, u32 seals, u32 flags, u64 nr_folios,
                   u64 folios phys, u32 folio pages, u16 reserved, u16 folio order (48 bytes)
  folio entry:     u64 pfn (52 bits) | flags << 52 (DIRTY=1, UPTODATE=2), u64 index
The folio order field is this emulation's: Linux reads a folio's order from the page.
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
from luod.kernel_model.files.base import File
from luod.kernel_model.files.memfd import MemfdFile, Seal
from luod.kernel_model.luo.handler import RETRIEVE_OK, FileHandler, IncomingFile, OutgoingFile
from luod.kernel_model.mm import FolioSource

V1 = "memfd-v1"
V2 = "memfd-v2"
HEADER_V1 = struct.Struct("<QQQQIHH")
HEADER_V2 = struct.Struct("<QQIIQQIHH")
ENTRY_BYTES = 16
PFN_BITS = 52
FOLIO_DIRTY = 1
FOLIO_UPTODATE = 2
FLAG_ALLOW_SEALING = 1


@attrs.define
class _Preserved:
    runs: list[tuple[int, int]]  # (first pfn, folios): what KHO holds
    order: int
    header_pfn: int | None = None
    folio_pfn: int | None = None
    folio_pages: int = 0


@attrs.frozen
class _Record:
    pos: int
    size: int
    seals: int
    flags: int
    order: int
    indices: np.ndarray
    pfns: np.ndarray
    dirty: np.ndarray
    pages: tuple[tuple[int, int], ...]  # record pages (pfn, n), restored, to free
    extra: dict[str, int]  # every header field, for subclasses


def _merge_runs(pfns: np.ndarray, counts: np.ndarray, order: int) -> list[tuple[int, int]]:
    """Coalesce page-cache runs whose folios also lie back to back physically."""
    out: list[tuple[int, int]] = []
    for pfn, n in zip(pfns.tolist(), counts.tolist(), strict=True):
        if out and out[-1][0] + (out[-1][1] << order) == pfn:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((pfn, n))
    return sorted(out)


class MemfdHandler(FileHandler):
    file_type = "memfd"
    formats: ClassVar[tuple[str, ...]] = (V2, V1)

    def can_preserve(self, file: File) -> bool:
        return type(file) is MemfdFile

    def preserve(self, f: OutgoingFile) -> None:
        memfd = f.file
        assert isinstance(memfd, MemfdFile)
        memfd.freeze_mapping()
        try:
            memfd.fill_holes()
            _, pfns, counts, _ = memfd.folio_runs()
            runs = _merge_runs(pfns, counts, memfd.folio_order)
            self.kernel.kho_out.preserve_folio_runs(runs, memfd.folio_order)
        except BaseException:
            memfd.unfreeze_mapping()
            raise
        f.private = _Preserved(runs, memfd.folio_order)

    def unpreserve(self, f: OutgoingFile) -> None:
        state: _Preserved = f.private
        self.kernel.kho_out.unpreserve_folio_runs(state.runs, state.order)
        assert isinstance(f.file, MemfdFile)
        f.file.unfreeze_mapping()

    def prepare(self, f: OutgoingFile, compatible: str) -> int:
        memfd, state = f.file, f.private
        assert isinstance(memfd, MemfdFile) and isinstance(state, _Preserved)
        kho, memory = self.kernel.kho_out, self.kernel.memory
        indices, pfns, dirty = memfd.folio_arrays()
        entries = np.empty((indices.size, 2), dtype="<u8")
        flags = np.where(
            dirty,
            np.uint64((FOLIO_DIRTY | FOLIO_UPTODATE) << PFN_BITS),
            np.uint64(FOLIO_UPTODATE << PFN_BITS),
        )
        np.bitwise_or(pfns.view(np.uint64), flags, out=entries[:, 0])
        entries[:, 1] = indices.view(np.uint64)
        if indices.size:
            state.folio_pages = -(-indices.size * ENTRY_BYTES // PAGE_SIZE)
            state.folio_pfn = kho.alloc_preserved(state.folio_pages)
            memory.write(state.folio_pfn, entries.data.cast("B"))
        folios_phys = (state.folio_pfn or 0) << PAGE_SHIFT
        header = self.pack_header(f, compatible, indices.size, folios_phys, state)
        try:
            state.header_pfn = kho.alloc_preserved(1)
        except BaseException:
            self.cancel(f)
            raise
        memory.write(state.header_pfn, header)
        return state.header_pfn << PAGE_SHIFT

    def pack_header(
        self, f: OutgoingFile, compatible: str, nr: int, folios_phys: int, state: _Preserved
    ) -> bytes:
        memfd = f.file
        assert isinstance(memfd, MemfdFile)
        if compatible == V1:
            return HEADER_V1.pack(
                memfd.pos, memfd.size, nr, folios_phys, state.folio_pages, 0, state.order
            )
        return HEADER_V2.pack(
            memfd.pos,
            memfd.size,
            memfd.seals.value,
            FLAG_ALLOW_SEALING if memfd.allow_sealing else 0,
            nr,
            folios_phys,
            state.folio_pages,
            0,
            state.order,
        )

    def parse_header(self, compatible: str, raw: bytes) -> dict[str, int]:
        """pos, size, seals, flags, nr, folios_phys, folio_pages, order (+ extra fields)."""
        if compatible == V2:
            pos, size, seals, flags, n, fphys, fpages, _, order = HEADER_V2.unpack_from(raw)
        else:
            pos, size, n, fphys, fpages, _, order = HEADER_V1.unpack_from(raw)
            seals = flags = 0
        return {
            "pos": pos,
            "size": size,
            "seals": seals,
            "flags": flags,
            "nr": n,
            "folios_phys": fphys,
            "folio_pages": fpages,
            "order": order,
        }

    def folio_source(self, record: _Record) -> FolioSource:
        """Where the retrieved file's folios come from and go back to."""
        return self.kernel.mm

    def new_file(self, f: IncomingFile, record: _Record) -> MemfdFile:
        memfd = MemfdFile(
            self.kernel.memory,
            self.folio_source(record),
            folio_order=record.order,
            allow_sealing=f.compatible == V1 or bool(record.flags & FLAG_ALLOW_SEALING),
        )
        memfd.pos = record.pos
        if f.compatible == V2:
            memfd.seals = Seal(record.seals)
        return memfd

    def cancel(self, f: OutgoingFile) -> None:
        state: _Preserved = f.private
        kho = self.kernel.kho_out
        if state.header_pfn is not None:
            kho.free_preserved(state.header_pfn, 1)
            state.header_pfn = None
        if state.folio_pfn is not None:
            kho.free_preserved(state.folio_pfn, state.folio_pages)
            state.folio_pfn, state.folio_pages = None, 0

    def freeze(self, f: OutgoingFile) -> None:
        """Only `pos` may have moved since prepare."""
        state: _Preserved = f.private
        assert isinstance(f.file, MemfdFile) and state.header_pfn is not None
        self.kernel.memory.write(state.header_pfn, struct.pack("<Q", f.file.pos))

    # -- the next kernel ----------------------------------------------------------------------

    def _corrupt(self, f: IncomingFile, why: str) -> KernelError:
        return KernelError(
            f"memfd record of token {f.token:#x} is unusable: {why}",
            errno=errno.EIO,
            obj=f"{f.session.name}/{f.token:#x}",
        )

    def _read_record(self, f: IncomingFile) -> _Record:
        if isinstance(f.private, _Record):
            return f.private
        kho_in, memory = self.kernel.kho_in, self.kernel.memory
        assert kho_in is not None
        if f.data % PAGE_SIZE or not 0 < f.data < memory.size_bytes:
            raise self._corrupt(f, f"header address {f.data:#x} is invalid")
        pages: list[tuple[int, int]] = []
        try:
            kho_in.restore_pages(f.data >> PAGE_SHIFT, 1)
            pages.append((f.data >> PAGE_SHIFT, 1))
            header = self.parse_header(f.compatible, memory.read_at(f.data, 128))
            n, folios_phys, fpages = header["nr"], header["folios_phys"], header["folio_pages"]
            if n * ENTRY_BYTES > fpages * PAGE_SIZE or (n and folios_phys % PAGE_SIZE):
                raise self._corrupt(f, "folio array size or address is inconsistent")
            if n:
                if folios_phys + fpages * PAGE_SIZE > memory.size_bytes:
                    raise self._corrupt(f, "folio array lies outside RAM")
                kho_in.restore_pages(folios_phys >> PAGE_SHIFT, fpages)
                pages.append((folios_phys >> PAGE_SHIFT, fpages))
                entries = np.frombuffer(memory.read_at(folios_phys, n * ENTRY_BYTES), dtype="<u8")
                entries = entries.reshape(-1, 2)
            else:
                entries = np.zeros((0, 2), dtype="<u8")
        except KernelError:
            for pfn, count in pages:
                self.kernel.mm.free_extent(pfn, count)
            raise
        record = _Record(
            pos=header["pos"],
            size=header["size"],
            seals=header["seals"],
            flags=header["flags"],
            order=header["order"],
            extra=header,
            indices=entries[:, 1].view(np.int64),
            pfns=(entries[:, 0] & np.uint64((1 << PFN_BITS) - 1)).view(np.int64),
            dirty=((entries[:, 0] >> np.uint64(PFN_BITS)) & np.uint64(FOLIO_DIRTY)).astype(bool),
            pages=tuple(pages),
        )
        f.private = record
        return record

    def _free_record_pages(self, record: _Record) -> None:
        for pfn, count in record.pages:
            self.kernel.mm.free_extent(pfn, count)

    def retrieve(self, f: IncomingFile) -> File:
        record = self._read_record(f)
        kho_in = self.kernel.kho_in
        assert kho_in is not None
        kho_in.restore_folios(record.pfns, record.order)
        memfd = self.new_file(f, record)
        memfd.adopt(record.indices, record.pfns, record.dirty)
        memfd.size = record.size
        self._free_record_pages(record)
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
        self._free_record_pages(record)
        f.private = None
