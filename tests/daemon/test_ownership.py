"""Sessions belong to their creator's uid, survive the creator's disconnect, and their
ownership crosses a kexec as bytes in luod's own preserved session."""

from __future__ import annotations

from collections.abc import Callable

import trio

from luod.daemon.owners import Caller
from luod.ipc.async_client import open_client
from luod.ipc.errors import RemoteError

from .conftest import Running, preserve_memfd


async def test_session_survives_disconnect(luod: Running) -> None:
    async with open_client(str(luod.path), "a") as a:
        await a.call("session.create", {"name": "kept"})
        await preserve_memfd(a, "kept", 7, b"data")
    async with open_client(str(luod.path), "b") as b:
        shown = (await b.call("session.show", {"name": "kept"})).result
        assert shown["files"] == [{"token": 7, "type": "memfd", "format": None}]


async def test_other_uid_is_refused_and_ownership_crosses_kexec(luod: Running) -> None:
    host = luod.daemon.host
    owner, stranger = Caller(uid=1000), Caller(uid=1001)
    host.session_create(owner, "mine")
    attempts: list[Callable[[], object]] = [
        lambda: host.session_close(stranger, "mine"),
        lambda: host.file_unpreserve(stranger, "mine", 1),
    ]
    for attempt in attempts:
        try:
            attempt()
        except Exception as exc:
            assert getattr(exc, "name", "") == "luod.NotOwner"
            assert getattr(exc, "errno_name", "") == "EPERM"
        else:
            raise AssertionError("a stranger was let in")
    assert [s["name"] for s in host.sessions(stranger)] == []
    async with open_client(str(luod.path), "ctl") as ctl:
        await ctl.call("update", {"target": "7.2.0"})
    assert host.owners[("incoming", "mine")] == 1000
    try:
        host.session_retrieve(stranger, "mine")
    except Exception as exc:
        assert getattr(exc, "name", "") == "luod.NotOwner"
    else:
        raise AssertionError("a stranger retrieved another uid's session")
    host.session_retrieve(owner, "mine")
    assert "luod.owners" not in host.luo.incoming, "luod's own session is finished at start"


async def test_reserved_names_and_errors_name_the_object(luod: Running) -> None:
    async with open_client(str(luod.path), "c") as c:
        try:
            await c.call("session.create", {"name": "luod.mine"})
        except RemoteError as exc:
            assert exc.info.name == "luod.ReservedName"
        await c.call("session.create", {"name": "dup"})
        try:
            await c.call("session.create", {"name": "dup"})
        except RemoteError as exc:
            assert (exc.info.name, exc.info.errno, exc.info.object) == (
                "luod.SessionExists",
                "EEXIST",
                "dup",
            )
        else:
            raise AssertionError("duplicate session accepted")
        await trio.lowlevel.checkpoint()
