"""The `luod-run` entry point (CLI.md "luod-run").

    luod-run [--socket PATH] -- PROGRAM [ARGS...]

Builds the interposer, asks luod for a gateway (`uapi.attach`) and execs PROGRAM with the
interposer preloaded and the gateway's fd in `$LUOD_RUN_FD`; every child inherits both.
Exit status: PROGRAM's own (luod-run becomes it); 69 when luod cannot be reached; 70 when
the interposer cannot be built or loaded; 127 when PROGRAM cannot be executed; 2 for usage.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
from collections.abc import Sequence

from luod.ipc.client import Client
from luod.ipc.errors import ProtocolError, RemoteError
from luod.ipc.sockets import default_socket_path
from luod_run.build import BuildError, interposer

PROG = "luod-run"
UNREACHABLE = 69
NO_INTERPOSER = 70
NOT_EXECUTABLE = 127


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run PROGRAM so that /dev/liveupdate is luod's emulated device.",
    )
    parser.add_argument("--socket", help="luod's socket (default: as luoctl finds it)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- PROGRAM [ARGS...]")
    return parser


def _fail(code: int, message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        return _fail(2, "no PROGRAM given: luod-run [--socket PATH] -- PROGRAM [ARGS...]")
    try:
        library = interposer()
        ctypes.CDLL(str(library))  # a library the loader refuses would be skipped silently
    except BuildError as exc:
        return _fail(NO_INTERPOSER, str(exc))
    except OSError as exc:
        return _fail(NO_INTERPOSER, f"the interposer {library} does not load: {exc}")
    path = args.socket or default_socket_path()
    if path is None:
        return _fail(2, "no socket path: pass --socket, or set LUOD_SOCKET or XDG_RUNTIME_DIR")
    try:
        with Client.connect(path, client_name=PROG) as client:
            (gateway,) = client.call("uapi.attach").fds
    except (OSError, ProtocolError) as exc:
        return _fail(UNREACHABLE, f"cannot reach luod at {path}: {exc}")
    except RemoteError as exc:
        return _fail(UNREACHABLE, f"luod at {path} refused luod-run: {exc}")
    os.set_inheritable(gateway, True)
    env = dict(os.environ)
    env["LUOD_RUN_FD"] = str(gateway)
    env["LD_PRELOAD"] = " ".join(filter(None, [str(library), env.get("LD_PRELOAD", "")]))
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        return _fail(NOT_EXECUTABLE, f"cannot run {command[0]}: {exc.strerror}")
    raise AssertionError("unreachable")  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
