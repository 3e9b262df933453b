"""Plan files for `luoctl apply`: JSON or TOML, turned into the `apply` method's params.

A plan lists sessions, each with objects (CLI.md "Plans"). Sizes may be written as in the
rest of luoctl (`1G`, `2M`, `4096`); `maps` may list memfd names or {memfd, iova} tables.
Everything else passes through as written: the daemon structures the plan strictly and
names the field of anything it does not accept.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from luoctl.failures import CliError, os_errno_name
from luod.units import parse_size


def _size(value: Any, where: str) -> Any:
    if isinstance(value, str):
        try:
            return parse_size(value)
        except ValueError as exc:
            raise CliError(f"{where}: {exc}", errno="EINVAL", object=where) from None
    return value


def load_plan(path: str) -> dict[str, Any]:
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise CliError(
            f"cannot read plan {path}: {exc.strerror}", errno=os_errno_name(exc.errno), object=path
        ) from None
    try:
        raw = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if file.suffix == ".json" else "TOML"
        raise CliError(
            f"plan {path} is not valid {kind}: {exc}", errno="EINVAL", object=path
        ) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("session"), list):
        raise CliError(
            f"plan {path}: expected a list of [[session]] tables", errno="EINVAL", object=path
        )
    for i, session in enumerate(raw["session"]):
        for j, obj in enumerate(session.get("object", []) if isinstance(session, dict) else []):
            if not isinstance(obj, dict):
                continue
            where = f"plan {path}: session {i} object {obj.get('name', j)!r}"
            for key in ("size", "page_size"):
                if key in obj:
                    obj[key] = _size(obj[key], f"{where} {key}")
            if isinstance(obj.get("maps"), list):
                obj["maps"] = [m if isinstance(m, dict) else {"memfd": m} for m in obj["maps"]]
    return {"session": raw["session"]}
