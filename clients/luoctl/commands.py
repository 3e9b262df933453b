"""One function per `luoctl` command: arguments in, the daemon's result out.

Each function builds the method's params (`luod.ipc.methods` is the contract), calls
it and returns an `Outcome` whose document is what `--json` prints: the daemon's result,
passed through with every key it has, reshaped only where CLI.md says so (`kernel list`
and `session list` print a list) and completed with the request's own values where a
result would otherwise lack a key CLI.md promises (e.g. `check`'s `target`).

The fd-carrying commands live in `memfd`, the streaming one in `events`, the long ones
with progress in `progress`. `COMMANDS` at the end maps every command key to its entry:
the `METHODS` entry it calls (so a command for a method luod lacks fails at import), its
function, and its human renderer (`human_machine`, `human_sessions`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from luoctl import human_machine as hm
from luoctl import human_sessions as hs
from luoctl.context import Context, Outcome
from luoctl.events import events
from luoctl.human import Renderer, generic
from luoctl.kho import kho_dump
from luoctl.memfd import memfd_preserve, memfd_retrieve
from luoctl.plans import load_plan
from luoctl.progress import call_with_progress
from luod.cli.exitcodes import ExitCode
from luod.ipc.fdpass import close_fds
from luod.ipc.method_table import MethodSpec
from luod.ipc.methods import METHODS

__all__ = ["COMMANDS", "Command", "CommandEntry", "render"]

Command = Callable[[Context, argparse.Namespace], Outcome]


def request(ctx: Context, method: str, params: Mapping[str, object] | None = None) -> Any:
    """Call `method` and return its result. None of these methods sends fds back; close
    any that arrive all the same rather than leak them."""
    reply = ctx.link.call(method, params)
    close_fds(reply.fds)
    return reply.result


def merged(defaults: Mapping[str, object], result: object) -> object:
    """`result` with `defaults` for the keys it lacks (the daemon's values win). A result
    that is not a map is passed through untouched: never hide what the daemon said."""
    if isinstance(result, Mapping):
        return {**defaults, **result}
    return dict(defaults) if result is None else result


def listed(result: object, key: str) -> object:
    """The list under `key` of a `{key: [...]}` result (a bare list passes through)."""
    if isinstance(result, Mapping) and isinstance(result.get(key), list):
        return result[key]
    return result


# --- machine and kernels --------------------------------------------------------------------


def status(ctx: Context, args: argparse.Namespace) -> Outcome:
    return Outcome(request(ctx, "status"))


def kernel_list(ctx: Context, args: argparse.Namespace) -> Outcome:
    # CLI.md: `kernel list` prints a list of images, oldest first (the daemon's order).
    return Outcome(listed(request(ctx, "kernel.list"), "images"))


def kernel_show(ctx: Context, args: argparse.Namespace) -> Outcome:
    return Outcome(request(ctx, "kernel.show", {"target": args.target}))


def kernel_matrix(ctx: Context, args: argparse.Namespace) -> Outcome:
    return Outcome(request(ctx, "kernel.matrix", {"targets": list(args.targets)}))


def kernel_write(ctx: Context, args: argparse.Namespace) -> Outcome:
    params = {"format": args.format, "enabled": args.switch == "on"}
    return Outcome(merged(params, request(ctx, "kernel.write", params)))


def load(ctx: Context, args: argparse.Namespace) -> Outcome:
    params = {"target": args.target, "force": args.force}
    return Outcome(request(ctx, "load", params))


def boot_cold(ctx: Context, args: argparse.Namespace) -> Outcome:
    return Outcome(request(ctx, "boot.cold", {"target": args.target}))


def daemon_restart(ctx: Context, args: argparse.Namespace) -> Outcome:
    return Outcome(call_with_progress(ctx, "daemon.restart", {}))


# --- sessions and files ---------------------------------------------------------------------


def session_create(ctx: Context, args: argparse.Namespace) -> Outcome:
    return Outcome(merged({"name": args.name}, request(ctx, "session.create", {"name": args.name})))


def session_list(ctx: Context, args: argparse.Namespace) -> Outcome:
    # A list of session objects, like `kernel list` (the daemon wraps it in {sessions}).
    return Outcome(listed(request(ctx, "session.list"), "sessions"))


def session_show(ctx: Context, args: argparse.Namespace) -> Outcome:
    params: dict[str, object] = {"name": args.name}
    if args.direction is not None:
        params["direction"] = args.direction
    return Outcome(request(ctx, "session.show", params))


def session_close(ctx: Context, args: argparse.Namespace) -> Outcome:
    return Outcome(merged({"name": args.name}, request(ctx, "session.close", {"name": args.name})))


def session_retrieve(ctx: Context, args: argparse.Namespace) -> Outcome:
    result = request(ctx, "session.retrieve", {"name": args.name})
    return Outcome(merged({"name": args.name}, result))


def session_finish(ctx: Context, args: argparse.Namespace) -> Outcome:
    result = request(ctx, "session.finish", {"name": args.name})
    return Outcome(merged({"name": args.name}, result))


def file_unpreserve(ctx: Context, args: argparse.Namespace) -> Outcome:
    params = {"session": args.session, "token": args.token}
    return Outcome(merged(params, request(ctx, "file.unpreserve", params)))


def file_retrieve(ctx: Context, args: argparse.Namespace) -> Outcome:
    params = {"session": args.session, "token": args.token}
    return Outcome(merged(params, request(ctx, "file.retrieve", params)))


def file_reclaim(ctx: Context, args: argparse.Namespace) -> Outcome:
    params = {"session": args.session, "token": args.token}
    return Outcome(merged(params, request(ctx, "file.reclaim", params)))


def apply(ctx: Context, args: argparse.Namespace) -> Outcome:
    plan = load_plan(args.plan)
    return Outcome(request(ctx, "apply", {"plan": plan}))


def device_list(ctx: Context, args: argparse.Namespace) -> Outcome:
    return Outcome(request(ctx, "device.list"))


# --- the update -----------------------------------------------------------------------------


def check(ctx: Context, args: argparse.Namespace) -> Outcome:
    document = merged({"target": args.target}, request(ctx, "check", {"target": args.target}))
    incompatible = isinstance(document, Mapping) and document.get("compatible") is False
    return Outcome(document, code=ExitCode.INCOMPATIBLE if incompatible else ExitCode.OK)


def _global_event(method: str) -> Command:
    def run(ctx: Context, args: argparse.Namespace) -> Outcome:
        return Outcome(request(ctx, method))

    run.__name__ = run.__qualname__ = method
    run.__doc__ = f"The global `{method}` event."
    return run


def kexec(ctx: Context, args: argparse.Namespace) -> Outcome:
    params = {"target": args.target, "force": args.force}
    return Outcome(call_with_progress(ctx, "kexec", params))


def update(ctx: Context, args: argparse.Namespace) -> Outcome:
    params = {"target": args.target, "timeout": args.update_timeout, "force": args.force}
    return Outcome(call_with_progress(ctx, "update", params))


# --- fault injection -------------------------------------------------------------------------


def fault_list(ctx: Context, args: argparse.Namespace) -> Outcome:
    return Outcome(request(ctx, "fault.list"))


def fault_arm(ctx: Context, args: argparse.Namespace) -> Outcome:
    params = {
        "point": args.point,
        "count": None if args.always else args.count,
        "errno": args.errno,
        "match": args.match,
    }
    return Outcome(merged(params, request(ctx, "fault.arm", params)))


def fault_clear(ctx: Context, args: argparse.Namespace) -> Outcome:
    params = {"point": args.point}
    return Outcome(merged(params, request(ctx, "fault.clear", params)))


@attrs.frozen
class CommandEntry:
    """One `luoctl` command: the method table entry it calls (`luod.ipc.methods`), the
    code that runs it, and the renderer of its document without `--json` (None: the
    command prints its own lines)."""

    method: MethodSpec
    run: Command
    render: Renderer | None


def _entry(method: str, run: Command, render: Renderer | None) -> CommandEntry:
    return CommandEntry(METHODS[method], run, render)  # KeyError: not a method of luod


COMMANDS: Final[dict[str, CommandEntry]] = {
    "status": _entry("status", status, hm.status),
    "kernel.list": _entry("kernel.list", kernel_list, hm.kernel_list),
    "kernel.show": _entry("kernel.show", kernel_show, hm.kernel_show),
    "kernel.matrix": _entry("kernel.matrix", kernel_matrix, hm.kernel_matrix),
    "kernel.write": _entry("kernel.write", kernel_write, hm.kernel_write),
    "load": _entry("load", load, hm.load),
    "session.create": _entry("session.create", session_create, hs.session),
    "session.list": _entry("session.list", session_list, hs.session_list),
    "session.show": _entry("session.show", session_show, hs.session),
    "session.close": _entry("session.close", session_close, hs.done("closed")),
    "session.retrieve": _entry("session.retrieve", session_retrieve, hs.session),
    "session.finish": _entry("session.finish", session_finish, hs.done("finished")),
    "memfd.preserve": _entry("memfd.preserve", memfd_preserve, hs.memfd_preserve),
    "memfd.retrieve": _entry("memfd.retrieve", memfd_retrieve, hs.memfd_retrieve),
    "file.unpreserve": _entry("file.unpreserve", file_unpreserve, hs.file_unpreserve),
    "file.retrieve": _entry("file.retrieve", file_retrieve, hs.file_retrieve),
    "file.reclaim": _entry("file.reclaim", file_reclaim, hs.file_reclaim),
    "apply": _entry("apply", apply, hs.apply),
    "check": _entry("check", check, hm.check),
    "prepare": _entry("prepare", _global_event("prepare"), hm.state),
    "freeze": _entry("freeze", _global_event("freeze"), hm.state),
    "cancel": _entry("cancel", _global_event("cancel"), hm.state),
    "finish": _entry("finish", _global_event("finish"), hm.state),
    "kexec": _entry("kexec", kexec, hm.update),
    "update": _entry("update", update, hm.update),
    "boot.cold": _entry("boot.cold", boot_cold, hm.boot_cold),
    "fault.list": _entry("fault.list", fault_list, hm.fault_list),
    "fault.arm": _entry("fault.arm", fault_arm, hm.fault_arm),
    "fault.clear": _entry("fault.clear", fault_clear, hm.fault_clear),
    "events": _entry("events.subscribe", events, None),  # prints JSON lines itself
    "device.list": _entry("device.list", device_list, hm.device_list),
    "kho.dump": _entry("kho.dump", kho_dump, hm.kho_dump),
    "daemon.restart": _entry("daemon.restart", daemon_restart, hm.daemon_restart),
}
"""Command key (`args.run`, set by `cli`) to its entry."""


def render(command: str, document: object) -> list[str]:
    """The human lines for `command`'s document (generic `key: value` lines if it has no
    renderer of its own)."""
    renderer = COMMANDS[command].render if command in COMMANDS else None
    return renderer(document) if renderer is not None else generic(document)
