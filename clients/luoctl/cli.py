"""The `luoctl` argument parser: global options and one subparser per command of CLI.md.

Owns names, flags, help texts and client-side validation (through `luod.cli.argtypes`), nothing
else: every leaf parser records its command key in `args.run` (the daemon method it maps
to, e.g. `"session.create"`), and `commands.COMMANDS` maps the key to the code.

The argparse machinery under it (usage errors as values, `--json` after the command too,
leaf commands that record their key) is `luoctl.argtree`.
"""

from __future__ import annotations

import argparse

from luoctl.argtree import CommandTree, Parser, token_option
from luod import __version__
from luod.cli import argtypes
from luod.ipc.limits import DEFAULT_TIMEOUT

__all__ = ["Parser", "build_parser"]

_EPILOG = """\
Socket: --socket, else $LUOD_SOCKET, else /run/luod/luod.sock for root, else
$XDG_RUNTIME_DIR/luod/luod.sock. Tokens are integers, decimal or 0x hex. Sizes accept
4096, 64K, 2M, 1G, 1T. A TARGET is a bundled release string or an image file path.

Exit status: 0 success, 1 the daemon refused or the operation failed, 2 usage error,
3 incompatible target (check, update, kexec, load), 69 daemon unreachable,
77 not permitted (socket permissions, another uid's session), 130 interrupted.
"""


def _add_kernel(tree: CommandTree, sub: argparse._SubParsersAction[Parser]) -> None:
    kernel = tree.group(sub, "kernel", "the bundled kernel images and the write switches")
    tree.leaf(kernel, "list", "kernel.list", "list the bundled kernel images, oldest first")
    show = tree.leaf(kernel, "show", "kernel.show", "show one image's format catalog")
    show.add_argument("target", metavar="TARGET", help="release string or image file path")
    matrix = tree.leaf(
        kernel,
        "matrix",
        "kernel.matrix",
        "which kernel pairs can update into each other, per object type",
        "For every ordered pair of the bundled releases (plus the TARGETs given: releases "
        "or image files), whether a kernel of the first can hand each object type to the "
        "second, and in which format: the supported upgrade and rollback paths.",
    )
    matrix.add_argument(
        "targets", nargs="*", metavar="TARGET", help="more images to include (image files)"
    )
    write = tree.leaf(
        kernel,
        "write",
        "kernel.write",
        "switch writing one format on or off in the running kernel",
        "Switch the running kernel's write switch for one format; negotiation at the "
        "next prepare honours it.",
    )
    write.add_argument("format", metavar="FORMAT", help="a compatible string, e.g. memfd-v2")
    write.add_argument("switch", choices=["on", "off"], help="on or off")


def _add_session(tree: CommandTree, sub: argparse._SubParsersAction[Parser]) -> None:
    session = tree.group(sub, "session", "create, inspect, close, retrieve and finish sessions")
    create = tree.leaf(
        session, "create", "session.create", "create an outgoing session held for your uid"
    )
    create.add_argument("name", metavar="NAME", help="the session's name")
    tree.leaf(session, "list", "session.list", "list the sessions you may see, with their files")
    show = tree.leaf(session, "show", "session.show", "show one session with its files")
    show.add_argument("name", metavar="NAME", help="the session's name")
    show.add_argument(
        "--direction",
        choices=["outgoing", "incoming"],
        help="which list to look in (default: outgoing first, then incoming)",
    )
    close = tree.leaf(
        session,
        "close",
        "session.close",
        "outgoing: unpreserve every file (newest first) and drop the session",
    )
    close.add_argument("name", metavar="NAME", help="the session's name")
    retrieve = tree.leaf(
        session, "retrieve", "session.retrieve", "incoming: claim the session (once)"
    )
    retrieve.add_argument("name", metavar="NAME", help="the session's name")
    finish = tree.leaf(
        session,
        "finish",
        "session.finish",
        "incoming: finish the session (unretrieved files are discarded)",
    )
    finish.add_argument("name", metavar="NAME", help="the session's name")


def _add_memfd(tree: CommandTree, sub: argparse._SubParsersAction[Parser]) -> None:
    memfd = tree.group(sub, "memfd", "preserve a memfd, or retrieve one after a kexec")
    preserve = tree.leaf(
        memfd,
        "preserve",
        "memfd.preserve",
        "preserve a memfd holding a copy of FILE's bytes (or of an inherited memfd)",
        "Make an emulated memfd with a copy of FILE's bytes (or of inherited fd N, which "
        "must be a memfd; its seals are copied too) and preserve it in SESSION.",
    )
    preserve.add_argument("session", metavar="SESSION", help="an outgoing session")
    token_option(preserve)
    source = preserve.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from", dest="from_file", metavar="FILE", help="a regular file to copy (read-only)"
    )
    source.add_argument(
        "--fd", type=argtypes.inherited_memfd, metavar="N", help="an inherited memfd to copy"
    )
    preserve.add_argument(
        "--size",
        type=argtypes.size,
        metavar="SIZE",
        help="truncate or extend the copy to SIZE (default: the source's size)",
    )
    preserve.add_argument(
        "--seal",
        dest="seals",
        type=argtypes.seal_list,
        action="extend",
        default=[],
        metavar="LIST",
        help=f"seals to add, comma list of {', '.join(argtypes.SEALS)} (repeatable)",
    )
    preserve.add_argument("--name", help="the memfd's name (default: chosen by luod)")
    preserve.add_argument(
        "--page-size",
        type=argtypes.size,
        metavar="SIZE",
        help="4K (default), or 2M / 1G for a hugetlb memfd from the daemon's pools",
    )
    retrieve = tree.leaf(
        memfd,
        "retrieve",
        "memfd.retrieve",
        "after a kexec: retrieve a memfd and write its bytes to FILE",
        "Retrieve a memfd of an incoming session and copy its bytes to FILE (created or "
        "truncated). Without --output the bytes go to stdout unless it is a terminal or "
        "--json is given; the sha256 of the content is reported either way.",
    )
    retrieve.add_argument("session", metavar="SESSION", help="an incoming session")
    token_option(retrieve)
    retrieve.add_argument("--output", "-o", metavar="FILE", help="where to write the bytes")


def _add_file(tree: CommandTree, sub: argparse._SubParsersAction[Parser]) -> None:
    file = tree.group(sub, "file", "unpreserve or retrieve one file of any type")
    unpreserve = tree.leaf(
        file,
        "unpreserve",
        "file.unpreserve",
        "outgoing: unpreserve one file (refused while others depend on it)",
    )
    unpreserve.add_argument("session", metavar="SESSION", help="an outgoing session")
    token_option(unpreserve)
    retrieve = tree.leaf(file, "retrieve", "file.retrieve", "incoming: retrieve any file type")
    retrieve.add_argument("session", metavar="SESSION", help="an incoming session")
    token_option(retrieve)
    reclaim = tree.leaf(
        file,
        "reclaim",
        "file.reclaim",
        "incoming iommufd: re-create its IOAS mappings from the retrieved memfds and have the "
        "kernel verify them against the preserved page tables and adopt them (finish is "
        "vetoed until then)",
    )
    reclaim.add_argument("session", metavar="SESSION", help="an incoming session")
    token_option(reclaim)
    apply = tree.leaf(
        sub,
        "apply",
        "apply",
        "create the objects of a plan (JSON or TOML) and preserve them in the plan's order; "
        "the first violation releases everything the plan made (exit 1, both objects named)",
    )
    apply.add_argument("plan", metavar="PLAN", help="a .toml or .json plan file (see CLI.md)")


def _add_update(tree: CommandTree, sub: argparse._SubParsersAction[Parser]) -> None:
    check = tree.leaf(
        sub,
        "check",
        "check",
        "can everything preserved now be handed to TARGET? (exit 3 if not)",
    )
    check.add_argument("--to", dest="target", required=True, metavar="TARGET", help="the kernel")
    load = tree.leaf(sub, "load", "load", "stage the next kernel (refused after prepare)")
    load.add_argument("target", metavar="TARGET", help="release string or image file path")
    load.add_argument(
        "--force", action="store_true", help="stage it even if it cannot read what is preserved"
    )
    for name, help in (
        ("prepare", "global prepare (with nothing loaded, stages the running release first)"),
        ("freeze", "global freeze: nothing preserved may change until the kexec"),
        ("cancel", "cancel a prepare or freeze: every file is usable again"),
        ("finish", "finish every incoming session"),
    ):
        tree.leaf(sub, name, name, help)
    kexec = tree.leaf(
        sub, "kexec", "kexec", "simulated kexec from FROZEN into the loaded (or given) image"
    )
    kexec.add_argument("--to", dest="target", metavar="TARGET", help="the kernel to boot")
    kexec.add_argument("--force", action="store_true", help="skip the compatibility check")
    update = tree.leaf(
        sub,
        "update",
        "update",
        "load, check, prepare, freeze and kexec in one go; cancels everything on failure",
        "Load TARGET, check it, prepare, freeze and kexec in one go, with the participants' "
        "barrier; any failure cancels everything. Waits as long as the phases' deadlines "
        "allow (the global --timeout only bounds connecting).",
    )
    update.add_argument("--to", dest="target", required=True, metavar="TARGET", help="the kernel")
    update.add_argument(
        "--timeout",
        dest="update_timeout",
        type=argtypes.seconds,
        metavar="SECONDS",
        help="the update's own deadline, passed to luod (default: the daemon's)",
    )
    update.add_argument("--force", action="store_true", help="skip the compatibility check")
    boot = tree.leaf(
        sub,
        "boot",
        "boot.cold",
        "power-cycle the emulated machine: all memory is lost",
        "Power-cycle the emulated machine (the way out of a panic). All memory, preserved "
        "or not, is lost; --cold is required to say you mean it.",
    )
    boot.add_argument("--cold", action="store_true", required=True, help="a cold boot (required)")
    boot.add_argument(
        "--kernel", dest="target", metavar="TARGET", help="the kernel to boot (default: luod's)"
    )


def _add_fault(tree: CommandTree, sub: argparse._SubParsersAction[Parser]) -> None:
    fault = tree.group(
        sub,
        "fault",
        "fault injection for testing clients (luod must run with --enable-faults)",
    )
    tree.leaf(
        fault,
        "list",
        "fault.list",
        "every fault point, before or after the kexec, what a fault there does, what is armed",
    )
    arm = tree.leaf(
        fault,
        "arm",
        "fault.arm",
        "arm a fault point: the next hit (or COUNT hits) fails with ERRNO",
        "Arm POINT (see `luoctl fault list`): its next COUNT hits whose subject matches "
        "--match fail with ERRNO. Before the kexec such a failure cancels the update and "
        "leaves everything as it was; after it, the damage is reported per session and file.",
    )
    arm.add_argument("point", metavar="POINT", help="a fault point, e.g. handler.prepare")
    times = arm.add_mutually_exclusive_group()
    times.add_argument(
        "--count",
        type=argtypes.positive_int,
        default=1,
        metavar="N",
        help="fire at the next N matching hits (default 1)",
    )
    times.add_argument(
        "--always", action="store_true", help="fire at every matching hit until cleared"
    )
    arm.add_argument(
        "--errno", default="EIO", metavar="ERRNO", help="the errno to fail with (default EIO)"
    )
    arm.add_argument(
        "--match",
        metavar="SUBJECT",
        help="only hits on this subject: a file type, a session, SESSION/TOKEN, a release",
    )
    clear = tree.leaf(fault, "clear", "fault.clear", "disarm POINT, or every point")
    clear.add_argument("point", nargs="?", metavar="POINT", help="the point (default: all)")


def _add_machine(tree: CommandTree, sub: argparse._SubParsersAction[Parser]) -> None:
    device = tree.group(sub, "device", "the emulated machine's PCI devices")
    tree.leaf(
        device,
        "list",
        "device.list",
        "list PCI devices (BDF, power, interrupts, DMA, holder) and hugetlb pools",
        "List the machine's PCI devices: BDF, power state, interrupts, whether DMA runs, "
        "and the session and token holding each; then the hugetlb pools. These are the "
        "BDFs and page sizes a plan may name.",
    )
    kho = tree.group(sub, "kho", "the Kexec HandOver blob")
    dump = tree.leaf(
        kho,
        "dump",
        "kho.dump",
        "write the KHO root blob (a device tree) to FILE or stdout",
        "Write the KHO root blob, the flattened device tree the next kernel reads: the "
        "outgoing one once an update has frozen, else the one the running kernel booted "
        "from. Bytes go to --output, else to stdout when it is not a terminal: "
        "`luoctl kho dump | dtc -I dtb -O dts` shows it as text.",
    )
    dump.add_argument("--output", "-o", metavar="FILE", help="write the blob to FILE")
    which = dump.add_mutually_exclusive_group()
    which.add_argument(
        "--outgoing",
        dest="source",
        action="store_const",
        const="outgoing",
        help="only the handover written at freeze for the next kernel",
    )
    which.add_argument(
        "--incoming",
        dest="source",
        action="store_const",
        const="incoming",
        help="only the handover the running kernel booted from",
    )


def build_parser() -> Parser:
    """The whole `luoctl` parser."""
    parser = Parser(
        prog="luoctl",
        description="Command-line client of luod, the emulated live-update daemon.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--socket", metavar="PATH", help="the daemon's socket (see below)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print exactly one JSON document on stdout (errors too); events: one per line",
    )
    parser.add_argument(
        "--timeout",
        type=argtypes.seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="bound connecting and each reply (default 30; update and kexec wait longer)",
    )
    tree = CommandTree()
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    tree.leaf(
        sub,
        "status",
        "status",
        "machine, kernel, LUO state, sessions, participants, last update",
    )
    _add_kernel(tree, sub)
    _add_session(tree, sub)
    _add_memfd(tree, sub)
    _add_file(tree, sub)
    _add_update(tree, sub)
    _add_fault(tree, sub)
    _add_machine(tree, sub)
    events = tree.leaf(
        sub,
        "events",
        "events",
        "daemon events, one JSON object per line",
        "Print daemon events, one JSON object per line. Without --follow: the daemon's "
        'recent events, then exit. With --follow: a {"event": "subscribed"} line, then '
        "every event as it happens until interrupted.",
    )
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    return parser
