"""File handlers and File-Lifecycle-Bound (FLB) objects: the op sets LUO drives.

A handler owns one file type (`memfd`, ...) and the record formats it can write and read
(`formats`, newest first). Its ops follow `struct liveupdate_file_ops` (reference/
kernel.md §2.1), with the two steps of the global model in between: `prepare` writes the
record in the format negotiated against the next kernel and returns its physical address
(the `serialized_data` the file table carries); `cancel` throws that record away.

Required ops: preserve, unpreserve, retrieve, finish (registration refuses a handler
without them, EINVAL). Optional: freeze, unfreeze, can_finish, get_id, prepare, cancel.

An FLB is global state shared by many files (IOMMU core, hugetlb pools): preserved with
the first dependent file, unpreserved with the last, retrieved once on demand in the next
kernel, finished after its last dependent file.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import attrs

from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE
from luod.kernel_model.errors import KernelError

if TYPE_CHECKING:
    from luod.hw.machine import Machine
    from luod.hw.memory import PhysicalMemory
    from luod.kernel_model.kho.incoming import KhoIn
    from luod.kernel_model.kho.outgoing import KhoOut
    from luod.kernel_model.luo.core import Luo
    from luod.kernel_model.luo.session import IncomingSession, OutgoingSession
    from luod.kernel_model.memfd.hugetlb_pool import HugetlbPools
    from luod.kernel_model.mm import FrameAllocator
    from luod.kernel_model.vfs import File

HANDLER_COMPAT_LENGTH = 48


class KernelServices(Protocol):
    """What a handler may use of its kernel: memory by pfn, the allocator, KHO."""

    @property
    def memory(self) -> PhysicalMemory: ...

    @property
    def mm(self) -> FrameAllocator: ...

    @property
    def kho_out(self) -> KhoOut: ...

    @property
    def kho_in(self) -> KhoIn | None: ...

    @property
    def luo(self) -> Luo | None: ...

    @property
    def hugetlb(self) -> HugetlbPools: ...

    @property
    def machine(self) -> Machine: ...


@attrs.define(eq=False)
class OutgoingFile:
    session: OutgoingSession
    token: int
    file: File
    handler: FileHandler
    private: Any = None  # the handler's runtime state from preserve
    compatible: str | None = None  # chosen at prepare
    data: int | None = None  # serialized_data: written at prepare
    frozen: bool = False


RETRIEVE_NEVER = 0
RETRIEVE_OK = 1


@attrs.define(eq=False)
class IncomingFile:
    session: IncomingSession
    token: int
    compatible: str
    data: int
    handler: FileHandler
    status: int = RETRIEVE_NEVER  # 0 never, 1 retrieved, -errno failed (sticky)
    error: KernelError | None = None
    file: File | None = None
    private: Any = None  # the handler's state between retrieve and finish


class FileHandler:
    file_type: ClassVar[str] = ""
    formats: ClassVar[tuple[str, ...]] = ()
    flbs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, kernel: KernelServices) -> None:
        self.kernel = kernel

    @property
    def layer(self) -> str:
        """The negotiation layer: the catalog's layer of this handler's formats."""
        from luod.kernel_model.catalog import FORMAT_LAYERS

        return (
            FORMAT_LAYERS.get(self.formats[0], self.file_type) if self.formats else self.file_type
        )

    # -- required -------------------------------------------------------------------------

    def can_preserve(self, file: File) -> bool:
        raise NotImplementedError

    def preserve(self, f: OutgoingFile) -> None:
        raise NotImplementedError

    def unpreserve(self, f: OutgoingFile) -> None:
        raise NotImplementedError

    def retrieve(self, f: IncomingFile) -> File:
        raise NotImplementedError

    def finish(self, f: IncomingFile) -> None:
        raise NotImplementedError

    # -- optional -------------------------------------------------------------------------

    def get_id(self, file: File) -> int:
        return file.inode

    def dependencies(self, f: OutgoingFile) -> list[File]:
        """Files this one needs preserved first in the same session."""
        return []

    def prepare(self, f: OutgoingFile, compatible: str) -> int:
        return 0

    def cancel(self, f: OutgoingFile) -> None:
        pass

    def freeze(self, f: OutgoingFile) -> None:
        pass

    def unfreeze(self, f: OutgoingFile) -> None:
        pass

    def can_finish(self, f: IncomingFile) -> bool:
        return True

    REQUIRED: ClassVar[tuple[str, ...]] = (
        "can_preserve",
        "preserve",
        "unpreserve",
        "retrieve",
        "finish",
    )

    def missing_ops(self) -> list[str]:
        return [op for op in self.REQUIRED if getattr(type(self), op) is getattr(FileHandler, op)]


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
