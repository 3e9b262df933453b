"""A follower of events that does not read never blocks the daemon, and is dropped.

The daemon's event bus gives each follower a bounded queue (`event_capacity`, small here);
a follower that falls that far behind is dropped from the bus with a final
`events.dropped` event queued as its last, and its connection is closed after a grace
period (`drop_grace`) whether or not it ever reads again. Meanwhile every other client is
served as usual.
"""

from __future__ import annotations

from pathlib import Path

import trio

from luod.daemon.events import DROPPED, EventBus
from luod.ipc.async_client import open_client
from luod.ipc.async_transport import FramedStream
from luod.ipc.connection import CLOSED, Connection
from luod.ipc.messages import Event, Reply, Request
from luod.ipc.state import Role
from tests.daemon.conftest import running_luod

CAPACITY = 16


async def test_bus_drops_a_subscriber_that_falls_behind_with_a_final_event() -> None:
    dropped: list[bool] = []
    bus = EventBus(capacity=CAPACITY)
    slow = bus.subscribe(on_drop=lambda: dropped.append(True))
    fast = bus.subscribe()
    received: list[str] = []

    async def read_fast() -> None:
        async for event in fast:
            received.append(event.event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_fast)
        for i in range(CAPACITY + 5):
            bus.publish("tick", i=i)
            await trio.testing.wait_all_tasks_blocked()
        fast.close()
    assert slow.dropped and dropped == [True] and bus.subscribers == 0
    events = [e async for e in slow]
    assert [e.event for e in events] == ["tick"] * CAPACITY + [DROPPED]
    assert events[-1].data == {"reason": f"more than {CAPACITY} events behind"}
    assert received == ["tick"] * (CAPACITY + 5)  # the reader that keeps up loses nothing


async def test_a_follower_that_never_reads_is_dropped_and_blocks_nobody(tmp_path: Path) -> None:
    async with running_luod(tmp_path, event_capacity=CAPACITY, drop_grace=0.2) as luod:
        daemon = luod.daemon
        stream = await trio.open_unix_socket(str(luod.path))
        slow = FramedStream(stream, Connection(Role.CLIENT))
        await slow.hello("slow reader")
        await slow.send(Request(id=1, method="events.subscribe", params={}))
        reply = await slow.receive()
        assert isinstance(reply, Reply) and reply.result["subscribed"] is True
        assert daemon.bus.subscribers == 1
        (slow_conn,) = daemon.connections.values()
        # From here on the slow reader reads nothing. Another client floods events; every
        # one of its requests is answered while the slow reader's buffers fill up.
        served = 0
        async with open_client(str(luod.path), "busy") as busy:
            with trio.fail_after(60):
                while daemon.bus.subscribers or slow_conn.id in daemon.connections:
                    await busy.call("session.create", {"name": f"s{served}"})
                    await busy.call("session.close", {"name": f"s{served}"})
                    served += 1
            # dropped from the bus, then its connection closed; the daemon still serves
            assert (await busy.call("status")).result["state"] == "normal"
        assert served > CAPACITY
        # What the slow reader finds when it finally reads: the events up to where its
        # buffers were full, in order, then the end of the connection.
        names: list[str] = []
        with trio.fail_after(10):
            while (message := await slow.receive()) is not CLOSED:
                assert isinstance(message, Event)
                names.append(message.event)
        await slow.aclose()
        assert names, "it had events queued before it fell behind"
        assert set(names) <= {"session.created", "session.closed", DROPPED}


async def flood_until_dropped(tmp_path: Path, grace: float) -> list[str]:
    """A follower stops reading until the bus drops it, then reads to the end."""
    async with running_luod(tmp_path, event_capacity=CAPACITY, drop_grace=grace) as luod:
        daemon = luod.daemon
        stream = await trio.open_unix_socket(str(luod.path))
        slow = FramedStream(stream, Connection(Role.CLIENT))
        try:
            await slow.hello("slow reader")
            await slow.send(Request(id=1, method="events.subscribe", params={}))
            assert isinstance(await slow.receive(), Reply)
            async with open_client(str(luod.path), "busy") as busy:
                with trio.fail_after(60):
                    for i in range(100_000):
                        if not daemon.bus.subscribers:
                            break
                        await busy.call("session.create", {"name": f"s{i}"})
                        await busy.call("session.close", {"name": f"s{i}"})
            names: list[str] = []
            with trio.fail_after(10):
                while (message := await slow.receive()) is not CLOSED:
                    assert isinstance(message, Event)
                    names.append(message.event)
            return names
        finally:
            await slow.aclose()


async def test_a_follower_that_reads_again_sees_events_dropped_last(tmp_path: Path) -> None:
    names = await flood_until_dropped(tmp_path, grace=30.0)
    assert names[-1] == DROPPED
