"""The daemon's listening Unix socket: where it lives, binding it safely, and letting go of it.

Owns the socket-file lifecycle that CLI.md ("luod (the daemon)") promises:

* the default path (`default_socket_path`, the one implementation of that rule);
* a second daemon on the same path refuses to start (`AlreadyServing`), while a stale
  socket file left by a crashed daemon is silently replaced;
* the file is mode 0660 or stricter from the moment it exists;
* on exit the file is removed, unless systemd created it (socket activation, where the
  socket unit owns the path and the fd outlives us).

trio has no Unix listener of its own (issue #279, reference/python.md A.6), so this module
builds one and hands out a plain `trio.SocketListener` for `trio.serve_listeners`.

Invariants:

* Check-then-replace of the path (probe, unlink, bind) and check-then-unlink on close run
  under an exclusive flock on the parent directory, so two daemons starting at once cannot
  both win, and a daemon shutting down cannot unlink the socket of its successor. The lock
  is only ever held across synchronous code (never across an `await`), so it lasts
  microseconds and two tasks of one process can never deadlock on it.
* We unlink only a path we bound ourselves and only while it is still the file we bound,
  judged by (st_dev, st_ino, st_mtime_ns) since inode numbers are recycled at once
  (`UnixListener.close`); an activated socket's path is never touched.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

import attrs
import trio

from luod.ipc.sockets import ROOT_SOCKET as SHARED_ROOT_SOCKET
from luod.ipc.sockets import default_socket_path as socket_rule

__all__ = [
    "AlreadyServing",
    "ListenerError",
    "NoSocketPath",
    "NotASocket",
    "UnixListener",
    "default_socket_path",
    "from_activation",
    "open_unix_listener",
]

ROOT_SOCKET: Final = Path(SHARED_ROOT_SOCKET)
ACTIVATION_FD_NAME: Final = "control"  # FileDescriptorName= in systemd/luod.socket

# Connecting to a live listener whose backlog is full blocks; that still means "served".
_PROBE_TIMEOUT: Final = 1.0
# Lock holders run microseconds of synchronous code, so waits are short in practice; the
# bounds only matter if something foreign holds a flock on the directory.
_LOCK_TIMEOUT: Final = 5.0
_UNLINK_LOCK_TIMEOUT: Final = 1.0
_LOCK_POLL: Final = 0.005


class ListenerError(Exception):
    """The listening socket cannot be set up; the message names the path or fd and why."""


class AlreadyServing(ListenerError):
    """Something accepts connections on the socket path: a second daemon must not start."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"another luod is already serving {path}")
        self.path = path


class NotASocket(ListenerError):
    """The socket path exists and is not a socket; we never delete such a file."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(f"refusing to replace {path}: it is a {kind}, not a socket")
        self.path = path


class NoSocketPath(ListenerError):
    """No `--socket`, and the environment gives no default (CLI.md)."""


def default_socket_path(environ: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """The socket path CLI.md prescribes when `--socket` is not given.

    `$LUOD_SOCKET` (when non-empty), else `/run/luod/luod.sock` for root, else
    `$XDG_RUNTIME_DIR/luod/luod.sock`. `environ` and `euid` default to this process's
    (read at call time). Root is judged by the effective uid: it decides who may write
    `/run`.

    Raises:
        NoSocketPath: none of the three applies (non-root without `$XDG_RUNTIME_DIR`).
    """
    path = socket_rule(environ, euid)
    if path is not None:
        return Path(path)
    raise NoSocketPath(
        "no socket path: pass --socket, or set LUOD_SOCKET or XDG_RUNTIME_DIR "
        "(neither is set and luod is not running as root)"
    )


@attrs.define(eq=False)
class UnixListener:
    """A listening `AF_UNIX` stream socket, and whether its file is ours to remove.

    `listener` goes to `trio.serve_listeners`. `path` is where clients connect (None for
    an activated socket without a filesystem name). `owned` is True only when
    `open_unix_listener` bound the path; then `close` removes the file. Closing is
    idempotent, and the object is an async context manager that closes on exit.
    """

    listener: trio.SocketListener
    path: Path | None
    owned: bool
    # Identity of the file we bound (see _identity); None when not owned or already removed.
    _identity: tuple[int, int, int] | None = None

    def close(self) -> bool:
        """Remove the socket file if we own it, then close the socket; True if removed.

        The file goes first, while the socket still listens: any daemon starting meanwhile
        sees `AlreadyServing` instead of replacing the path, so the unlink cannot hit a
        successor's socket. Removal is best effort (a leftover file is a stale socket the
        next start replaces), so this never raises.
        """
        removed = False
        if self.owned and self.path is not None and self._identity is not None:
            removed = _unlink_if_same(self.path, self._identity)
            self._identity = None
        self.listener.socket.close()
        return removed

    async def aclose(self) -> None:
        """`close`, with a trio checkpoint."""
        self.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> UnixListener:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def open_unix_listener(
    path: Path, *, mode: int = 0o660, backlog: int = socket.SOMAXCONN
) -> UnixListener:
    """Bind and listen on `path`, creating missing parent directories (mode 0755).

    The backlog is the system's maximum: a kexec drops every client holding files at once,
    and hundreds of them reconnect in the same instant (a full backlog makes a connect
    fail with EAGAIN, which clients would have to retry).

    An existing socket file nobody listens on (a crashed daemon's) is replaced. The file
    never has wider permissions than `mode`, which must be 0660 or stricter.

    Raises:
        ValueError: `mode` grants more than 0660.
        AlreadyServing: something accepts connections on `path`.
        NotASocket: `path` exists and is not a socket (never deleted).
        ListenerError: anything else, e.g. no permission or a path too long for AF_UNIX.
    """
    if mode & ~0o660:
        raise ValueError(f"socket mode {mode:#o} grants more than 0660")
    path = Path(os.path.abspath(path))
    await trio.lowlevel.checkpoint()
    try:
        _make_directories(path.parent)
        lock_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ListenerError(f"cannot create the directory of {path}: {exc}") from exc
    try:
        locked = False
        with trio.move_on_after(_LOCK_TIMEOUT):
            while not (locked := _try_lock(lock_fd)):
                await trio.sleep(_LOCK_POLL)
        if not locked:
            raise ListenerError(f"timed out waiting for the lock on {path.parent}")
        # Synchronous from here to the end: the lock must not be held across an await.
        try:
            _remove_stale(path)
            sock, identity = _bind(path, mode, backlog)
        except OSError as exc:
            raise ListenerError(f"cannot listen on {path}: {exc}") from exc
    finally:
        os.close(lock_fd)  # releases the flock
    return UnixListener(
        trio.SocketListener(trio.socket.from_stdlib_socket(sock)),
        path,
        owned=True,
        identity=identity,
    )


def from_activation(fds: Sequence[tuple[int, str]]) -> UnixListener:
    """Wrap the control socket passed by socket activation (`sdnotify.listen_fds()`).

    With one fd, that one; with several, the one named "control". It must be a listening
    `AF_UNIX` stream socket. The result never removes the path: the socket unit owns it.
    fds not chosen are left alone.

    Raises:
        ListenerError: no fd, no unambiguous choice, or not a listening Unix stream socket.
    """
    if len(fds) == 1:
        fd = fds[0][0]
    else:
        named = [fd for fd, name in fds if name == ACTIVATION_FD_NAME]
        if len(named) != 1:
            names = ", ".join(f"{fd}={name}" for fd, name in fds) or "none"
            raise ListenerError(
                f"socket activation passed fds ({names}); expected exactly one, "
                f"or exactly one named {ACTIVATION_FD_NAME!r}"
            )
        fd = named[0]
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ListenerError(f"activated fd {fd} is not a socket: {exc}") from exc
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        listening = 0
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
        problem = (
            f"activated fd {fd} is not a listening AF_UNIX stream socket "
            f"(family {sock.family.name}, type {sock.type.name}, listening {bool(listening)})"
        )
        sock.detach()  # not ours to close: leave the inherited fd as it was
        raise ListenerError(problem)
    name = sock.getsockname()
    path = Path(name) if isinstance(name, str) and name.startswith("/") else None
    return UnixListener(
        trio.SocketListener(trio.socket.from_stdlib_socket(sock)), path, owned=False
    )


def _make_directories(directory: Path) -> None:
    """mkdir -p, each created directory mode 0755 whatever the umask (UMask=0077 in the
    unit would make it 0700 and lock the socket's group out). Existing ones are not ours:
    left as they are."""
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=0o755)
        except FileExistsError:
            continue  # another process made it first; its mode is its business
        os.chmod(created, 0o755)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _remove_stale(path: Path) -> None:
    """Clear the way for bind: nothing there, or a socket nobody listens on (unlinked).
    Caller holds the directory lock."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise NotASocket(path, _file_kind(st.st_mode))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as probe:
        probe.settimeout(_PROBE_TIMEOUT)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # stale: the file outlived its daemon
        except (TimeoutError, BlockingIOError) as exc:
            raise AlreadyServing(path) from exc  # alive, backlog full
        else:
            raise AlreadyServing(path)
    os.unlink(path)


def _bind(path: Path, mode: int, backlog: int) -> tuple[socket.socket, tuple[int, int, int]]:
    """Bind, set `mode`, listen; return the socket and the file's `_identity`.
    Caller holds the directory lock."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        # On Linux the socket file takes the socket inode's mode (minus the umask) at bind:
        # setting it first means the file is never wider than `mode`, even with umask 0.
        os.fchmod(sock.fileno(), mode)
        sock.bind(str(path))
        try:
            os.chmod(path, mode)  # put back what the umask removed (UMask=0077: 0600)
            identity = _identity(os.lstat(path))
            sock.listen(backlog)
        except BaseException:
            os.unlink(path)
            raise
    except BaseException:
        sock.close()
        raise
    return sock, identity


def _identity(st: os.stat_result) -> tuple[int, int, int]:
    """Which file this is. A freed inode number is reused by the next file created, so
    (dev, ino) alone could mistake a newcomer for ours; the mtime (set when bind created
    the file, to the nanosecond where the filesystem allows) tells them apart. Not the
    ctime: an operator's chmod or chown of the socket (to open it to a group) changes that,
    and must not make us leave the file behind on exit."""
    return st.st_dev, st.st_ino, st.st_mtime_ns


def _unlink_if_same(path: Path, identity: tuple[int, int, int]) -> bool:
    """Unlink `path` if it is still the file `identity`; best effort, never raises."""
    try:
        lock_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        deadline = time.monotonic() + _UNLINK_LOCK_TIMEOUT
        while not _try_lock(lock_fd):
            if time.monotonic() >= deadline:
                return False  # leave it: a stale socket is replaced by the next start
            time.sleep(_LOCK_POLL)
        if _identity(os.lstat(path)) != identity:
            return False  # replaced by someone else since we bound it: theirs now
        os.unlink(path)
    except OSError:
        return False
    finally:
        os.close(lock_fd)
    return True


def _file_kind(st_mode: int) -> str:
    kinds = {
        stat.S_IFREG: "regular file",
        stat.S_IFDIR: "directory",
        stat.S_IFLNK: "symbolic link",
        stat.S_IFIFO: "FIFO",
        stat.S_IFCHR: "character device",
        stat.S_IFBLK: "block device",
    }
    return kinds.get(stat.S_IFMT(st_mode), "non-socket file")
