"""The `luod-vmm` entry point: the command line of CLI.md ("luod-vmm"), output and exit
statuses.

    luod-vmm [--socket PATH] run NAME --memory SIZE [--page-size 4K|2M|1G] [--vfio N]
                                 [--guest-memfd] [--sparse] [--dma-rate RATE]
    luod-vmm [--socket PATH] resume NAME [--json] [--keep-running]

Owns parsing, the choice of streams (the ready line and resume's report on stdout, the
event log and errors on stderr, one line each) and turning failures into exit statuses
(`luod.cli.exitcodes.ExitCode`). The work is in `run` and `resume`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import trio

from luod import __version__
from luod.cli import argtypes
from luod.cli.exitcodes import ExitCode
from luod.ipc.async_client import open_client
from luod.ipc.errors import ProtocolError, RemoteError
from luod_vmm.errors import VmmError, exit_code_for
from luod_vmm.options import (
    DEFAULT_DMA_RATE,
    MAX_DMA_RATE,
    MAX_VFIO,
    PAGE_SIZES,
    ConfigError,
    VmmOptions,
)
from luod_vmm.report import ResumeReport
from luod_vmm.resume import resume_vmm
from luod_vmm.run import client_name, operate, run_vmm
from luod_vmm.sockets import resolve_socket

__all__ = ["build_parser", "main"]

PROG = "luod-vmm"
Log = Callable[[str], None]


def _page_size(text: str) -> int:
    size = PAGE_SIZES.get(text.strip().upper())
    if size is None:
        raise argparse.ArgumentTypeError(f"invalid page size {text!r}: choose 4K, 2M or 1G")
    return size


def _vfio(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = -1
    if not 0 <= count <= MAX_VFIO:
        raise argparse.ArgumentTypeError(f"invalid device count {text!r}: 0..{MAX_VFIO}")
    return count


def _rate(text: str) -> int:
    try:
        rate = int(text)
    except ValueError:
        rate = 0
    if not 0 < rate <= MAX_DMA_RATE:
        raise argparse.ArgumentTypeError(f"invalid DMA rate {text!r}: 1..{MAX_DMA_RATE}")
    return rate


def build_parser() -> argparse.ArgumentParser:
    """The `luod-vmm` argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Example VMM participant of luod: preserves guest state across a kexec.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="luod's socket (default: $LUOD_SOCKET, else /run/luod/luod.sock for root, "
        "else $XDG_RUNTIME_DIR/luod/luod.sock)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run",
        help="build and preserve a guest, then take part in updates until the kexec",
        description="Build guest RAM, an iommufd, vfio-pci devices doing DMA (and optionally "
        "a KVM VM with a guest_memfd), preserve them in session NAME, register as "
        "participant NAME and wait for an update. Exits 0 after the kexec, or after closing "
        "the session on SIGTERM.",
    )
    run.add_argument("name", metavar="NAME", help="VMM, session and participant name")
    run.add_argument(
        "--memory", metavar="SIZE", type=argtypes.size, required=True, help="guest RAM"
    )
    run.add_argument(
        "--page-size",
        metavar="4K|2M|1G",
        type=_page_size,
        default=4096,
        help="guest RAM page size; 2M and 1G take luod's hugetlb pages (default: 4K)",
    )
    run.add_argument(
        "--vfio", metavar="N", type=_vfio, default=1, help="vfio-pci devices (default: 1)"
    )
    run.add_argument(
        "--dma-rate",
        metavar="RATE",
        type=_rate,
        default=DEFAULT_DMA_RATE,
        help=f"DMA records per second per device (default: {DEFAULT_DMA_RATE})",
    )
    run.add_argument("--guest-memfd", action="store_true", help="add a KVM VM and a guest_memfd")
    run.add_argument(
        "--sparse", action="store_true", help="write one page in every 512; the rest stay holes"
    )
    resume = commands.add_parser(
        "resume",
        help="after the kexec: retrieve, verify and finish session NAME",
        description="Retrieve session NAME, reclaim its iommufd, verify every byte of guest "
        "memory and the devices' DMA, finish the session. Exits 0 only when verified.",
    )
    resume.add_argument("name", metavar="NAME")
    resume.add_argument("--json", action="store_true", help="print one JSON object")
    resume.add_argument(
        "--keep-running",
        action="store_true",
        help="once verified, build the guest again and wait for the next update, as run",
    )
    return parser


def _stdout(line: str) -> None:
    print(line, flush=True)


def _stderr(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        socket = resolve_socket(args.socket)
        if args.command == "run":
            options = VmmOptions(
                args.name,
                args.memory,
                page_size=args.page_size,
                vfio=args.vfio,
                guest_memfd=args.guest_memfd,
                sparse=args.sparse,
                dma_rate=args.dma_rate,
            )
            trio.run(run_vmm, socket, options, _stdout, _stderr)
            return ExitCode.OK
        return trio.run(_resume, socket, args.name, args.json, args.keep_running)
    except ConfigError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except (VmmError, RemoteError, ConnectionError, ProtocolError, OSError) as exc:
        if args.command == "resume" and args.json:
            report = ResumeReport(args.name)
            report.problem(str(exc))
            _stdout(json.dumps(report.as_json()))
        _stderr(str(exc))
        return exit_code_for(exc)


async def _resume(socket: str, name: str, as_json: bool, keep_running: bool) -> ExitCode:
    async with open_client(socket, client_name(name)) as client:
        report = await resume_vmm(client, name)
        if as_json:
            _stdout(json.dumps(report.as_json()))
        elif report.verified:
            _stdout(report.summary())
        if not report.verified:
            _stderr(report.summary())
            return ExitCode.FAILED
        if keep_running:
            assert report.options is not None
            # stdout holds exactly the one JSON object with --json: the ready line is a log
            await operate(client, socket, report.options, _stderr if as_json else _stdout, _stderr)
    return ExitCode.OK
