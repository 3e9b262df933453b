"""Who gets a connection: the accept loop, the connection caps and the hello deadline.

luod accepts in its own loop rather than `trio.serve_listeners`, which logs a traceback
for every EMFILE and has no caps. Here:

* every accepted connection is counted per uid (SO_PEERCRED) and in all; one over
  `ConnectionLimits.per_uid` or `.total` is answered with one error frame,
  `luod.TooManyConnections` (errno `EAGAIN`: try again once connections have closed),
  id null, and closed, before any hello is read;
* the total cap defaults to the fd limit minus a reserve (`default_total`), so that the
  cap, not the fd table, is what a flood of connections hits: accept keeps working, and
  the fds of sessions, memfds and luod-run programs stay available;
* should accept fail for want of fds or memory all the same (EMFILE, ENFILE, ENOBUFS,
  ENOMEM), the loop backs off `ACCEPT_BACKOFF` seconds and retries, and says so in one
  warning line per `WARN_EVERY` seconds with the count since the last one: no traceback,
  and connections already open keep being served;
* a client that has not completed its hello within `hello_timeout` gets
  `luod.HelloTimeout` (`ETIMEDOUT`) and is closed (`ClientConnection.run`), so idle or
  slow-loris connections cannot hold their slot for ever.
"""

from __future__ import annotations

import collections
import errno
import resource
from collections.abc import Awaitable, Callable
from typing import Final

import attrs
import structlog
import trio

from luod.daemon.errors import DaemonError

__all__ = ["Admission", "ConnectionLimits", "accept_loop", "default_total"]

log = structlog.get_logger("luod.server")

ACCEPT_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_BACKOFF: Final = 0.1
WARN_EVERY: Final = 5.0
DEFAULT_HELLO_TIMEOUT: Final = 10.0
DEFAULT_PER_UID: Final = 64
FD_RESERVE_MIN: Final = 256


def default_total() -> int:
    """The default global cap: the fd limit (soft RLIMIT_NOFILE, read now) minus a reserve
    of a quarter of it, and at least `FD_RESERVE_MIN`, for everything else luod holds."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1, soft - max(FD_RESERVE_MIN, soft // 4))


@attrs.frozen
class ConnectionLimits:
    """`luod --hello-timeout`, `--max-connections-per-uid`, `--max-connections` (None: the
    default, computed when serving starts, after the fd limit was raised)."""

    hello_timeout: float = DEFAULT_HELLO_TIMEOUT
    per_uid: int = DEFAULT_PER_UID
    total: int | None = None


class Admission:
    """The open connections, counted per uid, and what has been refused."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.total = limits.total if limits.total is not None else default_total()
        self.by_uid: collections.Counter[int] = collections.Counter()
        self.open = 0
        self.refused = 0
        self.accept_failures = 0

    def admit(self, uid: int) -> DaemonError | None:
        """Count a connection of `uid` in, or say why it is refused (not counted)."""
        if self.open >= self.total:
            self.refused += 1
            return DaemonError(
                "TooManyConnections",
                f"luod has {self.open} connections open, its limit (--max-connections); "
                "try again later",
                errno=errno.EAGAIN,
            )
        if self.by_uid[uid] >= self.limits.per_uid:
            self.refused += 1
            return DaemonError(
                "TooManyConnections",
                f"uid {uid} has {self.by_uid[uid]} connections open, the most luod allows "
                "one uid (--max-connections-per-uid); close some and try again",
                errno=errno.EAGAIN,
                obj=f"uid {uid}",
            )
        self.by_uid[uid] += 1
        self.open += 1
        return None

    def release(self, uid: int) -> None:
        """Count an admitted connection of `uid` out."""
        self.open -= 1
        self.by_uid[uid] -= 1
        if not self.by_uid[uid]:
            del self.by_uid[uid]

    def as_json(self) -> dict[str, object]:
        return {
            "open": self.open,
            "max": self.total,
            "max_per_uid": self.limits.per_uid,
            "hello_timeout": self.limits.hello_timeout,
            "refused": self.refused,
            "accept_failures": self.accept_failures,
        }


async def accept_loop(
    listener: trio.SocketListener,
    nursery: trio.Nursery,
    handle: Callable[[trio.SocketStream], Awaitable[object]],
    admission: Admission,
) -> None:
    """Accept connections for ever, each served by `handle` in `nursery` (which counts
    and refuses, see `Admission`); accept's capacity errors back off, with a warning line
    per `WARN_EVERY` seconds at most."""
    unreported = 0
    last_warning = -WARN_EVERY
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in ACCEPT_ERRNOS:
                raise
            admission.accept_failures += 1
            unreported += 1
            now = trio.current_time()
            if now - last_warning >= WARN_EVERY:
                log.warning(
                    "accept_failing",
                    errno=errno.errorcode[exc.errno],
                    failures=unreported,
                    open=admission.open,
                    retry_in=ACCEPT_BACKOFF,
                )
                last_warning, unreported = now, 0
            await trio.sleep(ACCEPT_BACKOFF)
            continue
        nursery.start_soon(_run, handle, stream)


async def _run(
    handle: Callable[[trio.SocketStream], Awaitable[object]], stream: trio.SocketStream
) -> None:
    try:
        await handle(stream)
    finally:
        await trio.aclose_forcefully(stream)
