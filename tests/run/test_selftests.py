"""The project's C test programs (tests/run/c) under luod-run: every scenario of the
kernel's liveupdate selftest (reference/kernel.md §6.1)."""

from __future__ import annotations

from tests.run.conftest import Runner

SCENARIOS = [
    "basic_open_close",
    "exclusive_open",
    "create_duplicate_session",
    "create_distinct_sessions",
    "preserve_memfd",
    "preserve_multiple_memfds",
    "preserve_complex_scenario",
    "preserve_unsupported_fd",
    "prevent_double_preservation",
    "create_session_no_null_termination",
    "create_session_empty_name",
    "get_session_name",
    "get_session_name_max_length",
    "preserve_many_sessions",
    "preserve_many_files",
    "uapi_rules",
    "libc_entry_points",
]


def test_liveupdate_selftest_scenarios(runner: Runner) -> None:
    done = runner.program("liveupdate_test")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines == [f"ok {i} {name}" for i, name in enumerate(SCENARIOS, 1)]
