"""A live-update program written with nothing but `os`, `mmap` and `fcntl.ioctl`, as a VMM
in any language that calls libc would be. Run under luod-run by test_ioctl_python; prints
what it saw as JSON.

    uapi_program.py basic | stage1 | stage2 | close_retrieved | open | hold
"""

from __future__ import annotations

import errno
import fcntl
import json
import mmap
import os
import struct
import sys
import time

CREATE, RETRIEVE, PRESERVE, RETRIEVE_FD, FINISH, GET_NAME = (
    0xBA00,
    0xBA01,
    0xBA40,
    0xBA41,
    0xBA42,
    0xBA43,
)
SESSION = struct.Struct("<Ii64s")
FD = struct.Struct("<IiQ")


def errname(call: object, *args: object) -> str:
    try:
        call(*args)  # type: ignore[operator]
    except OSError as exc:
        return errno.errorcode[exc.errno or 0]
    return "ok"


def session(dev: int, nr: int, name: bytes) -> int:
    buf = bytearray(SESSION.pack(SESSION.size, -1, name))
    fcntl.ioctl(dev, nr, buf)
    return int(SESSION.unpack(buf)[1])


def preserve(sfd: int, fd: int, token: int) -> None:
    fcntl.ioctl(sfd, PRESERVE, bytearray(FD.pack(FD.size, fd, token)))


def basic() -> dict[str, object]:
    dev = os.open("/dev/liveupdate", os.O_RDWR)
    seen: dict[str, object] = {"second_open": errname(os.open, "/dev/liveupdate", os.O_RDWR)}
    sfd = session(dev, CREATE, b"py-session")
    seen["session_cloexec"] = not os.get_inheritable(sfd)
    memfd = os.memfd_create("py")
    os.write(memfd, b"hello liveupdate")
    preserve(sfd, memfd, 0x1234)
    seen["double_preserve"] = errname(preserve, sfd, memfd, 0x1235)
    name = bytearray(struct.pack("<II64s", 72, 0, b""))
    fcntl.ioctl(sfd, GET_NAME, name)
    seen["name"] = name[8:].rstrip(b"\0").decode()
    seen["resize_preserved"] = errname(os.ftruncate, memfd, 1 << 20)
    seen["dev_null"] = errname(preserve, sfd, os.open("/dev/null", os.O_RDONLY), 0x77)
    seen["short_struct"] = errname(fcntl.ioctl, dev, CREATE, bytearray(struct.pack("<I4x", 4)))
    seen["unknown_nr"] = errname(fcntl.ioctl, dev, 0xBA09, bytearray(SESSION.size))
    seen["finish_outgoing"] = errname(fcntl.ioctl, sfd, FINISH, bytearray(struct.pack("<II", 8, 0)))
    return seen


def stage1() -> dict[str, object]:
    dev = os.open("/dev/liveupdate", os.O_RDWR)
    sfd = session(dev, CREATE, b"py-kexec")
    memfd = os.memfd_create("py", os.MFD_ALLOW_SEALING)
    os.ftruncate(memfd, 8192)
    fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    view = mmap.mmap(memfd, 8192)
    view[:6] = b"before"
    preserve(sfd, memfd, 0x1A)
    os.close(memfd)
    view[:25] = b"written after PRESERVE_FD"  # live: these are the bytes that must arrive
    os.close(dev)
    if os.fork() == 0:  # the holder keeps the session (and the mapping) until the kexec
        os.setsid()
        os.closerange(0, 3)
        while True:
            time.sleep(3600)
    return {}


def stage2() -> dict[str, object]:
    dev = os.open("/dev/liveupdate", os.O_RDWR)
    sfd = session(dev, RETRIEVE, b"py-kexec")
    buf = bytearray(FD.pack(FD.size, -1, 0x1A))
    fcntl.ioctl(sfd, RETRIEVE_FD, buf)
    memfd = FD.unpack(buf)[1]
    view = mmap.mmap(memfd, 8192)
    seals = fcntl.fcntl(memfd, fcntl.F_GET_SEALS)
    fcntl.ioctl(sfd, FINISH, bytearray(struct.pack("<II", 8, 0)))
    return {
        "content": view[:25].decode(),
        "size": os.fstat(memfd).st_size,
        "seals": bool(seals & fcntl.F_SEAL_SHRINK),
    }


def close_retrieved() -> dict[str, object]:
    """Stage 2 without FINISH: closing the retrieved session's fd finishes it."""
    dev = os.open("/dev/liveupdate", os.O_RDWR)
    os.close(session(dev, RETRIEVE, b"py-kexec"))
    return {"after_close": errname(session, dev, RETRIEVE, b"py-kexec")}


def hold() -> dict[str, object]:
    """Create session "held", say so, and exit (closing it) when stdin has a line."""
    dev = os.open("/dev/liveupdate", os.O_RDWR)
    session(dev, CREATE, b"held")
    print("ready", flush=True)
    sys.stdin.readline()
    return {}


def open_device() -> dict[str, object]:
    return {"open": errname(os.open, "/dev/liveupdate", os.O_RDWR)}


MODES = {
    "basic": basic,
    "stage1": stage1,
    "stage2": stage2,
    "close_retrieved": close_retrieved,
    "open": open_device,
    "hold": hold,
}

if __name__ == "__main__":
    print(json.dumps(MODES[sys.argv[1]]()))
