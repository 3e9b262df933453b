"""The `luod` entry point: command line, logging, cold boot, and the trio main loop.

Owns the daemon's command-line contract (CLI.md, "luod (the daemon)"): every flag is parsed
and validated here so that a bad value is a usage error (exit 2) before anything boots.
Process-level lifetime lives here too: SIGTERM and SIGINT end the daemon cleanly with exit 0.
Both signals are blocked from before the boot until trio's signal receiver is in place, so
a signal that arrives while the machine is still booting is held, not fatal, and handled as
soon as the loop runs.

Serving itself lives in `luod.daemon.service`; this module parses, boots, listens (or takes
the socket systemd passed), reports readiness, pings the watchdog and stops cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import structlog
import trio
from structlog.typing import FilteringBoundLogger

if TYPE_CHECKING:
    from luod.daemon.host import Host

from luod import __version__
from luod.daemon import boot, sdnotify
from luod.daemon.access import AdminGroup, AdminPolicy, resolve_group
from luod.daemon.admission import DEFAULT_HELLO_TIMEOUT, DEFAULT_PER_UID, ConnectionLimits
from luod.daemon.listener import (
    ListenerError,
    NoSocketPath,
    UnixListener,
    default_socket_path,
    from_activation,
    open_unix_listener,
)
from luod.daemon.logging import LOG_FORMATS, LOG_LEVELS, configure_logging
from luod.daemon.records import RunRecords
from luod.units import format_size, parse_size

__all__ = [
    "HUGETLB_PAGE_SIZES",
    "build_parser",
    "main",
    "parse_hugetlb",
    "parse_ram",
]

PAGE_SIZE: Final = 4096
DEFAULT_RAM: Final = "64G"
DEFAULT_HUGETLB: Final = "2M=2048,1G=16"
HUGETLB_PAGE_SIZES: Final[tuple[int, ...]] = (2 << 20, 1 << 30)
LIMITS: Final = ("unlimited", "6.19")

_SHUTDOWN_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
_N = TypeVar("_N", int, float)


def parse_ram(text: str) -> int:
    """`--ram`: a size (see `luod.units.parse_size`), positive and a multiple of 4 KiB."""
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size <= 0 or size % PAGE_SIZE:
        raise argparse.ArgumentTypeError(
            f"invalid RAM size {text!r}: must be a positive multiple of 4K"
        )
    return size


def parse_hugetlb(text: str) -> dict[int, int]:
    """`--hugetlb`: `SIZE=COUNT[,SIZE=COUNT]` with SIZE 2M or 1G, to {page size: count}.

    Every supported page size appears in the result, in ascending order; a size the text
    does not name gets 0 pages. Sizes may be written in any form `parse_size` accepts
    (`2M`, `2MiB`, `1g`), each at most once.

    Raises:
        argparse.ArgumentTypeError: malformed item, unsupported page size, bad count or a
            size given twice; the message names the offending item.
    """
    allowed = ", ".join(format_size(s) for s in HUGETLB_PAGE_SIZES)
    pools: dict[int, int] = dict.fromkeys(HUGETLB_PAGE_SIZES, 0)
    seen: set[int] = set()
    for item in text.split(","):
        size_text, sep, count_text = item.strip().partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(
                f"invalid hugetlb pool {item!r} in {text!r}: expected SIZE=COUNT, "
                "e.g. 2M=2048,1G=16"
            )
        try:
            size = parse_size(size_text)
        except ValueError:
            size = -1
        if size not in pools:
            raise argparse.ArgumentTypeError(
                f"invalid hugetlb page size {size_text.strip()!r} in {text!r}: "
                f"expected one of {allowed}"
            )
        count_text = count_text.strip()
        if not (count_text.isascii() and count_text.isdigit()):
            raise argparse.ArgumentTypeError(
                f"invalid hugetlb page count {count_text!r} for {size_text.strip()} in "
                f"{text!r}: expected a non-negative integer"
            )
        if size in seen:
            raise argparse.ArgumentTypeError(
                f"hugetlb page size {format_size(size)} given twice in {text!r}"
            )
        seen.add(size)
        pools[size] = int(count_text)
    return pools


def _positive(kind: Callable[[str], _N]) -> Callable[[str], _N]:
    """An argparse type: a number of `kind` greater than zero."""

    def parse(text: str) -> _N:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:  # NaN is not > 0 either
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be a number > 0")
        return value

    parse.__name__ = kind.__name__
    return parse


def parse_admin_group(text: str) -> AdminGroup:
    """`--admin-group`: an existing group, by name or gid."""
    try:
        return resolve_group(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The `luod` argument parser (every flag of CLI.md, validated at parse time)."""
    parser = argparse.ArgumentParser(
        prog="luod",
        description=(
            "Emulated Linux live-update daemon (KHO/LUO). Runs in the foreground; "
            "SIGTERM or SIGINT shut it down cleanly."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--socket",
        metavar="PATH",
        type=Path,
        help=(
            "listening socket (default: $LUOD_SOCKET, else /run/luod/luod.sock for root, "
            "else $XDG_RUNTIME_DIR/luod/luod.sock; LISTEN_FDS activation replaces it)"
        ),
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        help="directory for run records that survive a daemon restart",
    )
    parser.add_argument(
        "--kernel",
        metavar="RELEASE|IMAGE_FILE",
        help="kernel image to cold-boot (default: the newest bundled release)",
    )
    parser.add_argument(
        "--ram",
        metavar="SIZE",
        type=parse_ram,
        default=DEFAULT_RAM,
        help=f"emulated RAM, sparse; binary units K/M/G/T (default: {DEFAULT_RAM})",
    )
    parser.add_argument(
        "--hugetlb",
        metavar="2M=COUNT,1G=COUNT",
        type=parse_hugetlb,
        default=DEFAULT_HUGETLB,
        help=f"hugetlb pools; an omitted size gets 0 pages (default: {DEFAULT_HUGETLB})",
    )
    parser.add_argument(
        "--pci",
        metavar="COUNT",
        type=int,
        default=8,
        help="PCI devices plugged into the machine, at 0000:01:00.0 and on (default: 8)",
    )
    parser.add_argument(
        "--limits",
        choices=LIMITS,
        default="unlimited",
        help="session and file limits: none, or those of Linux 6.19 (default: unlimited)",
    )
    parser.add_argument(
        "--enable-faults",
        action="store_true",
        help="allow root (or luod's own uid) to arm fault-injection points (fault.arm)",
    )
    parser.add_argument(
        "--admin-group",
        metavar="GROUP",
        type=parse_admin_group,
        help=(
            "members of GROUP (name or gid) may drive the machine (load, prepare, kexec, "
            "update, boot...) besides root and luod's own uid (default: none)"
        ),
    )
    parser.add_argument(
        "--hello-timeout",
        metavar="SECONDS",
        type=_positive(float),
        default=DEFAULT_HELLO_TIMEOUT,
        help=(
            "close a connection that has not sent its hello within SECONDS "
            f"(default: {DEFAULT_HELLO_TIMEOUT:g})"
        ),
    )
    parser.add_argument(
        "--max-connections-per-uid",
        metavar="COUNT",
        type=_positive(int),
        default=DEFAULT_PER_UID,
        help=f"connections one uid may have open at once (default: {DEFAULT_PER_UID})",
    )
    parser.add_argument(
        "--max-connections",
        metavar="COUNT",
        type=_positive(int),
        help="connections open at once (default: the fd limit minus a reserve)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="auto",
        help="stderr log format; auto = console on a terminal, else logfmt (default: auto)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="lowest level logged (default: info)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the daemon until SIGTERM or SIGINT; return the process exit status.

    Usage errors exit 2 through argparse (`SystemExit`). A failed boot is logged and
    returns 1.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    activated = sdnotify.listen_fds()
    socket_path: Path | None = None
    if not activated:
        try:
            socket_path = args.socket or default_socket_path()
        except NoSocketPath as exc:
            parser.error(str(exc))

    configure_logging(args.log_format, args.log_level)
    log: FilteringBoundLogger = structlog.get_logger("luod")

    # Hold shutdown signals until the trio receiver owns them (see the module docstring).
    saved_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SHUTDOWN_SIGNALS)
    try:
        records = RunRecords(args.state_dir)
        try:
            records.start()  # before the boot: a planned restart boots from the handover
        except OSError as exc:
            log.error("state_dir_failed", state_dir=str(args.state_dir), error=str(exc))
            return 1
        try:
            host = boot.build_host(
                args.ram, args.kernel, limits=args.limits, hugetlb=args.hugetlb, pci=args.pci
            )
        except Exception as exc:
            log.exception(
                "boot_failed", ram=format_size(args.ram), kernel=args.kernel, error=str(exc)
            )
            return 1
        try:
            return trio.run(_serve, log, args, host, records, socket_path, activated, saved_mask)
        finally:
            host.close()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask)


async def _watchdog(interval: float) -> None:
    while True:
        sdnotify.watchdog_ping()
        await trio.sleep(interval / 2)


async def _serve(
    log: FilteringBoundLogger,
    args: argparse.Namespace,
    host: Host,
    records: RunRecords,
    socket_path: Path | None,
    activated: list[tuple[int, str]],
    saved_mask: Iterable[int],
) -> int:
    """`_listen_and_serve`, removing the socket file on every exit after the bind, clean
    (a signal) or not (an error). A second signal while it shuts down lands in the outer
    receiver, which nobody reads: the cleanup finishes instead of dying half-way."""
    bound: list[UnixListener] = []
    with trio.open_signal_receiver(*_SHUTDOWN_SIGNALS):
        try:
            return await _listen_and_serve(
                log, args, host, records, socket_path, activated, saved_mask, bound
            )
        finally:
            for listener in bound:
                listener.close()


async def _listen_and_serve(
    log: FilteringBoundLogger,
    args: argparse.Namespace,
    host: Host,
    records: RunRecords,
    socket_path: Path | None,
    activated: list[tuple[int, str]],
    saved_mask: Iterable[int],
    bound: list[UnixListener],
) -> int:
    """The trio main: listen, serve, report readiness, stop cleanly on a signal. The
    listener goes into `bound` as soon as it exists, for `_serve` to close on any exit."""
    with trio.open_signal_receiver(*_SHUTDOWN_SIGNALS) as signals:
        # Handlers are installed: let held and future signals through to the receiver.
        signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask)
        try:
            if activated:
                listener = from_activation(activated)
            else:
                assert socket_path is not None
                listener = await open_unix_listener(socket_path)
        except ListenerError as exc:
            log.error("listen_failed", error=str(exc))
            return 1
        bound.append(listener)
        from luod.daemon.core import Daemon  # heavy: numpy and the model
        from luod.daemon.service import serve

        daemon = Daemon(
            host,
            records=records,
            status_hook=sdnotify.status,
            faults_enabled=args.enable_faults,
            policy=AdminPolicy(os.getuid(), args.admin_group),
            limits=ConnectionLimits(
                args.hello_timeout, args.max_connections_per_uid, args.max_connections
            ),
        )
        kernel = host.kernel
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, daemon, listener.listener)
            log.info(
                "machine_up",
                ram=format_size(args.ram),
                release=kernel.release,
                socket=str(listener.path) if listener.path else "activated",
                previous_boot_unclean=records.previous_unclean,
            )
            sdnotify.ready(f"running {kernel.release} ({kernel.state})")
            interval = sdnotify.watchdog_interval()
            if interval:
                nursery.start_soon(_watchdog, interval)
            async for signum in signals:
                log.info("shutdown", signal=signal.Signals(signum).name)
                sdnotify.stopping()
                break
            nursery.cancel_scope.cancel()
        listener.close()
        records.stop()
    return 0
