"""A callback for the tests: every task's result, by task name, written as JSON when the run ends.

Enabled by the tests (ANSIBLE_CALLBACKS_ENABLED=hako_record) with the file
to write in HAKO_TEST_RECORD; the default output is kept for reading failures.
"""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "hako_record"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.results: dict[str, dict] = {}

    def _record(self, result, status: str) -> None:
        entry = dict(result._result)
        entry["_status"] = status
        self.results[result._task.get_name()] = entry

    def v2_runner_on_ok(self, result) -> None:
        self._record(result, "changed" if result._result.get("changed") else "ok")

    def v2_runner_on_failed(self, result, ignore_errors: bool = False) -> None:
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result) -> None:
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result) -> None:
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats) -> None:
        with open(os.environ["HAKO_TEST_RECORD"], "w") as f:
            json.dump(self.results, f, default=str)
