"""cgroup limits as a learner meets them: the OOM killer, a fork bomb, a throttled loop."""

from __future__ import annotations

import json
import time

from ..conftest import hako, wait_for


def stats(name: str) -> dict:
    return json.loads(hako("stats", "--no-stream", "--format", "json", name).stdout)


def inspect(name: str) -> dict:
    return json.loads(hako("inspect", name).stdout)[0]


def cgroup_file(name: str, controller: str, filename: str) -> str:
    paths = inspect(name)["Cgroup"]["Paths"]
    directory = paths.get(controller) or paths["unified"]
    with open(f"{directory}/{filename}") as f:
        return f.read().strip()


def test_memory_hog_is_oom_killed_inside_while_the_host_is_untouched(containers):
    containers.append("hog")
    # tail keeps an endless line of /dev/zero in memory until the kernel kills it.
    result = hako("run", "--name", "hog", "--memory", "32m", "busybox", "tail", "/dev/zero", check=False)
    assert result.returncode == 137
    state = inspect("hog")["State"]
    assert state["OOMKilled"] is True
    assert state["ExitCode"] == 137
    assert "Exited (137)" in hako("ps", "-a").stdout


def test_fork_bomb_stops_at_the_pids_limit(run_detached):
    name, _ = run_detached("--pids-limit", "20", "busybox", "sleep", "60")
    bomb_script = "while :; do sleep 60 >/dev/null 2>&1 & done"
    bomb = hako("exec", name, "sh", "-c", bomb_script, check=False, timeout=60)
    assert bomb.returncode != 0
    assert "can't fork" in bomb.stderr
    current = stats(name)
    # The bomb's shell died at the limit: PID 1 and 18 sleeps are left of the 20.
    assert current["PIDs"] == 19
    assert current["PIDsLimit"] == 20
    # PID 1 is unharmed.
    assert hako("ps").stdout.count("Up") == 1


def test_busy_loop_under_a_cpu_quota_is_throttled(run_detached):
    name, _ = run_detached("--cpus", "0.2", "busybox", "sh", "-c", "while :; do :; done")
    assert cgroup_file(name, "cpu", "cpu.cfs_quota_us") == "20000"
    first = stats(name)
    started = time.monotonic()
    wait_for(lambda: stats(name)["NrThrottled"] > first["NrThrottled"] + 5)
    elapsed = time.monotonic() - started
    # Usage over the window stays near the quota: far below one whole CPU.
    usage = hako("exec", name, "cat", "/sys/fs/cgroup/cpuacct/cpuacct.usage", check=False).stdout.strip()
    assert stats(name)["NrThrottled"] > 0
    assert stats(name)["CPUPerc"] < 60, (elapsed, usage)


def test_limits_are_written_to_the_cgroup_and_read_back(run_detached):
    name, _ = run_detached(
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "50",
        "--cpu-shares",
        "512",
        "busybox",
        "sleep",
        "60",
    )
    resources = inspect(name)["Cgroup"]["Resources"]
    assert resources["memory"]["limit"] == 64 * 2**20
    assert resources["cpu"]["quota"] == 50000 and resources["cpu"]["period"] == 100000
    assert resources["cpu"]["shares"] == 512
    assert resources["pids"]["limit"] == 50
    assert cgroup_file(name, "memory", "memory.limit_in_bytes") == str(64 * 2**20)
    assert cgroup_file(name, "pids", "pids.max") == "50"


def test_update_changes_limits_of_a_running_container_in_place(run_detached):
    name, pid = run_detached("--memory", "64m", "--pids-limit", "50", "busybox", "sleep", "60")
    hako("update", "--memory", "128m", "--pids-limit", "80", "--cpus", "1.5", name)
    assert cgroup_file(name, "memory", "memory.limit_in_bytes") == str(128 * 2**20)
    assert cgroup_file(name, "pids", "pids.max") == "80"
    assert cgroup_file(name, "cpu", "cpu.cfs_quota_us") == "150000"
    assert inspect(name)["State"]["Pid"] == pid  # the same process: nothing restarted
    assert inspect(name)["HostConfig"]["Limits"]["memory"] == 128 * 2**20


def test_update_with_a_bad_value_changes_nothing(run_detached):
    name, _ = run_detached("--memory", "64m", "busybox", "sleep", "60")
    result = hako("update", "--memory", "12XB", name, check=False)
    assert result.returncode != 0 and "12XB" in result.stderr
    refused = hako("update", "--cpuset-cpus", "99", name, check=False)
    assert refused.returncode != 0 and "cpuset" in refused.stderr
    assert cgroup_file(name, "memory", "memory.limit_in_bytes") == str(64 * 2**20)
    assert "cpuset_cpus" not in inspect(name)["HostConfig"]["Limits"]


def test_stats_read_memory_cpu_and_pids_from_the_cgroup(run_detached):
    name, _ = run_detached("--memory", "64m", "--pids-limit", "50", "busybox", "sleep", "60")
    current = stats(name)
    assert current["MemLimit"] == 64 * 2**20
    assert 0 < current["MemUsage"] < 64 * 2**20
    assert current["PIDs"] == 1 and current["PIDsLimit"] == 50
    table = hako("stats", "--no-stream", name).stdout
    assert "64MiB" in table and "1 / 50" in table


def test_pause_freezes_every_process_and_unpause_thaws_them(run_detached):
    name, pid = run_detached("busybox", "sh", "-c", "while :; do :; done")
    hako("pause", name)
    assert cgroup_file(name, "freezer", "freezer.state") == "FROZEN"
    assert inspect(name)["State"]["Status"] == "paused"
    assert "(Paused)" in hako("ps").stdout
    before = stats(name)["CPUPerc"]
    assert before < 5
    exec_refused = hako("exec", name, "true", check=False)
    assert exec_refused.returncode == 125 and "paused" in exec_refused.stderr
    hako("unpause", name)
    assert cgroup_file(name, "freezer", "freezer.state") == "THAWED"
    assert inspect(name)["State"]["Status"] == "running"
