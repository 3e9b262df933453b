"""Human rendering of sessions, files, memfds and plans (`session *`, `memfd *`, `file *`,
`apply`): one line per action, a table of files per session."""

from __future__ import annotations

from typing import Any

from luoctl.human import Renderer, as_list, as_map
from luoctl.table import cell, table

__all__ = [
    "apply",
    "done",
    "file_reclaim",
    "file_retrieve",
    "file_unpreserve",
    "files_summary",
    "memfd_preserve",
    "memfd_retrieve",
    "session",
    "session_list",
]


def files_summary(files: object) -> str:
    return ",".join(
        f"{cell(f.get('token'))}:{cell(f.get('type'))}" for f in map(as_map, as_list(files))
    )


def session(doc: Any) -> list[str]:
    doc = as_map(doc)
    lines = [f"session {cell(doc.get('name'))} ({cell(doc.get('direction'))})"]
    files = [as_map(f) for f in as_list(doc.get("files"))]
    if not files:
        return [*lines, "no files"]
    return lines + table(
        ["TOKEN", "TYPE", "FORMAT"],
        [[f.get("token"), f.get("type"), f.get("format")] for f in files],
    )


def session_list(doc: Any) -> list[str]:
    sessions = [as_map(s) for s in as_list(doc)]
    if not sessions:
        return ["no sessions"]
    return table(
        ["SESSION", "DIRECTION", "FILES"],
        [[s.get("name"), s.get("direction"), files_summary(s.get("files"))] for s in sessions],
    )


def done(verb: str) -> Renderer:
    def render_done(doc: Any) -> list[str]:
        return [f"{verb} session {cell(as_map(doc).get('name'))}"]

    return render_done


def memfd_preserve(doc: Any) -> list[str]:
    doc = as_map(doc)
    line = (
        f"preserved memfd token {cell(doc.get('token'))} in session "
        f"{cell(doc.get('session'))}: {cell(doc.get('size'))} bytes"
    )
    if doc.get("seals"):
        line += f", seals {cell(doc['seals'])}"
    return [line]


def memfd_retrieve(doc: Any) -> list[str]:
    doc = as_map(doc)
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


def file_unpreserve(doc: Any) -> list[str]:
    doc = as_map(doc)
    return [f"unpreserved token {cell(doc.get('token'))} of session {cell(doc.get('session'))}"]


def file_retrieve(doc: Any) -> list[str]:
    doc = as_map(doc)
    return [
        f"retrieved token {cell(doc.get('token'))} of session {cell(doc.get('session'))}: "
        f"{cell(doc.get('type'))} ({cell(doc.get('format'))})"
    ]


def file_reclaim(doc: Any) -> list[str]:
    doc = as_map(doc)
    return [f"reclaimed token {cell(doc.get('token'))} of session {cell(doc.get('session'))}"]


def apply(doc: Any) -> list[str]:
    lines = []
    for session in as_map(doc).get("sessions", []):
        files = ", ".join(f"{f['token']} {f['type']}" for f in session.get("files", []))
        lines.append(f"session {session.get('name')}: preserved {files or 'nothing'}")
    return lines
