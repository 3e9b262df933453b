"""Which received file descriptors belong to which message.

Owns the bookkeeping of fds received and not yet claimed, for `luod.ipc.connection`.
Design choice: messages carry their fds (`Request.fds`, `Reply.fds`), see
`luod.ipc.messages`. On the receiving side the connection owns every fd handed to
`receive_data` until a message claims it; `next_event()` attaches them and the caller owns
them from then on. Whatever was never claimed (the peer closed, or broke the protocol) is
given back by `take_all()`; adapters close those when they close the socket.

Attribution is checked as tightly as the socket API allows. The rule for senders: the fds
of a message travel with the `sendmsg` call that carries the first byte of its frame. The
kernel never merges the fds of two `sendmsg` calls into one `recvmsg`, so fds received
with a chunk of bytes [S, E) belong to a frame that starts inside that chunk. Hence:

* a frame starting at offset F may claim only fds that arrived with a chunk that started
  at or before F (else they belong to a later frame): short → `luod.MissingFds`;
* fds that arrived with a chunk that ended at or before F and were not claimed by a frame
  starting in that chunk belong to no message: `luod.BadMessage`. A stray fd is never
  quietly given to the next message that declares one.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Final

from luod.ipc.errors import ProtocolErrorName, RemoteProtocolError
from luod.ipc.messages import MAX_FDS_PER_MESSAGE, Reply, Request

__all__ = ["MAX_PENDING_FDS", "PendingFds"]

MAX_PENDING_FDS: Final = 2 * MAX_FDS_PER_MESSAGE
"""Generous bound on fds received but not yet claimed: a well-behaved peer has at most one
partial frame with its fds outstanding when the adapter reads (it reads only on
NEED_DATA), i.e. at most MAX_FDS_PER_MESSAGE."""


class PendingFds:
    """Fds received and not yet claimed, each with the stream offsets of its chunk."""

    def __init__(self) -> None:
        # (fd, start, end): the chunk [start, end) of the stream the fd came with.
        self.entries: collections.deque[tuple[int, int, int]] = collections.deque()
        self.overflow = False
        """More than `MAX_PENDING_FDS` were pending at once; sticky."""

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, fds: Iterable[int], start: int, end: int) -> None:
        """Take ownership of `fds`, received with the stream bytes [start, end)."""
        self.entries.extend((fd, start, end) for fd in fds)
        if len(self.entries) > MAX_PENDING_FDS:
            self.overflow = True

    def overflow_error(self) -> RemoteProtocolError:
        """The error for a peer that sent more fds than messages could claim."""
        return RemoteProtocolError(
            ProtocolErrorName.BAD_MESSAGE,
            f"more than {MAX_PENDING_FDS} file descriptors received ahead of messages",
        )

    def check_strays(self, frame_start: int) -> None:
        """Refuse fds that arrived before the frame starting at `frame_start` and that no
        earlier frame claimed.

        Raises:
            RemoteProtocolError: `luod.BadMessage`.
        """
        strays = 0
        for _fd, _start, end in self.entries:
            if end > frame_start:
                break
            strays += 1
        if strays:
            raise RemoteProtocolError(
                ProtocolErrorName.BAD_MESSAGE,
                f"{strays} file descriptor(s) arrived that no message declared",
            )

    def check_undeclared(self, consumed: int, claiming: int) -> None:
        """Refuse fds that came with bytes the decoder has wholly consumed (so with no
        frame still to start there) beyond the `claiming` the message just decoded
        declares: the last frame of their `sendmsg` did not declare them (`nfds` 0, a
        `hello`). Checked at that frame rather than at the next one, which may never come.

        Raises:
            RemoteProtocolError: `luod.BadMessage`.
        """
        done = 0
        for _fd, _start, end in self.entries:
            if end > consumed:
                break
            done += 1
        if done > claiming:
            raise RemoteProtocolError(
                ProtocolErrorName.BAD_MESSAGE,
                f"{done - claiming} file descriptor(s) arrived that no message declared",
            )

    def claim(self, message: Request | Reply, frame_start: int) -> tuple[int, ...]:
        """The `message.nfds` fds of the message whose frame starts at `frame_start`; the
        caller owns them from now on.

        Raises:
            RemoteProtocolError: `luod.MissingFds` if fewer arrived with the frame.
        """
        wanted = message.nfds
        usable = 0
        for _fd, start, _end in self.entries:
            if usable == wanted or start > frame_start:
                break
            usable += 1
        if usable < wanted:
            raise RemoteProtocolError(
                ProtocolErrorName.MISSING_FDS,
                f"{message.KIND} {message.id} declares {wanted} file descriptor(s) "
                f"but {usable} arrived with it",
            )
        return tuple(self.entries.popleft()[0] for _ in range(wanted))

    def take_all(self) -> list[int]:
        """Hand back (and forget) every fd; the caller must close them."""
        fds = [fd for fd, _start, _end in self.entries]
        self.entries.clear()
        return fds
