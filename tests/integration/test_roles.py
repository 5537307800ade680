"""The roles (hako_host, hako_lab, hako_verify) run by ansible-playbook against this machine.

They run in the session's private state (the play passes HAKO_ROOT, HAKO_RUN
and HAKO_CGROUP_PARENT on); hako_host installs under a temporary prefix. The
playbooks with their defaults (/usr/local, /var/lib/hako) are exercised by
molecule/default, see test_molecule.py.
"""

from __future__ import annotations

import base64
import os

from ..conftest import hako
from .test_ansible_modules import COMMAND, run_playbook, task

MIB = 1 << 20


def include(title: str, role: str, /, tasks_from: str | None = None, **variables) -> dict:
    """A task including ``role`` with ``variables``."""
    options = {"name": role}
    if tasks_from:
        options["tasks_from"] = tasks_from
    return {"name": title, "ansible.builtin.include_role": options, "vars": variables}


def keep(title: str, **facts) -> dict:
    """A set_fact task: its recorded result holds ``facts`` as they were at that point."""
    return task(title, "ansible.builtin.set_fact", **facts)


def failure_of(title: str, step: dict) -> dict:
    """``step`` in a block whose rescue records the failure's message under ``title``."""
    return {
        "name": f"{title} (block)",
        "block": [step],
        "rescue": [keep(title, failed_msg="{{ ansible_failed_result.msg }}")],
    }


LAB = {
    "hako_lab_name": "rt",
    "hako_lab_image": {"name": "busybox:latest", "source": "build"},
    "hako_lab_command": COMMAND,
    "hako_lab_limits": {"memory": "64m", "pids_limit": 40},
}


def test_lab_role_plans_learners_with_their_own_options_and_the_lab_labels(tmp_path):
    variables = dict(
        LAB,
        hako_lab_learners=["alice", {"name": "bob", "memory": "96m", "labels": {"seat": "3"}}],
        hako_lab_container_options={"restart_policy": "unless-stopped", "env": {"LAB": "rt"}},
        hako_lab_extra_containers=[{"name": "rt-web", "command": ["httpd", "-f"], "memory": "32m"}],
    )
    r = run_playbook(
        tmp_path,
        [
            include("plan", "hako_lab", tasks_from="plan", **variables),
            keep("planned", seen="{{ hako_lab_containers }}"),
        ],
    )
    planned = {c["name"]: c for c in r["planned"]["ansible_facts"]["seen"]}
    assert list(planned) == ["rt-alice", "rt-bob", "rt-web"]
    alice, bob, web = planned["rt-alice"], planned["rt-bob"], planned["rt-web"]
    assert alice == {
        "name": "rt-alice",
        "image": "busybox:latest",
        "command": COMMAND,
        "hostname": "alice",
        "labels": {"hako.lab": "rt", "hako.learner": "alice"},
        "memory": "64m",
        "pids_limit": 40,
        "restart_policy": "unless-stopped",
        "env": {"LAB": "rt"},
        # hako's default profile, stated: a privilege taken out of the lab is taken away.
        "capabilities": [],
        "cap_drop": [],
        "privileged": False,
        "security_opts": [],
        "groups": [],
        "devices": [],
    }
    # A learner's own options win; label mappings are merged, not replaced.
    assert bob["memory"] == "96m" and bob["pids_limit"] == 40
    assert bob["labels"] == {"hako.lab": "rt", "hako.learner": "bob", "seat": "3"}
    assert web == {"name": "rt-web", "image": "busybox:latest", "command": ["httpd", "-f"], "memory": "32m",
                   "labels": {"hako.lab": "rt"}}  # fmt: skip


def test_lab_role_converges_grows_shrinks_verifies_and_goes(tmp_path, containers):
    containers.extend(["rt-alice", "rt-bob", "rt-carol"])
    three = dict(LAB, hako_lab_learners=["alice", {"name": "bob", "memory": "96m"}, "carol"])
    one = dict(LAB, hako_lab_learners=["alice"])
    r = run_playbook(
        tmp_path,
        [
            include("lab of three", "hako_lab", **three),
            keep("after three", result="{{ hako_lab_result }}"),
            include("verify three", "hako_verify"),
            keep("verified three", result="{{ hako_verify_result }}"),
            include("lab of three again", "hako_lab", **three),
            keep("after three again", result="{{ hako_lab_result }}"),
            include("lab of one", "hako_lab", **one),
            keep("after one", result="{{ hako_lab_result }}"),
            include("lab gone", "hako_lab", hako_lab_state="absent", hako_lab_remove_image=False, **one),
            keep("after gone", result="{{ hako_lab_result }}"),
        ],
    )
    first = r["after three"]["ansible_facts"]["result"]
    assert first["changed"]
    assert {e["name"]: e["actions"] for e in first["results"]} == {
        "rt-alice": ["create", "start"],
        "rt-bob": ["create", "start"],
        "rt-carol": ["create", "start"],
    }
    verified = r["verified three"]["ansible_facts"]["result"]
    assert verified["verified"] == 3 and verified["failures"] == []
    checks = {(c["container"], c["check"]): c for c in verified["checks"]}
    assert checks["rt-bob", "memory limit"]["actual"] == 96 * MIB
    assert checks["rt-alice", "pid namespace"]["actual"] == "private"
    assert not r["after three again"]["ansible_facts"]["result"]["changed"]
    shrunk = r["after one"]["ansible_facts"]["result"]
    assert {e["name"]: e["actions"] for e in shrunk["results"]} == {
        "rt-alice": [],
        "rt-bob": ["remove"],
        "rt-carol": ["remove"],
    }
    gone = r["after gone"]["ansible_facts"]["result"]
    assert {e["name"]: e["actions"] for e in gone["results"]} == {"rt-alice": ["remove"]}
    assert hako("ps", "-a", "-q").stdout == ""
    assert "busybox" in hako("images").stdout  # hako_lab_remove_image: false


def test_verify_role_names_a_limit_changed_behind_the_labs_back_and_the_lab_role_repairs_it(
    tmp_path, containers
):
    containers.append("rt-alice")
    lab = dict(LAB, hako_lab_learners=["alice"])
    r = run_playbook(
        tmp_path,
        [
            include("lab", "hako_lab", **lab),
            task(
                "change alice's memory by hand",
                "ansible.builtin.command",
                argv=["hako", "update", "--memory", "128m", "rt-alice"],
            ),  # fmt: skip
            failure_of("drift", include("verify drifted", "hako_verify")),
            include("lab again", "hako_lab", **lab),
            keep("repaired", result="{{ hako_lab_result }}"),
            include("verify repaired", "hako_verify"),
            keep("verified", result="{{ hako_verify_result }}"),
        ],
    )
    message = r["drift"]["ansible_facts"]["failed_msg"]
    # Docker's default swap (as much as memory) moved with the memory limit.
    assert message == (
        f"2 check(s) failed: rt-alice: memory limit is {128 * MIB}, want {64 * MIB}; "
        f"rt-alice: memory+swap limit is {256 * MIB}, want {128 * MIB}"
    )
    repaired = r["repaired"]["ansible_facts"]["result"]["results"][0]
    assert repaired["actions"] == ["update memory"]
    assert r["verified"]["ansible_facts"]["result"]["failures"] == []


def test_lab_role_puts_learners_on_its_network_where_they_reach_each_other_by_name(tmp_path, containers):
    containers.extend(["rn-alice", "rn-bob"])
    lab = dict(
        LAB,
        hako_lab_name="rn",
        hako_lab_learners=["alice", "bob"],
        hako_lab_networks=[{"name": "am-lab", "subnet": "10.213.230.0/24", "labels": {"room": "a"}}],
        hako_lab_learner_networks=["am-lab"],
    )
    check = include("lab in check mode", "hako_lab", **lab)
    check["ansible.builtin.include_role"]["apply"] = {"check_mode": True}
    ping = ["ping", "-c", "1", "-W", "2", "rn-bob"]
    try:
        r = run_playbook(
            tmp_path,
            [
                check,
                keep("predicted", result="{{ hako_lab_result }}"),
                include("lab", "hako_lab", **lab),
                keep("after lab", result="{{ hako_lab_result }}", planned="{{ hako_lab_containers }}"),
                include("verify", "hako_verify"),
                keep("verified", result="{{ hako_verify_result }}"),
                task("alice reaches bob by name", "hako_exec", container="rn-alice", argv=ping),
                include("lab again", "hako_lab", **lab),
                keep("again", result="{{ hako_lab_result }}"),
                include("lab gone", "hako_lab", hako_lab_state="absent", hako_lab_remove_image=False, **lab),
            ],
        )
    finally:
        hako("network", "rm", "-f", "am-lab", check=False)

    predicted = r["predicted"]["ansible_facts"]["result"]["results"]
    assert [(e["name"], e["actions"]) for e in predicted] == [
        ("rn-alice", ["create", "start"]),
        ("rn-bob", ["create", "start"]),
    ]
    planned = r["after lab"]["ansible_facts"]["planned"]
    assert [c["networks"] for c in planned] == [["am-lab"], ["am-lab"]]
    made = r["after lab"]["ansible_facts"]["result"]["results"]
    on_lab = [e["container"]["NetworkSettings"]["Networks"]["am-lab"]["IPAddress"] for e in made]
    assert on_lab == ["10.213.230.2", "10.213.230.3"]
    verified = r["verified"]["ansible_facts"]["result"]
    assert verified["failures"] == []
    network_checks = {
        c["container"]: c["actual"] for c in verified["checks"] if c["check"] == "network am-lab"
    }
    assert set(network_checks) == {"rn-alice", "rn-bob"}
    assert network_checks["rn-bob"].startswith("eth0 10.213.230.3/24 up, on hk-")
    assert r["alice reaches bob by name"]["rc"] == 0
    assert " 0% packet loss" in r["alice reaches bob by name"]["stdout"]
    assert not r["again"]["ansible_facts"]["result"]["changed"]
    assert r["hako_lab : Make sure the lab's networks are there"]["changed"] is False
    assert "am-lab" not in hako("network", "ls").stdout
    assert hako("ps", "-a", "-q").stdout == ""


def test_lab_role_in_check_mode_predicts_the_image_and_containers_and_makes_nothing(tmp_path):
    lab = dict(LAB, hako_lab_learners=["alice"], hako_lab_image={"name": "rt-notyet:1", "source": "build"})
    step = include("lab in check mode", "hako_lab", **lab)
    step["ansible.builtin.include_role"]["apply"] = {"check_mode": True}
    r = run_playbook(tmp_path, [step, keep("predicted", result="{{ hako_lab_result }}")])
    assert r["hako_lab : Make sure the lab's image is there"]["_status"] == "changed"
    predicted = r["predicted"]["ansible_facts"]["result"]["results"]
    assert [(e["name"], e["actions"]) for e in predicted] == [("rt-alice", ["create", "start"])]
    assert hako("ps", "-a", "-q").stdout == ""
    assert "rt-notyet" not in hako("images").stdout


def test_lab_role_checks_the_description_before_changing_anything(tmp_path):
    cases = {
        "bad learner": dict(LAB, hako_lab_learners=["alice", "no spaces"]),
        "twice": dict(LAB, hako_lab_learners=["alice", {"name": "alice"}]),
        "unknown limit": dict(LAB, hako_lab_learners=["alice"], hako_lab_limits={"memroy": "64m"}),
        "bad lab name": dict(LAB, hako_lab_name="../x", hako_lab_learners=["alice"]),
        "bad image": dict(
            LAB, hako_lab_learners=["alice"], hako_lab_image={"name": "busybox", "sorce": "build"}
        ),
        "bad network": dict(
            LAB,
            hako_lab_learners=["alice"],
            hako_lab_networks=[{"name": "am-x", "subnett": "10.213.231.0/24"}],
        ),
    }
    r = run_playbook(
        tmp_path, [failure_of(title, include(title, "hako_lab", **v)) for title, v in cases.items()]
    )
    messages = {title: r[title]["ansible_facts"]["failed_msg"] for title in cases}
    assert "invalid hako_lab_learners" in messages["bad learner"] and "no spaces" in messages["bad learner"]
    assert "each name once" in messages["twice"]
    assert "invalid hako_lab_limits" in messages["unknown limit"] and "memroy" in messages["unknown limit"]
    assert "hako_lab_name=../x" in messages["bad lab name"]
    assert "sorce" in messages["bad image"]
    assert "invalid hako_lab_networks" in messages["bad network"] and "subnett" in messages["bad network"]
    assert hako("ps", "-a", "-q").stdout == ""


def test_host_role_installs_under_its_prefix_twice_the_same_then_removes(tmp_path):
    prefix = tmp_path / "prefix"
    sysctl = tmp_path / "sysctl.d" / "90-hako.conf"
    sysctl.parent.mkdir()
    variables = {
        "hako_host_prefix": str(prefix),
        "hako_host_sysctl_file": str(sysctl),
        "hako_host_install_packages": False,
        "hako_host_sysctl_minimum": {"user.max_user_namespaces": 2},
    }
    r = run_playbook(
        tmp_path,
        [
            include("host", "hako_host", **variables),
            keep("first", cgroup_mode="{{ hako_host_cgroup_mode }}", command="{{ hako_host_command }}"),
            task("version", "ansible.builtin.command", argv=[str(prefix / "bin" / "hako"), "version"]),
            task("sysctl file", "ansible.builtin.slurp", src=str(sysctl)),
            include("host again", "hako_host", **variables),
            keep("second", changes="{{ _hako_host_runtime.changed }}"),
            include("host gone", "hako_host", hako_host_state="absent", **variables),
        ],
    )
    facts = r["first"]["ansible_facts"]
    assert facts["command"] == str(prefix / "bin" / "hako")
    assert facts["cgroup_mode"] in ("v1", "hybrid", "v2")
    assert r["version"]["stdout"].startswith("hako ")
    # The host's own value is higher than the minimum: kept, not lowered.
    current = int(open("/proc/sys/user/max_user_namespaces").read())
    written = base64.b64decode(r["sysctl file"]["content"]).decode()
    assert f"user.max_user_namespaces = {max(current, 2)}\n" in written
    assert r["second"]["ansible_facts"]["changes"] is False
    assert not (prefix / "bin" / "hako").exists() and not (prefix / "lib" / "hako").exists()
    assert not sysctl.exists()


def test_host_role_refuses_bad_variables_before_changing_anything(tmp_path):
    cases = {
        "relative prefix": {"hako_host_prefix": "usr/local"},
        "sysctl not a number": {"hako_host_sysctl_minimum": {"user.max_user_namespaces": "many"}},
        "bad state": {"hako_host_state": "gone"},
    }
    r = run_playbook(
        tmp_path, [failure_of(title, include(title, "hako_host", **v)) for title, v in cases.items()]
    )
    for title, variables in cases.items():
        message = r[title]["ansible_facts"]["failed_msg"]
        assert next(iter(variables)) in message, (title, message)
    assert not os.path.exists("usr/local")


def test_lab_role_wires_a_router_between_two_learners_from_the_yaml(tmp_path, containers):
    containers.extend(["rt-alice", "rt-bob", "rt-router"])
    lab = dict(
        LAB,
        hako_lab_learners=["alice", "bob"],
        hako_lab_extra_containers=[
            {"name": "rt-router", "command": COMMAND, "sysctls": {"net.ipv4.ip_forward": 1}}
        ],
        hako_lab_links=[
            {"a": "alice:eth1", "b": "rt-router:eth1", "ip_a": "10.214.211.1/30", "ip_b": "10.214.211.2/30",
             "routes_a": ["10.214.212.0/30"]},
            {"a": "bob:eth1", "b": "rt-router:eth2", "ip_a": "10.214.212.1/30", "ip_b": "10.214.212.2/30",
             "routes_a": ["10.214.211.0/30"], "rate": "10mbit"},
        ],
    )  # fmt: skip
    r = run_playbook(
        tmp_path,
        [
            include("lab", "hako_lab", **lab),
            keep("wired", result="{{ hako_lab_result }}"),
            task("alice reaches bob across the router", "hako_exec", container="rt-alice",
                 command="ping -c 1 -W 2 10.214.212.1"),
            include("lab again", "hako_lab", **lab),
            keep("again", result="{{ hako_lab_result }}"),
            include("lab gone", "hako_lab", hako_lab_state="absent", hako_lab_remove_image=False, **lab),
        ],
    )  # fmt: skip
    links = r["wired"]["ansible_facts"]["result"]["links"]
    assert links["create"] == ["rt-alice:eth1 - rt-router:eth1", "rt-bob:eth1 - rt-router:eth2"]
    assert r["alice reaches bob across the router"]["rc"] == 0
    assert r["again"]["ansible_facts"]["result"]["changed"] is False
    assert hako("link", "ls", "-q").stdout == ""


def test_lab_role_gives_learners_their_privileges_and_verify_proves_them(tmp_path, containers):
    containers.extend(["rs-alice", "rs-bob"])
    tight = {
        "cap_drop": ["ALL"],
        "capabilities": ["CHOWN", "SETUID", "SETGID"],
        "security_opts": ["no-new-privileges"],
    }
    lab = dict(
        LAB,
        hako_lab_name="rs",
        hako_lab_security=tight,
        hako_lab_learners=["alice", {"name": "bob", "capabilities": ["chown", "NET_ADMIN"]}],
    )
    # The lab's privileges taken out: hako's default profile again.
    default = dict(lab, hako_lab_security={}, hako_lab_learners=["alice", "bob"])
    r = run_playbook(
        tmp_path,
        [
            include("tight", "hako_lab", **lab),
            keep("after tight", result="{{ hako_lab_result }}"),
            include("verify tight", "hako_verify", hako_verify_checks=["privileges"]),
            keep("verified tight", result="{{ hako_verify_result }}"),
            include("tight again", "hako_lab", **lab),
            keep("after tight again", result="{{ hako_lab_result }}"),
            include("default", "hako_lab", **default),
            keep("after default", result="{{ hako_lab_result }}"),
            include("verify default", "hako_verify"),
            keep("verified default", result="{{ hako_verify_result }}"),
            failure_of(
                "bad key",
                include("bad key", "hako_lab", **dict(lab, hako_lab_security={"cap_add": ["CHOWN"]})),
            ),
            include("gone", "hako_lab", hako_lab_state="absent", hako_lab_remove_image=False, **lab),
        ],
    )
    first = r["after tight"]["ansible_facts"]["result"]
    assert [e["actions"] for e in first["results"]] == [["create", "start"]] * 2
    verified = r["verified tight"]["ansible_facts"]["result"]
    assert verified["failures"] == []
    checks = {(c["container"], c["check"]): c["actual"] for c in verified["checks"]}
    assert checks["rs-alice", "capabilities"] == "CAP_CHOWN, CAP_SETGID, CAP_SETUID"
    assert (
        checks["rs-bob", "capabilities"]
        == checks["rs-bob", "effective capabilities"]
        == ("CAP_CHOWN, CAP_NET_ADMIN")
    )
    assert checks["rs-alice", "seccomp"] == "filter" and checks["rs-alice", "no_new_privs"] is True
    assert not r["after tight again"]["ansible_facts"]["result"]["changed"]
    back = r["after default"]["ansible_facts"]["result"]
    assert [e["actions"] for e in back["results"]] == [["recreate", "start"]] * 2
    verified = r["verified default"]["ansible_facts"]["result"]
    assert verified["failures"] == []
    checks = {(c["container"], c["check"]): c["actual"] for c in verified["checks"]}
    assert len(checks["rs-alice", "capabilities"].split(", ")) == 14
    failed = r["bad key"]["ansible_facts"]["failed_msg"]
    assert "invalid hako_lab_security" in failed and "cap_add" in failed
    assert hako("ps", "-a", "-q").stdout == ""
