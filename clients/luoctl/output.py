"""Where `luoctl` writes: one JSON document, or human text, or one error line.

Owns the stream rules of CLI.md: with `--json` exactly one JSON document on stdout and
nothing else there (an error is the document `{"error": {...}}`); without it human text on
stdout and an error as one line on stderr; nothing on stderr on success except progress
on a terminal. Streams are looked up at write time (`sys.stdout`), not at construction,
so pytest's capture and a late redirection both work.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # not at run time: luoctl's short path prints through here too
    from luoctl.failures import Failure, UsageError

__all__ = ["Output", "jsonable", "stderr_is_terminal", "stdout_is_terminal"]


def stdout_is_terminal() -> bool:
    """Is stdout a terminal? (A function so tests can pretend.)"""
    return sys.stdout.isatty()


def stderr_is_terminal() -> bool:
    """Is stderr a terminal? (A function so tests can pretend.)"""
    return sys.stderr.isatty()


def jsonable(value: object) -> object:
    """`json.dumps` fallback for what CBOR has and JSON lacks: byte strings become hex."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot print a {type(value).__name__} as JSON")


def _dumps(document: object) -> str:
    return json.dumps(document, default=jsonable)


class Output:
    """The output of one run: JSON or human, per `--json`."""

    def __init__(self, *, json: bool) -> None:
        self.json = json
        self._inline = False  # a progress line is open on stderr (no newline yet)

    # --- success -------------------------------------------------------------------------

    def document(self, document: object) -> None:
        """The one JSON document of the run, on one line."""
        sys.stdout.write(_dumps(document) + "\n")
        sys.stdout.flush()

    def json_line(self, item: object) -> None:
        """One JSON object on its own line, flushed at once (event streams)."""
        sys.stdout.write(_dumps(item) + "\n")
        sys.stdout.flush()

    def lines(self, lines: Iterable[str]) -> None:
        """Human text on stdout."""
        text = "".join(f"{line}\n" for line in lines)
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()

    def binary_stdout(self) -> BinaryIO:
        """Stdout for bytes (memfd contents): anything buffered as text goes out first."""
        sys.stdout.flush()
        return sys.stdout.buffer

    def progress(self, line: str) -> None:
        """A progress line on stderr; callers only use it on a terminal without --json.
        It ends a line `progress_inline` left open."""
        sys.stderr.write(self._over() + line + "\n")
        sys.stderr.flush()
        self._inline = False

    def progress_inline(self, line: str) -> None:
        """A progress line that the next one overwrites."""
        sys.stderr.write(self._over() + line)
        sys.stderr.flush()
        self._inline = True

    def _over(self) -> str:
        return "\r\x1b[K" if self._inline else ""  # carriage return, erase the line

    # --- failure -------------------------------------------------------------------------

    def stderr_line(self, line: str) -> None:
        """One line on stderr whatever the mode (when stdout cannot be used)."""
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def failure(self, failure: Failure) -> None:
        """Report a failed run: the error document, or one line on stderr."""
        if self.json:
            self.document(failure.document())
        else:
            self.stderr_line(failure.line())

    def usage_error(self, error: UsageError) -> None:
        """A usage error; without --json the way argparse prints it (usage, then the
        message), which is what people expect from a command line."""
        if self.json:
            self.document(error.failure.document())
            return
        if error.usage:
            sys.stderr.write(error.usage)
        sys.stderr.write(f"{error.prog}: error: {error.failure.message}\n")
        sys.stderr.flush()

    def stdout_closed(self, command: str) -> None:
        """The reader of stdout went away before `command` finished printing: say so on
        stderr, the only channel left (even with --json)."""
        self.silence_stdout()
        self.stderr_line(f"luoctl: stdout closed before {command} finished printing (EPIPE)")

    def silence_stdout(self) -> None:
        """After EPIPE on stdout: point fd 1 at /dev/null so the interpreter's final flush
        cannot fail again and print a traceback."""
        try:
            fd = sys.stdout.fileno()
        except (AttributeError, OSError, ValueError):
            return  # not a real file (pytest's capture): nothing to protect
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
