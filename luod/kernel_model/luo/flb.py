"""File-Lifecycle-Bound (FLB) objects: global state shared by the files of some handlers.

An FLB (IOMMU core, hugetlb pools, PCI state) is preserved with the first dependent file,
unpreserved with the last, retrieved once on demand in the next kernel and finished after
its last dependent file (reference/kernel.md §2.2). `FlbRegistry` holds the FLB table of
one kernel: which FLBs exist, which handlers each is linked to, and the outgoing and
incoming reference counts. The table holds at most `FLB_MAX` FLBs (one page of 64-byte
entries after a 16-byte header).
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterable
from typing import Any, ClassVar

import attrs

from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE
from luod.kernel_model.errors import HandlerRegistration, NoIncomingData
from luod.kernel_model.luo.file import KernelServices

FLB_MAX = 63


class Flb:
    """A global object shared by the files of one or more handlers."""

    compatible: ClassVar[str] = ""

    def __init__(self, kernel: KernelServices) -> None:
        self.kernel = kernel

    def preserve(self) -> tuple[int, Any]:
        """First dependent file preserved: returns (u64 data for the table, live object)."""
        raise NotImplementedError

    def unpreserve(self, data: int, obj: Any) -> None:
        raise NotImplementedError

    def retrieve(self, data: int) -> Any:
        raise NotImplementedError

    def finish(self, data: int, obj: Any) -> None:
        raise NotImplementedError


class PageFlb(Flb):
    """An FLB whose global state fits one preserved page: `body()` is written at preserve,
    `parse(raw)` rebuilds the object at retrieve (the page is freed once read)."""

    def body(self) -> bytes:
        return struct.pack("<Q", 1)

    def parse(self, raw: bytes) -> Any:
        return None

    def preserve(self) -> tuple[int, Any]:
        pfn = self.kernel.kho_out.alloc_preserved(1)
        self.kernel.memory.write(pfn, self.body())
        return pfn << PAGE_SHIFT, pfn

    def unpreserve(self, data: int, obj: Any) -> None:
        self.kernel.kho_out.free_preserved(obj, 1)

    def retrieve(self, data: int) -> Any:
        kho_in = self.kernel.kho_in
        assert kho_in is not None
        kho_in.restore_pages(data >> PAGE_SHIFT, 1)
        raw = self.kernel.memory.read_at(data, PAGE_SIZE)
        self.kernel.mm.free_extent(data >> PAGE_SHIFT, 1)
        return self.parse(raw)

    def finish(self, data: int, obj: Any) -> None:
        pass


@attrs.define(eq=False)
class OutgoingFlb:
    flb: Flb
    count: int = 0
    data: int = 0
    obj: Any = None


@attrs.define(eq=False)
class IncomingFlb:
    flb: Flb | None  # None: no handler registered it in this kernel
    compatible: str
    data: int
    count: int  # files still to finish
    obj: Any = None
    retrieved: bool = False
    finished: bool = False


class FlbRegistry:
    """The FLBs of one kernel, their links to handlers and their reference counts.

    Invariant: an outgoing FLB exists exactly while its count (preserved files of linked
    handlers, all sessions) is above zero; an incoming one finishes once, when its last
    dependent file finishes, retrieving it first if nobody did."""

    def __init__(self) -> None:
        self.types: dict[str, Flb] = {}
        self.links: dict[str, list[str]] = {}  # handler file type -> FLB names, in order
        self.outgoing: dict[str, OutgoingFlb] = {}
        self.incoming: dict[str, IncomingFlb] = {}

    # -- the table ----------------------------------------------------------------------

    def register(self, file_type: str, flb: Flb) -> None:
        if file_type not in self.links:
            raise HandlerRegistration(
                f"no handler {file_type!r} to link FLB to", errno=errno.ENOENT
            )
        links = self.links[file_type]
        if flb.compatible in links:
            raise HandlerRegistration(
                f"FLB {flb.compatible!r} is linked to {file_type!r} already", errno=errno.EEXIST
            )
        known = self.types.get(flb.compatible)
        if known is not None and known is not flb:
            raise HandlerRegistration(
                f"another FLB named {flb.compatible!r} exists", errno=errno.EEXIST
            )
        if known is None and len(self.types) >= FLB_MAX:
            raise HandlerRegistration("the FLB table is full", errno=errno.ENOSPC)
        self.types[flb.compatible] = flb
        links.append(flb.compatible)

    def unregister(self, file_type: str, compatible: str) -> None:
        links = self.links.get(file_type, [])
        if compatible not in links:
            raise HandlerRegistration(f"FLB {compatible!r} is not linked", errno=errno.ENOENT)
        links.remove(compatible)
        if not any(compatible in lk for lk in self.links.values()):
            del self.types[compatible]

    # -- outgoing -----------------------------------------------------------------------

    def get(self, compatible: str) -> None:
        """One more dependent file: the first preserves the FLB."""
        state = self.outgoing.get(compatible)
        if state is None:
            flb = self.types[compatible]
            data, obj = flb.preserve()
            state = self.outgoing[compatible] = OutgoingFlb(flb, 0, data, obj)
        state.count += 1

    def put(self, compatible: str) -> None:
        """One dependent file fewer: the last unpreserves the FLB."""
        state = self.outgoing[compatible]
        state.count -= 1
        if state.count == 0:
            state.flb.unpreserve(state.data, state.obj)
            del self.outgoing[compatible]

    def outgoing_obj(self, compatible: str) -> object:
        state = self.outgoing.get(compatible)
        if state is None:
            raise NoIncomingData(f"FLB {compatible!r} is not preserved", errno=errno.ENOENT)
        return state.obj

    # -- incoming -----------------------------------------------------------------------

    def adopt(self, records: Iterable[tuple[str, int, int]]) -> None:
        """The FLB table the last kernel wrote: (compatible, data, count) each."""
        for compatible, data, count in records:
            self.incoming[compatible] = IncomingFlb(
                self.types.get(compatible), compatible, data, count
            )

    def get_incoming(self, compatible: str) -> object:
        state = self.incoming.get(compatible)
        if state is None or state.flb is None:
            raise NoIncomingData(
                f"FLB {compatible!r} is not in the incoming set", errno=errno.ENOENT, obj=compatible
            )
        if state.finished:
            raise NoIncomingData(f"FLB {compatible!r} has finished", obj=compatible)
        if not state.retrieved:
            state.obj = state.flb.retrieve(state.data)
            state.retrieved = True
        return state.obj

    def done(self, compatible: str) -> None:
        """One dependent file finished: the last finishes the FLB."""
        state = self.incoming.get(compatible)
        if state is None or state.finished or state.flb is None:
            return
        state.count -= 1
        if state.count <= 0:
            if not state.retrieved:
                state.obj = state.flb.retrieve(state.data)
                state.retrieved = True
            state.flb.finish(state.data, state.obj)
            state.finished = True
