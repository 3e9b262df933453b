"""The systemd service-manager protocols, in plain stdlib: sd_notify(3) and sd_listen_fds(3).

Owns everything luod says to, or takes from, its supervisor: readiness and status datagrams
on `$NOTIFY_SOCKET` (and fds for its fd store: `FDSTORE=1` with SCM_RIGHTS), the watchdog
interval from `$WATCHDOG_USEC`, and the fds passed at start (`$LISTEN_PID`, `$LISTEN_FDS`,
`$LISTEN_FDNAMES`: activated sockets and the fd store's contents). systemd
documents both protocols as stable interfaces meant to be reimplemented, so a few dozen lines
here replace a libsystemd binding (reference/python.md C.1).

Every function is a no-op outside systemd: with the variables unset, notifications return
False and `listen_fds` returns []. Sending never raises: the supervisor is an observer, and a
lost status line must not take the daemon down (callers may look at the boolean). The module
imports no trio; one datagram on a local socket is a single short syscall, so calling it
from the event loop is fine.
"""

from __future__ import annotations

import array
import os
import socket
from typing import Final

__all__ = [
    "SD_LISTEN_FDS_START",
    "extend_timeout",
    "listen_fds",
    "notify",
    "ready",
    "remove_stored_fd",
    "status",
    "stopping",
    "store_fd",
    "under_supervisor",
    "watchdog_interval",
    "watchdog_ping",
]

SD_LISTEN_FDS_START: Final = 3

# A full receive queue on the notify socket would block the sender; bound the stall so a
# wedged supervisor costs the event loop at most this long per message.
_SEND_TIMEOUT: Final = 1.0


def notify(*fields: str, fds: tuple[int, ...] = ()) -> bool:
    """Send `KEY=VALUE` fields as one datagram to `$NOTIFY_SOCKET`; True if it was sent.

    False when the variable is unset, names an unsupported address (only absolute paths
    and abstract `@name`s are understood; `vsock:` and relative paths are ignored), or the
    send fails. Raises ValueError only for no fields or a malformed one (no `=`, or a newline,
    which would smuggle in another field): that is a caller bug, not a delivery problem.
    """
    if not fields:
        raise ValueError("sd_notify needs at least one field")
    for field in fields:
        if "=" not in field or "\n" in field:
            raise ValueError(f"malformed sd_notify field {field!r}")
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False
    # "replace": a lone surrogate (from os.fsdecode'd text) must not raise on the way out.
    payload = "\n".join(fields).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(_SEND_TIMEOUT)
            if not fds:
                return sock.sendto(payload, address) == len(payload)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
            return sock.sendmsg([payload], rights, 0, address) == len(payload)
    except OSError:
        return False


def store_fd(fd: int, name: str) -> bool:
    """`FDSTORE=1` with `FDNAME=name`: systemd keeps a duplicate of `fd` (up to the unit's
    `FileDescriptorStoreMax=`) and passes it back in `$LISTEN_FDS` on the next start."""
    return notify("FDSTORE=1", f"FDNAME={name}", fds=(fd,))


def remove_stored_fd(name: str) -> bool:
    """`FDSTOREREMOVE=1` with `FDNAME=name`: systemd closes its copies of that fd."""
    return notify("FDSTOREREMOVE=1", f"FDNAME={name}")


def under_supervisor() -> bool:
    """Whether a service manager listens on `$NOTIFY_SOCKET` (a path we can send to)."""
    return os.environ.get("NOTIFY_SOCKET", "").startswith(("/", "@"))


def status(text: str) -> bool:
    """`STATUS=text`, shown by `systemctl status`; newlines become spaces."""
    return notify(f"STATUS={_one_line(text)}")


def ready(status: str | None = None) -> bool:
    """`READY=1` (with an optional status line): start-up is complete, clients may connect."""
    fields = ["READY=1"]
    if status is not None:
        fields.append(f"STATUS={_one_line(status)}")
    return notify(*fields)


def stopping() -> bool:
    """`STOPPING=1`: a clean shutdown has begun."""
    return notify("STOPPING=1")


def watchdog_ping() -> bool:
    """`WATCHDOG=1`: the daemon is alive; send at least every `watchdog_interval() / 2`."""
    return notify("WATCHDOG=1")


def extend_timeout(usec: int) -> bool:
    """`EXTEND_TIMEOUT_USEC=usec`: the current start or stop phase needs `usec` more µs."""
    if usec < 0:
        raise ValueError(f"timeout extension must be >= 0 µs, got {usec}")
    return notify(f"EXTEND_TIMEOUT_USEC={usec}")


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds (`WatchdogSec=`), or None when no watchdog applies.

    None when `$WATCHDOG_USEC` is unset, not a positive integer, or `$WATCHDOG_PID` is set
    to some other process (the variables were inherited, not meant for us). Like
    sd_watchdog_enabled(3), ping at half the returned interval.
    """
    usec = _int_env("WATCHDOG_USEC")
    if usec is None or usec <= 0:
        return None
    if "WATCHDOG_PID" in os.environ and _int_env("WATCHDOG_PID") != os.getpid():
        return None
    return usec / 1_000_000


def listen_fds() -> list[tuple[int, str]]:
    """The sockets passed by socket activation as `(fd, name)` pairs, fds counting from 3.

    Follows sd_listen_fds_with_names(3): [] unless `$LISTEN_PID` is this process; names
    come from the colon-separated `$LISTEN_FDNAMES` ("unknown" each when it is unset). Each
    fd is made close-on-exec, and the variables are removed from the environment in every
    case, so a child process never mistakes them for its own.

    Raises:
        ValueError: `$LISTEN_FDS` is malformed or its count disagrees with the names.
    """
    try:
        if os.environ.get("LISTEN_PID", "").strip() != str(os.getpid()):
            return []
        count = _int_env("LISTEN_FDS")
        if count is None or count < 0:
            raise ValueError(f"malformed LISTEN_FDS={os.environ.get('LISTEN_FDS')!r}")
        names_env = os.environ.get("LISTEN_FDNAMES")
        names = names_env.split(":") if names_env is not None else ["unknown"] * count
        if len(names) != count:
            raise ValueError(f"LISTEN_FDNAMES={names_env!r} does not name {count} fds")
        fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))
        for fd in fds:
            os.set_inheritable(fd, False)
        return list(zip(fds, names, strict=True))
    finally:
        # LISTEN_PIDFDID is systemd >= 256's companion of LISTEN_PID; drop it alike.
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID"):
            os.environ.pop(name, None)


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def _int_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isascii() and value.isdigit() else None
