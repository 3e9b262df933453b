"""The interposer, built from its C source by the system compiler on first use.

The source (`interposer.c`, shipped with the package) is compiled once per content into a
cache directory (`$LUOD_RUN_CACHE`, else `$XDG_CACHE_HOME/luod-run`, else
`~/.cache/luod-run`), named by the hash of the source and the compiler, so an upgrade
rebuilds and concurrent first runs do not race (each writes its own file and renames it
into place). No binary is shipped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

SOURCE = Path(__file__).with_name("interposer.c")
COMPILERS = ("cc", "gcc", "clang")
FLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-pthread")


class BuildError(Exception):
    """The interposer cannot be built (no compiler, or it failed): the message says why."""


def compiler(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    for name in (environ.get("CC", ""), *COMPILERS):
        if name and (path := shutil.which(name)):
            return path
    raise BuildError(
        "luod-run needs a C compiler to build its interposer and found none "
        f"(tried $CC, {', '.join(COMPILERS)}); install one, e.g. `apt-get install gcc`"
    )


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    if environ.get("LUOD_RUN_CACHE"):
        return Path(environ["LUOD_RUN_CACHE"])
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "luod-run"


def interposer(environ: Mapping[str, str] | None = None) -> Path:
    """The path of the built interposer, building it when needed.

    Raises:
        BuildError: no compiler, or the compiler failed (its output is in the message).
    """
    cc = compiler(environ)
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + cc.encode() + " ".join(FLAGS).encode()).hexdigest()[:16]
    target = cache_dir(environ) / f"luod-run-{digest}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    done = subprocess.run(
        [cc, *FLAGS, "-o", str(partial), str(SOURCE), "-ldl"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BuildError(f"building the interposer with {cc} failed:\n{done.stderr.strip()}")
    partial.replace(target)
    return target
