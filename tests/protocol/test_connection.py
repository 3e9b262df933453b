"""The sans-IO connection: hello first, version negotiation, ids in flight, sticky error
states, send-side validation and file-descriptor accounting. Fds here are plain integers:
the connection only counts and hands them out, it never touches them."""

from __future__ import annotations

import pytest

from luod.ipc.connection import CLOSED, NEED_DATA, Connection, error_reply
from luod.ipc.errors import (
    ErrorInfo,
    LocalProtocolError,
    ProtocolErrorName,
    RemoteProtocolError,
)
from luod.ipc.messages import ErrorReply, Event, Hello, Reply, Request, Welcome
from luod.ipc.state import Moot, Role, State

from .helpers import ConnectionPair, cbor_frame, hello_item

N = ProtocolErrorName


def remote_error(conn: Connection) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    return info.value


def local_error(conn: Connection, message: object) -> LocalProtocolError:
    with pytest.raises(LocalProtocolError) as info:
        conn.send(message)  # type: ignore[arg-type]
    return info.value


def open_pair() -> ConnectionPair:
    pair = ConnectionPair()
    pair.handshake()
    return pair


class TestHandshake:
    def test_states_through_handshake(self) -> None:
        pair = ConnectionPair()
        assert pair.client.states == {Role.CLIENT: State.START, Role.SERVER: State.START}
        pair.send(pair.client, Hello(version=1, client="vmm"))
        assert pair.server.their_state is State.OPEN and pair.server.our_state is State.START
        assert pair.server.peer_name == "vmm" and pair.server.version == 1
        pair.send(pair.server, Welcome(version=1, server="luod"))
        assert pair.client.states == {Role.CLIENT: State.OPEN, Role.SERVER: State.OPEN}
        assert pair.server.states == {Role.CLIENT: State.OPEN, Role.SERVER: State.OPEN}
        assert pair.client.peer_name == "luod" and pair.client.version == 1

    def test_need_data(self) -> None:
        conn = Connection(Role.SERVER)
        assert conn.next_event() is NEED_DATA
        data = cbor_frame(hello_item())
        conn.receive_data(data[:3])
        assert conn.next_event() is NEED_DATA
        conn.receive_data(data[3:])
        assert isinstance(conn.next_event(), Hello)

    @pytest.mark.parametrize(
        "item",
        [
            {"kind": "request", "id": 1, "method": "m", "params": {}},
            {"kind": "welcome", "version": 1, "server": "x"},
            {"kind": "event", "event": "e", "ts": 0.0, "data": {}},
        ],
    )
    def test_server_requires_hello_first(self, item: dict[str, object]) -> None:
        conn = Connection(Role.SERVER)
        conn.receive_data(cbor_frame(item))
        error = remote_error(conn)
        assert error.name is N.HELLO_REQUIRED
        assert conn.their_state is State.ERROR

    def test_version_mismatch(self) -> None:
        """An unsupported version is refused; the server may still say why, id null."""
        pair = ConnectionPair()
        pair.server.receive_data(pair.client.send(Hello(version=2, client="c")))
        error = remote_error(pair.server)
        assert error.name is N.PROTOCOL_VERSION and error.errno == "EPROTONOSUPPORT"
        reply = error_reply(error, None)
        pair.client.receive_data(pair.server.send(reply))
        event = pair.client.next_event()
        assert isinstance(event, ErrorReply) and event.id is None
        assert event.error.name == "luod.ProtocolVersion"
        # Nothing but error replies may follow a remote protocol error.
        assert local_error(pair.server, Welcome(version=2, server="s")).name is N.BAD_MESSAGE

    def test_other_supported_versions(self) -> None:
        pair = ConnectionPair(supported_versions={1, 2})
        pair.handshake(version=2)
        assert pair.server.version == 2

    def test_welcome_must_echo_the_version(self) -> None:
        pair = ConnectionPair(supported_versions={1, 2})
        pair.send(pair.client, Hello(version=1, client="c"))
        assert local_error(pair.server, Welcome(version=2, server="s")).name is N.BAD_MESSAGE

    def test_client_refuses_wrong_welcome_version(self) -> None:
        client = Connection(Role.CLIENT)
        client.send(Hello(version=1, client="c"))
        client.receive_data(cbor_frame({"kind": "welcome", "version": 3, "server": "s"}))
        assert remote_error(client).name is N.PROTOCOL_VERSION

    def test_client_refuses_anything_but_welcome(self) -> None:
        client = Connection(Role.CLIENT)
        client.send(Hello(version=1, client="c"))
        client.receive_data(cbor_frame({"kind": "event", "event": "e", "ts": 0.0, "data": {}}))
        assert remote_error(client).name is N.BAD_MESSAGE

    def test_server_speaking_before_hello(self) -> None:
        client = Connection(Role.CLIENT)
        client.receive_data(cbor_frame({"kind": "welcome", "version": 1, "server": "s"}))
        assert remote_error(client).name is N.BAD_MESSAGE

    def test_client_must_send_hello_first(self) -> None:
        client = Connection(Role.CLIENT)
        error = local_error(client, Request(id=1, method="m", params={}))
        assert error.name is N.HELLO_REQUIRED
        assert client.our_state is State.ERROR
        # Sticky: even a hello is refused now, with the same error.
        assert local_error(client, Hello(version=1, client="c")) is error

    def test_no_requests_before_welcome(self) -> None:
        client = Connection(Role.CLIENT)
        client.send(Hello(version=1, client="c"))
        assert local_error(client, Request(id=1, method="m", params={})).name is N.HELLO_REQUIRED

    def test_hello_only_once(self) -> None:
        pair = open_pair()
        assert local_error(pair.client, Hello(version=1, client="c")).name is N.BAD_MESSAGE
        pair = open_pair()
        pair.server.receive_data(cbor_frame(hello_item()))
        assert remote_error(pair.server).name is N.BAD_MESSAGE

    def test_server_sends_nothing_before_welcome(self) -> None:
        pair = ConnectionPair()
        pair.send(pair.client, Hello(version=1, client="c"))
        event = Event(event="e", ts=0.0, data={})
        assert local_error(pair.server, event).name is N.HELLO_REQUIRED

    def test_welcome_needs_a_hello(self) -> None:
        server = Connection(Role.SERVER)
        assert local_error(server, Welcome(version=1, server="s")).name is N.HELLO_REQUIRED


class TestRequests:
    def test_replies_in_any_order_and_events_between(self) -> None:
        pair = open_pair()
        for i in (1, 2, 3):
            assert pair.send(pair.client, Request(id=i, method="m", params={"i": i})) == (
                Request(id=i, method="m", params={"i": i})
            )
        assert pair.client.in_flight == {1, 2, 3} == pair.server.in_flight
        assert pair.send(pair.server, Reply(id=2, result="two")) == Reply(id=2, result="two")
        event = Event(event="prepare", ts=1.0, data={"update_id": 1})
        assert pair.send(pair.server, event) == event
        info = ErrorInfo("luod.X", None, "no", None)
        assert pair.send(pair.server, ErrorReply(id=3, error=info)) == ErrorReply(3, info)
        assert pair.send(pair.server, Reply(id=1, result=None)) == Reply(id=1, result=None)
        assert pair.client.in_flight == frozenset() == pair.server.in_flight

    def test_ids_reusable_after_reply(self) -> None:
        pair = open_pair()
        for _ in range(2):
            pair.send(pair.client, Request(id=7, method="m", params={}))
            pair.send(pair.server, Reply(id=7, result=None))

    def test_duplicate_id_in_flight(self) -> None:
        pair = open_pair()
        pair.send(pair.client, Request(id=1, method="m", params={}))
        assert local_error(pair.client, Request(id=1, method="m", params={})).name is (
            N.BAD_MESSAGE
        )
        pair.server.receive_data(
            cbor_frame({"kind": "request", "id": 1, "method": "m", "params": {}})
        )
        assert remote_error(pair.server).name is N.BAD_MESSAGE

    def test_after_a_duplicate_id_the_error_still_goes_out(self) -> None:
        pair = open_pair()
        request = cbor_frame({"kind": "request", "id": 1, "method": "m", "params": {}})
        pair.server.receive_data(request + request)
        assert isinstance(pair.server.next_event(), Request)
        exc = remote_error(pair.server)
        assert exc.message == "request id 1 is already in flight"
        # The first request's reply, queued before, is moot: refused, our side unharmed.
        with pytest.raises(Moot):
            pair.server.send(Reply(id=1, result=None))
        assert pair.server.our_state is State.OPEN
        pair.client.receive_data(pair.server.send(error_reply(exc, None)))
        error = pair.client.next_event()
        assert isinstance(error, ErrorReply) and error.error.name == "luod.BadMessage"

    def test_reply_to_unknown_id(self) -> None:
        pair = open_pair()
        error = local_error(pair.server, Reply(id=4, result=None))
        assert error.name is N.BAD_MESSAGE and pair.server.our_state is State.ERROR
        pair = open_pair()
        pair.client.receive_data(cbor_frame({"kind": "reply", "id": 4, "result": None}))
        assert "not in flight" in remote_error(pair.client).message

    def test_roles_are_enforced(self) -> None:
        pair = open_pair()
        pair.server.receive_data(cbor_frame({"kind": "reply", "id": 1, "result": None}))
        assert remote_error(pair.server).name is N.BAD_MESSAGE
        pair = open_pair()
        pair.client.receive_data(
            cbor_frame({"kind": "request", "id": 1, "method": "m", "params": {}})
        )
        assert remote_error(pair.client).name is N.BAD_MESSAGE
        pair = open_pair()
        assert local_error(pair.client, Event(event="e", ts=0.0, data={})).name is (N.BAD_MESSAGE)
        pair = open_pair()
        assert local_error(pair.server, Request(id=1, method="m", params={})).name is (
            N.BAD_MESSAGE
        )

    def test_connection_level_error_any_time(self) -> None:
        pair = open_pair()
        pair.send(pair.client, Request(id=1, method="m", params={}))
        info = ErrorInfo("luod.BadCbor", "EPROTO", "x", None)
        got = pair.send(pair.server, ErrorReply(id=None, error=info))
        assert isinstance(got, ErrorReply) and got.id is None

    def test_unencodable_message_leaves_state_usable(self) -> None:
        """A reply too large (or outside the data model) is refused without breaking the
        connection, so the request can still be answered with an error."""
        pair = ConnectionPair(max_frame=1000)
        pair.handshake()
        pair.send(pair.client, Request(id=1, method="m", params={}))
        assert local_error(pair.server, Reply(id=1, result="x" * 2000)).name is (N.FRAME_TOO_LARGE)
        assert local_error(pair.server, Reply(id=1, result=object())).name is N.BAD_MESSAGE
        assert pair.server.our_state is State.OPEN and pair.server.in_flight == {1}
        exc = LocalProtocolError(N.FRAME_TOO_LARGE, "too big")
        got = pair.send(pair.server, error_reply(exc, 1))
        assert isinstance(got, ErrorReply) and got.error.name == "luod.FrameTooLarge"


class TestErrorState:
    def test_remote_error_is_sticky(self) -> None:
        conn = Connection(Role.SERVER)
        conn.receive_data(b"\x00\x00\x00\x01\xff")
        first = remote_error(conn)
        assert first.name is N.BAD_CBOR and conn.their_state is State.ERROR
        conn.receive_data(cbor_frame(hello_item()))
        assert remote_error(conn) is first

    def test_clean_eof(self) -> None:
        pair = open_pair()
        pair.client.receive_data(b"")
        assert pair.client.next_event() is CLOSED
        assert pair.client.next_event() is CLOSED
        assert pair.client.their_state is State.CLOSED

    def test_eof_mid_frame(self) -> None:
        pair = open_pair()
        pair.client.receive_data(b"\x00\x00")
        pair.client.receive_data(b"")
        assert remote_error(pair.client).name is N.CONNECTION_CLOSED

    def test_messages_before_eof_are_delivered(self) -> None:
        pair = open_pair()
        event = Event(event="e", ts=0.0, data={})
        pair.client.receive_data(pair.server.send(event) + pair.server.send(event))
        pair.client.receive_data(b"")
        assert [pair.client.next_event() for _ in range(3)] == [event, event, CLOSED]

    def test_send_after_close(self) -> None:
        pair = open_pair()
        pair.client.close()
        assert pair.client.our_state is State.CLOSED
        error = local_error(pair.client, Request(id=1, method="m", params={}))
        assert error.name is N.CONNECTION_CLOSED


class TestFds:
    def request(self, nfds: int, rid: int = 1) -> bytes:
        return cbor_frame({"kind": "request", "id": rid, "method": "m", "params": {}, "nfds": nfds})

    def test_fds_attached_in_order(self) -> None:
        pair = open_pair()
        pair.server.receive_data(self.request(3), fds=[10, 11, 12])
        event = pair.server.next_event()
        assert isinstance(event, Request) and event.fds == (10, 11, 12) and event.nfds == 3
        assert pair.server.pending_fds == 0

    def test_reply_fds_to_client(self) -> None:
        pair = open_pair()
        pair.send(pair.client, Request(id=1, method="m", params={}))
        reply = pair.send(pair.server, Reply(id=1, result=None, fds=[5]), fds=(50,))
        assert isinstance(reply, Reply) and reply.fds == (50,)

    def test_send_sets_nfds_from_fds(self) -> None:
        pair = open_pair()
        got = pair.send(pair.client, Request(id=1, method="m", params={}, fds=[3, 4]), (8, 9))
        assert isinstance(got, Request) and got.nfds == 2 and got.fds == (8, 9)

    def test_missing_fds(self) -> None:
        pair = open_pair()
        pair.server.receive_data(self.request(2), fds=[10])
        error = remote_error(pair.server)
        assert error.name is N.MISSING_FDS and error.errno == "EBADF"
        assert pair.server.take_unclaimed_fds() == [10]

    def test_fds_after_the_frame_started_do_not_count(self) -> None:
        """Fds must come with the chunk holding the frame's first byte."""
        pair = open_pair()
        data = self.request(1)
        pair.server.receive_data(data[:2])
        pair.server.receive_data(data[2:], fds=[10])
        assert remote_error(pair.server).name is N.MISSING_FDS

    def test_fds_in_a_chunk_that_starts_earlier(self) -> None:
        """A recvmsg may return the tail of an earlier frame with the fds of the next."""
        pair = open_pair()
        first, second = self.request(0, rid=1), self.request(1, rid=2)
        pair.server.receive_data(first[:5])
        pair.server.receive_data(first[5:] + second, fds=[10])
        assert pair.server.next_event() == Request(id=1, method="m", params={})
        got = pair.server.next_event()
        assert isinstance(got, Request) and got.fds == (10,)

    def test_stray_fds_are_not_given_to_a_later_message(self) -> None:
        pair = open_pair()
        pair.server.receive_data(self.request(0, rid=1), fds=[10])
        error = remote_error(pair.server)  # the last frame of its chunk: nobody claims it
        assert error.name is N.BAD_MESSAGE and "no message declared" in error.message
        assert pair.server.take_unclaimed_fds() == [10]

    def test_fds_for_a_later_frame_of_the_same_chunk(self) -> None:
        pair = open_pair()
        pair.server.receive_data(self.request(0, rid=1) + self.request(1, rid=2), fds=[10])
        first, second = pair.server.next_event(), pair.server.next_event()
        assert isinstance(first, Request) and first.fds == ()
        assert isinstance(second, Request) and second.fds == (10,)

    def test_fds_with_hello_are_stray(self) -> None:
        conn = Connection(Role.SERVER)
        conn.receive_data(cbor_frame(hello_item()), fds=[10])
        error = remote_error(conn)
        assert error.name is N.BAD_MESSAGE and "no message declared" in error.message
        assert conn.take_unclaimed_fds() == [10]

    def test_unclaimed_fds_at_eof(self) -> None:
        pair = open_pair()
        pair.server.receive_data(self.request(1)[:3], fds=[10])
        pair.server.receive_data(b"")
        assert remote_error(pair.server).name is N.CONNECTION_CLOSED
        assert pair.server.take_unclaimed_fds() == [10]
        assert pair.server.take_unclaimed_fds() == []

    def test_too_many_pending_fds(self) -> None:
        pair = open_pair()
        pair.server.receive_data(b"\x00", fds=range(1000))
        assert remote_error(pair.server).name is N.BAD_MESSAGE
        assert len(pair.server.take_unclaimed_fds()) == 1000

    def test_send_refuses_declared_fds_without_fds(self) -> None:
        pair = open_pair()
        error = local_error(pair.client, Request(id=1, method="m", params={}, nfds=2))
        assert error.name is N.MISSING_FDS
        assert pair.client.our_state is State.OPEN  # nothing was sent; still usable


class TestErrorInfo:
    def test_from_protocol_error(self) -> None:
        exc = RemoteProtocolError(N.UNKNOWN_METHOD, "unknown method 'x'", object="x")
        assert exc.info() == ErrorInfo("luod.UnknownMethod", "ENOSYS", "unknown method 'x'", "x")

    def test_error_reply(self) -> None:
        reply = error_reply(RemoteProtocolError(N.BAD_PARAMS, "bad", object="m"), 4)
        assert reply == ErrorReply(id=4, error=ErrorInfo("luod.BadParams", "EINVAL", "bad", "m"))
