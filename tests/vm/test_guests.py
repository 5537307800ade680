"""playbooks/site.yml against real guests with systemd and cgroup v2, then the limits in their kernels.

Per guest, in this order (one booted guest serves them all): the guest is
what lab hosts are (systemd as PID 1, the unified hierarchy); site.yml
provisions it, starts the lab (alice and bob with 64 MiB, half a CPU and 64
processes; bob with ``restart_policy: always``) and verifies it; a second run
changes nothing; the limits are read back from the guest's cgroup files; an
OOM kill and the pids limit are provoked inside a container; the guest
reboots and the boot service brings the containers back; on x86_64 the
runtime's own cgroup v2 tests run inside the guest.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from .qemu import Guest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LAB = "linuc"
LEARNERS = ("alice", "bob")
LIMITS = {"memory.max": "67108864", "cpu.max": "50000 100000", "pids.max": "64"}
# The runtime's own tests run inside the x86_64 guest.
# (test_limits.py and test_lifecycle.py read v1 file names and assume a host's
# speed: not yet portable to a unified guest under TCG.)
INNER_TESTS = ("test_cgroups_v2.py",)

pytestmark = pytest.mark.slow


def write_inventory(guest: Guest) -> Path:
    host = f"vm-{guest.arch}"
    inventory = {
        "all": {
            "children": {
                "hako_lab_hosts": {
                    "hosts": {host: guest.inventory_host()},
                    "vars": {
                        "hako_lab_name": LAB,
                        "hako_lab_learners": ["alice", {"name": "bob", "restart_policy": "always"}],
                    },
                }
            }
        }
    }
    path = guest.dir / "inventory.yml"
    path.write_text(json.dumps(inventory, indent=2))  # JSON is YAML
    return path


def site(guest: Guest) -> tuple[subprocess.CompletedProcess, dict[str, int], float]:
    """Run playbooks/site.yml against the guest: the result, its recap, the seconds it took."""
    playbook = BIN / "ansible-playbook"
    if not playbook.exists():
        pytest.fail(f"{playbook} is missing: run scripts/setup")
    inventory = guest.dir / "inventory.yml"
    if not inventory.exists():
        write_inventory(guest)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HAKO_", "ANSIBLE_"))}
    env.update(
        PATH=f"{BIN}:{env['PATH']}",
        ANSIBLE_LOCAL_TEMP=str(guest.dir / "ansible-local"),
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(guest.dir / "cp"),
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_NOCOLOR="1",
    )
    started = time.monotonic()
    proc = subprocess.run(
        [str(playbook), "-i", str(inventory), "playbooks/site.yml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.monotonic() - started
    (guest.dir / f"site-{int(started)}.log").write_text(proc.stdout + proc.stderr)
    match = re.search(r"^vm-\S+\s*:\s*(.*)$", proc.stdout, flags=re.M)
    recap = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))} if match else {}
    return proc, recap, seconds


def inspect(guest: Guest, name: str) -> dict:
    return json.loads(guest.ssh(f"hako inspect {name}").stdout)[0]


def cgroup_dir(guest: Guest, name: str) -> str:
    paths = inspect(guest, name)["Cgroup"]["Paths"]
    return paths.get("unified") or next(iter(paths.values()))


def read(guest: Guest, path: str) -> str:
    return guest.ssh(f"cat {path}").stdout.strip()


def test_guest_runs_systemd_on_the_unified_cgroup_hierarchy(guest, record):
    facts = guest.ssh(
        "uname -m; uname -r; cat /proc/1/comm; stat -fc %T /sys/fs/cgroup; "
        "cat /sys/fs/cgroup/cgroup.controllers"
    ).stdout.splitlines()
    machine, kernel, init, fstype, controllers = facts
    record["machine"] = f"{machine}, kernel {kernel}"
    record["cgroup mode"] = f"{fstype} ({controllers})"
    assert machine == {"x86_64": "x86_64", "arm64": "aarch64"}[guest.arch]
    assert init == "systemd"
    assert fstype == "cgroup2fs"
    assert {"cpu", "memory", "pids"} <= set(controllers.split())


def test_site_provisions_starts_and_verifies_the_lab(guest, record):
    proc, recap, seconds = site(guest)
    record["site.yml first run"] = f"{seconds:.0f} s, {recap}"
    assert proc.returncode == 0, f"site.yml failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    assert recap.get("failed") == 0 and recap.get("unreachable") == 0
    assert re.search(r"2 containers, \d+ checks, 0 failed", proc.stdout), proc.stdout[-3000:]
    mode = guest.ssh(
        "PYTHONPATH=/usr/local/lib/hako python3 -c "
        "'from hako.cgroups import detect_mode; print(detect_mode(\"/sys/fs/cgroup\"))'"
    ).stdout.strip()
    record["runtime's cgroup mode"] = mode
    assert mode == "unified"
    assert guest.ssh("systemctl is-enabled hako.service").stdout.strip() == "enabled"


def test_second_run_changes_nothing(guest, record):
    proc, recap, seconds = site(guest)
    record["site.yml second run"] = f"{seconds:.0f} s, {recap}"
    assert proc.returncode == 0, f"site.yml failed:\n{proc.stdout[-6000:]}"
    assert recap.get("changed") == 0, proc.stdout[-6000:]


def test_limits_are_in_the_guests_cgroup_v2_files(guest):
    for learner in LEARNERS:
        directory = cgroup_dir(guest, f"{LAB}-{learner}")
        assert directory.startswith("/sys/fs/cgroup/"), directory
        assert "/unified/" not in directory
        for filename, want in LIMITS.items():
            assert read(guest, f"{directory}/{filename}") == want, f"{learner}: {filename}"


def test_memory_hog_inside_a_container_is_oom_killed(guest):
    name = f"{LAB}-alice"
    directory = cgroup_dir(guest, name)

    def kills() -> int:
        events = dict(line.split() for line in read(guest, f"{directory}/memory.events").splitlines())
        return int(events["oom_kill"])

    before = kills()
    # tail keeps an endless line of /dev/zero in memory until the kernel kills it.
    hog = guest.ssh(f"hako exec {name} tail /dev/zero", check=False, timeout=300)
    assert hog.returncode == 137, hog.stderr
    assert kills() > before
    # Only the hog: the container still runs.
    assert inspect(guest, name)["State"]["Running"] is True


def test_fork_bomb_inside_a_container_stops_at_the_pids_limit(guest):
    name = f"{LAB}-bob"
    directory = cgroup_dir(guest, name)
    bomb = guest.ssh(
        f"hako exec {name} sh -c 'while :; do sleep 600 >/dev/null 2>&1 & done'", check=False, timeout=300
    )
    assert bomb.returncode != 0
    assert "can't fork" in bomb.stderr
    events = dict(line.split() for line in read(guest, f"{directory}/pids.events").splitlines())
    assert int(events["max"]) > 0
    assert int(read(guest, f"{directory}/pids.current")) <= 64
    # The bomb's sleeps go; PID 1 and the lab's own sleep stay.
    guest.ssh(
        f"for p in $(cat {directory}/cgroup.procs); do "
        f'[ "$(tr "\\0" " " < /proc/$p/cmdline 2>/dev/null)" = "sleep 600 " ] && kill -9 $p; done; true'
    )
    assert inspect(guest, name)["State"]["Running"] is True


def test_boot_service_brings_the_containers_back_after_a_reboot(guest, record):
    guest.reboot()
    record["reboot to SSH"] = f"{guest.boot_seconds[-1]:.0f} s"
    # sshd may answer before the oneshot unit is through (under TCG, under load).
    deadline = time.monotonic() + 180
    state = "activating"
    while state == "activating" and time.monotonic() < deadline:
        time.sleep(2)
        state = guest.ssh("systemctl show -p ActiveState --value hako.service").stdout.strip()
    assert state == "active", guest.ssh("journalctl -b -u hako.service --no-pager", check=False).stdout
    for learner in LEARNERS:
        state = inspect(guest, f"{LAB}-{learner}")["State"]
        assert state["Running"] is True, f"{learner}: {state}"
        directory = cgroup_dir(guest, f"{LAB}-{learner}")
        assert read(guest, f"{directory}/memory.max") == LIMITS["memory.max"]
    assert inspect(guest, f"{LAB}-bob")["HostConfig"]["RestartPolicy"] == "always"


def test_runtime_cgroup_v2_tests_pass_inside_the_guest(guest, record):
    if guest.arch != "x86_64":
        pytest.skip("the runtime's own tests run in the x86_64 guest")
    bundle = guest.dir / "hako-src.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        exclude = lambda info: None if "__pycache__" in info.name else info  # noqa: E731
        for part in (
            "module_utils/hako",
            "bin/hako",
            "pyproject.toml",
            "tests/__init__.py",
            "tests/conftest.py",
        ):
            tar.add(REPO / part, arcname=part, filter=exclude)
        tar.add(REPO / "tests/integration/__init__.py", arcname="tests/integration/__init__.py")
        for name in INNER_TESTS:
            tar.add(REPO / "tests/integration" / name, arcname=f"tests/integration/{name}")
    guest.copy_in(bundle, "/root/hako-src.tar.gz")
    started = time.monotonic()
    proc = guest.ssh(
        "rm -rf /root/hako-src && mkdir /root/hako-src && cd /root/hako-src && "
        "tar -xzf /root/hako-src.tar.gz && python3 -m pytest -q -p no:cacheprovider "
        + " ".join(f"tests/integration/{name}" for name in INNER_TESTS),
        check=False,
        timeout=1200,
    )
    guest.ssh("rm -rf /root/hako-src /root/hako-src.tar.gz")
    summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    record["runtime tests in the guest"] = f"{summary} ({time.monotonic() - started:.0f} s)"
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert " passed" in summary and "failed" not in summary, proc.stdout[-3000:]
