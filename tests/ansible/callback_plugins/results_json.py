"""A stdout callback for the tests: one JSON document at the end of the run, per play and
task the results per host, and the stats (ansible-core has no JSON callback of its own; the
community one lives in a collection the tests cannot download)."""

from __future__ import annotations

import json
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: results_json
type: stdout
short_description: the run as one JSON document (tests only)
description: Per play and task, the results per host, then the stats.
"""


class CallbackModule(CallbackBase):  # type: ignore[misc]  # ansible ships no type hints
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "results_json"

    def __init__(self) -> None:
        super().__init__()
        self.plays: list[dict[str, Any]] = []

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self.plays.append({"play": {"name": play.get_name()}, "tasks": []})

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self.plays[-1]["tasks"].append({"task": {"name": task.get_name()}, "hosts": {}})

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self.v2_playbook_on_task_start(task, False)

    def _record(self, result: Any, **flags: bool) -> None:
        outcome = dict(self._convert_result(result))
        outcome.update(flags)
        self.plays[-1]["tasks"][-1]["hosts"][result._host.get_name()] = outcome

    def _convert_result(self, result: Any) -> dict[str, Any]:
        raw = result._result
        return dict(json.loads(json.dumps(raw, default=str)))

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record(result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        self._display.display(json.dumps({"plays": self.plays, "stats": summary}))
