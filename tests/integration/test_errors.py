"""Bad input: one clear line naming the field and value, Docker's exit status, nothing left behind.

The autouse leak check (conftest.py) runs after each of these and fails the
test if a record, cgroup, mount, device or process remains.
"""

from __future__ import annotations

import pytest

from ..conftest import hako

BAD_RUNS = [
    (["nosuchimage", "true"], "nosuchimage"),
    (["--memory", "12XB", "busybox", "true"], "12XB"),
    (["--memory", "1k", "busybox", "true"], "memory"),
    (["--cpus", "-1", "busybox", "true"], "cpus"),
    (["--cpus", "many", "busybox", "true"], "many"),
    (["--pids-limit", "0", "busybox", "true"], "pids-limit"),
    (["--memory-swap", "32m", "--memory", "64m", "busybox", "true"], "memory-swap"),
    (["--name", "a/b", "busybox", "true"], "a/b"),
    (["--name=-lead", "busybox", "true"], "-lead"),
    (["--hostname", "bad_host!", "busybox", "true"], "bad_host!"),
    (["--net", "bridge0", "busybox", "true"], "bridge0"),
    (["--ipc", "container:nobody", "busybox", "true"], "nobody"),
    (["--userns", "0:10", "busybox", "true"], "userns"),
    (["-v", "relative:/x", "busybox", "true"], "relative:/x"),
    (["--tmpfs", "/x:size=1m,weird", "busybox", "true"], "weird"),
    (["--restart", "sometimes", "busybox", "true"], "sometimes"),
    (["--stop-signal", "SIGNOPE", "busybox", "true"], "SIGNOPE"),
    (["-w", "relative", "busybox", "true"], "relative"),
    (["-e", "=novalue", "busybox", "true"], "=novalue"),
    (["--cpuset-cpus", "99", "busybox", "true"], "cpuset"),
    (["-v", "/nonexistent-hako-source:/data", "busybox", "true"], "nonexistent-hako-source"),
    (["-u", "nosuchuser", "busybox", "true"], "nosuchuser"),
]


@pytest.mark.parametrize("args,named", BAD_RUNS, ids=[" ".join(a) for a, _ in BAD_RUNS])
@pytest.mark.parametrize("mode", ["--rm", "-d", "--name-kept"])
def test_bad_run_is_one_line_exit_125_and_leaves_nothing(args, named, mode):
    extra = [] if mode == "--name-kept" else [mode]
    result = hako("run", *extra, *args, check=False)
    assert result.returncode == 125, result.stderr
    lines = result.stderr.strip().split("\n")
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "Traceback" not in result.stderr
    assert hako("ps", "-aq").stdout == ""


def test_duplicate_name_is_refused_and_the_first_container_kept(containers):
    containers.append("taken")
    first = hako("create", "--name", "taken", "busybox", "true").stdout.strip()
    result = hako("run", "--name", "taken", "busybox", "true", check=False)
    assert result.returncode == 125
    assert 'name "taken" is already in use' in result.stderr
    assert hako("ps", "-aq", "--no-trunc").stdout.split() == [first]


@pytest.mark.parametrize(
    "command,code",
    [(["nosuchcommand"], 127), (["/etc/passwd"], 126), (["/"], 126)],
)
def test_command_that_cannot_run_exits_126_or_127_and_leaves_nothing(command, code):
    result = hako("run", "--rm", "busybox", *command, check=False)
    assert result.returncode == code
    assert len(result.stderr.strip().split("\n")) == 1
    assert hako("ps", "-aq").stdout == ""


def test_exec_into_a_missing_or_stopped_container(containers):
    assert hako("exec", "ghost", "true", check=False).returncode == 125
    containers.append("idle")
    hako("create", "--name", "idle", "busybox", "true")
    result = hako("exec", "idle", "true", check=False)
    assert result.returncode == 125 and "not running" in result.stderr


def test_unknown_command_and_option():
    assert hako("frobnicate", check=False).returncode == 125
    result = hako("run", "--frobnicate", "busybox", "true", check=False)
    assert result.returncode == 125 and "frobnicate" in result.stderr
