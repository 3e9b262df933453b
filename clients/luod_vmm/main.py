"""The `luod-vmm` entry point: global options and the `run` / `resume` dispatch.

The `run` and `resume` commands of CLI.md ("luod-vmm") are future work: for now only
`--help` and `--version` exist, and running without a command prints the help to stderr
and exits 2 (a usage error, as argparse reports them).
"""

from __future__ import annotations

import argparse
import sys

from luod import __version__

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The `luod-vmm` argument parser."""
    parser = argparse.ArgumentParser(
        prog="luod-vmm",
        description="Example VMM participant of luod: preserves guest state across a kexec.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; return the exit status."""
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help(sys.stderr)
    return 2
