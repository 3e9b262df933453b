"""`memfd preserve` and `memfd retrieve`: the commands that move bytes through fds.

Owns the client's side of fd passing: opening `--from FILE` read-only (or taking the
inherited `--fd`, already checked to be a memfd by `argtypes`), sending it with the
request, and on retrieval copying the received memfd's bytes to `--output` or stdout while
hashing them. The daemon copies contents in and out; we never hold its memory, and every
fd we receive is closed before the command returns.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import stat
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, Final

from luoctl.context import Context, Outcome
from luoctl.failures import CliError, os_errno_name
from luoctl.output import stdout_is_terminal
from luoctl.progress import ByteProgress, watching
from luod.ipc.fdpass import close_fds
from luod.ipc.messages import Event

__all__ = ["copy_out", "memfd_preserve", "memfd_retrieve", "open_output", "open_source"]

CHUNK: Final = 1 << 20
"""Bytes per read when copying a retrieved memfd (memory stays flat for a 1G memfd)."""


def open_source(path: str) -> int:
    """Open `path` read-only for preservation; it must be a regular file.

    Raises:
        CliError: exit 1 (a local failure, as `cp` reports one), naming the file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CliError(
            f"cannot open {path}: {exc.strerror or exc}",
            errno=os_errno_name(exc.errno),
            object=path,
        ) from None
    # A memfd shows as a regular file too, so `--from /proc/self/fd/N` works; pipes and
    # directories would only fail later, inside the daemon, with a vaguer message.
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CliError(f"{path} is not a regular file", errno="EINVAL", object=path)
    return fd


def memfd_preserve(ctx: Context, args: argparse.Namespace) -> Outcome:
    owned = args.from_file is not None
    fd: int = open_source(args.from_file) if owned else args.fd
    try:
        source_size = os.fstat(fd).st_size
        params: dict[str, object] = {
            "session": args.session,
            "token": args.token,
            "size": args.size,
            "seals": list(dict.fromkeys(args.seals)),  # `--seal` repeated: once each
        }
        # Optional extensions: only sent when asked for, so the daemon's defaults rule.
        if args.name is not None:
            params["name"] = args.name
        if args.page_size is not None:
            params["page_size"] = args.page_size
        shown = ByteProgress(ctx.out, "copied", source_size) if watching(ctx) else None
        if shown is not None:
            params["progress"] = True
            ctx.link.set_event_tap(lambda event: _copied(shown, event))
        reply = ctx.link.call("memfd.preserve", params, fds=[fd])
        if shown is not None:
            ctx.link.set_event_tap(None)
            shown.done(source_size if args.size is None else min(args.size, source_size))
    finally:
        if owned:  # an inherited --fd is the caller's
            os.close(fd)
    close_fds(reply.fds)
    defaults = {
        "session": args.session,
        "token": args.token,
        "size": source_size if args.size is None else args.size,
        "seals": params["seals"],
    }
    result = reply.result
    return Outcome({**defaults, **result} if isinstance(result, Mapping) else defaults)


def _copied(shown: ByteProgress, event: Event) -> None:
    """A `memfd.progress` event from the daemon copying our file."""
    if event.event == "memfd.progress" and isinstance(event.data.get("copied"), int):
        shown(event.data["copied"])


def copy_out(
    fd: int, sink: BinaryIO | None, progress: Callable[[int], None] | None = None
) -> tuple[int, str]:
    """Copy `fd`'s bytes from offset 0 to EOF into `sink` (None: only hash them), telling
    `progress` the bytes copied so far after each chunk.

    Reads with pread: the retrieved memfd is positioned at its preserved pos, which must
    neither limit the copy nor be moved. Returns (bytes copied, sha256 hex).
    """
    digest = hashlib.sha256()
    offset = 0
    while True:
        chunk = os.pread(fd, CHUNK, offset)
        if not chunk:
            break
        digest.update(chunk)
        if sink is not None:
            sink.write(chunk)
        offset += len(chunk)
        if progress is not None:
            progress(offset)
    if sink is not None:
        sink.flush()
    return offset, digest.hexdigest()


def open_output(path: str) -> BinaryIO:
    """`--output FILE` opened for writing (created or truncated); a failure is exit 1."""
    try:
        return open(path, "wb")  # the caller closes it (a `with` around the copy)
    except OSError as exc:
        raise CliError(
            f"cannot write {path}: {exc.strerror or exc}",
            errno=os_errno_name(exc.errno),
            object=path,
        ) from None


def memfd_retrieve(ctx: Context, args: argparse.Namespace) -> Outcome:
    reply = ctx.link.call("memfd.retrieve", {"session": args.session, "token": args.token})
    fds = list(reply.fds)
    # Where the bytes go: --output; else stdout when it is neither the JSON channel nor a
    # terminal (bytes would garble it); else nowhere, and we only report their hash.
    to_stdout = args.output is None and not ctx.out.json and not stdout_is_terminal()
    written_to: str | None = None
    try:
        if not fds:
            raise CliError(
                f"luod sent no file descriptor for token {args.token} of session {args.session}",
                errno="EBADF",
                object=args.session,
            )
        if args.output is not None:
            shown = ByteProgress(ctx.out, "copied", os.fstat(fds[0]).st_size)
            with open_output(args.output) as sink:
                copied, sha256 = copy_out(fds[0], sink, shown if watching(ctx) else None)
            if watching(ctx):
                shown.done(copied)
            written_to = args.output
        elif to_stdout:
            copied, sha256 = copy_out(fds[0], ctx.out.binary_stdout())
        else:
            copied, sha256 = copy_out(fds[0], None)
    finally:
        close_fds(fds)
    result: Mapping[str, Any] = reply.result if isinstance(reply.result, Mapping) else {}
    document = {
        "session": args.session,
        "token": args.token,
        "size": copied,
        "seals": [],
        **result,
        "sha256": sha256,  # ours: what was actually copied
        "output": written_to,
    }
    return Outcome(document, silent=to_stdout)
