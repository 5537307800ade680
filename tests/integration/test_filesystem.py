"""The container's filesystem: overlay root, bind mounts, tmpfs, read-only root, users and workdirs."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile

from ..conftest import hako


def test_writes_land_in_the_containers_own_layer_not_the_image(containers):
    containers.append("writer")
    script = "cat /etc/motd 2>/dev/null; echo mine > /etc/motd; rm -f /bin/vi"
    assert hako("run", "--name", "writer", "busybox", "sh", "-c", script).stdout == ""
    bundle = json.loads(hako("inspect", "writer").stdout)[0]["Bundle"]
    assert open(os.path.join(bundle, "upper", "etc", "motd")).read() == "mine\n"
    # rm of an image file leaves a whiteout (a 0:0 character device) in the upper layer.
    whiteout = os.stat(os.path.join(bundle, "upper", "bin", "vi"))
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    # Another container from the image sees neither change...
    assert hako("run", "--rm", "busybox", "cat", "/etc/motd", check=False).returncode != 0
    assert hako("run", "--rm", "busybox", "ls", "/bin/vi").returncode == 0
    # ...and this one finds its own change when started again.
    assert hako("start", "-a", "writer").stdout == "mine\n"


def test_bind_mounts_read_write_and_read_only(tmp_path):
    (tmp_path / "in.txt").write_text("from the host\n")
    out = hako(
        "run",
        "--rm",
        "-v",
        f"{tmp_path}:/data",
        "-v",
        f"{tmp_path}:/ro:ro",
        "busybox",
        "sh",
        "-c",
        "cat /data/in.txt; echo back > /data/out.txt; touch /ro/x 2>&1; true",
    ).stdout
    assert "from the host" in out
    assert "Read-only file system" in out
    assert (tmp_path / "out.txt").read_text() == "back\n"
    assert not (tmp_path / "x").exists()


def test_tmpfs_mounts_with_options():
    out = hako(
        "run",
        "--rm",
        "--tmpfs",
        "/scratch:size=1m,mode=1777",
        "busybox",
        "sh",
        "-c",
        "grep ' /scratch ' /proc/mounts; stat -c %a /scratch",
    ).stdout
    assert "tmpfs /scratch tmpfs" in out and "size=1024k" in out
    assert out.strip().endswith("1777")


def test_read_only_root_keeps_tmpfs_writable():
    out = hako(
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "busybox",
        "sh",
        "-c",
        "touch /etc/x 2>&1; touch /tmp/ok && echo tmp-ok",
    ).stdout
    assert "Read-only file system" in out and "tmp-ok" in out


def test_dev_has_the_standard_nodes_and_nothing_else():
    out = hako("run", "--rm", "busybox", "ls", "/dev").stdout.split()
    for node in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "ptmx", "fd"):
        assert node in out
    assert "sda" not in out and "vda" not in out and "kmsg" not in out
    assert hako("run", "--rm", "busybox", "sh", "-c", "head -c 4 /dev/zero | wc -c").stdout.strip() == "4"


def test_proc_paths_are_masked_and_read_only():
    # The OCI default masked paths that this kernel has read as empty inside.
    masked = [
        p for p in ("/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/kcore") if os.path.exists(p)
    ]
    assert masked
    script = "; ".join(f"wc -c < {p}" for p in masked) + "; (echo 1 > /proc/sys/kernel/hostname) 2>&1; true"
    out = hako("run", "--rm", "busybox", "sh", "-c", script).stdout.split("\n")
    assert [line.strip() for line in out[: len(masked)]] == ["0"] * len(masked)
    assert "Read-only file system" in out[len(masked)]


def test_user_workdir_and_env_for_run_and_exec(run_detached):
    out = hako(
        "run",
        "--rm",
        "-u",
        "65534:65534",
        "-w",
        "/tmp",
        "-e",
        "GREETING=hello",
        "busybox",
        "sh",
        "-c",
        "id -u; id -g; pwd; echo $GREETING",
    ).stdout.split()
    assert out == ["65534", "65534", "/tmp", "hello"]
    assert hako("run", "--rm", "-u", "nobody", "busybox", "id", "-un").stdout.strip() == "nobody"
    name, _ = run_detached("-e", "FROM_RUN=1", "busybox", "sleep", "60")
    out = hako(
        "exec",
        "-u",
        "65534",
        "-w",
        "/etc",
        "-e",
        "EXTRA=2",
        name,
        "sh",
        "-c",
        "id -u; pwd; echo $FROM_RUN$EXTRA",
    ).stdout.split()
    assert out == ["65534", "/etc", "12"]


def test_home_comes_from_the_containers_passwd_unless_set(run_detached):
    # As runc and Docker do: the user's home, "/" for a user without an entry.
    home = "echo $HOME ~"
    assert hako("run", "--rm", "busybox", "sh", "-c", home).stdout.split() == ["/root", "/root"]
    assert hako("run", "--rm", "-u", "nobody", "busybox", "sh", "-c", home).stdout.split() == [
        "/nonexistent",
        "/nonexistent",
    ]
    assert hako("run", "--rm", "-u", "4242", "busybox", "sh", "-c", home).stdout.split() == ["/", "/"]
    assert hako("run", "--rm", "-e", "HOME=/x", "busybox", "sh", "-c", home).stdout.split() == ["/x", "/x"]
    name, _ = run_detached("busybox", "sleep", "60")
    assert hako("exec", name, "sh", "-c", home).stdout.split() == ["/root", "/root"]
    assert hako("exec", "-u", "nobody", name, "sh", "-c", home).stdout.split() == [
        "/nonexistent",
        "/nonexistent",
    ]


def test_missing_workdir_is_made_for_run_but_not_for_exec(run_detached):
    # As with Docker: `run -w` makes it, `exec -w` needs it to exist.
    out = hako("run", "--rm", "-u", "65534", "-w", "/new/dir", "busybox", "sh", "-c", "pwd; stat -c %u .")
    assert out.stdout.split() == ["/new/dir", "0"]
    name, _ = run_detached("busybox", "sleep", "60")
    result = hako("exec", "-w", "/nonexistent", name, "true", check=False)
    assert result.returncode == 125 and "/nonexistent" in result.stderr


def test_memory_swap_and_cpuset_reach_the_cgroup(run_detached):
    name, _ = run_detached(
        "--memory", "32m", "--memory-swap", "96m", "--cpuset-cpus", "0", "busybox", "sleep", "60"
    )
    resources = json.loads(hako("inspect", name).stdout)[0]["Cgroup"]["Resources"]
    assert resources["memory"]["limit"] == 32 * 2**20
    assert resources["memory"]["swap"] == 96 * 2**20
    assert resources["cpu"]["cpus"] == "0"
    assert hako("exec", name, "cat", "/sys/fs/cgroup/cpuset/cpuset.cpus").stdout.strip() == "0"


def test_a_read_only_volume_is_read_only_all_the_way_down():
    # /sys has mounts below it (the host's cgroup hierarchies): none may be writable.
    out = hako(
        "run",
        "--rm",
        "-v",
        "/sys:/hostsys:ro",
        "busybox",
        "sh",
        "-c",
        "grep ' /hostsys' /proc/self/mountinfo | awk '{print $6}' | cut -d, -f1 | sort -u",
    ).stdout.split()
    assert out == ["ro"]


def test_an_image_in_use_by_a_running_container_cannot_be_removed(run_detached):
    hako("image", "build", "busybox", "--tag", "inuse:1")
    name, _ = run_detached("inuse:1", "sleep", "60")
    for args in (["rmi", "inuse:1"], ["rmi", "-f", "inuse:1"]):
        result = hako(*args, check=False)
        assert result.returncode == 1 and "running" in result.stderr
    assert hako("run", "--rm", "inuse:1", "true").returncode == 0
    hako("rm", "-f", name)
    hako("rmi", "inuse:1")


def test_a_volume_below_a_tmpfs_is_mounted_after_it(hako_env):
    # Shallower mounts first, whatever the order of the options.
    source = tempfile.mkdtemp(dir=hako_env["base"])
    try:
        os.chmod(source, 0o755)
        with open(os.path.join(source, "f"), "w") as f:
            f.write("seen\n")
        for extra in ([], ["--userns", "auto"]):
            args = ["run", "--rm", *extra, "-v", f"{source}:/srv/data:ro", "--tmpfs", "/srv", "busybox"]
            assert hako(*args, "cat", "/srv/data/f").stdout == "seen\n", extra
    finally:
        shutil.rmtree(source)
