"""Human rendering of the machine, its kernels, the update and fault injection (`status`,
`kernel *`, `load`, `check`, the global events, `kexec`, `update`, `boot`, `fault *`):
fields for one object, tables for listings, the FROM x TO grid for `kernel matrix`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from luoctl.human import as_list, as_map, fields, human_bytes, inline, ms
from luoctl.human_sessions import files_summary
from luoctl.table import cell, table

PHASES: Final = ("load", "check", "prepare", "freeze", "kexec", "restore")
"""The update's phase names in the order they run (CLI.md)."""


# --- machine and kernels --------------------------------------------------------------------


def _last_update(value: object) -> str:
    update = as_map(value)
    if not update:
        return "-" if value is None else inline(value)
    text = f"{cell(update.get('from'))} -> {cell(update.get('to'))}"
    if "blackout_ms" in update:
        text += f", blackout {ms(update['blackout_ms'])}"
    damage = as_list(update.get("damage"))
    if damage:
        text += f", {len(damage)} damaged"
    return text


def _last_cancel(value: object) -> str:
    cancel = as_map(value)
    error = as_map(cancel.get("error"))
    return f"update to {cell(cancel.get('target'))}: {cell(error.get('message'))}"


def _access(value: object) -> str:
    access = as_map(value)
    if access.get("admin"):
        return f"admin: sessions and the machine ({access.get('reason')})"
    return f"your own sessions only, not the machine ({access.get('reason')})"


def status(doc: Any) -> list[str]:
    doc = as_map(doc)
    kernel = as_map(doc.get("kernel"))
    machine = as_map(doc.get("machine"))
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
    if "access" in doc:
        pairs.append(("access", _access(doc["access"])))
    lines = fields(pairs)
    sessions = [as_map(s) for s in as_list(doc.get("sessions"))]
    lines.append("")
    if sessions:
        lines += table(
            ["SESSION", "DIRECTION", "FILES"],
            [[s.get("name"), s.get("direction"), files_summary(s.get("files"))] for s in sessions],
        )
    else:
        lines.append("no sessions")
    participants = [as_map(p) for p in as_list(doc.get("participants"))]
    if participants:
        lines.append("")
        lines += table(
            ["PARTICIPANT", "STATE", "SESSIONS"],
            [[p.get("name"), p.get("state"), p.get("sessions")] for p in participants],
        )
    return lines


def kernel_list(doc: Any) -> list[str]:
    images = [as_map(i) for i in as_list(doc)]
    if not images:
        return ["no kernel images"]
    return table(["RELEASE", "SUMMARY"], [[i.get("release"), i.get("summary")] for i in images])


def kernel_show(doc: Any) -> list[str]:
    image = as_map(doc)
    order = ["release", "summary", "source", "reads", "write", "profiles"]
    keys = [k for k in order if k in image] + [k for k in image if k not in order]
    return fields([(k, image[k]) for k in keys]) if keys else [inline(doc)]


def _version(compatible: object) -> str:
    """`memfd-v3` -> `v3`, `kvm_vm_luo_v1` -> `v1`: a matrix cell shows the version only
    (the type is the column)."""
    text = cell(compatible)
    found = re.search(r"v\d+$", text)
    return found.group(0) if found else text


def _verdict(pair: Mapping[str, Any]) -> str:
    if pair.get("compatible"):
        return "yes"
    refused = as_list(pair.get("refused"))
    return "no" if not refused or {"kho", "luo"} & set(refused) else "part"


def kernel_matrix(doc: Any) -> list[str]:
    """A FROM x TO grid of verdicts, then one row per ordered pair with the format version
    chosen per object type (`NO`: none fits; `-`: the source writes no such object) and,
    for a refused pair, the first reason."""
    doc = as_map(doc)
    releases = [cell(r) for r in as_list(doc.get("releases"))]
    types = [cell(t) for t in as_list(doc.get("types"))]
    pairs = [as_map(p) for p in as_list(doc.get("pairs"))]
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
        cells = as_map(pair.get("types"))
        row: list[object] = [pair.get("from"), pair.get("to")]
        row.append(_verdict(pair))
        why: object = None
        for name in types:
            entry = as_map(cells.get(name))
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
    doc = as_map(doc)
    return [f"{cell(doc.get('format'))}: write {'on' if doc.get('enabled') else 'off'}"]


def _problems(problems: object) -> list[str]:
    rows = [as_map(p) for p in as_list(problems)]
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
    doc = as_map(doc)
    lines = [f"loaded {cell(doc.get('loaded'))}"]
    if doc.get("compatible") is False:
        lines[0] += " (incompatible: forced)"
    return lines + _problems(doc.get("problems"))


def boot_cold(doc: Any) -> list[str]:
    return [f"cold boot: running {cell(as_map(doc).get('release'))}"]


# --- the update -----------------------------------------------------------------------------


def check(doc: Any) -> list[str]:
    doc = as_map(doc)
    verdict = "compatible" if doc.get("compatible") else "incompatible"
    return [f"{cell(doc.get('target'))}: {verdict}", *_problems(doc.get("problems"))]


def state(doc: Any) -> list[str]:
    doc = as_map(doc)
    pairs: list[tuple[str, object]] = [("state", doc.get("state"))]
    pairs += [(k, v) for k, v in doc.items() if k != "state"]
    return fields(pairs)


def update(doc: Any) -> list[str]:
    doc = as_map(doc)
    lines = [
        f"{cell(doc.get('from'))} -> {cell(doc.get('to'))}: blackout {ms(doc.get('blackout_ms'))}"
    ]
    phases = as_map(doc.get("phases"))
    names = [p for p in PHASES if p in phases] + [p for p in phases if p not in PHASES]
    if names:
        lines.append("phases: " + ", ".join(f"{name} {ms(phases[name])}" for name in names))
    return lines + _damage(doc.get("damage"))


def _damage(damage: object) -> list[str]:
    """After the kexec nothing is rolled back: what the next kernel could not restore."""
    rows = [as_map(d) for d in as_list(damage)]
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
                    as_map(d.get("error")).get("message"),
                ]
                for d in rows
            ],
        ),
    ]


# --- fault injection ------------------------------------------------------------------------


def device_list(doc: Any) -> list[str]:
    doc = as_map(doc)
    rows = []
    for dev in (as_map(d) for d in as_list(doc.get("devices"))):
        holder = as_map(dev.get("held_by"))
        held = f"{holder['session']}/{holder['token']}" if holder else None
        running = as_map(dev.get("dma")).get("running")
        rows.append([dev.get("bdf"), dev.get("power"), dev.get("irq"), running, held])
    lines = table(["BDF", "POWER", "IRQ", "DMA", "HELD BY"], rows) if rows else ["no PCI devices"]
    pools = [as_map(p) for p in as_list(doc.get("hugetlb"))]
    lines.append("")
    if pools:
        lines += table(
            ["HUGETLB", "PAGES", "FREE", "ASKED"],
            [
                [human_bytes(p.get("page_size")), p.get("total"), p.get("free"), p.get("requested")]
                for p in pools
            ],
        )
    else:
        lines.append("no hugetlb pools")
    return lines


def kho_dump(doc: Any) -> list[str]:
    doc = as_map(doc)
    lines = [
        f"KHO {cell(doc.get('source'))} handover: {cell(doc.get('compatible'))}, "
        f"{cell(doc.get('size'))} bytes, sha256 {cell(doc.get('sha256'))}"
    ]
    if doc.get("output"):
        lines.append(f"written to {doc['output']} (dtc -I dtb -O dts {doc['output']})")
    else:
        lines.append("not written: stdout is a terminal (use --output FILE, or | dtc -I dtb)")
    return lines


def fault_list(doc: Any) -> list[str]:
    points = [as_map(p) for p in as_list(as_map(doc).get("points"))]
    rows = []
    for p in points:
        armed = ", ".join(_arm_text(a) for a in map(as_map, as_list(p.get("armed"))))
        when = "after kexec" if p.get("after_kexec") else "before kexec"
        rows.append([p.get("point"), when, armed or "-", p.get("description")])
    lines = table(["POINT", "WHEN", "ARMED", "DESCRIPTION"], rows) if rows else ["no points"]
    fired = [as_map(f) for f in as_list(as_map(doc).get("fired"))]
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
    doc = as_map(doc)
    return [f"armed {cell(doc.get('point'))}: {_arm_text(doc)}"]


def fault_clear(doc: Any) -> list[str]:
    doc = as_map(doc)
    what = doc.get("point") or "every point"
    return [f"cleared {what} ({cell(doc.get('cleared'))} arm(s))"]
