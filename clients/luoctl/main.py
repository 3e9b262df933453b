"""The `luoctl` entry point: parse, run one command, print, and return the exit status.

Owns the run's frame and nothing inside it: `cli` parses, `commands` does the work,
`human*`/`output` print, `failures` turns any error into CLI.md's exit code and error
document. Every path returns an int (argparse's SystemExit for --help/--version included),
so tests call `main([...])` directly.

Start-up cost matters (one process per shell command): `luoctl.quick` runs `status`
without loading the rest (stdlib, cbor2 and a few import-free modules). Everything else
loads only when the full path runs: the parser, the blocking client (stdlib, cbor2,
attrs), never trio, numpy or structlog; cattrs loads with the first message that needs it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from luoctl import quick

if TYPE_CHECKING:
    from luoctl.context import Outcome
    from luoctl.output import Output

__all__ = ["main"]


def _json_requested(argv: list[str]) -> bool:
    # For usage errors, which happen before a namespace exists: --json anywhere before a
    # `--` (it is accepted both before and after the command).
    end = argv.index("--") if "--" in argv else len(argv)
    return "--json" in argv[:end]


def _print(out: Output, command: str, outcome: Outcome) -> None:
    from luoctl.commands import render

    if outcome.silent:
        return
    if out.json:
        out.document(outcome.document)
    else:
        out.lines(render(command, outcome.document))


def main(argv: list[str] | None = None) -> int:
    """Run `luoctl` with `argv` (default: `sys.argv[1:]`); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    code = quick.run(argv)
    return code if code is not None else _full(argv)


def _full(argv: list[str]) -> int:
    """The full path: parse, run the command, print."""
    from luoctl.cli import build_parser
    from luoctl.commands import COMMANDS
    from luoctl.context import Context
    from luoctl.failures import UsageError, classify, interrupted
    from luoctl.link import DaemonLink
    from luoctl.output import Output
    from luod.cli.exitcodes import ExitCode

    parser = build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    out = Output(json=_json_requested(argv))
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        out.usage_error(exc)
        return ExitCode.USAGE
    except SystemExit as exc:  # --help, --version (argparse exits with status 0)
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or ExitCode.OK
        return ExitCode.USAGE
    out = Output(json=args.json)
    command: str = args.run
    link = DaemonLink(args.socket, timeout=args.timeout)
    try:
        outcome = COMMANDS[command].run(Context(link, out), args)
        _print(out, command, outcome)
        return outcome.code
    except BrokenPipeError:
        # The reader of stdout went away (`luoctl events --follow | head`). For a stream
        # that is how it ends, quietly; anything else was cut short: say so on stderr,
        # the only channel left (even with --json).
        if command == "events":
            out.silence_stdout()
            return ExitCode.OK
        out.stdout_closed(command)
        return ExitCode.FAILED
    except KeyboardInterrupt:
        out.failure(interrupted(command))
        return ExitCode.INTERRUPTED
    except Exception as exc:  # a UsageError found at run time (no socket path) too
        failure = classify(exc, command)
        if failure is None:
            raise
        out.failure(failure)
        return failure.code
    finally:
        link.close()
