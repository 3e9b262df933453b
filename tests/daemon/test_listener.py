"""luod.daemon.listener: the socket file's lifecycle, activation, and the default path.

The contract under test is CLI.md's: mode 0660 or stricter, a second daemon refuses to
start, a stale socket is replaced, anything that is not a socket is never deleted, and the
file is removed on exit unless systemd owns it. Async tests run under pytest-trio.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from luod.daemon.listener import (
    AlreadyServing,
    ListenerError,
    NoSocketPath,
    NotASocket,
    UnixListener,
    default_socket_path,
    from_activation,
    open_unix_listener,
)

TIMEOUT = 30.0


@pytest.fixture
def umask() -> Iterator[None]:
    """Tests that change the process umask get the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _inode(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_dev, st.st_ino


async def _echo_once(listener: UnixListener, path: Path) -> None:
    """A client connects by path and the listener accepts it: the socket really serves."""
    async with await trio.open_unix_socket(str(path)) as client:
        server = await listener.listener.accept()
        async with server:
            await client.send_all(b"ping")
            assert await server.receive_some(16) == b"ping"


async def test_bind_creates_parent_dirs_and_a_0660_socket(tmp_path: Path) -> None:
    path = tmp_path / "run" / "luod" / "luod.sock"
    listener = await open_unix_listener(path)
    try:
        assert listener.owned
        assert listener.path == path
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert _mode(path) == 0o660
        assert _mode(path.parent) == _mode(path.parent.parent) == 0o755
        await _echo_once(listener, path)
    finally:
        assert listener.close() is True
    assert not path.exists()
    assert path.parent.is_dir()  # the directory stays: it may be shared


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize(("umask_value", "mode"), [(0o077, 0o660), (0o000, 0o660), (0, 0o600)])
async def test_mode_is_exact_whatever_the_umask(
    tmp_path: Path, umask_value: int, mode: int
) -> None:
    """UMask=0077 (the unit's) must not strip the group bits; umask 0 must not widen."""
    os.umask(umask_value)
    path = tmp_path / "d" / "luod.sock"
    async with await open_unix_listener(path, mode=mode) as listener:
        assert _mode(path) == mode
        assert _mode(path.parent) == 0o755
        await _echo_once(listener, path)


@pytest.mark.parametrize("mode", [0o666, 0o770, 0o1660])
async def test_mode_wider_than_0660_is_refused(tmp_path: Path, mode: int) -> None:
    with pytest.raises(ValueError, match="0660"):
        await open_unix_listener(tmp_path / "luod.sock", mode=mode)
    assert not (tmp_path / "luod.sock").exists()


async def test_relative_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with await open_unix_listener(Path("luod.sock")) as listener:
        assert listener.path == tmp_path / "luod.sock"


async def test_second_open_refuses_while_the_first_serves(tmp_path: Path) -> None:
    path = tmp_path / "luod.sock"
    async with await open_unix_listener(path) as first:
        inode = _inode(path)
        with pytest.raises(
            AlreadyServing, match=f"^another luod is already serving {re.escape(str(path))}$"
        ) as info:
            await open_unix_listener(path)
        assert info.value.path == path
        assert isinstance(info.value, ListenerError)
        # The first daemon's socket is untouched and still serves.
        assert _inode(path) == inode
        probe = await first.listener.accept()  # the refused daemon's probe connection
        await probe.aclose()
        await _echo_once(first, path)


async def test_concurrent_opens_in_one_process_have_one_winner(tmp_path: Path) -> None:
    path = tmp_path / "luod.sock"
    won: list[UnixListener] = []
    refused: list[AlreadyServing] = []

    async def attempt() -> None:
        try:
            won.append(await open_unix_listener(path))
        except AlreadyServing as exc:
            refused.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(attempt)
    try:
        assert (len(won), len(refused)) == (1, 3)
    finally:
        for listener in won:
            listener.close()


# One racing daemon: wait for "go", open the listener, report, hold it until stdin closes.
_RACER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import trio
    from luod.daemon.listener import AlreadyServing, open_unix_listener

    async def main():
        print("ready", flush=True)
        sys.stdin.readline()
        try:
            listener = await open_unix_listener(Path(sys.argv[1]))
        except AlreadyServing:
            print("refused", flush=True)
            return
        print("won", flush=True)
        async with listener:
            await trio.to_thread.run_sync(sys.stdin.read)

    trio.run(main)
    """
)


def test_racing_daemons_have_exactly_one_winner(tmp_path: Path) -> None:
    """Separate processes racing for one stale path: the directory lock lets one through."""
    path = tmp_path / "luod.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        # Start line: every racer has imported everything before any of them may open.
        for racer in racers:
            assert racer.stdout is not None
            assert racer.stdout.readline() == "ready\n"
        for racer in racers:
            assert racer.stdin is not None
            racer.stdin.write("go\n")
            racer.stdin.flush()
        verdicts = []
        for racer in racers:
            assert racer.stdout is not None
            verdicts.append(racer.stdout.readline().strip())
        assert sorted(verdicts) == ["refused"] * 3 + ["won"]
    finally:
        for racer in racers:
            racer.communicate(timeout=TIMEOUT)
    assert [racer.returncode for racer in racers] == [0] * 4
    assert not path.exists()  # the winner removed its socket on the way out


async def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    """A socket file nobody listens on (a crashed daemon's) gives way."""
    path = tmp_path / "luod.sock"
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(str(path))
    crashed.listen()
    crashed.close()
    async with await open_unix_listener(path) as listener:
        await _echo_once(listener, path)  # the stale file could not have accepted


@pytest.mark.parametrize("kind", ["regular file", "directory", "symbolic link", "FIFO"])
async def test_a_non_socket_is_never_replaced(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "luod.sock"
    if kind == "regular file":
        path.write_text("precious")
    elif kind == "directory":
        path.mkdir()
    elif kind == "symbolic link":  # even one pointing at a stale socket
        target = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target.bind(str(tmp_path / "target.sock"))
        target.close()
        path.symlink_to(tmp_path / "target.sock")
    else:
        os.mkfifo(path)
    before = os.lstat(path)
    with pytest.raises(NotASocket, match=f"{re.escape(str(path))}: it is a {kind}") as info:
        await open_unix_listener(path)
    assert info.value.path == path
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)


async def test_unbindable_path_is_a_listener_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / ("x" * 120) / "luod.sock"  # longer than sun_path allows
    with pytest.raises(ListenerError, match=re.escape(str(path))):
        await open_unix_listener(path)


async def test_close_leaves_a_replaced_path_alone(tmp_path: Path) -> None:
    """If our file was removed and the path reused, close must not unlink the newcomer."""
    path = tmp_path / "luod.sock"
    listener = await open_unix_listener(path)
    # Keep our inode alive under another name, so the newcomer cannot recycle its number
    # and this test exercises the plain "different file" case on any filesystem.
    os.link(path, tmp_path / "ours.sock")
    path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other_inode = _inode(path)
        assert listener.close() is False
        assert _inode(path) == other_inode


async def test_close_is_idempotent_and_closes_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "luod.sock"
    listener = await open_unix_listener(path)
    assert listener.close() is True
    assert listener.close() is False
    assert listener.listener.socket.fileno() == -1
    with pytest.raises(trio.ClosedResourceError):
        await listener.listener.accept()


async def test_close_after_serve_listeners_closed_the_socket(tmp_path: Path) -> None:
    """serve_listeners closes its listeners on the way out; the file must still go."""
    path = tmp_path / "luod.sock"
    listener = await open_unix_listener(path)

    async def handler(stream: trio.SocketStream) -> None:
        await stream.aclose()

    with trio.move_on_after(0.05):
        await trio.serve_listeners(handler, [listener.listener])
    assert listener.listener.socket.fileno() == -1
    assert listener.close() is True
    assert not path.exists()


def _listening_fd(path: Path, kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A bound (and, for streams, listening) socket's fd, as systemd would pass it."""
    sock = socket.socket(socket.AF_UNIX, kind)
    sock.bind(str(path))
    if kind == socket.SOCK_STREAM:
        sock.listen()
    return sock.detach()


async def test_activated_listener_serves_and_is_never_unlinked(tmp_path: Path) -> None:
    path = tmp_path / "luod.sock"
    listener = from_activation([(_listening_fd(path), "control")])
    assert (listener.owned, listener.path) == (False, path)
    await _echo_once(listener, path)
    assert listener.close() is False
    assert listener.listener.socket.fileno() == -1
    assert path.is_socket()  # the socket unit's file stays


async def test_activation_picks_the_fd_named_control(tmp_path: Path) -> None:
    other = _listening_fd(tmp_path / "other.sock")
    control = _listening_fd(tmp_path / "control.sock")
    try:
        listener = from_activation([(other, "metrics"), (control, "control")])
        assert listener.path == tmp_path / "control.sock"
        listener.close()
    finally:
        os.close(other)  # not chosen: left open for its owner, so closed here


async def test_activation_accepts_a_single_fd_whatever_its_name(tmp_path: Path) -> None:
    """`systemd-socket-activate` without --fdname names it "unknown"."""
    listener = from_activation([(_listening_fd(tmp_path / "s.sock"), "unknown")])
    assert listener.path == tmp_path / "s.sock"
    listener.close()


def test_activation_needs_an_unambiguous_fd(tmp_path: Path) -> None:
    with pytest.raises(ListenerError, match="none"):
        from_activation([])
    a = _listening_fd(tmp_path / "a.sock")
    b = _listening_fd(tmp_path / "b.sock")
    try:
        with pytest.raises(ListenerError, match=f"{a}=x, {b}=y"):
            from_activation([(a, "x"), (b, "y")])
        with pytest.raises(ListenerError, match="exactly one named 'control'"):
            from_activation([(a, "control"), (b, "control")])
    finally:
        os.close(a)
        os.close(b)


@pytest.mark.parametrize("what", ["datagram", "unlistened", "pipe", "inet"])
def test_activation_rejects_the_wrong_kind_of_fd(tmp_path: Path, what: str) -> None:
    """A wrong fd is refused, naming it, and left open (it is not ours to close)."""
    if what == "datagram":
        fd = _listening_fd(tmp_path / "d.sock", socket.SOCK_DGRAM)
    elif what == "unlistened":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(tmp_path / "u.sock"))
        fd = sock.detach()
    elif what == "pipe":
        fd, write_end = os.pipe()
        os.close(write_end)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        fd = sock.detach()
    try:
        with pytest.raises(ListenerError, match=f"activated fd {fd} is not a"):
            from_activation([(fd, "control")])
        os.fstat(fd)  # still open
    finally:
        os.close(fd)


def test_default_socket_path_follows_cli_md() -> None:
    """$LUOD_SOCKET, else /run/luod for root, else $XDG_RUNTIME_DIR/luod, else an error."""
    assert default_socket_path({"LUOD_SOCKET": "/s"}, 0) == Path("/s")
    assert default_socket_path({"LUOD_SOCKET": "/s", "XDG_RUNTIME_DIR": "/x"}, 7) == Path("/s")
    assert default_socket_path({}, 0) == Path("/run/luod/luod.sock")
    assert default_socket_path({"XDG_RUNTIME_DIR": "/run/user/0"}, 0) == Path("/run/luod/luod.sock")
    assert default_socket_path({"XDG_RUNTIME_DIR": "/run/user/7"}, 7) == Path(
        "/run/user/7/luod/luod.sock"
    )
    # An empty variable counts as unset.
    assert default_socket_path({"LUOD_SOCKET": ""}, 0) == Path("/run/luod/luod.sock")
    with pytest.raises(NoSocketPath, match="LUOD_SOCKET or XDG_RUNTIME_DIR"):
        default_socket_path({"XDG_RUNTIME_DIR": ""}, 7)
    assert issubclass(NoSocketPath, ListenerError)


def test_default_socket_path_reads_this_process_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LUOD_SOCKET", "/from/env.sock")
    assert default_socket_path() == Path("/from/env.sock")
    monkeypatch.delenv("LUOD_SOCKET")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/4242")
    expected = "/run/luod/luod.sock" if os.geteuid() == 0 else "/run/user/4242/luod/luod.sock"
    assert default_socket_path() == Path(expected)
