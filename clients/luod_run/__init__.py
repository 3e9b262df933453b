"""luod-run: run an unmodified program against luod's /dev/liveupdate (CLI.md "luod-run").

`main` is the console script; `build.interposer` compiles the LD_PRELOAD transport.
"""

from __future__ import annotations

from luod import __version__

__all__ = ["__version__"]
