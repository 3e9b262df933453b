"""Methods on sessions and the files in them: create, show, close, retrieve, finish;
memfds copied in and out; unpreserve and retrieve of any file."""

from __future__ import annotations

import attrs

from luod.ipc.methods.table import METHODS, Direction


@METHODS.method("session.create", access="owner")
@attrs.frozen
class SessionCreate:
    """A new outgoing session owned by the caller's uid. Result: a session object."""

    name: str


@METHODS.method("session.list", access="owner")
@attrs.frozen
class SessionList:
    """Result: {sessions: [session objects]} the caller may see (root sees all)."""


@METHODS.method("session.show", access="owner")
@attrs.frozen
class SessionShow:
    """Result: one session object. With no direction, outgoing is looked up first."""

    name: str
    direction: Direction | None = None


@METHODS.method("session.close", access="owner")
@attrs.frozen
class SessionClose:
    """Outgoing: unpreserve every file newest first and drop the session. Result: {}."""

    name: str


@METHODS.method("session.retrieve", access="owner")
@attrs.frozen
class SessionRetrieve:
    """Incoming: claim the session (once). Result: a session object."""

    name: str


@METHODS.method("session.finish", access="owner")
@attrs.frozen
class SessionFinish:
    """Incoming: finish it; never-retrieved files are discarded. Result: {}."""

    name: str


@METHODS.method("memfd.preserve", access="owner", fds_in=(1, 1))
@attrs.frozen
class MemfdPreserve:
    """fds in: 1 (a regular file or a memfd; its bytes are copied). The daemon makes an
    emulated memfd with the copy (`size` truncates or extends it; default the source's
    size; a source memfd's seals are copied too), adds `seals`, and preserves it.
    `page_size` 2 MiB or 1 GiB makes a hugetlb memfd from the daemon's pools (anything but
    those and 4096 is luod.BadPageSize). With `progress`, the daemon sends `memfd.progress`
    events {session, token, copied, total} on this connection as it copies (and serves
    other clients between chunks). Result: {token, size, seals, type}."""

    session: str
    token: int
    size: int | None = None
    seals: list[str] = attrs.field(factory=list)
    name: str = ""
    page_size: int = 4096
    progress: bool = False


@METHODS.method("memfd.retrieve", access="owner", fds_out=1)
@attrs.frozen
class MemfdRetrieve:
    """fds out: 1 (a new real memfd holding a copy of the retrieved bytes, sealed like the
    emulated one, positioned at its pos). Result: {token, size, pos, seals}."""

    session: str
    token: int


@METHODS.method("file.unpreserve", access="owner")
@attrs.frozen
class FileUnpreserve:
    """Outgoing: unpreserve one file (refused while others depend on it). Result: {}."""

    session: str
    token: int


@METHODS.method("file.retrieve", access="owner")
@attrs.frozen
class FileRetrieve:
    """Incoming: retrieve any file type. Result: {token, type, format}."""

    session: str
    token: int


@METHODS.method("uapi.attach", access="owner", fds_out=1)
@attrs.frozen
class UapiAttach:
    """luod-run's start: a gateway for an unmodified program's /dev/liveupdate calls.
    Result: {}; one fd: the program's end of the gateway (a SOCK_SEQPACKET socket)."""
