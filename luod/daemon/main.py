"""The `luod` entry point: command line, logging, cold boot, and the trio main loop.

Runs the command line that `luod.daemon.options` parses and validates (a bad value is a
usage error, exit 2, before anything boots).
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
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog
import trio
from structlog.typing import FilteringBoundLogger

if TYPE_CHECKING:
    from luod.daemon.host import Host
    from luod.daemon.restart import Stop

from luod.daemon import boot, machine_store, sdnotify
from luod.daemon.access import AdminPolicy
from luod.daemon.admission import ConnectionLimits
from luod.daemon.listener import (
    OWN_SOCKET_FD_NAME,
    ListenerError,
    NoSocketPath,
    UnixListener,
    default_socket_path,
    from_activation,
    open_unix_listener,
)
from luod.daemon.logging import configure_logging
from luod.daemon.options import HUGETLB_PAGE_SIZES, build_parser, parse_hugetlb, parse_ram
from luod.daemon.records import RunRecords
from luod.units import format_size

__all__ = [
    "HUGETLB_PAGE_SIZES",
    "build_parser",
    "main",
    "parse_hugetlb",
    "parse_ram",
]

_SHUTDOWN_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    """Run the daemon until SIGTERM or SIGINT; return the process exit status.

    Usage errors exit 2 through argparse (`SystemExit`). A failed boot is logged and
    returns 1. `luoctl daemon restart` does not return: the process re-execs itself.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.restart_keeps_machine and not (args.state_dir or sdnotify.under_supervisor()):
        parser.error(
            "--restart-keeps-machine needs --state-dir DIR or systemd's fd store "
            "(NOTIFY_SOCKET): without either, nothing of the machine outlives the process"
        )
    activated, passed = machine_store.split_listen_fds(sdnotify.listen_fds())
    socket_path: Path | None = None
    if not activated:
        try:
            socket_path = args.socket or default_socket_path()
        except NoSocketPath as exc:
            parser.error(str(exc))

    configure_logging(args.log_format, args.log_level)
    log: FilteringBoundLogger = structlog.get_logger("luod")

    # Hold shutdown signals until the trio receiver owns them (see the module docstring).
    # A re-exec'd luod (`luoctl daemon restart`) starts with them blocked already: the
    # exec keeps the mask, so a SIGTERM during its start is held too. Unblocked later.
    saved_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SHUTDOWN_SIGNALS)
    saved_mask -= set(_SHUTDOWN_SIGNALS)
    try:
        records = RunRecords(args.state_dir)
        try:
            records.start()  # before the boot: a planned restart boots from the handover
        except OSError as exc:
            log.error("state_dir_failed", state_dir=str(args.state_dir), error=str(exc))
            return 1
        store = machine_store.MachineStore(args.state_dir, passed)
        t = time.perf_counter()
        try:
            host, handover = boot.build_host(
                args.ram,
                args.kernel,
                limits=args.limits,
                hugetlb=args.hugetlb,
                pci=args.pci,
                store=store,
                planned_restart=records.planned_restart() is not None,
                cold_reason=records.unclean_reason(),
            )
        except Exception as exc:
            log.exception(
                "boot_failed", ram=format_size(args.ram), kernel=args.kernel, error=str(exc)
            )
            return 1
        restore_ms = round((time.perf_counter() - t) * 1000, 3)
        store.after_boot(host.machine.memory)
        records.handover_refused = store.refused
        records.moved_aside += store.moved_aside
        stop = None
        try:
            stop = trio.run(
                _serve,
                log,
                args,
                host,
                records,
                (handover, restore_ms),
                socket_path,
                activated,
                saved_mask,
            )
            if stop.how == "exec":
                assert stop.blob is not None
                signal.pthread_sigmask(signal.SIG_BLOCK, _SHUTDOWN_SIGNALS)  # held across
                machine_store.exec_self(stop.blob, host.machine.memory, stop.sockets or [])
            if stop.how == "exit":
                assert stop.blob is not None
                store.keep_for_next_start(stop.blob)
                records.stop(restart={"update_id": stop.update_id, "at": time.time()})
            return stop.code
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
    handover: tuple[dict[str, Any] | None, float],
    socket_path: Path | None,
    activated: list[tuple[int, str]],
    saved_mask: Iterable[int],
) -> Stop:
    """`_listen_and_serve`, removing the socket file on every exit after the bind, clean
    (a signal) or not (an error), except when luod re-execs itself: then the socket,
    systemd's or its own, goes on listening in the next process. A second signal while it shuts
    down lands in the outer receiver, which nobody reads: the cleanup finishes instead of
    dying half-way."""
    bound: list[UnixListener] = []
    stop: Stop | None = None
    with trio.open_signal_receiver(*_SHUTDOWN_SIGNALS):
        try:
            stop = await _listen_and_serve(
                log, args, host, records, handover, socket_path, activated, saved_mask, bound
            )
            if stop.how == "exec":
                # Duplicates: the listener's own fd closes with it once trio.run is over.
                own = [(bound[0].listener.socket.fileno(), OWN_SOCKET_FD_NAME)]
                stop.sockets = [(os.dup(fd), name) for fd, name in activated or own]
            return stop
        finally:
            if stop is None or stop.how != "exec":
                for listener in bound:
                    listener.close()


async def _listen_and_serve(
    log: FilteringBoundLogger,
    args: argparse.Namespace,
    host: Host,
    records: RunRecords,
    handover: tuple[dict[str, Any] | None, float],
    socket_path: Path | None,
    activated: list[tuple[int, str]],
    saved_mask: Iterable[int],
    bound: list[UnixListener],
) -> Stop:
    """The trio main: listen, serve, report readiness, stop cleanly on a signal, or hand
    the machine over for a restart (`luod.daemon.restart`). The listener goes into `bound`
    as soon as it exists, for `_serve` to close."""
    from luod.daemon.restart import Stop, resume, wait_for_stop  # heavy: the model

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
            return Stop("stop", code=1)
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
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, daemon, listener.listener)
            blob, restore_ms = handover
            if blob is not None:  # before any request runs: the restart's record comes first
                resume(daemon, blob, restore_ms)
            kernel = host.kernel
            log.info(
                "machine_up",
                ram=format_size(args.ram),
                release=kernel.release,
                boot=kernel.boot_report.kind,
                socket=str(listener.path) if listener.path else "activated",
                previous_boot_unclean=records.previous_unclean,
            )
            sdnotify.ready(f"running {kernel.release} ({kernel.state})")
            interval = sdnotify.watchdog_interval()
            if interval:
                nursery.start_soon(_watchdog, interval)
            stop = await wait_for_stop(daemon, signals, keep_on_sigterm=args.restart_keeps_machine)
            log.info("shutdown", signal=stop.signal, keeps_machine=stop.how != "stop")
            sdnotify.stopping()
            nursery.cancel_scope.cancel()
        if stop.how == "stop":
            records.stop()
        elif stop.how == "exec":
            records.stop(restart={"update_id": stop.update_id, "at": time.time()})
    return stop
