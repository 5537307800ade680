"""The privileges a container asks for, and the seccomp profile resolved for it."""

from __future__ import annotations

import json

import pytest
from hako.errors import InvalidValue
from hako.linux import CAPABILITIES
from hako.security import (
    DEFAULT_CAPABILITIES,
    capability_set,
    check_profile,
    exec_privileges,
    oci_fields,
    oci_seccomp,
    parse_capabilities,
    parse_security_opts,
    security_settings,
)
from hako.security.profile import default_profile

EVERY = list(CAPABILITIES[:41])
HOST = [c for c in EVERY if c != "CAP_SYS_RESOURCE"]  # this class of machine's bounding set


def test_capability_names_are_normalized_and_unknown_ones_refused():
    assert parse_capabilities("cap-add", ["net_admin", "CAP_SYS_TIME", "NET_ADMIN", "all"]) == [
        "ALL",
        "CAP_NET_ADMIN",
        "CAP_SYS_TIME",
    ]
    with pytest.raises(InvalidValue, match="cap-add.*'FLY'"):
        parse_capabilities("cap-add", ["FLY"])


def test_the_default_set_is_dockers_fourteen():
    assert len(DEFAULT_CAPABILITIES) == 14
    assert capability_set([], [], False, EVERY) == [c for c in CAPABILITIES if c in DEFAULT_CAPABILITIES]


def test_add_and_drop_follow_dockers_rules():
    held = capability_set(["CAP_NET_ADMIN"], ["CAP_MKNOD"], False, EVERY)
    assert "CAP_NET_ADMIN" in held and "CAP_MKNOD" not in held and len(held) == 14
    assert capability_set(["CAP_CHOWN"], ["ALL"], False, EVERY) == ["CAP_CHOWN"]
    assert capability_set([], ["ALL"], False, EVERY) == []
    assert capability_set(["ALL"], ["CAP_SYS_ADMIN"], False, EVERY) == [
        c for c in EVERY if c != "CAP_SYS_ADMIN"
    ]


def test_every_capability_means_those_the_host_can_hand_on():
    assert capability_set([], [], True, HOST) == HOST
    assert capability_set(["ALL"], [], False, HOST) == HOST
    with pytest.raises(InvalidValue, match="cap-add.*CAP_SYS_RESOURCE.*bounding set"):
        capability_set(["CAP_SYS_RESOURCE"], [], False, HOST)


def test_security_opts_are_normalized():
    opts, profile = parse_security_opts(["no-new-privileges:false", "seccomp=unconfined"])
    assert opts == ["no-new-privileges=false", "seccomp=unconfined"] and profile is None
    assert parse_security_opts(["no-new-privileges"])[0] == ["no-new-privileges=true"]
    for bad, why in [
        ("apparmor=unconfined", "known options"),
        ("no-new-privileges=maybe", "true or false"),
        ("seccomp=", "unconfined or a profile"),
        ("systempaths=open", "unconfined"),
    ]:
        with pytest.raises(InvalidValue, match=why):
            parse_security_opts([bad])


def test_a_profile_file_is_read_when_the_container_is_made(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}))
    opts, profile = parse_security_opts([f"seccomp={path}"])
    assert opts == [f"seccomp={path}"] and profile == {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}
    for text, why in [
        ("{", "not JSON"),
        ('{"defaultAction": "SCMP_ACT_NOPE"}', "defaultAction 'SCMP_ACT_NOPE'"),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}',
            r"syscalls\[0\] names",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",'
            ' "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}]}',
            "index must be 0 to 5",
        ),
    ]:
        path.write_text(text)
        with pytest.raises(InvalidValue, match=why):
            parse_security_opts([f"seccomp={path}"])
    with pytest.raises(InvalidValue, match="No such file"):
        parse_security_opts([f"seccomp={tmp_path}/missing.json"])


def test_privileged_lifts_the_defaults_unless_told_otherwise():
    assert security_settings({}) == {
        "no_new_privileges": True,
        "seccomp": "default",
        "systempaths": "default",
    }
    assert security_settings({"privileged": True}) == {
        "no_new_privileges": False,
        "seccomp": "unconfined",
        "systempaths": "unconfined",
    }
    kept = security_settings({"privileged": True, "security_opt": ["no-new-privileges=true"]})
    assert kept["no_new_privileges"] is True


def _rules_for(config: dict, name: str) -> list[dict]:
    return [rule for rule in config["syscalls"] if name in rule["names"]]


def test_the_default_profile_refuses_what_docker_refuses():
    config = oci_seccomp(default_profile(), list(DEFAULT_CAPABILITIES), "SCMP_ARCH_X86_64")
    assert config["defaultAction"] == "SCMP_ACT_ERRNO" and config["defaultErrnoRet"] == 1
    assert config["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed = {n for rule in config["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for n in rule["names"]}
    for name in [
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "keyctl", "add_key",
        "request_key", "bpf", "perf_event_open", "open_by_handle_at", "unshare", "setns", "mount", "umount2",
        "settimeofday", "clock_settime", "swapon", "reboot", "sethostname", "pivot_root", "acct", "iopl",
    ]:  # fmt: skip
        assert name not in allowed, name
    for name in ["read", "execve", "openat", "chroot", "ptrace", "rseq", "close_range", "arch_prctl"]:
        assert name in allowed, name
    # clone without namespace flags only; clone3 says ENOSYS so the C library falls back to clone
    (clone,) = _rules_for(config, "clone")
    assert clone["args"] == [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    (clone3,) = _rules_for(config, "clone3")
    assert clone3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}


def test_a_capability_opens_its_calls_and_arches_pick_theirs():
    config = oci_seccomp(
        default_profile(), [*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN", "CAP_SYS_TIME"], "SCMP_ARCH_X86_64"
    )
    allowed = {n for rule in config["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for n in rule["names"]}
    assert {"mount", "unshare", "sethostname", "clock_settime", "clone3"} <= allowed
    assert [rule.get("args") for rule in _rules_for(config, "clone")] == [None]
    arm = oci_seccomp(default_profile(), list(DEFAULT_CAPABILITIES), "SCMP_ARCH_AARCH64")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    arm_allowed = {n for rule in arm["syscalls"] for n in rule["names"]}
    assert "arch_prctl" not in arm_allowed and "sync_file_range2" in arm_allowed


def test_clone_flags_are_the_second_argument_on_s390():
    (clone,) = _rules_for(oci_seccomp(default_profile(), [], "SCMP_ARCH_S390X"), "clone")
    assert clone["args"][0]["index"] == 1


def test_swap_and_userfaultfd_stay_refused_whatever_the_capabilities():
    config = oci_seccomp(default_profile(), EVERY, "SCMP_ARCH_X86_64")
    allowed = {n for rule in config["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for n in rule["names"]}
    assert not {"swapon", "swapoff", "userfaultfd", "kexec_load", "keyctl", "add_key"} & allowed


def test_no_system_call_has_two_actions_for_one_container():
    for caps in ([], list(DEFAULT_CAPABILITIES), EVERY):
        config = oci_seccomp(default_profile(), caps, "SCMP_ARCH_X86_64")
        actions: dict[str, set] = {}
        for rule in config["syscalls"]:
            for name in rule["names"]:
                actions.setdefault(name, set()).add(rule["action"])
        assert {n: a for n, a in actions.items() if len(a) > 1} == {}


def test_docker_profile_includes_and_excludes():
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"name": "a", "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
            {"names": ["b"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["SCMP_ARCH_X86_64"]}},
            {"names": ["c"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
        ],
    }
    check_profile(profile, "test")
    config = oci_seccomp(profile, [], "SCMP_ARCH_X86_64")
    assert config["syscalls"] == [{"names": ["c"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]


def test_oci_fields_of_a_default_and_a_privileged_record():
    fields = oci_fields({})
    assert sorted(fields["capabilities"]["bounding"]) == sorted(DEFAULT_CAPABILITIES)
    assert fields["capabilities"]["ambient"] == [] and fields["noNewPrivileges"] is True
    assert fields["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    privileged = oci_fields({"privileged": True})
    assert privileged["seccomp"] is None and privileged["noNewPrivileges"] is False
    assert "CAP_SYS_ADMIN" in privileged["capabilities"]["effective"]


def test_an_exec_changes_the_containers_set_for_itself():
    seccomp, process = exec_privileges(
        {"cap_drop": ["CAP_CHOWN"]}, {"args": ["sh"]}, False, ["NET_ADMIN"], []
    )
    held = process["capabilities"]["effective"]
    assert "CAP_NET_ADMIN" in held and "CAP_CHOWN" not in held
    assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO"
    seccomp, process = exec_privileges({}, {"args": ["sh"]}, True, [], [])
    assert seccomp == {} and process["noNewPrivileges"] is False
    with pytest.raises(InvalidValue, match="cap-drop"):
        exec_privileges({}, {}, False, ["NET_ADMIN"], ["net_admin"])
