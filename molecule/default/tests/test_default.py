"""The lab host as a learner finds it after site.yml (molecule's verify step, testinfra)."""

from __future__ import annotations

import json

import pytest

LAB = "molecule"
LEARNERS = {"alice": {"memory": 64 << 20, "pids": 64}, "bob": {"memory": 96 << 20, "pids": 32}}
CONTAINERS = {f"{LAB}-{name}" for name in LEARNERS} | {f"{LAB}-web"}


def hako(host, *args: str) -> str:
    return host.check_output("hako " + " ".join(f"'{a}'" for a in args))


def inspect(host, name: str) -> dict:
    return json.loads(hako(host, "inspect", name))[0]


def test_the_learners_command_is_installed(host):
    command = host.file("/usr/local/bin/hako")
    assert command.is_file and command.mode == 0o755
    assert host.file("/usr/local/lib/hako/hako/cli.py").is_file
    assert hako(host, "version").startswith("hako ")


def test_the_state_directory_is_traversable_but_not_readable(host):
    state = host.file("/var/lib/hako")
    assert state.is_directory and state.user == "root" and state.mode == 0o711


def test_the_kernel_settings_are_at_least_the_minimums(host):
    conf = host.file("/etc/sysctl.d/90-hako.conf")
    assert conf.is_file
    value = int(conf.content_string.split("user.max_user_namespaces = ")[1].split()[0])
    assert value >= 1024
    assert int(host.check_output("cat /proc/sys/user/max_user_namespaces")) >= 1024


def test_every_container_of_the_lab_runs_and_no_other(host):
    rows = [json.loads(line) for line in hako(host, "ps", "--format", "json").splitlines()]
    assert {row["Names"] for row in rows} == CONTAINERS
    assert {row["State"] for row in rows} == {"running"}


@pytest.mark.parametrize("learner", sorted(LEARNERS))
def test_each_learner_has_namespaces_of_their_own(host, learner):
    name = f"{LAB}-{learner}"
    for kind in ("pid", "net", "uts", "ipc", "mnt", "cgroup"):
        inside = hako(host, "exec", name, "readlink", f"/proc/self/ns/{kind}").strip()
        outside = host.check_output(f"readlink /proc/self/ns/{kind}").strip()
        assert inside.startswith(f"{kind}:[") and inside != outside, kind
    assert hako(host, "exec", name, "hostname").strip() == learner
    # PID 1 is the container's command; no host process is visible.
    pids = hako(host, "exec", name, "ps", "-o", "pid").split()[1:]
    assert "1" in pids and len(pids) <= 5


@pytest.mark.parametrize("learner", sorted(LEARNERS))
def test_each_learners_limits_are_in_the_cgroup_files(host, learner):
    info = inspect(host, f"{LAB}-{learner}")
    cgroup = info["Cgroup"]
    if cgroup["Version"] == 1:
        memory = cgroup["Paths"]["memory"] + "/memory.limit_in_bytes"
        pids = cgroup["Paths"]["pids"] + "/pids.max"
        quota = cgroup["Paths"]["cpu"] + "/cpu.cfs_quota_us"
        assert int(host.file(quota).content_string) == 50000
    else:
        memory = cgroup["Paths"]["unified"] + "/memory.max"
        pids = cgroup["Paths"]["unified"] + "/pids.max"
        cpu_max = host.file(cgroup["Paths"]["unified"] + "/cpu.max").content_string
        assert cpu_max.split() == ["50000", "100000"]
    assert int(host.file(memory).content_string) == LEARNERS[learner]["memory"]
    assert int(host.file(pids).content_string) == LEARNERS[learner]["pids"]


def test_the_web_container_shares_alices_network_namespace(host):
    web, alice = inspect(host, f"{LAB}-web"), inspect(host, f"{LAB}-alice")
    assert web["Namespaces"]["network"]["inode"] == alice["Namespaces"]["network"]["inode"]
    assert web["Namespaces"]["pid"]["inode"] != alice["Namespaces"]["pid"]["inode"]
    page = hako(host, "exec", f"{LAB}-alice", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/")
    assert page.strip() == web["Config"]["Hostname"]
    assert host.run(f"hako exec {LAB}-bob wget -q -T 2 -O - http://127.0.0.1:8080/").rc != 0


def test_the_learners_reach_each_other_by_name_on_their_internal_network(host):
    hako(host, "exec", f"{LAB}-alice", "ping", "-c", "1", "-W", "2", f"{LAB}-bob")
    assert (
        hako(host, "exec", f"{LAB}-bob", "ip", "-4", "-o", "addr", "show", "eth0")
        .split()[3]
        .startswith("10.213.250.")
    )
    # Internal: no default route, so nothing beyond the bridge.
    assert "default" not in hako(host, "exec", f"{LAB}-alice", "ip", "route")
