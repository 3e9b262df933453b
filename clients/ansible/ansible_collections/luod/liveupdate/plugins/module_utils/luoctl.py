"""How every module of luod.liveupdate talks to a host's luod: through `luoctl --json`.

Owns finding luoctl (in the module's own process when luod is installed for the Python
running it, else a luoctl binary), running one command against the daemon named by the
`socket` option, and turning luoctl's exit code and JSON error into one failure message
that names the host, the target and the cause. No module speaks luod's protocol itself:
luoctl's JSON output and exit codes (docs/protocol.md, README) are the contract.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket as socket_module
import sys
from typing import Any

# The options every module takes (documented once in the `connection` doc fragment).
CONNECTION_ARGS: dict[str, dict[str, Any]] = {
    "socket": {"type": "path"},
    "luoctl": {"type": "path"},
    "timeout": {"type": "float", "default": 30.0},
    "host": {"type": "str"},
}
# The options of the modules that take a TARGET (the `connection.target` doc fragment).
TARGET_ARGS: dict[str, dict[str, Any]] = {
    "target": {"type": "str", "required": True},
    "remote_src": {"type": "bool", "default": False},
}

# luoctl's exit codes (the CLI contract).
EXIT_REFUSED = 1
EXIT_INCOMPATIBLE = 3
EXIT_UNREACHABLE = 69
EXIT_NOT_PERMITTED = 77


def in_process() -> Any:
    """luoctl's `main(argv) -> int`, when the interpreter running the module has luod
    installed (then it is the luoctl next to that interpreter), else None."""
    try:
        from luoctl.main import main
    except ImportError:
        return None
    return main


def find_luoctl(module: Any) -> str:
    """The `luoctl` option, else the luoctl next to the interpreter running the module (a
    virtualenv's bin dir), else the first luoctl on PATH."""
    given = module.params.get("luoctl")
    if given:
        return str(given)
    beside = os.path.join(os.path.dirname(sys.executable), "luoctl")
    if os.access(beside, os.X_OK):
        return beside
    return str(module.get_bin_path("luoctl", required=True))


def cause(rc: int, doc: Any, stderr: str) -> str:
    """One line saying why a luoctl command failed, from its exit code and JSON error."""
    error = doc.get("error") if isinstance(doc, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    errno_name = error.get("errno") if isinstance(error, dict) else None
    text = message or stderr.strip() or f"luoctl exited {rc}"
    if rc == EXIT_UNREACHABLE:
        return f"luod unreachable: {text}"
    if rc == EXIT_NOT_PERMITTED:
        return f"not permitted (EPERM): {text}"
    if rc == EXIT_INCOMPATIBLE:
        if isinstance(doc, dict) and doc.get("problems"):
            return "target refused: " + "; ".join(problem_lines(doc["problems"]))
        return f"target refused: {text}"
    if errno_name:
        return f"{text} ({errno_name})"
    return text


def problem_lines(problems: list[dict[str, Any]]) -> list[str]:
    """A `check` report's problems, one readable line each, naming the object."""
    lines = []
    for problem in problems:
        where = problem.get("format") or "?"
        if problem.get("session") is not None:
            where = f"{problem['session']}/{problem.get('token')} ({where})"
        lines.append(f"{where}: {problem.get('reason')}")
    return lines


def damage_lines(damage: list[dict[str, Any]]) -> list[str]:
    """An update's `damage`, one readable line each: the session (and file), the step, and
    the first cause."""
    lines = []
    for entry in damage:
        where = str(entry.get("session"))
        if entry.get("token") is not None:
            where += f"/{entry['token']}"
        error = entry.get("error") or {}
        lines.append(f"{where} ({entry.get('step')}): {error.get('message')}")
    return lines


class LuoctlFailed(Exception):
    """A luoctl command exited non-zero; `rc` and `doc` are its exit code and JSON."""

    def __init__(self, rc: int, doc: Any, stderr: str) -> None:
        super().__init__(cause(rc, doc, stderr))
        self.rc = rc
        self.doc = doc
        self.stderr = stderr

    @property
    def error(self) -> dict[str, Any] | None:
        error = self.doc.get("error") if isinstance(self.doc, dict) else None
        return error if isinstance(error, dict) else None


class Luoctl:
    """One host's daemon, as the module's options name it."""

    def __init__(self, module: Any) -> None:
        self.module = module
        # The same CLI either way; in the module's own process it saves a Python start-up
        # (and its imports) per command, which is most of a task's time.
        self.main = None if module.params.get("luoctl") else in_process()
        self.binary = None if self.main else find_luoctl(module)
        self.socket: str | None = module.params.get("socket")
        self.timeout = float(module.params.get("timeout") or 30.0)
        self.host = module.params.get("host") or socket_module.gethostname()

    def run(self, *args: str) -> tuple[int, Any, str]:
        """Run `luoctl --json ARGS`; the exit code, the parsed document (or None), stderr."""
        argv = ["--json", "--timeout", str(self.timeout)]
        if self.socket:
            argv += ["--socket", self.socket]
        argv += args
        if self.main is not None:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = int(self.main(argv))
            stdout, stderr = out.getvalue(), err.getvalue()
        else:
            rc, stdout, stderr = self.module.run_command([self.binary, *argv])
        try:
            doc = json.loads(stdout) if stdout.strip() else None
        except ValueError:
            doc = None
        return rc, doc, stderr

    def call(self, *args: str) -> Any:
        """Run a command that must succeed; raises LuoctlFailed otherwise."""
        rc, doc, err = self.run(*args)
        if rc != 0:
            raise LuoctlFailed(rc, doc, err)
        return doc

    def status(self) -> dict[str, Any]:
        doc = self.call("status")
        if not isinstance(doc, dict):
            raise LuoctlFailed(EXIT_REFUSED, None, "luoctl status printed no JSON object")
        return doc

    def resolve(self, target: str) -> tuple[str, str]:
        """TARGET as luod should see it (an existing image file made absolute: the daemon's
        working directory is not the task's) and the release it stands for (luod's own
        answer, from `kernel show`)."""
        if os.path.exists(target):
            target = os.path.abspath(target)
        doc = self.call("kernel", "show", target)
        return target, str(doc["release"]) if isinstance(doc, dict) else target

    def check(self, target: str) -> dict[str, Any]:
        """`luoctl check --to TARGET`'s report, compatible or not."""
        rc, report, err = self.run("check", "--to", target)
        if rc not in (0, EXIT_INCOMPATIBLE) or not isinstance(report, dict):
            raise LuoctlFailed(rc, report, err)
        return report

    @property
    def where(self) -> str:
        return f"{self.host} ({self.socket or 'default socket'})"

    def fail(self, action: str, exc: LuoctlFailed, target: str | None = None, **extra: Any) -> None:
        """Fail the task with one message naming the host, the target and the cause."""
        to = f" to {target}" if target else ""
        self.module.fail_json(
            msg=f"{self.where}: {action}{to} failed: {exc}",
            rc=exc.rc,
            error=exc.error,
            report=exc.doc if isinstance(exc.doc, dict) else None,
            **extra,
        )

    def refuse(
        self, from_release: str, to_release: str, problems: list[dict[str, Any]], **extra: Any
    ) -> None:
        """Fail the task because TARGET cannot take the host's state, one line per problem."""
        lines = "; ".join(problem_lines(problems))
        self.module.fail_json(
            msg=f"{self.where}: {from_release} cannot go to {to_release}: target refused: {lines}",
            problems=problems,
            **extra,
        )
