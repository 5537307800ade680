"""`molecule test` of molecule/default against this machine, and a host left as it was found.

The scenario provisions this machine with the real playbooks (runtime in
/usr/local, state in /var/lib/hako and /run/hako, the cgroup parent ``hako``),
starts a lab, checks idempotence, verifies with testinfra and tears it all
down. So it runs with the defaults, not the session's private HAKO_ROOT, and
refuses to start where hako is already installed: its teardown would take that
away.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import CGROUP_ROOT, REPO

BIN = Path(sys.executable).parent
if not (BIN / "molecule").exists():
    pytest.skip("molecule is not installed beside this Python", allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip("the scenario provisions this machine: run as root", allow_module_level=True)

# What provision.yml and lab.yml make with the defaults, and teardown.yml removes.
HOST_PATHS = (
    "/usr/local/bin/hako",
    "/usr/local/lib/hako",
    "/var/lib/hako",
    "/run/hako",
    "/etc/sysctl.d/90-hako.conf",
    "/etc/systemd/system/hako.service",
    "/sys/class/net/hako0",  # the default network's bridge
)


def hako_on_host() -> list[str]:
    """What of hako is on this machine outside the test session's private state."""
    present = [path for path in HOST_PATHS if os.path.lexists(path)]
    present += [str(path) for path in CGROUP_ROOT.glob("*/hako") if path.is_dir()]
    return present


def environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAKO_")}
    env.update(
        PATH=f"{BIN}:{env['PATH']}",
        MOLECULE_EPHEMERAL_DIRECTORY=str(tmp_path / "molecule"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "local"),
        ANSIBLE_REMOTE_TEMP=str(tmp_path / "remote"),
        ANSIBLE_NOCOLOR="1",
        NO_COLOR="1",
        PY_COLORS="0",
    )
    return env


@pytest.mark.slow
def test_molecule_default_converges_is_idempotent_verifies_and_leaves_the_host_clean(tmp_path):
    before = hako_on_host()
    if before:
        pytest.fail(f"hako is installed here ({', '.join(before)}); the scenario's teardown would remove it")
    env = environment(tmp_path)
    try:
        proc = subprocess.run(
            [str(BIN / "molecule"), "test"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert proc.returncode == 0, f"molecule test failed:\n{proc.stdout[-8000:]}\n{proc.stderr[-3000:]}"
        assert "changed=0" in proc.stdout  # the idempotence step's second run
        assert re.search(r"=+ \d+ passed in ", proc.stdout), "testinfra ran no tests"
    finally:
        left = hako_on_host()
        if left:
            # Leave the machine as it was even when the scenario failed half way.
            subprocess.run(
                [str(BIN / "ansible-playbook"), "playbooks/teardown.yml"],
                cwd=REPO,
                env=env,
                capture_output=True,
                timeout=600,
            )
    assert not left, f"the scenario's teardown left {left}"
