"""Device nodes as a learner meets them: what a container may open, create and be given.

Against the real kernel: the v1 devices controller of the container's
cgroup (this machine is cgroup v1-hybrid), and the eBPF device program the
v2 driver attaches, proven on the cgroup2 mount (the kernel checks a
process's v2 cgroup for device programs on hybrid hosts as well).
"""

from __future__ import annotations

import errno
import json
import os
import secrets

import pytest
from hako.cgroups import detect_mode, normalize_devices
from hako.cgroups.v2 import V2Cgroup
from hako.devices import default_rules

from ..conftest import hako

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def run(*args: str, check: bool = True):
    return hako("run", "--rm", *args, check=check)


def sh(script: str, *options: str):
    """Run ``script`` in a default busybox container; its output (stdout and stderr together)."""
    result = run(*options, "busybox", "sh", "-c", "{ " + script + "; } 2>&1", check=False)
    return result.stdout


def test_standard_nodes_work() -> None:
    out = sh(
        "echo hi > /dev/null && head -c 4 /dev/zero | wc -c && head -c 4 /dev/urandom | wc -c"
        " && head -c 4 /dev/random | wc -c && echo x > /dev/full; echo full=$?"
    )
    assert out.splitlines()[:3] == ["4", "4", "4"]
    assert "No space left on device" in out  # the driver answered: the cgroup let it through
    assert out.splitlines()[-1] == "full=1"


def test_a_terminal_works(terminal) -> None:
    t = terminal("run", "--rm", "-it", "busybox", "sh", "-c", "echo tty > /dev/tty && tty")
    t.expect("/dev/pts/")
    assert t.wait() == 0


def test_mknod_may_create_but_not_open_a_disk() -> None:
    out = sh("mknod /tmp/sda b 8 0 && echo made; head -c 1 /tmp/sda; echo open=$?")
    assert "made" in out
    assert "Operation not permitted" in out
    assert "open=1" in out


@pytest.mark.parametrize(("name", "numbers"), [("mem", "1 1"), ("kmsg", "1 11"), ("port", "1 4")])
def test_host_char_devices_made_inside_cannot_be_opened(name: str, numbers: str) -> None:
    out = sh(f"mknod /dev/{name} c {numbers} && echo made; head -c 1 /dev/{name} >/dev/null; echo open=$?")
    assert out.splitlines()[0] == "made"
    assert "Operation not permitted" in out
    assert out.splitlines()[-1] == "open=1"


def test_a_device_passed_read_only_reads_but_does_not_write() -> None:
    out = sh(
        "ls -l /dev/z0; head -c 3 /dev/z0 | wc -c; echo x > /dev/z0; echo write=$?",
        "--device",
        "/dev/zero:/dev/z0:r",
    )
    lines = out.splitlines()
    assert lines[0].startswith("crw-rw-rw-") and " 1,   5 " in lines[0], lines
    assert lines[1] == "3"
    assert "Operation not permitted" in out
    assert lines[-1] == "write=1"


def test_a_device_passed_with_its_own_path() -> None:
    out = sh("head -c 2 /dev/full | wc -c; echo x > /dev/full; echo write=$?", "--device", "/dev/full")
    assert out.splitlines()[0] == "2"
    assert "No space left on device" in out  # the driver answered: the cgroup let it through


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("dev/zero", "is not absolute"),
        ("/dev/hako-no-such-device", "no such file or directory"),
        ("/etc/passwd", "is not a character or block device"),
        ("/dev/zero:/dev/z0:rx", "permissions are made of r, w and m"),
        ("/dev/zero:z0:r", "is not absolute"),
    ],
)
def test_a_bad_device_is_one_line_and_leaves_nothing(containers, spec: str, why: str) -> None:
    containers.append("baddev")
    for command in ("run", "create"):
        result = hako(command, "--name", "baddev", "--device", spec, "busybox", "true", check=False)
        assert result.returncode == 125
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert f"invalid value for device: {spec!r}" in lines[0] and why in lines[0], lines
    assert hako("ps", "-a", "-q").stdout.strip() == ""


def test_the_cgroup_holds_the_rules_and_an_update_keeps_them(run_detached) -> None:
    name, _ = run_detached("--device", "/dev/zero:/dev/z0:rw", "busybox", "sleep", "60")
    info = json.loads(hako("inspect", name).stdout)[0]
    assert info["HostConfig"]["Devices"] == [
        {"PathOnHost": "/dev/zero", "PathInContainer": "/dev/z0", "CgroupPermissions": "rw"}
    ]
    expected = normalize_devices(
        [*default_rules(), {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rw"}]
    )
    shown = info["Cgroup"]["Resources"]["devices"]
    if detect_mode() == "unified":
        assert shown == expected
    else:
        listing = open(os.path.join(info["Cgroup"]["Paths"]["devices"], "devices.list")).read().split("\n")
        assert set(filter(None, listing)) == {
            "c *:* m",
            "b *:* m",
            "c 1:3 rwm",
            "c 1:5 rw",  # zero: the device's access replaces the default rwm
            "c 1:7 rwm",
            "c 1:8 rwm",
            "c 1:9 rwm",
            "c 5:0 rwm",
            "c 5:1 rwm",
            "c 5:2 rwm",
            "c 136:* rwm",
        }
        assert shown[0] == {"allow": False, "type": "a", "major": None, "minor": None, "access": "rwm"}
    hako("update", "--memory", "64m", "--pids-limit", "30", name)
    again = json.loads(hako("inspect", name).stdout)[0]["Cgroup"]["Resources"]
    assert again["devices"] == shown
    assert again["pids"]["limit"] == 30
    script = "head -c 1 /dev/z0 | wc -c; mknod /tmp/m c 1 1; head -c 1 /tmp/m 2>&1"
    out = hako("exec", name, "sh", "-c", script, check=False)
    assert out.returncode == 1
    assert out.stdout.splitlines()[0] == "1"
    assert "Operation not permitted" in out.stdout


def test_a_user_namespace_container_gets_its_device_bound(containers) -> None:
    out = sh(
        "head -c 3 /dev/z0 | wc -c; echo x > /dev/z0; echo write=$?",
        "--userns",
        "auto",
        "--device",
        "/dev/zero:/dev/z0:r",
    )
    assert out.splitlines()[0] == "3"
    assert "Operation not permitted" in out


# --------------------------------------------------------------------------
# cgroup v2: the eBPF program, for real


V2_ROOT = "/sys/fs/cgroup" if detect_mode() == "unified" else "/sys/fs/cgroup/unified"


def _open_in(cgroup: V2Cgroup, paths: list[tuple[str, int]]) -> list[int]:
    """Fork a child into ``cgroup``; the errno (0 = fine) of each open it tries."""
    read_end, write_end = os.pipe()
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.read(go_read, 1)
            results = []
            for path, flags in paths:
                try:
                    os.close(os.open(path, flags))
                    results.append(0)
                except OSError as e:
                    results.append(e.errno)
            os.write(write_end, json.dumps(results).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        cgroup.add_process(pid)
        os.write(go_write, b"x")
        data = os.read(read_end, 4096)
    finally:
        os.waitpid(pid, 0)
        for fd in (read_end, go_read, go_write):
            os.close(fd)
    return json.loads(data)


@pytest.mark.skipif(not os.path.isdir(V2_ROOT), reason="no cgroup2 mount")
def test_the_ebpf_device_program_is_enforced_by_the_kernel() -> None:
    cgroup = V2Cgroup(V2_ROOT, f"hako-devtest-{secrets.token_hex(6)}")
    cgroup.create()
    try:
        # zero is left out and full may only be read
        rules = [r for r in default_rules() if (r.get("major"), r.get("minor")) not in ((1, 5), (1, 7))]
        rules.append({"allow": True, "type": "c", "major": 1, "minor": 7, "access": "r"})
        cgroup.apply({"devices": rules})
        assert cgroup.read_devices() == normalize_devices(rules)
        got = _open_in(
            cgroup,
            [
                ("/dev/null", os.O_RDWR),
                ("/dev/zero", os.O_RDONLY),
                ("/dev/full", os.O_RDONLY),
                ("/dev/full", os.O_WRONLY),
                ("/dev/urandom", os.O_RDONLY),
            ],
        )
        assert got == [0, errno.EPERM, 0, errno.EPERM, 0]
        # An update replaces the program: one program stays attached.
        cgroup.apply({"devices": [{"allow": True, "access": "rwm"}]})
        assert cgroup.read_devices() == normalize_devices([{"allow": True}])
        assert _open_in(cgroup, [("/dev/zero", os.O_RDONLY)]) == [0]
        cgroup.apply({"devices": [{"allow": False}, {"allow": True, "type": "c", "major": 1, "minor": 3}]})
        assert _open_in(cgroup, [("/dev/null", os.O_RDONLY), ("/dev/zero", os.O_RDONLY)]) == [0, errno.EPERM]
    finally:
        cgroup.remove()
    assert not os.path.exists(cgroup.path)
