"""Sessions as clients see them: the JSON object `status`, `session show`, `session list`
and `session retrieve` print for each session (CLI.md, "JSON output")."""

from __future__ import annotations

from typing import Any

from luod.daemon.errors import error_json
from luod.daemon.owners import Owners
from luod.kernel_model.luo.session import IncomingSession, OutgoingSession


def session_object(session: OutgoingSession | IncomingSession, owners: Owners) -> dict[str, Any]:
    """{name, direction, owner, files: [{token, type, format}]}; an incoming session adds
    `retrieved` and `stuck`, and each of its files `retrieved` and `error` (why its
    retrieve failed)."""

    if isinstance(session, OutgoingSession):
        direction = "outgoing"
        files: list[dict[str, Any]] = [
            {"token": f.token, "type": f.handler.file_type, "format": f.compatible}
            for f in session.files
        ]
        extra: dict[str, Any] = {}
    else:
        direction = "incoming"
        files = [
            {
                "token": f.token,
                "type": f.handler.file_type,
                "format": f.compatible,
                "retrieved": f.status > 0,
                "error": None if f.error is None else error_json(f.error),
            }
            for f in session.files
        ]
        extra = {"retrieved": session.retrieved, "stuck": session.stuck}
    return {
        "name": session.name,
        "direction": direction,
        "owner": owners.owner(direction, session.name),
        "files": files,
        **extra,
    }
