"""A container's privileges against the real kernel: capabilities, no_new_privs, seccomp, users.

The escape attempts are in tests/security/; these check that each part of
the default profile is in place and that each option changes what it says.
"""

from __future__ import annotations

import json
import os
import struct

import pytest

from tests.conftest import hako

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

DOCKER_DEFAULT = 0xA80425FB  # the 14 default capabilities as a mask


def status(*args: str, command: str = "cat /proc/self/status", **kwargs) -> dict[str, str]:
    out = hako(*args, "sh", "-c", command, **kwargs).stdout
    return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)


def mask(value: str) -> int:
    return int(value, 16)


def host_bounding() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))


def test_a_default_container_holds_dockers_fourteen_capabilities_and_a_filter():
    fields = status("run", "--rm", "busybox")
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd"):
        assert mask(fields[key]) == DOCKER_DEFAULT, key
    assert mask(fields["CapAmb"]) == 0
    assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2"


def test_cap_add_and_cap_drop_change_every_set():
    fields = status("run", "--rm", "--cap-add", "net_admin", "--cap-drop", "CAP_MKNOD", "busybox")
    net_admin, mknod = 1 << 12, 1 << 27
    assert mask(fields["CapBnd"]) == (DOCKER_DEFAULT | net_admin) & ~mknod == mask(fields["CapEff"])
    fields = status("run", "--rm", "--cap-drop", "ALL", "--cap-add", "CHOWN", "busybox")
    assert mask(fields["CapBnd"]) == mask(fields["CapEff"]) == 1
    denied = hako("run", "--rm", "--cap-drop", "ALL", "busybox", "chown", "1", "/tmp", check=False)
    assert denied.returncode == 1 and "Operation not permitted" in denied.stderr


def test_privileged_holds_what_the_host_can_hand_on_and_no_filter():
    fields = status("run", "--rm", "--privileged", "busybox")
    assert mask(fields["CapEff"]) == mask(fields["CapBnd"]) == host_bounding()
    assert fields["NoNewPrivs"] == "0" and fields["Seccomp"] == "0"
    # The masked paths are shown and /sys is writable.
    script = "wc -c < /proc/timer_list; grep ' /sys ' /proc/mounts"
    default = hako("run", "--rm", "busybox", "sh", "-c", script).stdout.split("\n")
    privileged = hako("run", "--rm", "--privileged", "busybox", "sh", "-c", script).stdout.split("\n")
    assert default[0].strip() == "0" and int(privileged[0]) > 0
    assert " ro," in default[1] and " rw," in privileged[1]


def test_the_filter_refuses_namespaces_mounts_and_the_clock_even_with_the_capability_dropped_back():
    script = "unshare -U true; mount -t tmpfs t /tmp; date -s 2001-01-01 >/dev/null"
    result = hako("run", "--rm", "busybox", "sh", "-c", script, check=False)
    assert "unshare(0x10000000): Operation not permitted" in result.stderr
    assert "mount" in result.stderr and "permission denied" in result.stderr
    assert "can't set date: Operation not permitted" in result.stderr
    # With CAP_SYS_ADMIN the profile lets mount through (Docker's includes).
    hako("run", "--rm", "--cap-add", "SYS_ADMIN", "busybox", "mount", "-t", "tmpfs", "t", "/tmp")


def test_seccomp_unconfined_and_no_new_privileges_false_lift_them():
    fields = status(
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "no-new-privileges=false",
        "busybox",
    )
    assert fields["Seccomp"] == "0" and fields["NoNewPrivs"] == "0"
    assert mask(fields["CapEff"]) == DOCKER_DEFAULT
    # A filter also loads without no_new_privs (it goes in before the capabilities are dropped).
    fields = status("run", "--rm", "--security-opt", "no-new-privileges=false", "busybox")
    assert fields["Seccomp"] == "2" and fields["NoNewPrivs"] == "0"


def test_a_profile_in_dockers_format(tmp_path):
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
    }
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    result = hako("run", "--rm", "--security-opt", f"seccomp={path}", "busybox", "mkdir", "/x", check=False)
    assert result.returncode == 1 and "Permission denied" in result.stderr


def test_bad_privileges_are_refused_naming_the_value_and_leave_nothing(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"defaultAction": "SCMP_ACT_NOTHING"}')
    for args, message in [
        (["--cap-add", "FLY"], "invalid value for cap-add: 'FLY'"),
        (["--cap-add", "SYS_RESOURCE"], "not in its bounding set"),
        (["--cap-add", "NET_ADMIN", "--cap-drop", "net_admin"], "is also in cap-add"),
        (["--security-opt", "apparmor=unconfined"], "invalid value for security-opt: 'apparmor=unconfined'"),
        (["--security-opt", f"seccomp={bad}"], "defaultAction 'SCMP_ACT_NOTHING'"),
        (["--security-opt", "seccomp=missing.json"], "No such file or directory"),
        (["--group-add", "a b"], "invalid value for group-add"),
    ]:
        result = hako("run", "--rm", "--name", "sec-bad", *args, "busybox", "true", check=False)
        assert result.returncode == 125 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert hako("ps", "-aq").stdout == ""


def test_a_user_holds_no_effective_capability_and_its_groups(run_detached):
    fields = status(
        "run", "--rm", "--user", "1000:1000", "--group-add", "tty", "--group-add", "27", "busybox"
    )
    assert mask(fields["CapEff"]) == mask(fields["CapPrm"]) == 0
    assert mask(fields["CapBnd"]) == DOCKER_DEFAULT
    assert fields["Uid"].split() == ["1000"] * 4 and fields["Groups"].split() == ["5", "27"]
    result = hako("run", "--rm", "--user", "1000", "--group-add", "wheel", "busybox", "true", check=False)
    assert result.returncode == 125 and "group-add: 'wheel' (no such group" in result.stderr


def test_no_new_privs_holds_for_every_process_of_the_container(run_detached):
    # (A setuid binary that keeps its privilege is in the escape catalogue,
    # tests/security/: busybox drops it by itself.)
    name, _ = run_detached("busybox", "sleep", "60")
    assert status("exec", "--user", "1000", name)["NoNewPrivs"] == "1"
    lifted, _ = run_detached("--security-opt", "no-new-privileges=false", "busybox", "sleep", "60")
    assert status("exec", "--user", "1000", lifted)["NoNewPrivs"] == "0"


def test_exec_has_the_containers_privileges_unless_told(run_detached):
    name, _ = run_detached("--cap-drop", "KILL", "busybox", "sleep", "60")
    read = "grep -E 'CapEff|Seccomp:' /proc/self/status"
    fields = status("exec", name, command=read)
    assert mask(fields["CapEff"]) == DOCKER_DEFAULT & ~(1 << 5) and fields["Seccomp"] == "2"
    fields = status("exec", "--cap-add", "NET_ADMIN", name, command=read)
    assert mask(fields["CapEff"]) == (DOCKER_DEFAULT & ~(1 << 5)) | 1 << 12
    fields = status("exec", "--privileged", name, command=read)
    assert mask(fields["CapEff"]) == host_bounding() and fields["Seccomp"] == "0"
    hako("exec", "--privileged", name, "hostname", "renamed")
    assert hako("exec", name, "hostname").stdout.strip() == "renamed"


def test_inspect_shows_the_privileges(run_detached):
    options = ["--cap-add", "NET_ADMIN", "--cap-drop", "MKNOD", "--security-opt", "seccomp=unconfined"]
    name, _ = run_detached(*options, "--group-add", "5", "busybox", "sleep", "60")
    host = json.loads(hako("inspect", name).stdout)[0]["HostConfig"]
    assert host["CapAdd"] == ["CAP_NET_ADMIN"] and host["CapDrop"] == ["CAP_MKNOD"]
    assert host["SecurityOpt"] == ["seccomp=unconfined"] and host["Privileged"] is False
    assert host["GroupAdd"] == ["5"]


def test_a_user_namespace_container_keeps_the_profile(tmp_path, run_detached):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 231072, 231072)  # the container's root, by the range given below
    name, pid = run_detached("--userns", "231072:65536", "-v", f"{shared}:/data", "busybox", "sleep", "60")
    script = "cat /proc/self/status; echo hi > /data/f; unshare -U true 2>/dev/null || echo 'Refused:\tyes'"
    fields = status("exec", name, command=script)
    assert mask(fields["CapEff"]) == DOCKER_DEFAULT and fields["Seccomp"] == "2"
    assert fields["Refused"] == "yes"
    assert (shared / "f").read_text() == "hi\n" and (shared / "f").stat().st_uid == 231072
    with open(f"/proc/{pid}/uid_map") as f:
        assert f.read().split() == ["0", "231072", "65536"]


def test_a_tmpfs_is_noexec_nosuid_nodev_unless_told():
    script = "cp /bin/busybox /scratch/true && /scratch/true && echo ran; grep ' /scratch ' /proc/mounts"
    default = hako("run", "--rm", "--tmpfs", "/scratch", "busybox", "sh", "-c", script, check=False)
    assert "Permission denied" in default.stderr and "ran" not in default.stdout
    assert all(flag in default.stdout for flag in ("nosuid", "nodev", "noexec"))
    allowed = hako("run", "--rm", "--tmpfs", "/scratch:exec", "busybox", "sh", "-c", script)
    assert "ran" in allowed.stdout and "noexec" not in allowed.stdout


def test_a_user_keeps_no_capability_through_a_file_capability_command(tmp_path):
    # Copies of busybox as "grep" with CAP_DAC_OVERRIDE in their file
    # capabilities: p/grep permitted and inheritable, i/grep inheritable only.
    os.chmod(tmp_path, 0o755)
    dac_override = 1 << 1
    for sub, permitted in (("p", dac_override), ("i", 0)):
        (tmp_path / sub).mkdir(mode=0o755)
        grep = tmp_path / sub / "grep"
        grep.write_bytes(open("/bin/busybox", "rb").read())
        grep.chmod(0o755)
        capability = struct.pack("<5I", 0x02000001, permitted, dac_override, 0, 0)
        os.setxattr(grep, "security.capability", capability)
    run = ["run", "--rm", "--user", "1000", "-v", f"{tmp_path}:/tools:ro"]
    lifted = ["--security-opt", "no-new-privileges=false"]
    for options, command in [
        # The command itself: no_new_privs caps it at what the process held before exec.
        ([], ["/tools/p/grep", "Cap", "/proc/self/status"]),
        # Without no_new_privs, inheritable file capabilities need inheritable process ones.
        (lifted, ["/tools/i/grep", "Cap", "/proc/self/status"]),
        (lifted, ["sh", "-c", "/tools/i/grep Cap /proc/self/status"]),
    ]:
        out = hako(*run, *options, "busybox", *command).stdout
        fields = dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)
        assert mask(fields["CapEff"]) == mask(fields["CapPrm"]) == mask(fields["CapInh"]) == 0, (
            options,
            fields,
        )


def test_a_profile_rule_libseccomp_cannot_compile_fails_the_start(tmp_path):
    # An allowing default with a refusal libseccomp rejects (errno out of
    # range): dropping the rule would let mkdir through.
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["not_a_system_call"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 99999},
        ],
    }
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    result = hako("run", "--rm", "--security-opt", f"seccomp={path}", "busybox", "mkdir", "/x", check=False)
    assert (
        result.returncode == 125 and "syscalls[1] (SCMP_ACT_ERRNO mkdir) cannot be compiled" in result.stderr
    )
    assert hako("ps", "-aq").stdout == ""
