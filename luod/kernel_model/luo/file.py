"""Preserved files and the file-handler op set LUO drives them through.

A handler owns one file type (`memfd`, ...) and the record formats it can write and read
(`formats`, newest first). Its ops follow `struct liveupdate_file_ops` (reference/
kernel.md §2.1), with the two steps of the global model in between: `prepare` writes the
record in the format negotiated against the next kernel and returns its physical address
(the `serialized_data` the file table carries); `cancel` throws that record away.

Required ops: preserve, unpreserve, retrieve, finish (registration refuses a handler
without them, EINVAL). Optional: freeze, unfreeze, can_finish, get_id, prepare, cancel.

`OutgoingFile` and `IncomingFile` are LUO's record of one preserved file in this kernel
and in the next. As in the kernel, a handler sees the session holding its file only
through what it may hand back to LUO's in-kernel API (`LuoServices`: a dependency's token
or file in the same session, an incoming FLB); the session views below are that much of a
session, so this module stands below `session` and `core`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import attrs

from luod.kernel_model.catalog import FORMAT_LAYERS
from luod.kernel_model.errors import KernelError

if TYPE_CHECKING:
    from luod.hw.machine import Machine
    from luod.hw.memory import PhysicalMemory
    from luod.kernel_model.kho.incoming import KhoIn
    from luod.kernel_model.kho.outgoing import KhoOut
    from luod.kernel_model.memfd.hugetlb_pool import HugetlbPools
    from luod.kernel_model.mm import FrameAllocator
    from luod.kernel_model.vfs import File

HANDLER_COMPAT_LENGTH = 48


class OutgoingSessionView(Protocol):
    """What a handler sees of the outgoing session holding its file."""

    @property
    def name(self) -> str: ...

    @property
    def files(self) -> list[OutgoingFile]: ...


class IncomingSessionView(Protocol):
    """What a handler sees of the incoming session holding its file."""

    @property
    def name(self) -> str: ...

    def by_token(self, token: int) -> IncomingFile: ...


class LuoServices(Protocol):
    """LUO's in-kernel API for dependent handlers (kernel.md §2.1, §2.2)."""

    def outgoing_token(self, session: OutgoingSessionView, file: File) -> int: ...

    def incoming_file(self, session: IncomingSessionView, token: int) -> File: ...

    def flb_get_incoming(self, compatible: str) -> object: ...


class KernelServices(Protocol):
    """What a handler may use of its kernel: memory by pfn, the allocator, KHO, LUO."""

    @property
    def memory(self) -> PhysicalMemory: ...

    @property
    def mm(self) -> FrameAllocator: ...

    @property
    def kho_out(self) -> KhoOut: ...

    @property
    def kho_in(self) -> KhoIn | None: ...

    @property
    def luo(self) -> LuoServices | None: ...

    @property
    def hugetlb(self) -> HugetlbPools: ...

    @property
    def machine(self) -> Machine: ...


@attrs.define(eq=False)
class OutgoingFile:
    session: OutgoingSessionView
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
    session: IncomingSessionView
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
