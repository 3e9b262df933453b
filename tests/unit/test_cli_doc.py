"""docs/cli.md and the real argument parsers agree, both ways.

Every command and flag the page lists exists in the program's argparse parser, and every
command and flag of the parsers is on the page. The page gives each command a `###`
heading that names it in backticks (`` `luoctl memfd preserve` ``; several in one heading
when they share a section); a command's flags are every `-x` / `--name` written in its
section, up to the next heading. `-h`/`--help`, which every parser has, is documented once
at the top of the page. The exit-status table lists exactly the members of `ExitCode`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

import luod.daemon.main
import luod_run.main
import luod_vmm.main
from luoctl.cli import build_parser as luoctl_parser
from luod.cli.exitcodes import ExitCode

DOC = Path(__file__).resolve().parents[2] / "docs/cli.md"

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "luod": luod.daemon.main.build_parser,
    "luoctl": luoctl_parser,
    "luod-vmm": luod_vmm.main.build_parser,
    "luod-run": luod_run.main.build_parser,
}
TOOLS = set(PARSERS)

# Announced on the page (marked "not available yet" there) but not built. Whoever builds
# one removes it here, and adds a new program's parser to PARSERS; the test fails until
# they do, so these sets never name something that exists.
NOT_BUILT = {"luoctl daemon restart"}
NOT_BUILT_FLAGS: dict[str, set[str]] = {}

EVERYWHERE = {"-h", "--help"}
# luoctl's commands repeat the global --json (so it may follow the command); the page
# documents it once, with the global options.
INHERITED = {"luoctl": {"--json"}}

_FLAG = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")


def documented() -> dict[str, set[str]]:
    """Command ("luoctl memfd preserve") -> the flags written in its section."""
    found: dict[str, set[str]] = {}
    current: list[str] = []
    in_code = False
    for line in DOC.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            spans = re.findall(r"`([^`]+)`", line) if line.startswith("### ") else []
            current = [s for s in spans if s.split()[0] in TOOLS]
            for command in current:
                assert command not in found, f"{command!r} has two sections"
                found[command] = set()
            continue
        words = line
        if in_code:  # `luoctl kho dump | dtc -I dtb`: dtc's flags are not luoctl's
            first, *piped = line.split("|")
            words = "|".join([first, *(p for p in piped if p.split()[:1] in ([t] for t in TOOLS))])
        for command in current:
            found[command].update(_FLAG.findall(words))
    return found


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    children: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            children.update(action.choices)
    return children


def implemented() -> dict[str, set[str]]:
    """Command -> its flags, for each program and each of its commands. A command group
    (`luoctl session`) counts only if it has flags of its own."""
    found: dict[str, set[str]] = {}

    def walk(name: str, parser: argparse.ArgumentParser, root: bool) -> None:
        flags = {opt for action in parser._actions for opt in action.option_strings}
        children = _subparsers(parser)
        if root or not children or flags - EVERYWHERE:
            found[name] = flags
        for word, child in children.items():
            walk(f"{name} {word}", child, root=False)

    for tool, build in PARSERS.items():
        walk(tool, build(), root=True)
    return found


def test_every_command_on_the_page_exists_and_every_command_is_on_the_page() -> None:
    doc, real = documented(), implemented()
    assert set(doc) - set(real) == NOT_BUILT, "on the page but not in the parsers"
    assert set(real) - set(doc) == set(), "in the parsers but not on the page"


def test_every_flag_on_the_page_exists_and_every_flag_is_on_the_page() -> None:
    doc, real = documented(), implemented()
    for command in sorted(set(doc) & set(real)):
        tool = command.split()[0]
        inherited = INHERITED.get(tool, set()) if command != tool else set()
        unknown = doc[command] - real[command]
        assert unknown == NOT_BUILT_FLAGS.get(command, set()), (
            f"{command}: the page lists flags the parser lacks: {sorted(unknown)}"
        )
        missing = real[command] - EVERYWHERE - inherited - doc[command]
        assert not missing, f"{command}: flags missing from the page: {sorted(missing)}"


def test_the_page_finds_the_commands_it_describes() -> None:
    # Guards the parsing above: a heading format change must not make both sides empty.
    doc = documented()
    assert {"luoctl", "luoctl memfd preserve", "luoctl finish", "luod", "luod-vmm run"} <= set(doc)
    assert {"--name", "--page-size", "--token", "-t"} <= doc["luoctl memfd preserve"]


def test_the_exit_status_table_is_the_enum() -> None:
    text = DOC.read_text()
    table = text[text.index("## Exit statuses") :].split("\n## ", 1)[0]
    statuses = {int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert statuses == {int(code) for code in ExitCode}
