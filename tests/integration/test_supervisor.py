"""The supervisor as a learner meets it: restarts, detaching, signals, a client that goes away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

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


@pytest.mark.parametrize(
    "sabotage",
    [
        "echo 'nobody:x:abc:0::/:/bin/sh' > /etc/passwd",  # a uid that is no number
        "rm /etc/passwd && mkfifo /etc/passwd",  # a reader would block
        "rm /etc/passwd && ln -s /proc/1/environ /etc/passwd",  # a link elsewhere
        "rm /etc/passwd",  # gone (a whiteout in the upper layer)
    ],
)
def test_a_containers_own_passwd_cannot_harm_the_supervisor(run_detached, hako_env, sabotage):
    _, bystander = run_detached("busybox", "sleep", "60")
    supervisor = int(open(os.path.join(hako_env["run"], "supervisor.pid")).read())
    name, _ = run_detached("-u", "nobody", "busybox", "sleep", "60")
    hako("exec", "-u", "0", name, "sh", "-c", sabotage)
    hako("stop", "-t", "0", name)
    result = hako("start", name, check=False, timeout=60)
    assert result.returncode == 1 and "user" in result.stderr and "nobody" in result.stderr
    assert len(result.stderr.strip().split("\n")) == 1
    # The supervisor and the other container are untouched.
    assert int(open(os.path.join(hako_env["run"], "supervisor.pid")).read()) == supervisor
    with open(f"/proc/{bystander}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == supervisor


def test_stop_during_a_restart_back_off_ends_the_restarts(run_detached):
    name, _ = run_detached("--restart", "always", "busybox", "false")
    wait_for(lambda: inspect(name)["RestartCount"] >= 1)
    hako("stop", "-t", "0", name)
    count = inspect(name)["RestartCount"]
    time.sleep(1.5)  # three back-offs: none may restart it
    assert inspect(name)["RestartCount"] in (count, count + 1)
    assert inspect(name)["State"]["Status"] == "exited"
    settled = inspect(name)["RestartCount"]
    time.sleep(1)
    assert inspect(name)["RestartCount"] == settled


def test_the_container_never_gets_the_hosts_terminal(terminal, run_detached):
    # With -i and no -t, stdin is a pipe the client feeds, for run and exec alike.
    t = terminal(
        "run", "--rm", "-i", "busybox", "sh", "-c", "readlink /proc/self/fd/0; readlink /proc/self/fd/1"
    )
    screen = t.expect("pipe:")
    assert "/dev/pts" not in screen
    name, _ = run_detached("busybox", "sleep", "60")
    t = terminal("exec", "-i", name, "sh", "-c", "for n in 0 1 2; do readlink /proc/self/fd/$n; done")
    screen = t.expect("pipe:")
    t.wait()
    assert "/dev/pts" not in t.output.decode()


def test_a_client_whose_supervisor_dies_reports_an_unknown_exit(hako_env, containers):
    containers.append("lost")
    proc = subprocess.Popen(
        [*HAKO, "run", "--name", "lost", "busybox", "sleep", "60"], stderr=subprocess.PIPE
    )
    wait_for(lambda: "Up" in hako("ps").stdout)
    supervisor = int(open(os.path.join(hako_env["run"], "supervisor.pid")).read())
    os.kill(supervisor, signal.SIGKILL)
    assert proc.wait(20) == 125
    assert "unknown" in proc.stderr.read().decode()
    proc.stderr.close()
    # Recovery: the container is still there; the next supervisor takes requests again.
    hako("rm", "-f", "lost")
    hako("run", "--rm", "busybox", "true")


def test_a_new_supervisor_leaves_other_roots_containers_alone(run_detached, tmp_path):
    name, pid = run_detached("busybox", "sleep", "60")
    other = dict(os.environ, HAKO_ROOT=str(tmp_path / "root"), HAKO_RUN=str(tmp_path / "run"))
    os.chmod(tmp_path, 0o711)
    hako("image", "build", "busybox", env=other)
    hako("run", "--rm", "busybox", "true", env=other)
    assert inspect(name)["State"]["Status"] == "running"
    assert os.path.exists(f"/proc/{pid}")
    stop_other = [p for p in (tmp_path / "run").glob("supervisor.pid")]
    for path in stop_other:
        os.kill(int(path.read_text()), signal.SIGTERM)
    wait_for(lambda: not (tmp_path / "run" / "supervisor.pid").exists())


def test_rm_f_of_a_paused_container_does_not_wait_out_the_timeouts(run_detached):
    name, pid = run_detached("busybox", "sleep", "60")
    hako("pause", name)
    hako("rm", "-f", name, timeout=8)
    assert name not in hako("ps", "-a").stdout
