"""luod: a daemon emulating Linux live update (KHO/LUO) for userspace prototyping.

This package root owns only the version string. It must stay import-light: the `luoctl`
client imports it on every call, so nothing heavy (trio, numpy, structlog, cattrs) may be
imported here or from any module `luoctl` pulls in. Even the version is looked up only when
first asked for (PEP 562): `importlib.metadata` alone costs a `luoctl status` a quarter of
what `python -c pass` costs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["__version__"]

if TYPE_CHECKING:
    __version__: str


def __getattr__(name: str) -> str:
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("luod")
    except PackageNotFoundError:  # running from a source tree that was never installed
        found = "0.0.0+unknown"
    globals()["__version__"] = found
    return found
