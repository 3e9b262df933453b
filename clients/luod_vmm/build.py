"""Building the guest in luod and tearing it down: `run`'s side of the object graph.

Owns every object, session and DMA engine the VMM creates, so it can release exactly those
(`Vmm.teardown`) on SIGTERM or after a failure. The order is the layout's: objects are
created with the guest's initial bytes (a real memfd sent with `object.create`), preserved
in dependency order with tokens 1, 2, 3..., then the config memfd last; only then do the
devices start their DMA.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Sequence
from typing import Any

import attrs

from luod.ipc.async_client import TrioClient
from luod.ipc.errors import ProtocolError, RemoteError
from luod_vmm.errors import VmmError, refused
from luod_vmm.guestmem import pattern_memfd
from luod_vmm.layout import Layout, ObjectPlan
from luod_vmm.pattern import gmem_pattern, ram_pattern

__all__ = ["Vmm", "config_memfd"]

CONFIG_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW


def config_memfd(raw: bytes, label: str) -> int:
    """A sealed real memfd holding `raw`; the caller owns the fd."""
    fd = os.memfd_create(label, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view) :]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, CONFIG_SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


@attrs.define
class Vmm:
    """The VMM's hold on luod: what it created, for `teardown`."""

    client: TrioClient
    layout: Layout
    created: list[str] = attrs.Factory(list)
    session: str | None = None

    @property
    def name(self) -> str:
        return self.layout.options.name

    async def call(
        self, what: str, method: str, params: dict[str, Any], fds: Sequence[int] = ()
    ) -> None:
        """Call `method`; a refusal becomes a VmmError naming `method` and `what`."""
        try:
            await self.client.call(method, params, fds=fds)
        except RemoteError as exc:
            raise refused(f"{method} {what}", exc) from None

    async def build(self) -> None:
        """Create every object, preserve them all in session NAME, start the DMA."""
        for plan in self.layout.objects:
            await self._create(plan)
        await self.call(self.name, "session.create", {"name": self.name})
        self.session = self.name
        for plan in self.layout.objects:
            await self.call(
                f"{plan.object_name} (token {plan.token})",
                "object.preserve",
                {"session": self.name, "token": plan.token, "name": plan.object_name},
            )
        config = self.layout.config
        fd = config_memfd(self.layout.options.to_config(), f"{self.name}.config")
        try:
            await self.call(
                f"{self.name}.config (token {config.token})",
                "memfd.preserve",
                {"session": self.name, "token": config.token, "name": f"{self.name}.config"},
                fds=[fd],
            )
        finally:
            os.close(fd)
        for window in self.layout.dma:
            await self.call(window.bdf, "device.dma", window.params())

    async def _create(self, plan: ObjectPlan) -> None:
        options = self.layout.options
        assert plan.spec is not None
        fd: int | None = None
        if plan.key == "ram":
            fd = pattern_memfd(plan.object_name, options.memory, ram_pattern(options))
        elif plan.key == "gmem":
            size = plan.spec["size"]
            assert isinstance(size, int)
            fd = pattern_memfd(plan.object_name, size, gmem_pattern(options))
        try:
            await self.call(
                plan.object_name,
                "object.create",
                {"object": plan.spec},
                fds=[] if fd is None else [fd],
            )
        finally:
            if fd is not None:
                os.close(fd)
        self.created.append(plan.object_name)

    async def teardown(self) -> None:
        """Close the session (unpreserving everything, newest first), then every object,
        dependents first (closing a device stops its DMA). Raises the first refusal."""
        if self.session is not None:
            await self.call(self.session, "session.close", {"name": self.session})
            self.session = None
        while self.created:
            await self.call(self.created[-1], "object.close", {"name": self.created[-1]})
            self.created.pop()

    async def teardown_quietly(self) -> None:
        """Best effort after a failure (the first error is the one reported): every step
        is tried even if an earlier one was refused."""
        if self.session is not None:
            with contextlib.suppress(VmmError, ConnectionError, ProtocolError):
                await self.call(self.session, "session.close", {"name": self.session})
            self.session = None
        for name in reversed(self.created):
            with contextlib.suppress(VmmError, ConnectionError, ProtocolError):
                await self.call(name, "object.close", {"name": name})
        self.created.clear()
