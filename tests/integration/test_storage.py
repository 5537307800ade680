"""--storage-opt size=N: a container's writable layer on a filesystem of that size, on a real loop device."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import hako, hako_loop_devices, hako_mounts, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

MIB = 1 << 20


def inspect(name: str) -> dict:
    return json.loads(hako("inspect", name).stdout)[0]


def layer_file(hako_env: dict, name: str) -> Path:
    return Path(hako_env["root"], "containers", inspect(name)["Id"], "layer.ext4")


def attached(hako_env: dict) -> list[str]:
    return hako_loop_devices(hako_env["root"])


def fill(name: str, megabytes: int, path: str = "/fill") -> subprocess.CompletedProcess:
    """Write ``megabytes`` MiB into ``path`` inside the container; dd's result."""
    return hako("exec", name, "dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={megabytes}", check=False)


def test_a_write_past_the_size_fails_inside_and_the_host_gives_no_more(hako_env, run_detached) -> None:
    name, _ = run_detached("--storage-opt", "size=16m", "busybox", "sleep", "600")
    assert inspect(name)["HostConfig"]["StorageOpt"] == {"size": "16m"}
    # Under the limit: fine.
    assert fill(name, 4, "/small").returncode == 0
    # Past it: ENOSPC inside, whatever the host has free.
    result = fill(name, 64)
    assert result.returncode != 0
    assert "No space left on device" in result.stderr
    written = int(hako("exec", name, "stat", "-c", "%s", "/fill").stdout)
    assert written < 16 * MIB
    # The host gave the layer's file at most its size (it is sparse: only what was written).
    image = layer_file(hako_env, name)
    assert image.stat().st_size == 16 * MIB
    assert image.stat().st_blocks * 512 <= 16 * MIB
    # The container sees a filesystem of that size; the host holds no mount of it.
    df = hako("exec", name, "df", "-k", "/").stdout.splitlines()[-1].split()
    assert 8 * 1024 < int(df[1]) <= 16 * 1024
    assert len(attached(hako_env)) == 1
    assert not hako_mounts(hako_env["root"])
    # Freeing space inside makes room again.
    hako("exec", name, "rm", "/fill")
    assert fill(name, 4, "/again").returncode == 0


def test_the_limit_and_the_data_survive_stop_and_start(hako_env, run_detached) -> None:
    name, _ = run_detached("--storage-opt", "size=16m", "busybox", "sleep", "600")
    hako("exec", name, "sh", "-c", "echo kept > /root/note; rm /etc/hostname")
    hako("stop", "-t", "0", name)
    # Stopped: unmounted, its loop device gone.
    assert not attached(hako_env) and not hako_mounts(hako_env["root"])
    hako("start", name)
    assert hako("exec", name, "cat", "/root/note").stdout == "kept\n"
    assert hako("exec", name, "ls", "/etc/hostname", check=False).returncode != 0
    assert "No space left on device" in fill(name, 64).stderr
    hako("restart", "-t", "0", name)
    assert hako("exec", name, "cat", "/root/note").stdout == "kept\n"
    assert len(attached(hako_env)) == 1


def test_a_restart_policy_restarts_on_the_same_layer(hako_env, containers) -> None:
    containers.append("st-restart")
    hako(
        "run",
        "-d",
        "--name",
        "st-restart",
        "--restart",
        "on-failure:2",
        "--storage-opt",
        "size=8m",
        "busybox",
        "sh",
        "-c",
        "echo run >> /runs; wc -l < /runs; exit 3",
    )
    wait_for(
        lambda: inspect("st-restart")["RestartCount"] == 2 and not inspect("st-restart")["State"]["Running"]
    )
    assert hako("logs", "st-restart").stdout.split() == ["1", "2", "3"]
    wait_for(lambda: not attached(hako_env))


def test_a_user_namespace_container_owns_its_sized_layer(hako_env, run_detached) -> None:
    name, _ = run_detached("--userns", "auto", "--storage-opt", "size=8m", "busybox", "sleep", "600")
    hako("exec", name, "sh", "-c", "echo mine > /root/file; rm /bin/true; mkdir /tmp/x")
    assert hako("exec", name, "stat", "-c", "%u", "/root/file").stdout.strip() == "0"
    assert "No space left on device" in fill(name, 32).stderr


def test_commit_of_a_size_limited_container_running_and_stopped(hako_env, run_detached) -> None:
    name, _ = run_detached("--storage-opt", "size=16m", "busybox", "sleep", "600")
    hako("exec", name, "sh", "-c", "echo one > /root/note; rm /etc/hostname")
    try:
        hako("commit", name, "st-commit:running")
        assert inspect(name)["State"]["Status"] == "running"
        seen = hako("run", "--rm", "st-commit:running", "sh", "-c", "cat /root/note; ls /etc").stdout
        assert seen.startswith("one\n") and "hostname" not in seen.split()
        hako("exec", name, "sh", "-c", "echo two >> /root/note")
        hako("stop", "-t", "0", name)
        hako("commit", name, "st-commit:stopped")
        # Read through a mount that went with the commit.
        assert not attached(hako_env) and not hako_mounts(hako_env["root"])
        assert hako("run", "--rm", "st-commit:stopped", "cat", "/root/note").stdout == "one\ntwo\n"
    finally:
        hako("rmi", "-f", "st-commit:running", "st-commit:stopped", check=False)
        hako("image", "prune", "-f", check=False)


def test_export_of_a_size_limited_container_running_and_stopped(hako_env, run_detached, tmp_path) -> None:
    import tarfile

    name, _ = run_detached("--storage-opt", "size=8m", "busybox", "sleep", "600")
    hako("exec", name, "sh", "-c", "echo mine > /root/x; rm /etc/hostname")
    for state in ("running", "stopped"):
        if state == "stopped":
            hako("stop", "-t", "0", name)
        out = tmp_path / f"{state}.tar"
        hako("export", "-o", str(out), name)
        with tarfile.open(out) as tar:
            assert tar.extractfile("root/x").read() == b"mine\n"
            assert "etc/hostname" not in tar.getnames() and "bin/busybox" in tar.getnames()
    assert not attached(hako_env) and not hako_mounts(hako_env["root"])


def test_rm_leaves_no_loop_device_no_mount_and_no_file(hako_env, run_detached) -> None:
    name, _ = run_detached("--storage-opt", "size=16m", "busybox", "sleep", "600")
    directory = layer_file(hako_env, name).parent
    assert len(attached(hako_env)) == 1
    hako("rm", "-f", name)
    assert not directory.exists()
    assert not attached(hako_env)
    assert not hako_mounts(hako_env["root"])


def test_a_run_with_rm_removes_its_layer(hako_env) -> None:
    result = hako("run", "--rm", "--storage-opt", "size=8m", "busybox", "sh", "-c", "df -k / | tail -1")
    assert int(result.stdout.split()[1]) <= 8 * 1024
    wait_for(lambda: not any(Path(hako_env["root"], "containers").iterdir()))
    assert not attached(hako_env)


@pytest.mark.parametrize(
    "value, named, words",
    [
        ("size=1m", "'1m'", "the minimum is 4m"),
        ("size=0", "'0'", "the minimum is 4m"),
        ("size=lots", "'lots'", "expected a size"),
        ("inodes=100", "'inodes'", "unknown storage option"),
        ("size", "'size'", "KEY=VALUE"),
    ],
)
@pytest.mark.parametrize("command", ["run", "create"])
def test_a_bad_value_gives_one_line_and_leaves_nothing(hako_env, containers, command, value, named, words):
    containers.append("st-bad")
    result = hako(command, "--name", "st-bad", "--storage-opt", value, "busybox", "true", check=False)
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1
    assert "storage-opt" in result.stderr and named in result.stderr and words in result.stderr
    containers_dir = Path(hako_env["root"], "containers")
    assert not containers_dir.is_dir() or not any(containers_dir.iterdir())
    assert not attached(hako_env)


def test_a_failing_start_leaves_no_loop_device_attached(hako_env, containers) -> None:
    containers.append("st-fail")
    hako("create", "--name", "st-fail", "--storage-opt", "size=8m", "busybox", "/no/such/command")
    result = hako("start", "st-fail", check=False)
    assert result.returncode != 0 and "not found" in result.stderr
    assert not attached(hako_env) and not hako_mounts(hako_env["root"])
    result = hako("run", "--storage-opt", "size=8m", "busybox", "/no/such/command", check=False)
    assert result.returncode == 127
    assert not attached(hako_env) and not hako_mounts(hako_env["root"])


def test_system_prune_detaches_a_layer_s_device_that_nothing_would(hako_env, containers) -> None:
    containers.append("st-prune")
    hako("create", "--name", "st-prune", "--storage-opt", "size=8m", "busybox", "true")
    image = layer_file(hako_env, "st-prune")
    # A device without autoclear, as a crash on a kernel before 5.8 could leave one.
    device = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        assert attached(hako_env) == [os.path.basename(device)]
        out = hako("system", "prune").stdout
        assert f"loop device {device} of container {inspect('st-prune')['Id'][:12]}" in out
        assert not attached(hako_env)
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True)


def test_the_modules_compare_storage_opts_as_sizes_and_recreate_for_another(hako_env, containers, tmp_path):
    from .test_ansible_modules import COMMAND, run_playbook, task  # skips without Ansible

    containers.append("st-ansible")
    base = {"name": "st-ansible", "image": "busybox", "command": COMMAND}
    tasks = [
        task("create", "hako_container", "create", storage_opts={"size": "16m"}, **base),
        task("same size", "hako_container", storage_opts={"size": "16384k"}, **base),
        task("many, same size", "hako_containers", containers=[{**base, "storage_opts": {"size": "16m"}}]),
        task("bigger", "hako_container", "bigger", _diff=True, storage_opts={"size": "32m"}, **base),
        task("bigger again", "hako_container", storage_opts={"size": "32m"}, **base),
        task("too small", "hako_container", _ignore_errors=True, storage_opts={"size": "1m"}, **base),
        task("unknown key", "hako_container", _ignore_errors=True, storage_opts={"inodes": 9}, **base),
        task("remove", "hako_container", name="st-ansible", state="absent"),
    ]
    r = run_playbook(tmp_path, tasks)
    created = r["create"]
    assert (created["changed"], created["actions"]) == (True, ["create", "start"])
    assert created["container"]["HostConfig"]["StorageOpt"] == {"size": "16m"}
    assert (r["same size"]["changed"], r["same size"]["actions"]) == (False, [])
    assert r["many, same size"]["changed"] is False
    bigger = r["bigger"]
    assert (bigger["changed"], bigger["actions"]) == (True, ["recreate", "start"])
    assert bigger["container"]["Id"] != created["container"]["Id"]
    assert bigger["container"]["HostConfig"]["StorageOpt"] == {"size": "32m"}
    assert bigger["diff"]["before"]["storage_opts"] == {"size": 16 * MIB}
    assert bigger["diff"]["after"]["storage_opts"] == {"size": 32 * MIB}
    assert r["bigger again"]["changed"] is False
    for name, words in (("too small", "the minimum is 4m"), ("unknown key", "unknown storage option")):
        assert r[name]["_status"] == "failed" and r[name]["msg"].startswith("invalid value for storage_opts")
        assert words in r[name]["msg"]
    assert r["remove"]["changed"]
    assert not attached(hako_env)
