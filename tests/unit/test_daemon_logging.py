"""luod.daemon.logging: formats, level filtering and the journald priority prefix."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from luod.daemon.logging import configure_logging, stream_is_journal


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """configure_logging is global: restore structlog's defaults after each test."""
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def _log_lines(fmt: str, level: str = "info", environ: dict[str, str] | None = None) -> str:
    out = io.StringIO()
    configure_logging(fmt, level, stream=out, environ=environ or {})
    log = structlog.get_logger()
    log.debug("hidden_unless_debug")
    log.info("machine_up", ram="64G", release="6.19.0")
    log.warning("slow", phase="freeze")
    return out.getvalue()


def test_logfmt_line_leads_with_timestamp_level_event() -> None:
    """logfmt puts timestamp, level and event first, then the bound keys."""
    first = _log_lines("logfmt").splitlines()[0]
    assert first.startswith("timestamp=")
    assert " level=info event=machine_up " in first
    assert first.endswith("ram=64G release=6.19.0")


def test_json_lines_parse() -> None:
    """json writes one JSON object per line."""
    lines = [json.loads(line) for line in _log_lines("json").splitlines()]
    assert [(d["level"], d["event"]) for d in lines] == [
        ("info", "machine_up"),
        ("warning", "slow"),
    ]


def test_level_filters_below() -> None:
    """Events under the configured level are dropped; debug shows them."""
    assert "hidden_unless_debug" not in _log_lines("logfmt", "info")
    assert "hidden_unless_debug" in _log_lines("logfmt", "debug")
    assert _log_lines("logfmt", "error") == ""


def test_auto_is_logfmt_off_a_terminal() -> None:
    """auto chooses logfmt when the stream is not a TTY."""
    assert _log_lines("auto").splitlines()[0].startswith("timestamp=")


def test_contextvars_are_merged() -> None:
    """Per-connection context bound with bind_contextvars appears on every line."""
    out = io.StringIO()
    configure_logging("logfmt", "info", stream=out, environ={})
    structlog.contextvars.bind_contextvars(conn_id=7)
    structlog.get_logger().info("hello")
    assert "conn_id=7" in out.getvalue()


def test_exceptions_render_on_one_logfmt_line() -> None:
    """A logged exception stays on one line (journald keeps one entry per line)."""
    out = io.StringIO()
    configure_logging("logfmt", "info", stream=out, environ={})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger().exception("failed")
    text = out.getvalue()
    assert text.count("\n") == 1
    assert "RuntimeError: boom" in text


@pytest.mark.parametrize("fmt", ["x", "text", ""])
def test_unknown_format_rejected(fmt: str) -> None:
    """Only auto, logfmt, json and console exist."""
    with pytest.raises(ValueError, match="invalid log format"):
        configure_logging(fmt, "info", stream=io.StringIO())


def test_unknown_level_rejected() -> None:
    """Only debug, info, warning and error exist."""
    with pytest.raises(ValueError, match="invalid log level"):
        configure_logging("logfmt", "trace", stream=io.StringIO())


def _journal_env(path: Path) -> dict[str, str]:
    st = os.stat(path)
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def test_journal_stream_gets_priority_prefix_and_no_timestamp(tmp_path: Path) -> None:
    """When JOURNAL_STREAM names the stream: `<N>` syslog priority, no timestamp."""
    path = tmp_path / "journal"
    with path.open("w") as stream:
        configure_logging("logfmt", "info", stream=stream, environ=_journal_env(path))
        log = structlog.get_logger()
        log.info("machine_up")
        log.warning("slow")
        log.error("bad")
    assert path.read_text().splitlines() == [
        "<6>level=info event=machine_up",
        "<4>level=warning event=slow",
        "<3>level=error event=bad",
    ]


def test_journal_stream_must_match_the_stream(tmp_path: Path) -> None:
    """An inherited JOURNAL_STREAM naming another file does not count."""
    path, other = tmp_path / "stderr", tmp_path / "other"
    other.touch()
    with path.open("w") as stream:
        assert stream_is_journal(stream, _journal_env(path))
        assert not stream_is_journal(stream, _journal_env(other))
        assert not stream_is_journal(stream, {"JOURNAL_STREAM": "garbage"})
        assert not stream_is_journal(stream, {})
    assert not stream_is_journal(io.StringIO(), _journal_env(path))
