"""The request methods luod serves, and their parameters: the API contract.

One attrs class per method, registered in `METHODS` (`luod.ipc.method_table`) with who may
call it (`access`), the fds it carries and whether it waits: the one table the dispatcher,
luoctl's commands and the docs derive from. Requests' `params` are structured by the one
strict converter (unknown or missing keys and wrong types: `luod.BadParams` naming the
field). Results are maps documented on each class (`Result:`).

Tokens are u64 integers. Sizes are byte counts. A TARGET is a bundled release string or
the path of an image file readable by the daemon.
"""

from __future__ import annotations

from luod.ipc.methods.faults import (
    FaultArm,
    FaultClear,
    FaultList,
)
from luod.ipc.methods.machine import (
    DaemonRestart,
    DeviceDma,
    DeviceList,
    DeviceSet,
    DeviceShow,
    KernelList,
    KernelMatrix,
    KernelShow,
    KernelWrite,
    KhoDump,
    Status,
)
from luod.ipc.methods.objects import (
    Apply,
    FileReclaim,
    ObjectClose,
    ObjectCreate,
    ObjectList,
    ObjectPreserve,
)
from luod.ipc.methods.sessions import (
    FileRetrieve,
    FileUnpreserve,
    MemfdPreserve,
    MemfdRetrieve,
    SessionClose,
    SessionCreate,
    SessionFinish,
    SessionList,
    SessionRetrieve,
    SessionShow,
    UapiAttach,
)
from luod.ipc.methods.table import METHODS, Direction
from luod.ipc.methods.update import (
    BootCold,
    Cancel,
    Check,
    EventsSubscribe,
    Finish,
    Freeze,
    Kexec,
    Load,
    ParticipantAck,
    ParticipantReady,
    ParticipantRegister,
    ParticipantResumed,
    Prepare,
    Update,
)

__all__ = [
    "METHODS",
    "Apply",
    "BootCold",
    "Cancel",
    "Check",
    "DaemonRestart",
    "DeviceDma",
    "DeviceList",
    "DeviceSet",
    "DeviceShow",
    "Direction",
    "EventsSubscribe",
    "FaultArm",
    "FaultClear",
    "FaultList",
    "FileReclaim",
    "FileRetrieve",
    "FileUnpreserve",
    "Finish",
    "Freeze",
    "KernelList",
    "KernelMatrix",
    "KernelShow",
    "KernelWrite",
    "Kexec",
    "KhoDump",
    "Load",
    "MemfdPreserve",
    "MemfdRetrieve",
    "ObjectClose",
    "ObjectCreate",
    "ObjectList",
    "ObjectPreserve",
    "ParticipantAck",
    "ParticipantReady",
    "ParticipantRegister",
    "ParticipantResumed",
    "Prepare",
    "SessionClose",
    "SessionCreate",
    "SessionFinish",
    "SessionList",
    "SessionRetrieve",
    "SessionShow",
    "Status",
    "UapiAttach",
    "Update",
]
