"""Human rendering of command results: short lines for actions, tables for listings.

Owns the text `luoctl` prints without `--json`, one renderer per command key. Renderers
read documents defensively (`.get`, `-` for what is missing): the daemon may add, omit or
reshape keys beyond CLI.md's contract, and a missing key must never turn a success into a
traceback. The JSON document is the complete answer; this is the readable summary.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from luoctl.table import cell, table
from luod.units import format_size

__all__ = ["PHASES", "RENDERERS", "Renderer", "human_bytes", "inline", "render"]

Renderer = Callable[[Any], list[str]]

PHASES: Final = ("load", "check", "prepare", "freeze", "kexec", "restore")
"""The update's phase names in the order they run (CLI.md)."""


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def human_bytes(value: object) -> str:
    """`64G` when exact, else one decimal in the largest unit that fits (`1.5M`)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return cell(value)
    exact = format_size(value)
    if not exact.isdigit() or value < 1024:
        return exact
    for suffix, unit in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value >= unit:
            return f"{value / unit:.1f}{suffix}"
    return exact  # pragma: no cover - value >= 1024 always finds K


def inline(value: object) -> str:
    """A value on one line: maps as `k=v, ...`, lists comma-joined."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={inline(v)}" for k, v in value.items()) or "-"
    return cell(value)


def _ms(value: object) -> str:
    return f"{value:.1f} ms" if isinstance(value, int | float) else cell(value)


def _fields(pairs: list[tuple[str, object]]) -> list[str]:
    width = max(len(label) for label, _ in pairs) + 1
    return [f"{label + ':':<{width}} {inline(value)}" for label, value in pairs]


# --- machine and kernels --------------------------------------------------------------------


def _last_update(value: object) -> str:
    update = _map(value)
    if not update:
        return "-" if value is None else inline(value)
    text = f"{cell(update.get('from'))} -> {cell(update.get('to'))}"
    if "blackout_ms" in update:
        text += f", blackout {_ms(update['blackout_ms'])}"
    damage = _list(update.get("damage"))
    if damage:
        text += f", {len(damage)} damaged"
    return text


def _last_cancel(value: object) -> str:
    cancel = _map(value)
    error = _map(cancel.get("error"))
    return f"update to {cell(cancel.get('target'))}: {cell(error.get('message'))}"


def _files_summary(files: object) -> str:
    return ",".join(
        f"{cell(f.get('token'))}:{cell(f.get('type'))}" for f in map(_map, _list(files))
    )


def status(doc: Any) -> list[str]:
    doc = _map(doc)
    kernel = _map(doc.get("kernel"))
    machine = _map(doc.get("machine"))
    kernel_text = cell(kernel.get("release"))
    if "liveupdate_number" in kernel:
        kernel_text += f" (liveupdate number {kernel['liveupdate_number']})"
    pairs: list[tuple[str, object]] = [
        ("state", doc.get("state")),
        ("kernel", kernel_text),
        ("loaded", doc.get("loaded")),
    ]
    if machine:
        ram, resident = human_bytes(machine.get("ram")), human_bytes(machine.get("resident"))
        text = f"ram {ram}, resident {resident}"
        if "pci_devices" in machine:
            text += f", {machine['pci_devices']} PCI devices (luoctl device list)"
        pairs.append(("machine", text))
    if doc.get("blocking"):
        pairs.append(("blocking", doc["blocking"]))
    pairs.append(("last update", _last_update(doc.get("last_update"))))
    if doc.get("last_cancel"):
        pairs.append(("last cancel", _last_cancel(doc["last_cancel"])))
    lines = _fields(pairs)
    sessions = [_map(s) for s in _list(doc.get("sessions"))]
    lines.append("")
    if sessions:
        lines += table(
            ["SESSION", "DIRECTION", "FILES"],
            [[s.get("name"), s.get("direction"), _files_summary(s.get("files"))] for s in sessions],
        )
    else:
        lines.append("no sessions")
    participants = [_map(p) for p in _list(doc.get("participants"))]
    if participants:
        lines.append("")
        lines += table(
            ["PARTICIPANT", "STATE", "SESSIONS"],
            [[p.get("name"), p.get("state"), p.get("sessions")] for p in participants],
        )
    return lines


def kernel_list(doc: Any) -> list[str]:
    images = [_map(i) for i in _list(doc)]
    if not images:
        return ["no kernel images"]
    return table(["RELEASE", "SUMMARY"], [[i.get("release"), i.get("summary")] for i in images])


def kernel_show(doc: Any) -> list[str]:
    image = _map(doc)
    order = ["release", "summary", "source", "reads", "write", "profiles"]
    keys = [k for k in order if k in image] + [k for k in image if k not in order]
    return _fields([(k, image[k]) for k in keys]) if keys else [inline(doc)]


def _version(compatible: object) -> str:
    """`memfd-v3` -> `v3`, `kvm_vm_luo_v1` -> `v1`: a matrix cell shows the version only
    (the type is the column)."""
    text = cell(compatible)
    found = re.search(r"v\d+$", text)
    return found.group(0) if found else text


def _verdict(pair: Mapping[str, Any]) -> str:
    if pair.get("compatible"):
        return "yes"
    refused = _list(pair.get("refused"))
    return "no" if not refused or {"kho", "luo"} & set(refused) else "part"


def kernel_matrix(doc: Any) -> list[str]:
    """A FROM x TO grid of verdicts, then one row per ordered pair with the format version
    chosen per object type (`NO`: none fits; `-`: the source writes no such object) and,
    for a refused pair, the first reason."""
    doc = _map(doc)
    releases = [cell(r) for r in _list(doc.get("releases"))]
    types = [cell(t) for t in _list(doc.get("types"))]
    pairs = [_map(p) for p in _list(doc.get("pairs"))]
    if not pairs:
        return ["no kernel images"]
    verdict = {(cell(p.get("from")), cell(p.get("to"))): _verdict(p) for p in pairs}
    grid = [
        [source, *(verdict.get((source, target), "-") for target in releases)]
        for source in releases
    ]
    lines = [
        "Can a FROM kernel (row) update into TO (column)? yes: with every object type it",
        "writes; part: some types only (NO below); no: not even the KHO and LUO roots.",
        *table(["FROM \\ TO", *releases], grid),
    ]
    rows: list[list[object]] = []
    for pair in pairs:
        cells = _map(pair.get("types"))
        row: list[object] = [pair.get("from"), pair.get("to")]
        row.append(_verdict(pair))
        why: object = None
        for name in types:
            entry = _map(cells.get(name))
            if entry.get("reason") is None and entry.get("format"):
                row.append(_version(entry["format"]))
            elif not entry.get("writes", True):
                row.append("-")
            else:
                row.append("NO")
                why = why or entry.get("reason")
        rows.append([*row, why])
    return [*lines, "", *table(["FROM", "TO", "ALL", *types, "FIRST REFUSAL"], rows)]


def kernel_write(doc: Any) -> list[str]:
    doc = _map(doc)
    return [f"{cell(doc.get('format'))}: write {'on' if doc.get('enabled') else 'off'}"]


def _problems(problems: object) -> list[str]:
    rows = [_map(p) for p in _list(problems)]
    if not rows:
        return []
    # session and token are null for machine-wide formats (the KHO or LUO root).
    return table(
        ["SESSION", "TOKEN", "FORMAT", "REASON"],
        [
            [
                p.get("session") or "(machine)",
                p.get("token"),
                p.get("format"),
                p.get("reason"),
            ]
            for p in rows
        ],
    )


def load(doc: Any) -> list[str]:
    doc = _map(doc)
    lines = [f"loaded {cell(doc.get('loaded'))}"]
    if doc.get("compatible") is False:
        lines[0] += " (incompatible: forced)"
    return lines + _problems(doc.get("problems"))


def boot_cold(doc: Any) -> list[str]:
    return [f"cold boot: running {cell(_map(doc).get('release'))}"]


# --- sessions and files ---------------------------------------------------------------------


def session(doc: Any) -> list[str]:
    doc = _map(doc)
    lines = [f"session {cell(doc.get('name'))} ({cell(doc.get('direction'))})"]
    files = [_map(f) for f in _list(doc.get("files"))]
    if not files:
        return [*lines, "no files"]
    return lines + table(
        ["TOKEN", "TYPE", "FORMAT"],
        [[f.get("token"), f.get("type"), f.get("format")] for f in files],
    )


def session_list(doc: Any) -> list[str]:
    sessions = [_map(s) for s in _list(doc)]
    if not sessions:
        return ["no sessions"]
    return table(
        ["SESSION", "DIRECTION", "FILES"],
        [[s.get("name"), s.get("direction"), _files_summary(s.get("files"))] for s in sessions],
    )


def _done(verb: str) -> Renderer:
    def render_done(doc: Any) -> list[str]:
        return [f"{verb} session {cell(_map(doc).get('name'))}"]

    return render_done


def memfd_preserve(doc: Any) -> list[str]:
    doc = _map(doc)
    line = (
        f"preserved memfd token {cell(doc.get('token'))} in session "
        f"{cell(doc.get('session'))}: {cell(doc.get('size'))} bytes"
    )
    if doc.get("seals"):
        line += f", seals {cell(doc['seals'])}"
    return [line]


def memfd_retrieve(doc: Any) -> list[str]:
    doc = _map(doc)
    lines = [
        f"retrieved memfd token {cell(doc.get('token'))} of session {cell(doc.get('session'))}: "
        f"{cell(doc.get('size'))} bytes, seals {cell(doc.get('seals'))}",
        f"sha256 {cell(doc.get('sha256'))}",
    ]
    if doc.get("output"):
        lines.append(f"written to {doc['output']}")
    else:
        lines.append("not written: stdout is a terminal (use --output FILE)")
    return lines


def device_list(doc: Any) -> list[str]:
    doc = _map(doc)
    rows = []
    for dev in (_map(d) for d in _list(doc.get("devices"))):
        holder = _map(dev.get("held_by"))
        held = f"{holder['session']}/{holder['token']}" if holder else None
        rows.append(
            [
                dev.get("bdf"),
                dev.get("power"),
                dev.get("irq"),
                _map(dev.get("dma")).get("running"),
                held,
            ]
        )
    lines = table(["BDF", "POWER", "IRQ", "DMA", "HELD BY"], rows) if rows else ["no PCI devices"]
    pools = [_map(p) for p in _list(doc.get("hugetlb"))]
    lines.append("")
    if pools:
        lines += table(
            ["HUGETLB", "PAGES", "FREE", "ASKED"],
            [[human_bytes(p.get("page_size")), p.get("total"), p.get("free"), p.get("requested")]
             for p in pools],
        )  # fmt: skip
    else:
        lines.append("no hugetlb pools")
    return lines


def kho_dump(doc: Any) -> list[str]:
    doc = _map(doc)
    lines = [
        f"KHO {cell(doc.get('source'))} handover: {cell(doc.get('compatible'))}, "
        f"{cell(doc.get('size'))} bytes, sha256 {cell(doc.get('sha256'))}"
    ]
    if doc.get("output"):
        lines.append(f"written to {doc['output']} (dtc -I dtb -O dts {doc['output']})")
    else:
        lines.append("not written: stdout is a terminal (use --output FILE, or | dtc -I dtb)")
    return lines


def file_unpreserve(doc: Any) -> list[str]:
    doc = _map(doc)
    return [f"unpreserved token {cell(doc.get('token'))} of session {cell(doc.get('session'))}"]


def file_retrieve(doc: Any) -> list[str]:
    doc = _map(doc)
    return [
        f"retrieved token {cell(doc.get('token'))} of session {cell(doc.get('session'))}: "
        f"{cell(doc.get('type'))} ({cell(doc.get('format'))})"
    ]


def file_reclaim(doc: Any) -> list[str]:
    doc = _map(doc)
    return [f"reclaimed token {cell(doc.get('token'))} of session {cell(doc.get('session'))}"]


def apply(doc: Any) -> list[str]:
    lines = []
    for session in _map(doc).get("sessions", []):
        files = ", ".join(f"{f['token']} {f['type']}" for f in session.get("files", []))
        lines.append(f"session {session.get('name')}: preserved {files or 'nothing'}")
    return lines


# --- the update -----------------------------------------------------------------------------


def check(doc: Any) -> list[str]:
    doc = _map(doc)
    verdict = "compatible" if doc.get("compatible") else "incompatible"
    return [f"{cell(doc.get('target'))}: {verdict}", *_problems(doc.get("problems"))]


def state(doc: Any) -> list[str]:
    doc = _map(doc)
    pairs: list[tuple[str, object]] = [("state", doc.get("state"))]
    pairs += [(k, v) for k, v in doc.items() if k != "state"]
    return _fields(pairs)


def update(doc: Any) -> list[str]:
    doc = _map(doc)
    lines = [
        f"{cell(doc.get('from'))} -> {cell(doc.get('to'))}: blackout {_ms(doc.get('blackout_ms'))}"
    ]
    phases = _map(doc.get("phases"))
    names = [p for p in PHASES if p in phases] + [p for p in phases if p not in PHASES]
    if names:
        lines.append("phases: " + ", ".join(f"{name} {_ms(phases[name])}" for name in names))
    return lines + _damage(doc.get("damage"))


def _damage(damage: object) -> list[str]:
    """After the kexec nothing is rolled back: what the next kernel could not restore."""
    rows = [_map(d) for d in _list(damage)]
    if not rows:
        return []
    return [
        f"damage: {len(rows)} (not restored; everything else goes on)",
        *table(
            ["SESSION", "TOKEN", "STEP", "ERROR"],
            [
                [
                    d.get("session"),
                    d.get("token"),
                    d.get("step"),
                    _map(d.get("error")).get("message"),
                ]
                for d in rows
            ],
        ),
    ]


# --- fault injection ------------------------------------------------------------------------


def fault_list(doc: Any) -> list[str]:
    points = [_map(p) for p in _list(_map(doc).get("points"))]
    rows = []
    for p in points:
        armed = ", ".join(_arm_text(a) for a in map(_map, _list(p.get("armed"))))
        when = "after kexec" if p.get("after_kexec") else "before kexec"
        rows.append([p.get("point"), when, armed or "-", p.get("description")])
    lines = table(["POINT", "WHEN", "ARMED", "DESCRIPTION"], rows) if rows else ["no points"]
    fired = [_map(f) for f in _list(_map(doc).get("fired"))]
    if fired:
        lines += [
            "",
            "fired: " + ", ".join(f"{f.get('point')} ({f.get('subject')})" for f in fired),
        ]
    return lines


def _arm_text(arm: Mapping[str, Any]) -> str:
    count = arm.get("count")
    text = "always" if count is None else f"{count}x"
    text += f" {cell(arm.get('errno'))}"
    if arm.get("match"):
        text += f" on {arm['match']}"
    return text


def fault_arm(doc: Any) -> list[str]:
    doc = _map(doc)
    return [f"armed {cell(doc.get('point'))}: {_arm_text(doc)}"]


def fault_clear(doc: Any) -> list[str]:
    doc = _map(doc)
    what = doc.get("point") or "every point"
    return [f"cleared {what} ({cell(doc.get('cleared'))} arm(s))"]


RENDERERS: Final[dict[str, Renderer]] = {
    "status": status,
    "kernel.list": kernel_list,
    "kernel.show": kernel_show,
    "kernel.matrix": kernel_matrix,
    "kernel.write": kernel_write,
    "load": load,
    "session.create": session,
    "session.list": session_list,
    "session.show": session,
    "session.close": _done("closed"),
    "session.retrieve": session,
    "session.finish": _done("finished"),
    "memfd.preserve": memfd_preserve,
    "memfd.retrieve": memfd_retrieve,
    "file.unpreserve": file_unpreserve,
    "file.retrieve": file_retrieve,
    "file.reclaim": file_reclaim,
    "apply": apply,
    "check": check,
    "prepare": state,
    "freeze": state,
    "cancel": state,
    "finish": state,
    "kexec": update,
    "update": update,
    "boot.cold": boot_cold,
    "fault.list": fault_list,
    "fault.arm": fault_arm,
    "fault.clear": fault_clear,
    "device.list": device_list,
    "kho.dump": kho_dump,
}
"""Command key to its renderer (`events` prints JSON lines itself)."""


def render(command: str, document: object) -> list[str]:
    """The human lines for `command`'s document (generic `key: value` lines if none)."""
    renderer = RENDERERS.get(command)
    if renderer is not None:
        return renderer(document)
    mapping = _map(document)
    return _fields(list(mapping.items())) if mapping else [inline(document)]
