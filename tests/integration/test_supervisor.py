"""The supervisor as a learner meets it: restarts, detaching, signals, a client that goes away."""

from __future__ import annotations

import json
import os
import signal
import subprocess

from ..conftest import HAKO, hako, wait_for


def inspect(name: str) -> dict:
    return json.loads(hako("inspect", name).stdout)[0]


def test_restart_always_brings_a_container_back_until_it_is_stopped(run_detached):
    name, _ = run_detached("--restart", "always", "busybox", "sh", "-c", "sleep 0.2; exit 1")
    wait_for(lambda: inspect(name)["RestartCount"] >= 2)
    hako("stop", "-t", "1", name)
    count = inspect(name)["RestartCount"]
    assert inspect(name)["State"]["Status"] == "exited"
    # A stopped container stays stopped: no restart is pending.
    wait_for(lambda: "Exited" in hako("ps", "-a").stdout)
    assert inspect(name)["RestartCount"] == count


def test_restart_on_failure_gives_up_after_its_limit(run_detached):
    name, _ = run_detached("--restart", "on-failure:2", "busybox", "sh", "-c", "exit 3")
    wait_for(lambda: inspect(name)["RestartCount"] == 2 and inspect(name)["State"]["Status"] == "exited")
    assert inspect(name)["State"]["ExitCode"] == 3


def test_restart_on_failure_leaves_a_clean_exit_alone(run_detached):
    name, _ = run_detached("--restart", "on-failure", "busybox", "true")
    wait_for(lambda: inspect(name)["State"]["Status"] == "exited")
    assert inspect(name)["RestartCount"] == 0


def test_foreground_run_detaches_with_ctrl_p_ctrl_q_and_attaches_again(terminal, containers):
    containers.append("fgtty")
    t = terminal("run", "-it", "--name", "fgtty", "busybox", "sh")
    t.send("echo first-$((2+3))\n")
    t.expect("first-5")
    t.send("\x10\x11")
    assert t.wait() == 0
    assert inspect("fgtty")["State"]["Status"] == "running"
    again = terminal("attach", "fgtty")
    again.send("echo second-$((3+4))\n")
    again.expect("second-7")
    again.send("exit 4\n")
    assert again.wait() == 4


def test_foreground_run_passes_signals_to_the_container(containers):
    containers.append("sig")
    script = "trap 'exit 7' TERM; while :; do sleep 0.1; done"
    proc = subprocess.Popen([*HAKO, "run", "--name", "sig", "busybox", "sh", "-c", script])
    wait_for(lambda: "Up" in hako("ps").stdout)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 7
    assert inspect("sig")["State"]["ExitCode"] == 7


def test_container_outlives_a_killed_foreground_client_and_keeps_logging(containers):
    containers.append("orphan")
    proc = subprocess.Popen(
        [*HAKO, "run", "--name", "orphan", "busybox", "sh", "-c", "sleep 0.5; echo after-client; sleep 60"],
        stdout=subprocess.DEVNULL,
    )
    wait_for(lambda: "Up" in hako("ps").stdout)
    proc.kill()
    proc.wait()
    wait_for(lambda: "after-client" in hako("logs", "orphan").stdout)
    assert inspect("orphan")["State"]["Status"] == "running"


def test_start_attach_returns_the_output_and_exit_code(containers):
    containers.append("again")
    hako("create", "--name", "again", "busybox", "sh", "-c", "echo run-$((1+1)); exit 6")
    result = hako("start", "-a", "again", check=False)
    assert result.returncode == 6
    assert result.stdout == "run-2\n"
    second = hako("start", "-a", "again", check=False)
    assert second.returncode == 6
    assert hako("logs", "again").stdout == "run-2\nrun-2\n"


def test_the_supervisor_is_one_process_for_many_containers(run_detached, hako_env):
    pids = [run_detached("busybox", "sleep", "60")[1] for _ in range(3)]
    supervisor = int(open(os.path.join(hako_env["run"], "supervisor.pid")).read())
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            parent = int(f.read().rsplit(")", 1)[1].split()[1])
        assert parent == supervisor
    with open(f"/proc/{supervisor}/comm") as f:
        assert f.read().strip() == "hako-supervisor"
