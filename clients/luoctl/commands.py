"""One function per `luoctl` command: arguments in, the daemon's result out.

Each function builds the method's params (`luod/ipc/methods.py` is the contract), calls
it and returns an `Outcome` whose document is what `--json` prints: the daemon's result,
passed through with every key it has, reshaped only where CLI.md says so (`kernel list`
and `session list` print a list) and completed with the request's own values where a
result would otherwise lack a key CLI.md promises (e.g. `check`'s `target`).

The fd-carrying commands live in `memfd`, the streaming one in `events`, the long ones
with progress in `progress`; `COMMANDS` at the end maps every command key to its function.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any, Final

from luoctl.context import Context, Outcome
from luoctl.events import events
from luoctl.exitcodes import ExitCode
from luoctl.kho import kho_dump
from luoctl.memfd import memfd_preserve, memfd_retrieve
from luoctl.plans import load_plan
from luoctl.progress import call_with_progress
from luod.ipc.fdpass import close_fds

__all__ = ["COMMANDS", "Command"]

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


COMMANDS: Final[dict[str, Command]] = {
    "status": status,
    "kernel.list": kernel_list,
    "kernel.show": kernel_show,
    "kernel.matrix": kernel_matrix,
    "kernel.write": kernel_write,
    "load": load,
    "session.create": session_create,
    "session.list": session_list,
    "session.show": session_show,
    "session.close": session_close,
    "session.retrieve": session_retrieve,
    "session.finish": session_finish,
    "memfd.preserve": memfd_preserve,
    "memfd.retrieve": memfd_retrieve,
    "file.unpreserve": file_unpreserve,
    "file.retrieve": file_retrieve,
    "file.reclaim": file_reclaim,
    "apply": apply,
    "check": check,
    "prepare": _global_event("prepare"),
    "freeze": _global_event("freeze"),
    "cancel": _global_event("cancel"),
    "finish": _global_event("finish"),
    "kexec": kexec,
    "update": update,
    "boot.cold": boot_cold,
    "fault.list": fault_list,
    "fault.arm": fault_arm,
    "fault.clear": fault_clear,
    "events": events,
    "device.list": device_list,
    "kho.dump": kho_dump,
}
"""Command key (`args.run`, set by `cli`) to its function."""
