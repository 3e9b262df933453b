"""luod: a daemon emulating Linux live update (KHO/LUO) for userspace prototyping.

This package root owns only the version string. It must stay import-light: the `luoctl`
client imports it on every call, so nothing heavy (trio, numpy, structlog, cattrs) may be
imported here or from any module `luoctl` pulls in.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__: str = version("luod")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
