"""The chapter's namespaces, checked the way a learner would: /proc/PID/ns, ps, hostname, IPC."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile

import pytest

from ..conftest import hako, ns_inode

# hako's namespace option for each /proc/PID/ns entry (mnt has no "host" mode).
KINDS = {"ipc": "--ipc", "net": "--net", "pid": "--pid", "uts": "--uts", "cgroup": "--cgroupns", "mnt": None}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_namespace_is_private_by_default(run_detached, kind):
    _, pid = run_detached("busybox", "sleep", "60")
    assert ns_inode(pid, kind) != ns_inode("self", kind)


@pytest.mark.parametrize("kind", sorted(k for k, flag in KINDS.items() if flag))
def test_each_namespace_can_be_the_hosts(run_detached, kind):
    _, pid = run_detached(KINDS[kind], "host", "busybox", "sleep", "60")
    assert ns_inode(pid, kind) == ns_inode("self", kind)
    # The others stay private.
    for other in KINDS:
        if other != kind:
            assert ns_inode(pid, other) != ns_inode("self", other), other


def test_user_namespace_is_the_hosts_unless_asked(run_detached):
    _, pid = run_detached("busybox", "sleep", "60")
    assert ns_inode(pid, "user") == ns_inode("self", "user")


def test_user_namespace_maps_root_to_an_unprivileged_range(run_detached):
    name, pid = run_detached("--userns", "231072:65536", "busybox", "sleep", "60")
    assert ns_inode(pid, "user") != ns_inode("self", "user")
    with open(f"/proc/{pid}/uid_map") as f:
        assert f.read().split() == ["0", "231072", "65536"]
    # Root inside is uid 231072 outside.
    assert os.stat(f"/proc/{pid}").st_uid == 231072
    inside = hako("exec", name, "id", "-u").stdout.strip()
    assert inside == "0"
    # Container root owns its files: it can write and delete what the image holds.
    hako("exec", name, "sh", "-c", "echo hi > /etc/motd && rm /bin/vi && chown 1000 /etc/motd")
    assert hako("exec", name, "stat", "-c", "%u", "/etc/motd").stdout.strip() == "1000"


def test_ps_inside_shows_only_the_container_with_the_command_as_pid_1():
    out = hako("run", "--rm", "busybox", "ps", "-o", "pid,args").stdout.split("\n")[1:]
    rows = [line.split(None, 1) for line in out if line.strip()]
    assert rows == [["1", "ps -o pid,args"]]


def test_pid_1_is_the_command_in_a_detached_container(run_detached):
    name, _ = run_detached("busybox", "sleep", "60")
    rows = hako("exec", name, "ps", "-o", "pid,args").stdout.split("\n")[1:]
    pids = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in rows if line.strip()}
    assert pids["1"] == "sleep 60"
    assert len(pids) == 2  # sleep and the ps itself


def test_hostname_inside_is_not_the_hosts():
    host = socket.gethostname()
    inside = hako("run", "--rm", "--hostname", "web1", "busybox", "hostname").stdout.strip()
    assert inside == "web1"
    # Setting it takes CAP_SYS_ADMIN, which a default container lacks.
    script = "hostname changed && hostname"
    changed = hako("run", "--rm", "--cap-add", "SYS_ADMIN", "busybox", "sh", "-c", script).stdout.strip()
    assert changed == "changed"
    assert socket.gethostname() == host


def test_default_hostname_is_the_short_id(run_detached):
    name, _ = run_detached("busybox", "sleep", "60")
    full = hako("ps", "-q", "--no-trunc").stdout.split()
    short = hako("exec", name, "hostname").stdout.strip()
    assert full == [full[0]] and full[0][:12] == short


def test_ipc_object_made_inside_is_invisible_outside_and_shared_on_request(run_detached):
    name, pid = run_detached("busybox", "sleep", "60")
    hako("exec", name, "touch", "/dev/mqueue/lab-queue")
    assert "lab-queue" in hako("exec", name, "ls", "/dev/mqueue").stdout
    # The host's IPC namespace, seen through a fresh mqueue mount, has no such queue.
    with tempfile.TemporaryDirectory() as view:
        subprocess.run(["mount", "-t", "mqueue", "mqueue", view], check=True)
        try:
            assert "lab-queue" not in os.listdir(view)
        finally:
            subprocess.run(["umount", view], check=True)
    # Another container joining c1's IPC namespace (setns) sees it.
    shared = hako("run", "--rm", "--ipc", f"container:{name}", "busybox", "ls", "/dev/mqueue").stdout
    assert "lab-queue" in shared
    private = hako("run", "--rm", "busybox", "ls", "/dev/mqueue").stdout
    assert "lab-queue" not in private


def test_joining_another_containers_network_and_pid_namespaces(run_detached):
    name, pid = run_detached("busybox", "sleep", "60")
    out = hako(
        "run",
        "--rm",
        "--net",
        f"container:{name}",
        "--pid",
        f"container:{name}",
        "busybox",
        "sh",
        "-c",
        "readlink /proc/self/ns/net; ps -o args",
    ).stdout
    assert os.readlink(f"/proc/{pid}/ns/net") in out
    assert "sleep 60" in out


def test_joining_a_stopped_container_is_refused(run_detached, containers):
    name, _ = run_detached("busybox", "sleep", "60")
    hako("stop", "-t", "0", name)
    result = hako("run", "--rm", "--ipc", f"container:{name}", "busybox", "true", check=False)
    assert result.returncode == 125
    assert "not running" in result.stderr


def test_exec_lands_in_every_namespace_of_pid_1(run_detached):
    name, pid = run_detached("busybox", "sleep", "60")
    kinds = ["ipc", "mnt", "net", "pid", "uts", "cgroup", "user"]
    script = "; ".join(f"readlink /proc/self/ns/{k}" for k in kinds)
    inside = hako("exec", name, "sh", "-c", script).stdout.split()
    assert inside == [os.readlink(f"/proc/{pid}/ns/{k}") for k in kinds]


def test_exec_lands_in_the_containers_cgroup(run_detached):
    name, pid = run_detached("--memory", "64m", "busybox", "sleep", "60")
    with open(f"/proc/{pid}/cgroup") as f:
        init_cgroups = f.read()
    # The exec'd process reads its own cgroup from the host's point of view.
    out = hako("exec", name, "sh", "-c", "echo $$; sleep 5 & wait", timeout=30, check=False)
    del out
    rows = hako("exec", name, "cat", "/proc/self/cgroup").stdout
    # Inside a private cgroup namespace the container's own cgroup is "/".
    assert all(
        line.endswith(":/") for line in rows.strip().split("\n") if line.split(":")[1] in ("memory", "pids")
    )
    assert "memory:/" in init_cgroups


def test_network_namespace_has_only_loopback_and_it_is_up():
    out = hako("run", "--rm", "busybox", "ip", "-o", "link").stdout
    links = [line.split(":")[1].strip() for line in out.strip().split("\n")]
    assert links == ["lo"]
    assert "UP" in out
    assert hako(
        "run", "--rm", "busybox", "ping", "-c", "1", "-W", "2", "127.0.0.1", check=False
    ).returncode in (0, 1)


def test_root_is_an_overlay_entered_with_pivot_root(run_detached, hako_env):
    name, pid = run_detached("busybox", "sleep", "60")
    mounts = hako("exec", name, "cat", "/proc/self/mountinfo").stdout
    root_line = next(line for line in mounts.split("\n") if line.split()[4] == "/")
    assert " - overlay " in root_line
    # Nothing of the host's tree is left inside, and the overlay is not on the host.
    assert "/proc/1/root" not in mounts and hako_env["root"] not in open("/proc/self/mountinfo").read()
    for target, fstype in (
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
    ):
        line = next(m for m in mounts.split("\n") if m and m.split()[4] == target)
        assert f" - {fstype} " in line, target
    sys_line = next(m for m in mounts.split("\n") if m and m.split()[4] == "/sys")
    assert " ro," in f" {sys_line.split()[5]},"


def test_sys_stays_read_only_with_the_hosts_network():
    # With --net host the host's sysfs shows; neither it nor cgroups below may be writable.
    for extra in ([], ["--userns", "auto"]):
        script = (
            "touch /sys/fs/cgroup/x 2>&1; echo 1 > /sys/kernel/uevent_helper 2>&1; grep ' /sys ' /proc/mounts"
        )
        out = hako("run", "--rm", "--net", "host", *extra, "busybox", "sh", "-c", script).stdout
        assert "Read-only file system" in out, (extra, out)
        assert " ro," in out.split("\n")[-2], (extra, out)
