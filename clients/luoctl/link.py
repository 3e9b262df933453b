"""The one connection of a `luoctl` run to the daemon, opened on first use.

Owns three decisions around the blocking `luod.ipc.client.Client`:

* When to connect: lazily, so local checks (`--from FILE` missing) fail before the
  daemon is bothered, and `--help` never connects.
* What a transport failure means: anything that goes wrong before the hello exchange is
  done is "the daemon cannot be reached" (exit 69); a timeout or a lost connection after
  that is a failed request (exit 1), because the daemon may have acted on it.
* How events reach us while a call waits: the blocking client buffers them until the
  reply; `update` wants to show phases as they happen, so `event_tap` receives them live.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from luoctl.failures import CONNECTION_LOST, DAEMON_UNREACHABLE, TIMEOUT, CliError
from luoctl.quick import CLIENT_NAME
from luoctl.sockets import resolve_socket
from luod.cli.exitcodes import ExitCode
from luod.ipc.client import Client, Reply
from luod.ipc.errors import ConnectionLost, DaemonTimeout
from luod.ipc.messages import Event

__all__ = ["DaemonLink", "TapClient"]


class TapClient(Client):
    """A `Client` whose events can be handed to a callback as they arrive.

    `Client.call` keeps events that arrive before the reply in a buffer for `events()`;
    this hooks that one spot (`_buffer_event`) so a caller waiting in `call` can render
    them live. With no tap set it buffers exactly like `Client`.
    """

    event_tap: Callable[[Event], None] | None = None

    def _buffer_event(self, event: Event) -> None:
        if self.event_tap is None:
            super()._buffer_event(event)
        else:
            self.event_tap(event)


class DaemonLink:
    """The daemon connection of one run. `socket` is the `--socket` value (or None),
    `timeout` the global `--timeout`: it bounds connecting and each reply."""

    def __init__(self, socket: str | None, *, timeout: float) -> None:
        self._socket = socket
        self._path: str | None = None
        self.timeout = timeout
        self._client: TapClient | None = None

    @property
    def path(self) -> str:
        """The socket path this run uses (resolved once; UsageError when there is none)."""
        if self._path is None:
            self._path = resolve_socket(self._socket)
        return self._path

    @property
    def client(self) -> TapClient:
        """The connected client; connects on first use.

        Raises:
            DaemonUnreachable, PermissionDenied: from connect().
            CliError: exit 69, the daemon did not complete the hello exchange.
            RemoteError: the daemon refused the hello.
        """
        if self._client is None:
            path = self.path
            try:
                client = TapClient.connect(path, timeout=self.timeout, client_name=CLIENT_NAME)
            except DaemonTimeout:
                raise CliError(
                    f"luod at {path} did not answer within {self.timeout:g} s",
                    code=ExitCode.UNAVAILABLE,
                    name=DAEMON_UNREACHABLE,
                    errno="ETIMEDOUT",
                    object=path,
                ) from None
            except ConnectionLost as exc:
                raise CliError(
                    f"luod at {path} closed the connection before the hello exchange "
                    f"completed: {exc}",
                    code=ExitCode.UNAVAILABLE,
                    name=DAEMON_UNREACHABLE,
                    errno="ECONNRESET",
                    object=path,
                ) from None
            assert isinstance(client, TapClient)  # connect() is a classmethod: cls(...)
            self._client = client
        return self._client

    def call(
        self,
        method: str,
        params: Mapping[str, object] | None = None,
        *,
        fds: Sequence[int] = (),
        wait_forever: bool = False,
    ) -> Reply:
        """Call `method` and return its reply (the caller owns `reply.fds`).

        `wait_forever` lifts the reply timeout, for `update` and `kexec`, whose phases
        have their own deadlines in the daemon.

        Raises:
            RemoteError: the daemon refused (the exit code depends on the command).
            CliError: exit 1 after a reply timeout or a lost connection.
        """
        client = self.client
        try:
            return client.call(
                method, params, fds=fds, timeout=None if wait_forever else self.timeout
            )
        except DaemonTimeout:
            raise CliError(
                f"luod did not answer {method} within {self.timeout:g} s (see --timeout)",
                name=TIMEOUT,
                errno="ETIMEDOUT",
                object=method,
            ) from None
        except ConnectionLost as exc:
            raise CliError(
                f"lost the connection to luod during {method}: {exc}",
                name=CONNECTION_LOST,
                errno="ECONNRESET",
                object=method,
            ) from None

    def events(self) -> Iterator[Event]:
        """Events as they arrive (buffered ones first), forever; see `Client.events`."""
        return self.client.events()

    @property
    def buffered_events(self) -> int:
        """Events that arrived during calls and were not consumed yet."""
        return 0 if self._client is None else self._client.buffered_events

    def set_event_tap(self, tap: Callable[[Event], None] | None) -> None:
        """Hand events arriving during calls to `tap` instead of buffering them."""
        self.client.event_tap = tap

    def close(self) -> None:
        """Close the connection if it was opened. Idempotent."""
        if self._client is not None:
            self._client.close()
