"""Running ansible-playbook and ansible-inventory from the virtualenv, as the tests do.

With the project's ansible.cfg (library/, module_utils/, connection_plugins/,
inventory_plugins/), the hako_record callback (every task's result, by task
name) and the session's HAKO_* environment, which the modules read and the
plugins pass on to the hako command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import REPO

BIN = Path(sys.executable).parent
HAKO_COMMAND = str(REPO / "bin" / "hako")
# A PID 1 that ends at once on SIGTERM, so that stops do not wait for the timeout.
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]

# What the modules and the hako command read from the environment.
HAKO_ENV = ("HAKO_ROOT", "HAKO_RUN", "HAKO_CGROUP_PARENT", "HAKO_DEFAULT_NETWORK")

# A stand-in for ssh: what sshd does with a command (the login shell runs it
# with -c, in a fresh environment), on this machine. It logs its arguments.
FAKE_SSH = """#!/bin/sh
echo "$@" >> "$0.log"
while [ "$1" != "--" ]; do shift; done
exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/sh -c "$3"
"""


def ansible_env(tmp_path: Path, **extra: str) -> dict:
    return dict(
        os.environ,
        PATH=f"{BIN}:{os.environ['PATH']}",
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_CALLBACK_PLUGINS=str(Path(__file__).parent / "callback_plugins"),
        ANSIBLE_CALLBACKS_ENABLED="hako_record",
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "local"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PIPELINING="1",
        HAKO_TEST_RECORD=str(tmp_path / "results.json"),
        **extra,
    )


def run_plays(
    tmp_path: Path, plays: list[dict], inventory: str, *args: str, expect_rc: int = 0, **env: str
) -> tuple[dict[str, dict], str]:
    """Run ``plays`` against ``inventory``; the recorded result of each task by name, and the output."""
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(json.dumps(plays, indent=1))  # JSON is YAML
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", inventory, *args, str(playbook)],
        cwd=REPO,
        env=ansible_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != expect_rc:
        pytest.fail(
            f"ansible-playbook exited {proc.returncode}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
        )
    results = json.loads((tmp_path / "results.json").read_text())
    for name, result in results.items():
        assert "Traceback" not in json.dumps(result), f"task {name!r} printed a traceback"
    return results, proc.stdout


def task_output(stdout: str, name: str) -> str:
    """The part of a verbose ansible-playbook output that belongs to the task ``name``."""
    start = stdout.index(f"TASK [{name}]")
    end = stdout.find("TASK [", start + 1)
    return stdout[start : end if end > 0 else None]
