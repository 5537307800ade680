"""Privileges through the modules (ansible-playbook on this machine), checked in /proc/<pid>/status.

hako_container's capabilities, cap_drop, privileged, security_opts, groups
and devices: idempotent across spellings, a real difference recreates the
container (whose first process then holds what was asked), check mode
changes nothing, a bad value fails naming the option. hako_verify's
privilege checks report what the kernel holds.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..conftest import container_pid, hako
from .test_ansible_modules import COMMAND, container_names, run_playbook, task

DOCKER_DEFAULT = 0xA80425FB  # the 14 default capabilities as a mask
NET_ADMIN, SYS_TIME, MKNOD = 1 << 12, 1 << 25, 1 << 27
PROFILE = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
}


def read_status(title: str, registered: str) -> dict:
    """A task (no module run) keeping /proc/<pid>/status of the registered container's first process."""
    path = f"'/proc/' ~ {registered}.container.State.Pid ~ '/status'"
    return task(title, "ansible.builtin.set_fact", status=f"{{{{ lookup('ansible.builtin.file', {path}) }}}}")


def fields(result: dict) -> dict[str, str]:
    text = result["ansible_facts"]["status"]
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def proc_status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def mask(value: str) -> int:
    return int(value, 16)


def host_bounding() -> int:
    return mask(proc_status("self")["CapBnd"])


def test_privileges_are_idempotent_across_spellings_and_a_difference_recreates(
    tmp_path, containers, hako_env
) -> None:
    containers.extend(["caps", "caps-bad"])
    profile = tmp_path / "a.json"
    profile.write_text(json.dumps(PROFILE))
    (tmp_path / "b.json").write_text(json.dumps(PROFILE, indent=2))  # the same profile, spelt otherwise
    declared = {
        "name": "caps",
        "image": "busybox",
        "command": COMMAND,
        "capabilities": ["net_admin"],
        "cap_drop": ["MKNOD"],
        "security_opts": ["no-new-privileges", f"seccomp={profile}"],
        "groups": ["tty"],
        "devices": ["/dev/zero:/dev/z0:r"],
    }
    spelt_otherwise = {
        "name": "caps",
        "command": COMMAND,
        # The modules' aliases (the CLI's names), other spellings, another order, twice.
        "cap_add": ["CAP_NET_ADMIN", "NET_ADMIN"],
        "cap_drop": ["cap_mknod"],
        "security_opt": [f"seccomp={tmp_path}/./b.json", "no-new-privileges=true"],
        "group_add": ["tty", "tty"],
        "devices": ["/dev/zero:/dev/z0:r"],
        "privileged": False,
    }
    more = {**declared, "capabilities": ["NET_ADMIN", "sys_time"]}
    privileged = {"name": "caps", "image": "busybox", "command": COMMAND, "privileged": True}
    later_path = tmp_path / "later.json"
    later = {**privileged, "security_opts": [f"seccomp={later_path}"]}
    lacking = "CAP_SYS_RESOURCE" not in held_capabilities()
    tasks = [
        task("create", "hako_container", "create", **declared),
        read_status("status after create", "create"),
        task("again", "hako_container", **declared),
        task("spelt otherwise", "hako_container", _diff=True, **spelt_otherwise),
        task("more, in check mode", "hako_container", _check_mode=True, _diff=True, **more),
        task("more", "hako_container", "more", _diff=True, **more),
        read_status("status after more", "more"),
        task(
            "edit the profile",
            "ansible.builtin.copy",
            dest=str(profile),
            content=json.dumps({**PROFILE, "defaultAction": "SCMP_ACT_LOG"}),
        ),
        task("profile edited", "hako_container", _diff=True, **more),
        task("profile edited, again", "hako_container", **more),
        task("privileged", "hako_container", "privileged", **privileged),
        read_status("status when privileged", "privileged"),
        task("privileged, as a list", "hako_containers", containers=[privileged]),
        # A profile an earlier task would write: check mode predicts, a real run names it.
        task("profile not yet written, check mode", "hako_container", _check_mode=True, _diff=True, **later),
        task("profile not yet written", "hako_container", _ignore_errors=True, **later),
        task(
            "unknown capability",
            "hako_container",
            _ignore_errors=True,
            **{**declared, "capabilities": ["fly"]},
        ),
        task(
            "unknown capability, new container",
            "hako_container",
            _ignore_errors=True,
            **{**declared, "name": "caps-bad", "capabilities": ["NET_ADMIN", "FLY"]},
        ),
        task(
            "no such device",
            "hako_container",
            _ignore_errors=True,
            **{**privileged, "devices": ["/dev/nope"]},
        ),
    ]
    if lacking:
        # The host's root lacks it: refused before the old container is removed.
        tasks.append(
            task(
                "not in the bounding set",
                "hako_container",
                _ignore_errors=True,
                **{**privileged, "privileged": False, "capabilities": ["sys_resource"]},
            )
        )
    tasks.append(task("still there", "hako_container_info", name=["caps"]))
    r = run_playbook(tmp_path, tasks)

    create = r["create"]
    assert (create["changed"], create["actions"]) == (True, ["create", "start"])
    config = create["container"]["HostConfig"]
    assert config["CapAdd"] == ["CAP_NET_ADMIN"] and config["CapDrop"] == ["CAP_MKNOD"]
    assert config["GroupAdd"] == ["tty"] and config["Privileged"] is False
    assert config["Devices"] == [
        {"PathOnHost": "/dev/zero", "PathInContainer": "/dev/z0", "CgroupPermissions": "r"}
    ]
    status = fields(r["status after create"])
    assert mask(status["CapEff"]) == mask(status["CapBnd"]) == (DOCKER_DEFAULT | NET_ADMIN) & ~MKNOD
    assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1"

    for title in ("again", "spelt otherwise"):
        assert (r[title]["changed"], r[title]["actions"]) == (False, []), title
        assert r[title]["container"]["Id"] == create["container"]["Id"], title
    # Nothing differed: the diff shows the container as it is.
    spelt = r["spelt otherwise"]["diff"]
    assert spelt["before"] == spelt["after"]
    assert spelt["after"]["capabilities"] == ["CAP_NET_ADMIN"]
    assert spelt["after"]["security_opts"][1].startswith(f"seccomp={profile} (sha256:")

    # Check mode: predicted, not done; the next run still finds the old container.
    check = r["more, in check mode"]
    assert (check["changed"], check["actions"]) == (True, ["recreate", "start"])
    assert check["container"]["Id"] == create["container"]["Id"]
    assert check["diff"]["after"]["capabilities"] == ["CAP_NET_ADMIN", "CAP_SYS_TIME"]
    recreated = r["more"]
    assert recreated["actions"] == ["recreate", "start"]
    assert recreated["container"]["Id"] != create["container"]["Id"]
    assert recreated["diff"]["before"]["capabilities"] == ["CAP_NET_ADMIN"]
    assert recreated["diff"]["after"]["capabilities"] == ["CAP_NET_ADMIN", "CAP_SYS_TIME"]
    status = fields(r["status after more"])
    assert (
        mask(status["CapEff"]) == mask(status["CapBnd"]) == (DOCKER_DEFAULT | NET_ADMIN | SYS_TIME) & ~MKNOD
    )

    # The profile's file edited: the container is made again with the new content, once.
    edited = r["profile edited"]
    assert edited["actions"] == ["recreate", "start"]
    before, after = edited["diff"]["before"]["security_opts"], edited["diff"]["after"]["security_opts"]
    assert before[1].split(" (")[0] == after[1].split(" (")[0] == f"seccomp={profile}" and before != after
    assert (r["profile edited, again"]["changed"], r["profile edited, again"]["actions"]) == (False, [])

    priv = r["privileged"]
    assert priv["actions"] == ["recreate", "start"] and priv["container"]["HostConfig"]["Privileged"]
    status = fields(r["status when privileged"])
    assert mask(status["CapEff"]) == mask(status["CapBnd"]) == host_bounding()
    assert status["Seccomp"] == "0" and status["NoNewPrivs"] == "0"
    assert (r["privileged, as a list"]["changed"], r["privileged, as a list"]["results"][0]["actions"]) == (
        False,
        [],
    )

    predicted = r["profile not yet written, check mode"]
    assert (predicted["changed"], predicted["actions"]) == (True, ["recreate", "start"])
    assert predicted["diff"]["after"]["security_opts"] == [f"seccomp={later_path} (not yet present)"]

    # Bad values: one line naming the option; nothing made, nothing removed.
    failed = {
        "profile not yet written": f"invalid value for security_opts: security-opt 'seccomp={later_path}'",
        "unknown capability": "invalid value for capabilities: 'fly' (not a capability",
        "unknown capability, new container": "invalid value for capabilities: 'FLY' (not a capability",
        "no such device": "invalid value for devices: device '/dev/nope' (/dev/nope: no such file",
    }
    if lacking:
        failed["not in the bounding set"] = "invalid value for capabilities: cap-add 'CAP_SYS_RESOURCE'"
    for title, start in failed.items():
        assert r[title]["_status"] == "failed", title
        assert r[title]["msg"].startswith(start) and "\n" not in r[title]["msg"], r[title]["msg"]
        assert r[title]["actions"] == [], title
    assert r["still there"]["containers"][0]["Id"] == priv["container"]["Id"]
    assert r["still there"]["containers"][0]["State"]["Running"]
    assert "caps-bad" not in container_names(hako_env)


def held_capabilities() -> list[str]:
    """The capabilities this host's root holds (its bounding set), by name."""
    from hako.linux import CAPABILITIES

    held = host_bounding()
    return [name for number, name in enumerate(CAPABILITIES) if held & (1 << number)]


def test_verify_checks_the_privileges_the_kernel_holds(tmp_path, containers) -> None:
    lab = [
        {"name": "vsec-default"},
        {"name": "vsec-tight", "cap_drop": ["ALL"], "capabilities": ["chown", "NET_BIND_SERVICE"]},
        {"name": "vsec-user", "user": "1000:1000", "capabilities": ["NET_ADMIN"]},
        {"name": "vsec-loose", "security_opts": ["seccomp=unconfined", "no-new-privileges=false"]},
        {"name": "vsec-priv", "privileged": True},
        {"name": "vsec-userns", "userns": "auto", "cap_drop": ["NET_RAW"]},
    ]
    containers.extend(item["name"] for item in lab)
    made = [{"image": "busybox", "command": COMMAND, **item} for item in lab]
    wrong = {
        "capabilities": {"name": "vsec-default", "capabilities": ["NET_ADMIN"]},
        "confined": {"name": "vsec-loose", "security_opts": []},
        "unprivileged": {"name": "vsec-priv", "privileged": False},
    }
    tasks = [
        task("lab", "hako_containers", containers=made),
        task("verify", "hako_verify", checks=["privileges"], containers=lab),
        task("verify everything", "hako_verify", containers=lab),
        *(
            task(title, "hako_verify", _ignore_errors=True, checks=["privileges"], containers=[item])
            for title, item in wrong.items()
        ),
    ]
    r = run_playbook(tmp_path, tasks)

    verify = r["verify"]
    assert verify["_status"] == "ok" and verify["failures"] == [] and verify["verified"] == len(lab)
    assert r["verify everything"]["failures"] == []
    checks = {(c["container"], c["check"]): c for c in verify["checks"]}
    assert {check for _, check in checks} == {
        "capabilities",
        "effective capabilities",
        "seccomp",
        "no_new_privs",
    }
    # Each check as /proc/<pid>/status, read here, has it.
    for item in lab:
        name = item["name"]
        status = proc_status(container_pid(name))
        shown = checks[name, "capabilities"]["actual"]
        assert mask(status["CapBnd"]) == sum(1 << number(cap) for cap in shown.split(", ")), name
        effective = checks[name, "effective capabilities"]["actual"]
        assert mask(status["CapEff"]) == (0 if effective == "none" else mask(status["CapBnd"])), name
        assert checks[name, "seccomp"]["actual"] == ("filter" if status["Seccomp"] == "2" else "disabled")
        assert checks[name, "no_new_privs"]["actual"] is (status["NoNewPrivs"] == "1")
    assert checks["vsec-tight", "capabilities"]["expected"] == "CAP_CHOWN, CAP_NET_BIND_SERVICE"
    assert checks["vsec-user", "effective capabilities"]["expected"] == "none"
    assert "CAP_NET_ADMIN" in checks["vsec-user", "capabilities"]["actual"]
    assert "CAP_NET_RAW" not in checks["vsec-userns", "effective capabilities"]["actual"]
    assert (
        checks["vsec-userns", "effective capabilities"]["actual"]
        == checks["vsec-userns", "capabilities"]["actual"]
    )
    assert checks["vsec-loose", "seccomp"]["actual"] == "disabled"
    assert checks["vsec-loose", "no_new_privs"]["actual"] is False
    assert mask(proc_status(container_pid("vsec-priv"))["CapBnd"]) == host_bounding()

    default = checks["vsec-default", "capabilities"]["actual"]
    assert r["capabilities"]["failures"] == [
        f"vsec-default: capabilities is {default}, want {with_cap(default, 'CAP_NET_ADMIN')}",
        f"vsec-default: effective capabilities is {default}, want {with_cap(default, 'CAP_NET_ADMIN')}",
    ]
    assert r["confined"]["failures"] == [
        "vsec-loose: seccomp is disabled, want filter",
        "vsec-loose: no_new_privs is no, want yes",
    ]
    priv = checks["vsec-priv", "capabilities"]["actual"]
    assert r["unprivileged"]["failures"] == [
        f"vsec-priv: capabilities is {priv}, want {default}",
        f"vsec-priv: effective capabilities is {priv}, want {default}",
        "vsec-priv: seccomp is disabled, want filter",
        "vsec-priv: no_new_privs is no, want yes",
    ]
    assert all(r[title]["_status"] == "failed" for title in wrong)
    # Nothing was changed by the checks.
    assert hako("ps", "-q").stdout.count("\n") == len(lab)


def number(capability: str) -> int:
    from hako.linux import CAPABILITY_NUMBERS

    return CAPABILITY_NUMBERS[capability]


def with_cap(shown: str, capability: str) -> str:
    return ", ".join(sorted([*shown.split(", "), capability], key=number))
