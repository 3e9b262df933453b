"""Objects, dependency order validated by the daemon before the kernel, and plans that
release everything on the first violation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from luod.daemon.errors import error_json
from luod.ipc.async_client import TrioClient, open_client
from luod.ipc.errors import RemoteError
from luod.kernel_model.errors import BadPageSize
from luod.kernel_model.kernel import BootConfig

from .conftest import Running, running_luod


def vm_plan(order: list[str]) -> dict[str, Any]:
    objects = {
        "vm": {"name": "vm", "type": "kvm-vm", "token": 1},
        "gmem": {"name": "gmem", "type": "guest_memfd", "token": 2, "vm": "vm", "size": 1 << 20},
        "ram": {"name": "ram", "type": "memfd", "token": 3, "size": 4 << 20},
    }
    return {"session": [{"name": "vm1", "object": [objects[n] for n in order]}]}


async def call_error(client: TrioClient, method: str, params: dict[str, Any]) -> Any:
    with pytest.raises(RemoteError) as info:
        await client.call(method, params)
    return info.value.info


async def test_plan_in_wrong_order_releases_everything(luod: Running) -> None:
    async with open_client(str(luod.path), "c") as c:
        error = await call_error(c, "apply", {"plan": vm_plan(["ram", "gmem", "vm"])})
        assert error.name == "luod.DependencyNotPreserved"
        assert "'gmem'" in error.message and "'vm'" in error.message
        assert "vm, gmem" in error.message  # the order that works
        assert (await c.call("object.list")).result == {"objects": []}
        assert (await c.call("session.list")).result == {"sessions": []}
        assert luod.daemon.host.kernel.kho_out.preserved.frame_count() == 1  # root only
        result = (await c.call("apply", {"plan": vm_plan(["vm", "gmem", "ram"])})).result
        files = result["sessions"][0]["files"]
        assert [(f["token"], f["type"]) for f in files] == [
            (1, "kvm-vm"),
            (2, "guest_memfd"),
            (3, "memfd"),
        ]


async def test_object_preserve_checks_order_and_sessions(luod: Running) -> None:
    async with open_client(str(luod.path), "c") as c:
        await c.call("session.create", {"name": "a"})
        await c.call("session.create", {"name": "b"})
        await c.call("object.create", {"object": {"name": "vm", "type": "kvm-vm"}})
        await c.call(
            "object.create",
            {"object": {"name": "g", "type": "guest_memfd", "vm": "vm", "size": 4096}},
        )
        error = await call_error(c, "object.preserve", {"session": "a", "token": 2, "name": "g"})
        assert error.name == "luod.DependencyNotPreserved"
        await c.call("object.preserve", {"session": "b", "token": 1, "name": "vm"})
        error = await call_error(c, "object.preserve", {"session": "a", "token": 2, "name": "g"})
        assert error.name == "luod.DependencyInOtherSession"
        assert "'b'" in error.message
        await c.call("file.unpreserve", {"session": "b", "token": 1})
        await c.call("object.preserve", {"session": "a", "token": 1, "name": "vm"})
        await c.call("object.preserve", {"session": "a", "token": 2, "name": "g"})
        error = await call_error(c, "file.unpreserve", {"session": "a", "token": 1})
        assert error.errno == "EBUSY" and "0x2" in error.message  # the VM is still needed
        await c.call("file.unpreserve", {"session": "a", "token": 2})
        await c.call("file.unpreserve", {"session": "a", "token": 1})


async def test_bad_references_and_page_sizes(luod: Running) -> None:
    async with open_client(str(luod.path), "c") as c:
        error = await call_error(
            c, "object.create", {"object": {"name": "g", "type": "guest_memfd", "vm": "nope"}}
        )
        assert error.name == "luod.NoSuchObject"
        await c.call("object.create", {"object": {"name": "m", "type": "memfd", "size": 4096}})
        error = await call_error(
            c, "object.create", {"object": {"name": "g", "type": "guest_memfd", "vm": "m"}}
        )
        assert error.name == "luod.BadReference"
        error = await call_error(
            c, "object.create", {"object": {"name": "x", "type": "memfd", "page_size": 8192}}
        )
        assert error.name == "luod.BadPageSize"


def test_the_kernels_bad_page_size_travels_as_luod_bad_page_size() -> None:
    message = "memfd 'x': page size 8192 is not 4K, 2M or 1G"
    assert error_json(BadPageSize(message, obj="x")) == {
        "name": "luod.BadPageSize",
        "errno": "EINVAL",
        "message": message,
        "object": "x",
    }


async def test_memfd_object_with_data_survives_an_update(luod: Running) -> None:
    fd = os.memfd_create("src")
    os.write(fd, b"object data" * 100)
    async with open_client(str(luod.path), "c") as c:
        await c.call("session.create", {"name": "s"})
        await c.call("object.create", {"object": {"name": "ram", "type": "memfd"}}, fds=[fd])
        await c.call("object.preserve", {"session": "s", "token": 9, "name": "ram"})
    os.close(fd)
    async with open_client(str(luod.path), "ctl") as ctl:
        await ctl.call("update", {"target": "7.2.0"})
        await ctl.call("session.retrieve", {"name": "s"})
        reply = await ctl.call("memfd.retrieve", {"session": "s", "token": 9})
        assert os.pread(reply.fds[0], 1100, 0) == b"object data" * 100
        os.close(reply.fds[0])


async def test_memfd_preserve_page_sizes_are_the_kernels_to_judge(tmp_path: Path) -> None:
    """2 MiB pages make a hugetlb memfd from the pool; an unknown size is the kernel's
    BadPageSize, not a daemon rule."""
    fd = os.memfd_create("t", os.MFD_CLOEXEC)
    pools = BootConfig(hugetlb=((2 << 20, 4),))
    try:
        os.write(fd, b"huge" * 1024)
        os.ftruncate(fd, 2 << 20)
        async with running_luod(tmp_path, pools) as luod, open_client(str(luod.path), "c") as c:
            await c.call("session.create", {"name": "s"})
            params = {"session": "s", "token": 1, "page_size": 2 << 20}
            result = (await c.call("memfd.preserve", params, fds=[fd])).result
            assert result["type"] == "memfd-hugetlb" and result["size"] == 2 << 20
            with pytest.raises(RemoteError) as info:
                await c.call("memfd.preserve", {**params, "token": 2, "page_size": 8192}, fds=[fd])
            assert info.value.info.name == "luod.BadPageSize"
            assert info.value.info.errno == "EINVAL"
            session = (await c.call("session.show", {"name": "s"})).result
            assert [f["type"] for f in session["files"]] == ["memfd-hugetlb"]
    finally:
        os.close(fd)


def test_the_one_wire_mapping_names_every_kind_of_error() -> None:
    """Kernel errors keep their class name, errno and object; daemon policy errors their
    own; protocol errors their wire form; anything else is luod's own fault."""
    from luod.daemon.errors import DaemonError, wire_error
    from luod.ipc.errors import ErrorInfo, ProtocolErrorName, RemoteProtocolError
    from luod.kernel_model.errors import SessionExists

    assert wire_error(SessionExists("session 'vm1' already exists", obj="vm1")) == ErrorInfo(
        "luod.SessionExists", "EEXIST", "session 'vm1' already exists", "vm1"
    )
    policy = DaemonError("NotOwner", "not yours", errno=1, obj="s")
    assert wire_error(policy) == ErrorInfo("luod.NotOwner", "EPERM", "not yours", "s")
    bad = RemoteProtocolError(ProtocolErrorName.BAD_PARAMS, "bad", object="m")
    assert wire_error(bad) == ErrorInfo("luod.BadParams", "EINVAL", "bad", "m")
    assert wire_error(ValueError("boom")) == ErrorInfo(
        "luod.InternalError", "EIO", "ValueError: boom", None
    )
