"""hako_verify run by ansible-playbook on this machine: containers checked against the kernel.

The module is only worth having if it reports what the kernel holds, not what
hako's records say: so the good case is compared with the cgroup files and
/proc/<pid>/ns links read here, and one failure is a limit written straight
into a cgroup file behind hako's back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..conftest import container_pid, hako
from .test_ansible_modules import COMMAND, MIB, run_playbook, task

# /proc/<pid>/ns names of the kinds the module checks (the user namespace too).
NS_PROC_NAMES = {
    "ipc": "ipc",
    "mount": "mnt",
    "network": "net",
    "pid": "pid",
    "uts": "uts",
    "cgroup": "cgroup",
    "user": "user",
}
# The limit checks by name, and where each lives: (v1 controller, v1 file, v2 file).
LIMIT_FILES = {
    "memory limit": ("memory", "memory.limit_in_bytes", "memory.max"),
    "CPU quota": ("cpu", "cpu.cfs_quota_us", "cpu.max"),
    "CPU period": ("cpu", "cpu.cfs_period_us", "cpu.max"),
    "pids limit": ("pids", "pids.max", "pids.max"),
}


def inspect(name: str) -> dict:
    return json.loads(hako("inspect", name).stdout)[0]


def kernel_limit(info: dict, check: str) -> int:
    """A limit as the container's cgroup file holds it, read here (not through hako)."""
    controller, v1_file, v2_file = LIMIT_FILES[check]
    cgroup = info["Cgroup"]
    if cgroup["Version"] == 1:
        text = Path(cgroup["Paths"][controller], v1_file).read_text().split()
    else:
        text = Path(cgroup["Paths"]["unified"], v2_file).read_text().split()
        if v2_file == "cpu.max":
            text = text[:1] if check == "CPU quota" else text[1:]
    return -1 if text == ["max"] else int(text[0])


def kernel_cpus(info: dict) -> str:
    cgroup = info["Cgroup"]
    directory = cgroup["Paths"]["cpuset"] if cgroup["Version"] == 1 else cgroup["Paths"]["unified"]
    return Path(directory, "cpuset.cpus").read_text().strip()


def swap_accounting(info: dict) -> bool:
    """Whether the kernel keeps a memory+swap limit for the container (swap accounting on)."""
    return "swap" in info["Cgroup"]["Resources"].get("memory", {})


def pids_max_file(info: dict) -> Path:
    cgroup = info["Cgroup"]
    directory = cgroup["Paths"]["pids"] if cgroup["Version"] == 1 else cgroup["Paths"]["unified"]
    return Path(directory, "pids.max")


def by_check(result: dict, container: str) -> dict[str, dict]:
    return {c["check"]: c for c in result["checks"] if c["container"] == container}


# --------------------------------------------------------------------------


def test_a_good_container_passes_every_namespace_and_limit_check_as_the_kernel_has_them(
    tmp_path, containers
) -> None:
    containers.extend(["vgood", "vside", "vswap"])
    # The kernel writes a CPU list back in its own form ("0,1" as "0-1").
    cpus = "0,1" if Path("/sys/devices/system/cpu/online").read_text().startswith("0-") else "0-0"
    lab = [
        {
            "name": "vgood",
            "image": "busybox",
            "command": COMMAND,
            "memory": "64m",
            "cpus": 0.5,
            "pids_limit": 40,
        },
        {
            "name": "vside",
            "image": "busybox",
            "command": COMMAND,
            "namespaces": {"network": "container:vgood"},
        },
        # Unlimited swap is -1 in the kernel's terms too.
        {
            "name": "vswap",
            "image": "busybox",
            "command": COMMAND,
            "memory": "64m",
            "memory_swap": -1,
            "cpuset_cpus": cpus,
        },
    ]
    tasks = [
        task("lab", "hako_containers", containers=lab),
        task("verify", "hako_verify", containers=lab),
        task("verify the limits only", "hako_verify", checks=["limits"], containers=lab[:1]),
    ]
    r = run_playbook(tmp_path, tasks)

    verify = r["verify"]
    assert verify["_status"] == "ok" and verify["changed"] is False
    assert verify["failures"] == [] and verify["verified"] == 3
    assert verify["checks"] and all(c["ok"] for c in verify["checks"])
    good = by_check(verify, "vgood")
    assert good["state"]["actual"] == "running"

    # Every namespace kind this kernel has is checked, each as /proc says it.
    kinds = [k for k, proc in NS_PROC_NAMES.items() if os.path.exists(f"/proc/self/ns/{proc}")]
    assert {c for c in good if c.endswith(" namespace")} == {f"{k} namespace" for k in kinds}
    pid = container_pid("vgood")
    for kind in kinds:
        proc = NS_PROC_NAMES[kind]
        shared = os.stat(f"/proc/{pid}/ns/{proc}").st_ino == os.stat(f"/proc/self/ns/{proc}").st_ino
        assert good[f"{kind} namespace"]["actual"] == ("host's" if shared else "private"), kind
    # No user namespace asked for: the host's; every other kind private.
    assert good["user namespace"]["expected"] == "host's"
    assert all(good[f"{k} namespace"]["expected"] == "private" for k in kinds if k != "user")
    assert verify["host_namespaces"] == {k: os.readlink(f"/proc/self/ns/{NS_PROC_NAMES[k]}") for k in kinds}

    # The sidecar is in vgood's network namespace and its own of every other kind.
    side = by_check(verify, "vside")
    assert side["network namespace"]["expected"] == side["network namespace"]["actual"] == "vgood's"
    assert os.stat(f"/proc/{container_pid('vside')}/ns/net").st_ino == os.stat(f"/proc/{pid}/ns/net").st_ino
    assert side["pid namespace"]["actual"] == "private"

    # The limits are the values in the cgroup files.
    info = inspect("vgood")
    expected = {"memory limit": 64 * MIB, "CPU quota": 50_000, "CPU period": 100_000, "pids limit": 40}
    for check, value in expected.items():
        assert good[check]["expected"] == good[check]["actual"] == value, check
        assert kernel_limit(info, check) == value, check
    swap = by_check(verify, "vswap")
    if swap_accounting(inspect("vswap")):
        assert swap["memory+swap limit"]["expected"] == swap["memory+swap limit"]["actual"] == -1
    assert swap["cpuset CPUs"]["ok"] and swap["cpuset CPUs"]["actual"] == kernel_cpus(inspect("vswap"))
    limits_only = r["verify the limits only"]
    assert limits_only["failures"] == []
    assert set(by_check(limits_only, "vgood")) >= set(expected)
    assert not [c for c in limits_only["checks"] if c["check"] == "state" or c["check"].endswith("namespace")]


def test_each_failure_is_named_and_a_limit_written_behind_hakos_back_is_caught(tmp_path, containers) -> None:
    containers.extend(["vjoined", "vmem", "vstop", "vhostnet", "vpids"])
    hako("run", "-d", "--name", "vmem", "--memory", "64m", "busybox", *COMMAND)
    hako("run", "-d", "--name", "vjoined", "--pid", "container:vmem", "busybox", *COMMAND)
    hako("create", "--name", "vstop", "busybox", *COMMAND)
    hako("run", "-d", "--name", "vhostnet", "--network", "host", "busybox", *COMMAND)
    hako("run", "-d", "--name", "vpids", "--pids-limit", "50", "busybox", *COMMAND)
    # Behind hako's back: its record still says 50.
    pids_max = pids_max_file(inspect("vpids"))
    pids_max.write_text("77")
    assert inspect("vpids")["HostConfig"]["Limits"]["pids_limit"] == 50

    declared = {
        "memory": {"name": "vmem", "memory": "128m"},
        "stopped": {"name": "vstop", "state": "started"},
        "missing": {"name": "vnobody"},
        "host network": {"name": "vhostnet", "namespaces": {"network": "private"}},
        "pids": {"name": "vpids", "pids_limit": 50},
        "not shared": {"name": "vpids", "namespaces": {"network": "container:vmem"}},
        "shared": {"name": "vjoined", "namespaces": {"pid": "private"}},
    }
    # The namespaces alone for vpids' second item: its pids limit fails too (above).
    only = {"not shared": {"checks": ["namespaces"]}}
    tasks = [
        task(title, "hako_verify", _ignore_errors=True, containers=[item], **only.get(title, {}))
        for title, item in declared.items()
    ]
    everything = list(declared.values())
    tasks += [
        task("all, without failing", "hako_verify", fail_on_error=False, containers=everything),
        task(
            "all, in check mode", "hako_verify", _check_mode=True, fail_on_error=False, containers=everything
        ),
        task("as made", "hako_verify", containers=[{"name": "vmem"}, {"name": "vhostnet"}]),
        task("absent as declared", "hako_verify", containers=[{"name": "vnobody", "state": "absent"}]),
        task("stopped as declared", "hako_verify", containers=[{"name": "vstop", "state": "stopped"}]),
        task(
            "present but declared absent",
            "hako_verify",
            _ignore_errors=True,
            containers=[{"name": "vmem", "state": "absent"}],
        ),
    ]
    r = run_playbook(tmp_path, tasks)

    vpids_net = os.readlink(f"/proc/{container_pid('vpids')}/ns/net")
    memory = [f"vmem: memory limit is {64 * MIB}, want {128 * MIB}"]
    if swap_accounting(inspect("vmem")):  # memory+swap: twice the memory unless told otherwise
        memory.append(f"vmem: memory+swap limit is {128 * MIB}, want {256 * MIB}")
    wanted = {
        "memory": memory,
        "stopped": ["vstop: state is stopped, want running"],
        "missing": ["vnobody: existence is absent, want present"],
        "host network": ["vhostnet: network namespace is host's, want private"],
        "pids": ["vpids: pids limit is 77, want 50"],
        "not shared": [f"vpids: network namespace is not vmem's ({vpids_net}), want vmem's"],
        # Private means neither the host's nor another container's.
        "shared": ["vjoined: pid namespace is shared with vmem, want private"],
    }
    for title, failures in wanted.items():
        result = r[title]
        assert result["_status"] == "failed", title
        assert result["failures"] == failures, title
        assert result["msg"] == f"{len(failures)} check(s) failed: " + "; ".join(failures)
    # The kinds not declared are checked as the container was made (private), and pass.
    assert by_check(r["host network"], "vhostnet")["pid namespace"]["ok"]

    # All at once: vpids' pids limit fails in both its items.
    every_failure = []
    for title, failures in wanted.items():
        every_failure += failures + (wanted["pids"] if title == "not shared" else [])
    quiet = r["all, without failing"]
    assert quiet["_status"] == "ok" and quiet["changed"] is False
    assert quiet["failures"] == every_failure and quiet["verified"] == len(everything)
    checked = r["all, in check mode"]
    assert checked["_status"] == "ok"
    assert checked["failures"] == every_failure and checked["checks"] == quiet["checks"]

    assert r["as made"]["_status"] == "ok" and r["as made"]["failures"] == []
    assert by_check(r["as made"], "vhostnet")["network namespace"]["actual"] == "host's"
    assert by_check(r["as made"], "vmem")["memory limit"]["actual"] == 64 * MIB
    # vjoined joined vmem's PID namespace: that leaves it vmem's own.
    assert by_check(r["as made"], "vmem")["pid namespace"]["actual"] == "private"
    assert r["absent as declared"]["_status"] == "ok" and r["absent as declared"]["failures"] == []
    assert r["stopped as declared"]["_status"] == "ok" and r["stopped as declared"]["failures"] == []
    assert r["present but declared absent"]["failures"] == ["vmem: existence is present, want absent"]
    # Nothing was changed: the file still holds what was written into it.
    assert pids_max.read_text().strip() == "77"


def test_bad_input_fails_with_one_line_naming_the_option(tmp_path) -> None:
    tasks = [
        task(
            "unknown check",
            "hako_verify",
            _ignore_errors=True,
            checks=["state", "colour"],
            containers=[{"name": "x"}],
        ),
        task("no name", "hako_verify", _ignore_errors=True, containers=[{"name": "x"}, {"memory": "64m"}]),
        task("bad name", "hako_verify", _ignore_errors=True, containers=[{"name": "../etc"}]),
        task("bad limit", "hako_verify", _ignore_errors=True, containers=[{"name": "x", "memory": "lots"}]),
    ]
    r = run_playbook(tmp_path, tasks)

    messages = {title: r[title]["msg"] for title in r}
    assert all(r[title]["_status"] == "failed" for title in r), messages
    assert all("\n" not in m and "Traceback" not in m for m in messages.values()), messages
    assert "checks" in messages["unknown check"] and "colour" in messages["unknown check"]
    assert messages["no name"] == "invalid value for containers[1].name: None"
    # An item's error names the item as hako_containers does.
    assert messages["bad name"].startswith("containers[0] (../etc): invalid value for name:")
    assert (
        messages["bad limit"].startswith("containers[0] (x): invalid value for memory:")
        and "'lots'" in messages["bad limit"]
    )
