"""The dispatcher: a request in, its reply out, through the one method table.

Method handlers live in groups (`luod.daemon.api`), each a `MethodGroup` registering its
handlers by method name. The `Dispatcher` joins the groups and checks, when the daemon
starts, that its handlers match `luod.ipc.methods.METHODS` exactly: every method has
a handler, every handler a method. For each request it checks the method's `access`
against the connection's (`luod.daemon.access`: admin methods refuse a non-admin with
`luod.NotPermitted` before anything runs; `owner` is the handlers' business, per object),
structures the params (the strict
converter), checks the fds it carries against the method's entry, runs the handler, and
turns any error into its wire form (`luod.daemon.errors.wire_error`, the one mapping). A
bug is answered (`luod.InternalError`) and logged; the daemon keeps serving.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog

from luod.daemon.connection import ClientConnection
from luod.daemon.errors import INTERNAL_ERROR, DaemonError, error_reply
from luod.ipc.messages import ErrorReply, Reply, Request
from luod.ipc.methods import METHODS

log = structlog.get_logger("luod.server")

Result = tuple[Any, list[int]]
"""A handler's answer: the result map and the fds to send with it (the writer closes
them once sent)."""
Handler = Callable[[ClientConnection, Any, Request], Awaitable[Result]]


class MethodGroup:
    """Handlers of related methods, registered with `@group("method.name")`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.handlers: dict[str, Handler] = {}

    def __call__(self, method: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            if method not in METHODS:
                raise ValueError(f"{self.name}: {method!r} is not in the method table")
            if method in self.handlers:
                raise ValueError(f"{self.name}: {method!r} is handled twice")
            self.handlers[method] = fn
            return fn

        return register


class Dispatcher:
    """Every method's handler, exactly the methods of `METHODS`."""

    def __init__(self, groups: Iterable[MethodGroup]) -> None:
        self.handlers: dict[str, Handler] = {}
        for group in groups:
            twice = sorted(self.handlers.keys() & group.handlers.keys())
            if twice:
                raise ValueError(f"handled in two groups: {', '.join(twice)}")
            self.handlers.update(group.handlers)
        missing = sorted(set(METHODS.names()) - self.handlers.keys())
        extra = sorted(self.handlers.keys() - set(METHODS.names()))
        if missing or extra:
            raise ValueError(
                "handlers do not match the method table: "
                f"no handler for {missing or 'none'}, not in the table: {extra or 'none'}"
            )

    async def __call__(self, conn: ClientConnection, request: Request) -> Reply | ErrorReply:
        try:
            spec = METHODS.get(request.method)
            if spec is not None and spec.access == "admin" and not conn.access.admin:
                raise conn.daemon.policy.refusal(request.method, conn.access)
            params = METHODS.structure(request)
            assert spec is not None  # structure refused unknown methods
            problem = spec.fds_problem(len(request.fds))
            if problem is not None:
                raise DaemonError("MissingFds", problem, errno=errno.EBADF)
            result, fds = await self.handlers[request.method](conn, params, request)
            return Reply(id=request.id, result=result, fds=fds)
        except Exception as exc:
            reply = error_reply(request.id, exc)
            if reply.error.name == INTERNAL_ERROR:  # a bug: answer it, log it, keep serving
                log.exception("request_failed", conn=conn.id, method=request.method)
            else:  # the caller's mistake or a refusal: theirs to read, no fault of ours
                log.info(
                    "request_refused",
                    conn=conn.id,
                    method=request.method,
                    error=reply.error.name,
                    message=reply.error.message,
                )
            return reply
