"""structlog setup for the daemon: one line per event on stderr, journald-aware.

The daemon logs to unbuffered stderr and leaves storage and rotation to the supervisor, as
structlog's own guidance advises. Formats: `logfmt` and `json` for machines, `console` for
a person at a terminal, `auto` picks console on a TTY and logfmt otherwise. When
`JOURNAL_STREAM` names the very file stderr is (systemd >= 231 sets it to `<dev>:<ino>`),
each line gets a `<N>` syslog priority prefix so journald records the right level, and the
timestamp is dropped because journald stamps lines itself.

Per-connection context is bound with `structlog.contextvars.bind_contextvars` inside each
handler task; `merge_contextvars` at the head of the chain picks it up (see
reference/python.md C.5 for the trio context rules).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, MutableMapping
from typing import Final, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "configure_logging", "stream_is_journal"]

LOG_FORMATS: Final = ("auto", "logfmt", "json", "console")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")

_LEVEL_NUMBERS: Final[dict[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# syslog(3) priorities by structlog method name; journald reads them from a `<N>` prefix.
_SYSLOG_PRIORITY: Final[dict[str, int]] = {
    "critical": 2,
    "exception": 3,
    "error": 3,
    "warning": 4,
    "warn": 4,
    "info": 6,
    "debug": 7,
}
_DEFAULT_PRIORITY: Final = 6

# Every renderer we use returns str; JSONRenderer is typed `str | bytes` for custom dumps.
_Renderer = Callable[[WrappedLogger, str, EventDict], str | bytes]


class _JournalPriorityPrefix:
    """Final processor: render with the wrapped renderer, then prepend `<N>`.

    The priority comes from the method name (`log.warning` -> 4), which is known even when
    the renderer has dropped or renamed the `level` key.
    """

    def __init__(self, renderer: _Renderer) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        priority = _SYSLOG_PRIORITY.get(method_name, _DEFAULT_PRIORITY)
        line = self._renderer(logger, method_name, event_dict)
        if isinstance(line, bytes):
            line = line.decode("utf-8", "backslashreplace")
        return f"<{priority}>{line}"


def stream_is_journal(stream: TextIO, environ: MutableMapping[str, str] | None = None) -> bool:
    """Whether `stream` is the journald stream named by `JOURNAL_STREAM` (`<dev>:<ino>`).

    A mere presence check is not enough: a child started from a journald-logged shell inherits
    the variable while its stderr goes elsewhere, so the device and inode must match.
    """
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev_text, sep, ino_text = value.partition(":")
    if not sep:
        return False
    try:
        dev, ino = int(dev_text), int(ino_text)
        st = os.fstat(stream.fileno())
    except (ValueError, OSError):  # io.UnsupportedOperation is both
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (ValueError, OSError):  # closed or detached stream
        return False


def configure_logging(
    fmt: str,
    level: str,
    *,
    stream: TextIO | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> None:
    """Configure structlog globally for the daemon.

    Args:
        fmt: `auto`, `logfmt`, `json` or `console`.
        level: `debug`, `info`, `warning` or `error`; lower levels are filtered out cheaply.
        stream: where lines go; default `sys.stderr` as it is at call time.
        environ: environment to read `JOURNAL_STREAM` from; default `os.environ`.

    Raises:
        ValueError: unknown `fmt` or `level`.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"invalid log format {fmt!r}: expected one of {', '.join(LOG_FORMATS)}")
    if level not in _LEVEL_NUMBERS:
        raise ValueError(f"invalid log level {level!r}: expected one of {', '.join(LOG_LEVELS)}")
    out = sys.stderr if stream is None else stream
    journal = stream_is_journal(out, environ)
    if fmt == "auto":
        fmt = "console" if _isatty(out) else "logfmt"

    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    if not journal:
        processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True))

    renderer: _Renderer
    if fmt == "json":
        processors.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    elif fmt == "logfmt":
        processors.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.LogfmtRenderer(
            key_order=["timestamp", "level", "event"], drop_missing=True
        )
    else:  # console renders exceptions itself; format_exc_info would make it warn
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(out))
    processors.append(_JournalPriorityPrefix(renderer) if journal else renderer)

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVEL_NUMBERS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
