"""luod's command line (CLI.md, "luod (the daemon)"): every flag, its type and its default.

Every value is parsed and validated here, so that a bad one is a usage error (exit 2)
before anything boots; `luod.daemon.main` runs what this parses.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from luod import __version__
from luod.daemon.access import AdminGroup, resolve_group
from luod.daemon.admission import DEFAULT_HELLO_TIMEOUT, DEFAULT_PER_UID
from luod.daemon.logging import LOG_FORMATS, LOG_LEVELS
from luod.units import format_size, parse_size

__all__ = ["HUGETLB_PAGE_SIZES", "build_parser", "parse_admin_group", "parse_hugetlb", "parse_ram"]

PAGE_SIZE: Final = 4096
DEFAULT_RAM: Final = "64G"
DEFAULT_HUGETLB: Final = "2M=2048,1G=16"
HUGETLB_PAGE_SIZES: Final[tuple[int, ...]] = (2 << 20, 1 << 30)
LIMITS: Final = ("unlimited", "6.19")

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
        "--restart-keeps-machine",
        action="store_true",
        help=(
            "SIGTERM restarts luod without losing the machine: sessions are handed over as "
            "for a kexec and kept in --state-dir or systemd's fd store for the next start"
        ),
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
