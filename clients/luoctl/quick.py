"""luoctl's short start: `status` (and `--json status`) without the parser or the full client.

Owns the decision to take the short path and nothing else. Scripts run `luoctl status` in
loops over many hosts, and a run of the full luoctl spends most of its time importing
(argparse's whole command tree, attrs, the method table, the protocol stack). A command
line of exactly one of these forms takes the short path:

    luoctl [--json] [--socket PATH | --socket=PATH] status [--json]

(global options in any order, each at most once). It resolves the socket with the one
rule (`luod.ipc.sockets`), calls the method through `luod.ipc.oneshot` and prints with the
same renderer and the same `Output` as the full path, so what it prints is byte for byte
what the full path prints. Anything else, and any call that does not end in a plain reply
(no daemon, an error, a timeout...), returns None: `luoctl.main` then runs the full path,
which parses, calls again and reports exactly as it always has. Only methods that change
nothing are here, since the daemon may see the call twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from luod.ipc.limits import DEFAULT_TIMEOUT

__all__ = ["CLIENT_NAME", "run"]

CLIENT_NAME: Final = "luoctl"
"""The `client` of luoctl's hello, on either path."""


def _human_status(document: Any) -> list[str]:
    from luoctl.human_machine import status

    return status(document)


# Command word -> (method, human renderer): read-only methods without params only.
_COMMANDS: Final[dict[str, tuple[str, Callable[[Any], list[str]]]]] = {
    "status": ("status", _human_status),
}


def _parse(argv: Sequence[str]) -> tuple[str, str | None, bool] | None:
    """(command, socket or None, json) for a command line of the short forms, else None."""
    socket: str | None = None
    json = False
    seen: set[str] = set()
    args = list(argv)
    while args and args[0].startswith("-"):
        option = args.pop(0)
        name, eq, value = option.partition("=")
        if name in seen or name not in ("--json", "--socket"):
            return None
        seen.add(name)
        if name == "--json":
            if eq:
                return None
            json = True
            continue
        if not eq:
            if not args:
                return None
            value = args.pop(0)
        if not value or value.startswith("-"):
            return None  # argparse's rules for these are the full path's business
        socket = value
    if not args or args[0] not in _COMMANDS:
        return None
    command, rest = args[0], args[1:]
    if rest == ["--json"]:
        json = True
    elif rest:
        return None
    return command, socket, json


def run(argv: Sequence[str]) -> int | None:
    """Run `argv` on the short path and return the exit status, or None: take the full
    path (nothing was printed)."""
    parsed = _parse(argv)
    if parsed is None:
        return None
    command, socket, json = parsed
    if socket is None:
        from luod.ipc.sockets import default_socket_path

        socket = default_socket_path()
        if socket is None:  # no rule applies: the full path's usage error says so
            return None
    from luod.ipc.oneshot import call_read_only

    method, render = _COMMANDS[command]
    result = call_read_only(socket, method, timeout=DEFAULT_TIMEOUT, client_name=CLIENT_NAME)
    if result is None:
        return None
    from luoctl.output import Output
    from luod.cli.exitcodes import ExitCode

    out = Output(json=json)
    try:
        if json:
            out.document(result)
        else:
            out.lines(render(result))
    except BrokenPipeError:
        out.stdout_closed(command)
        return ExitCode.FAILED
    return ExitCode.OK
