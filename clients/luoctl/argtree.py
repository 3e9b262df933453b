"""The argparse machinery of `luoctl`'s command line, apart from the commands themselves.

Usage errors raise `UsageError` instead of exiting, so `main` can report them as JSON
under `--json` and tests can call `main()` without catching SystemExit. `--json` is also
accepted after the command (`luoctl status --json`), which is how people type it. Every
leaf parser records its command key in `args.run`.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from luoctl.failures import UsageError
from luod.cli import argtypes

__all__ = ["CommandTree", "Parser", "json_option", "token_option"]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise `UsageError` (subparsers inherit the class)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, usage=self.format_usage(), prog=self.prog)


def json_option() -> Parser:
    # A parent parser for every command: `--json` after the command too. SUPPRESS keeps
    # the subparser from resetting a `--json` given before the command to False.
    parent = Parser(add_help=False)
    parent.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print one JSON document on stdout (same as the global --json)",
    )
    return parent


class CommandTree:
    """Adds groups, and leaf commands with the shared `--json` parent and their command
    key (`args.run`)."""

    def __init__(self) -> None:
        self.parent = json_option()

    def group(
        self, subparsers: argparse._SubParsersAction[Parser], name: str, help: str
    ) -> argparse._SubParsersAction[Parser]:
        parser = subparsers.add_parser(name, help=help, description=help)
        return parser.add_subparsers(title="commands", metavar="ACTION", required=True)

    def leaf(
        self,
        subparsers: argparse._SubParsersAction[Parser],
        name: str,
        key: str,
        help: str,
        description: str | None = None,
    ) -> Parser:
        parser = subparsers.add_parser(
            name, help=help, description=description or help, parents=[self.parent]
        )
        parser.set_defaults(run=key)
        return parser


def token_option(parser: Parser) -> None:
    parser.add_argument(
        "--token",
        "-t",
        type=argtypes.token,
        required=True,
        metavar="T",
        help="the file's token in the session (decimal or 0x hex, u64)",
    )
