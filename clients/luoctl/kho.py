"""`kho dump`: the KHO root blob, a flattened device tree, as bytes for `dtc`.

Owns where the blob goes, by the same rule as `memfd retrieve`'s bytes: `--output FILE`;
else stdout when stdout is neither the JSON channel nor a terminal (so `luoctl kho dump |
dtc -I dtb -O dts` works); else nowhere, and only what the blob is gets printed. The blob
itself never goes into a JSON document: `--json` reports its source, size and sha256.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Mapping

from luoctl.context import Context, Outcome
from luoctl.failures import CliError
from luoctl.memfd import open_output
from luoctl.output import stdout_is_terminal
from luod.ipc.fdpass import close_fds

__all__ = ["kho_dump"]


def kho_dump(ctx: Context, args: argparse.Namespace) -> Outcome:
    reply = ctx.link.call("kho.dump", {"source": args.source})
    close_fds(reply.fds)
    result: Mapping[str, object] = reply.result if isinstance(reply.result, Mapping) else {}
    blob = result.get("blob")
    if not isinstance(blob, bytes):
        raise CliError("luod sent no KHO blob", errno="EPROTO", object="kho")
    to_stdout = args.output is None and not ctx.out.json and not stdout_is_terminal()
    if args.output is not None:
        with open_output(args.output) as sink:
            sink.write(blob)
    elif to_stdout:
        sink = ctx.out.binary_stdout()
        sink.write(blob)
        sink.flush()
    document = {
        **{key: value for key, value in result.items() if key != "blob"},
        "sha256": hashlib.sha256(blob).hexdigest(),
        "output": args.output,
    }
    return Outcome(document, silent=to_stdout)
