"""The `luoctl` entry point: global options and the command dispatch.

Every command of CLI.md ("luoctl (the client)") is future work: for now only `--help` and
`--version` exist, and running without a command prints the help to stderr and exits 2
(a usage error, as argparse reports them).
"""

from __future__ import annotations

import argparse
import sys

from luod import __version__

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The `luoctl` argument parser."""
    parser = argparse.ArgumentParser(
        prog="luoctl",
        description="Command-line client of luod, the emulated live-update daemon.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; return the exit status."""
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help(sys.stderr)
    return 2
