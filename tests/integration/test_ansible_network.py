"""hako_network and the networks option of hako_container, run by ansible-playbook on this machine.

Real bridges, veths and network namespaces. Every network here is named
``am-*`` with a subnet in 10.213.200.0/24-10.213.249.0/24 (other tests and
other checkouts run beside these and use other names and subnets); traffic
goes only between containers the test made. The leak check after each test
(conftest) sees that no bridge or veth is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess

from ..conftest import container_pid, hako
from .test_ansible_modules import COMMAND, run_playbook, task


def network_names() -> list[str]:
    return [line.split()[1] for line in hako("network", "ls").stdout.splitlines()[1:]]


def inspect_network(name: str) -> dict:
    return json.loads(hako("network", "inspect", name).stdout)[0]


def addresses(container: str) -> dict[str, str]:
    """Interface -> IPv4 address/prefix inside the container, as `ip` there prints them."""
    out = hako("exec", container, "ip", "-4", "-o", "addr").stdout
    return {words[1]: words[3] for words in (line.split() for line in out.splitlines()) if words[1] != "lo"}


def failed(tasks: list[dict]) -> list[dict]:
    return [dict(t, ignore_errors=True) for t in tasks]


# --------------------------------------------------------------------------
# hako_network


def test_network_present_idempotent_labels_in_place_options_remade_then_absent(tmp_path, networks):
    networks.append("am-net1")
    net = {"name": "am-net1", "subnet": "10.213.200.0/24", "labels": {"course": "linuc"}}
    tasks = [
        task("create, check mode", "hako_network", _check_mode=True, _diff=True, **net),
        task("create", "hako_network", _diff=True, **net),
        task("create again", "hako_network", **net),
        task("only the name", "hako_network", name="am-net1"),
        task("one more label", "hako_network", name="am-net1", labels={"room": "a"}),
        task("mtu, check mode", "hako_network", _check_mode=True, name="am-net1", mtu=1400),
        task("mtu", "hako_network", _diff=True, name="am-net1", mtu=1400),
        task("mtu again", "hako_network", **net, mtu=1400),
        task("internal, nat off", "hako_network", name="am-net1", internal=True, nat=False),
        task("forced", "hako_network", name="am-net1", recreate=True),
        task("absent, check mode", "hako_network", _check_mode=True, name="am-net1", state="absent"),
        task("absent", "hako_network", _diff=True, name="am-net1", state="absent"),
        task("absent again", "hako_network", name="am-net1", state="absent"),
    ]
    r = run_playbook(tmp_path, tasks)

    actions = {title: (r[title]["changed"], r[title]["actions"]) for title in r}
    assert actions == {
        "create, check mode": (True, ["create"]),
        "create": (True, ["create"]),
        "create again": (False, []),
        "only the name": (False, []),
        "one more label": (True, ["update labels"]),
        "mtu, check mode": (True, ["recreate"]),
        "mtu": (True, ["recreate"]),
        "mtu again": (False, []),
        "internal, nat off": (True, ["recreate"]),
        "forced": (True, ["recreate"]),
        "absent, check mode": (True, ["remove"]),
        "absent": (True, ["remove"]),
        "absent again": (False, []),
    }
    # Check mode made nothing, and predicted what the real run then made.
    assert r["create, check mode"]["network"] == {}
    predicted = r["create, check mode"]["diff"]
    assert predicted["before"] == {"state": "absent"}
    assert predicted["after"] == r["create"]["diff"]["after"]
    assert r["create"]["diff"]["after"] == {
        "state": "present",
        "subnet": "10.213.200.0/24",
        "gateway": "10.213.200.1",
        "ip_range": None,
        "mtu": 1500,
        "internal": False,
        "nat": True,
        "labels": {"course": "linuc"},
    }
    made = r["create"]["network"]
    assert made["Name"] == "am-net1" and made["IPAM"]["Config"][0]["Subnet"] == "10.213.200.0/24"
    assert r["one more label"]["network"]["Labels"] == {"course": "linuc", "room": "a"}
    assert r["one more label"]["network"]["Id"] == made["Id"]  # in place
    assert r["mtu, check mode"]["network"]["Options"]["mtu"] == "1500"
    # Made again with the new MTU; what the task left out (subnet, labels) kept.
    remade = r["mtu"]["network"]
    assert remade["Id"] != made["Id"] and remade["Options"]["mtu"] == "1400"
    assert remade["IPAM"]["Config"][0]["Subnet"] == "10.213.200.0/24"
    assert remade["Labels"] == {"course": "linuc", "room": "a"}
    assert (r["mtu"]["diff"]["before"]["mtu"], r["mtu"]["diff"]["after"]["mtu"]) == (1500, 1400)
    assert r["internal, nat off"]["network"]["Internal"] is True
    assert r["absent, check mode"]["network"]["Name"] == "am-net1"
    assert r["absent"]["network"] == {} and r["absent"]["diff"]["after"] == {"state": "absent"}
    assert r["absent"]["diff"]["before"]["nat"] is False
    assert "am-net1" not in network_names()
    networks.remove("am-net1")


def test_bad_options_fail_with_one_line_naming_the_option_and_make_nothing(tmp_path, networks):
    networks.extend(["am-ok", "am-bad"])
    bad = {
        "subnet": task("subnet", "hako_network", name="am-bad", subnet="10.213.201.0/33"),
        "gateway": task(
            "gateway", "hako_network", name="am-bad", subnet="10.213.201.0/24", gateway="10.213.202.1"
        ),
        "ip_range": task(
            "ip_range", "hako_network", name="am-bad", subnet="10.213.201.0/24", ip_range="10.213.202.0/25"
        ),
        "mtu": task("mtu", "hako_network", name="am-bad", subnet="10.213.201.0/24", mtu=10),
        "name": task("name", "hako_network", name="none"),
        "labels": task("labels", "hako_network", name="am-bad", labels={"on": True}),
        "overlap": task("overlap", "hako_network", name="am-bad", subnet="10.213.202.128/25"),
        "state": task("state", "hako_network", name="am-bad", state="gone"),
    }
    tasks = [
        task("a good one", "hako_network", name="am-ok", subnet="10.213.202.0/24"),
        *failed(list(bad.values())),
        # A check run fails the same way.
        *failed(
            [task("overlap, check mode", "hako_network", _check_mode=True, **bad["overlap"]["hako_network"])]
        ),
    ]
    r = run_playbook(tmp_path, tasks)

    messages = {title: r[title]["msg"] for title in [*bad, "overlap, check mode"]}
    assert all(r[title]["_status"] == "failed" for title in messages), messages
    assert all("\n" not in m and "Traceback" not in m for m in messages.values()), messages
    for option in ("subnet", "gateway", "ip_range", "mtu", "name", "labels"):
        assert messages[option].startswith(f"invalid value for {option}:"), messages[option]
    assert "10.213.202.1" in messages["gateway"] and "not in the subnet" in messages["gateway"]
    assert messages["overlap"].startswith("invalid value for subnet:")
    assert "overlaps the subnet 10.213.202.0/24" in messages["overlap"]
    assert messages["overlap, check mode"] == messages["overlap"]
    assert "state" in messages["state"] and "gone" in messages["state"]
    assert network_names() == ["am-ok"]


def test_a_network_with_containers_is_remade_or_removed_only_with_force(tmp_path, networks, containers):
    networks.append("am-busy")
    containers.append("am-c1")
    hako("network", "create", "am-busy", "--subnet", "10.213.203.0/24")
    hako("run", "-d", "--name", "am-c1", "--network", "am-busy", "busybox", *COMMAND)
    pid = container_pid("am-c1")
    forced = {"name": "am-busy", "subnet": "10.213.204.0/24", "force": True}
    tasks = [
        *failed(
            [
                task("new subnet", "hako_network", name="am-busy", subnet="10.213.204.0/24"),
                task("absent", "hako_network", name="am-busy", state="absent"),
            ]
        ),
        task("new subnet, check mode", "hako_network", _check_mode=True, **forced),
        task("new subnet, forced", "hako_network", **forced),
    ]
    r = run_playbook(tmp_path, tasks)

    assert r["new subnet"]["msg"] == (
        "network am-busy must be made again to change subnet (10.213.203.0/24 to 10.213.204.0/24), "
        "and container(s) am-c1 are on it: set force: true to disconnect them first"
    )
    assert r["absent"]["msg"] == (
        "network am-busy is in use by container(s) am-c1: set force: true to disconnect them first"
    )
    assert r["new subnet, check mode"]["actions"] == ["disconnect am-c1", "recreate"]
    assert r["new subnet, forced"]["actions"] == ["disconnect am-c1", "recreate"]
    doc = r["new subnet, forced"]["network"]
    assert doc["IPAM"]["Config"][0]["Subnet"] == "10.213.204.0/24" and doc["Containers"] == {}
    # The container runs on, the same process, without its interface.
    assert container_pid("am-c1") == pid and addresses("am-c1") == {}
    hako("network", "connect", "am-busy", "am-c1")
    gone = task("absent, forced", "hako_network", name="am-busy", state="absent", force=True)
    r = run_playbook(tmp_path, [gone])
    assert r["absent, forced"]["actions"] == ["disconnect am-c1", "remove"]
    assert network_names() == [] and addresses("am-c1") == {}
    networks.remove("am-busy")


def test_a_missing_pyroute2_is_reported_by_missing_required_lib_and_changes_nothing(
    tmp_path, networks, containers
):
    networks.append("am-nolib")
    containers.append("am-c2")
    hako("network", "create", "am-nolib", "--subnet", "10.213.205.0/24")
    # A container made the bridge; it stays with the network.
    hako("run", "-d", "--name", "am-c2", "--network", "am-nolib", "busybox", *COMMAND)
    hako("rm", "-f", "am-c2")
    bridge = inspect_network("am-nolib")["Options"]["bridge"]
    assert os.path.exists(f"/sys/class/net/{bridge}")
    # Ahead of every other path on the module's sys.path: a pyroute2 that cannot be imported.
    stub = tmp_path / "no-pyroute2" / "pyroute2"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('no pyroute2 here')\n")
    without = {"PYTHONPATH": str(stub.parent)}
    absent = {"name": "am-nolib", "state": "absent"}
    tasks = [
        task("absent without pyroute2", "hako_network", _environment=without, _ignore_errors=True, **absent),
        task("absent", "hako_network", **absent),
    ]
    r = run_playbook(tmp_path, tasks)

    message = r["absent without pyroute2"]["msg"]
    assert message.startswith("Failed to import the required Python library (pyroute2)"), message
    assert r["absent without pyroute2"]["changed"] is False
    assert r["absent"]["actions"] == ["remove"]
    assert not os.path.exists(f"/sys/class/net/{bridge}") and network_names() == []
    networks.remove("am-nolib")


# --------------------------------------------------------------------------
# The networks option of hako_container and hako_containers


def test_containers_join_and_leave_networks_in_place(tmp_path, networks, containers):
    networks.extend(["am-front", "am-back"])
    containers.extend(["am-web", "am-db", "am-x1", "am-x2"])
    web = {"name": "am-web", "image": "busybox", "command": COMMAND}
    db = {"name": "am-db", "image": "busybox", "command": COMMAND}
    front = {"name": "am-front", "ip": "10.213.210.10", "aliases": ["www"]}
    moved = [{**front, "ip": "10.213.210.11"}, "am-back"]
    more_allowed = {"networks": "allow_more_present"}
    both = ["am-front", "am-back"]
    x1 = {"name": "am-x1", "image": "busybox", "command": COMMAND, "networks": ["am-front"]}
    x2 = {"name": "am-x2", "image": "busybox", "command": COMMAND}
    x2["networks"] = [{"name": "am-front", "aliases": ["x2"]}]
    tasks = [
        task("front", "hako_network", name="am-front", subnet="10.213.210.0/24"),
        task("back", "hako_network", name="am-back", subnet="10.213.211.0/24"),
        task("on front", "hako_container", networks=[front], **web),
        task("on front again", "hako_container", networks=[front], **web),
        task("add back, check mode", "hako_container", _check_mode=True, networks=[front, "am-back"], **web),
        task("add back", "hako_container", networks=[front, "am-back"], **web),
        task("add back again", "hako_container", networks=both, **web),
        task("new address", "hako_container", _diff=True, networks=moved, **web),
        task(
            "back alone, more allowed",
            "hako_container",
            networks=["am-back"],
            comparisons=more_allowed,
            **web,
        ),
        task("back alone", "hako_container", _diff=True, networks=["am-back"], **web),
        task("none", "hako_container", networks=[], **web),
        task("none again", "hako_container", networks=[], **web),
        task("on both, stopped", "hako_container", state="stopped", networks=both, **web),
        task("started", "hako_container", networks=both, **web),
        task("two in one task", "hako_containers", containers=[x1, x2]),
        *failed(
            [
                task("no such network", "hako_container", networks=["am-nowhere"], **db),
                task(
                    "address in use",
                    "hako_container",
                    networks=[{"name": "am-front", "ip": "10.213.210.2"}],
                    **db,
                ),
                task(
                    "address outside",
                    "hako_container",
                    networks=[{"name": "am-front", "ip": "10.213.99.1"}],
                    **db,
                ),
                task("bad entry", "hako_container", networks=[{"network": "am-front"}], **db),
                task(
                    "host network",
                    "hako_container",
                    networks=["am-front"],
                    namespaces={"network": "host"},
                    **db,
                ),
            ]
        ),
        task("no such network, check mode", "hako_container", _check_mode=True, networks=["am-notyet"], **db),
    ]
    r = run_playbook(tmp_path, tasks)

    made = ("front", "back", "two in one task")
    actions = {
        title: r[title]["actions"] for title in r if title not in made and r[title]["_status"] != "failed"
    }
    assert actions == {
        "on front": ["create", "start"],
        "on front again": [],
        "add back, check mode": ["connect am-back"],
        "add back": ["connect am-back"],
        "add back again": [],
        "new address": ["disconnect am-front", "connect am-front"],
        "back alone, more allowed": [],
        "back alone": ["disconnect am-front"],
        "none": ["disconnect am-back"],
        "none again": [],
        "on both, stopped": ["stop", "connect am-front", "connect am-back"],
        "started": ["start"],
        "no such network, check mode": ["create", "start"],
    }
    settings = {
        title: r[title]["container"]["NetworkSettings"]["Networks"]
        for title in actions
        if r[title]["container"]
    }
    assert settings["on front"] == {
        "am-front": {"IPAddress": "10.213.210.10", "Interface": "eth0", "Aliases": ["www"]}
    }
    assert settings["add back, check mode"] == settings["on front"]
    assert settings["add back"]["am-back"]["IPAddress"] == "10.213.211.2"
    assert settings["new address"]["am-front"]["IPAddress"] == "10.213.210.11"
    assert list(settings["back alone"]) == ["am-back"] and settings["none"] == {}
    # In place: one process from the first start until the stop.
    in_place = ("on front", "add back", "new address", "back alone", "none")
    assert len({r[title]["container"]["State"]["Pid"] for title in in_place}) == 1
    diff = r["new address"]["diff"]
    assert diff["before"]["networks"]["am-front"] == {"ip": "10.213.210.10", "aliases": ["www"]}
    assert diff["after"]["networks"]["am-front"] == {"ip": "10.213.210.11", "aliases": ["www"]}
    assert list(r["back alone"]["diff"]["after"]["networks"]) == ["am-back"]
    assert [e["actions"] for e in r["two in one task"]["results"]] == [["create", "start"]] * 2

    prefix = "invalid value for networks: "
    messages = {title: r[title]["msg"] for title in r if r[title]["_status"] == "failed"}
    assert set(messages) == {
        "no such network",
        "address in use",
        "address outside",
        "bad entry",
        "host network",
    }
    assert all(m.startswith(prefix) and "\n" not in m for m in messages.values()), messages
    details = {title: m[len(prefix) :] for title, m in messages.items()}
    assert details["no such network"] == "no such network: am-nowhere"
    assert details["address in use"] == "am-front: address 10.213.210.2 is in use by container am-web"
    assert details["address outside"] == "am-front: ip '10.213.99.1' (not in the subnet 10.213.210.0/24)"
    assert "unknown key network" in details["bad entry"]
    assert "network namespace of its own" in details["host network"]
    assert "am-db" not in hako("ps", "-a").stdout

    # As the kernel has it: the addresses inside, and the names resolve between them.
    started = settings["started"]
    # Addresses let go are taken again: the lowest free one after the gateway.
    assert started["am-front"]["IPAddress"] == "10.213.210.2"
    assert addresses("am-web") == {
        "eth0": f"{started['am-front']['IPAddress']}/24",
        "eth1": f"{started['am-back']['IPAddress']}/24",
    }
    for target in ("am-web", "am-x2", "x2"):
        hako("exec", "am-x1", "ping", "-c", "1", "-W", "2", target)


def test_verify_checks_each_network_interface_as_the_kernel_has_it(tmp_path, networks, containers):
    networks.extend(["am-v1", "am-v2"])
    containers.extend(["am-vc", "am-vplain"])
    vc = {"name": "am-vc", "image": "busybox", "command": COMMAND}
    vc["networks"] = [{"name": "am-v1", "ip": "10.213.220.10"}]
    plain = {"name": "am-vplain", "image": "busybox", "command": COMMAND}
    tasks = [
        task("network", "hako_network", name="am-v1", subnet="10.213.220.0/24"),
        task("other network", "hako_network", name="am-v2", subnet="10.213.221.0/24"),
        task("containers", "hako_containers", containers=[vc, plain]),
        task("verify", "hako_verify", containers=[vc, plain]),
        task("verify as made", "hako_verify", checks=["networks"], containers=[{"name": "am-vc"}]),
    ]
    r = run_playbook(tmp_path, tasks)

    verify = r["verify"]
    assert verify["failures"] == []
    bridge = inspect_network("am-v1")["Options"]["bridge"]
    seen = f"eth0 10.213.220.10/24 up, on {bridge}"
    checks = [c for c in verify["checks"] if c["check"].startswith("network am-")]
    # One check, and none for the container on no network.
    assert checks == [
        {"container": "am-vc", "check": "network am-v1", "ok": True, "expected": seen, "actual": seen}
    ]
    assert [c["check"] for c in r["verify as made"]["checks"]] == ["network am-v1"]
    assert addresses("am-vc") == {"eth0": "10.213.220.10/24"}

    # Behind hako's back: the address taken off the interface, from the host.
    pid = container_pid("am-vc")
    subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "ip", "addr", "del", "10.213.220.10/24", "dev", "eth0"], check=True
    )
    declared = {
        "address gone": {"name": "am-vc"},
        "another address": {"name": "am-vc", "networks": [{"name": "am-v1", "ip": "10.213.220.99"}]},
        "not on it": {"name": "am-vplain", "networks": ["am-v2"]},
        "no such network": {"name": "am-vplain", "networks": ["am-gone"]},
    }
    tasks = [
        task(title, "hako_verify", _ignore_errors=True, checks=["networks"], containers=[item])
        for title, item in declared.items()
    ]
    r = run_playbook(tmp_path, tasks)
    seen = f"eth0 without an address up, on {bridge}"
    failures = {title: r[title]["failures"] for title in r}
    assert failures == {
        "address gone": [f"am-vc: network am-v1 is {seen}, want eth0 10.213.220.10/24 up, on {bridge}"],
        "another address": [f"am-vc: network am-v1 is {seen}, want eth0 10.213.220.99/24 up, on {bridge}"],
        "not on it": ["am-vplain: network am-v2 is not connected, want connected"],
        "no such network": ["am-vplain: network am-gone is no such network, want connected"],
    }
    assert all(r[title]["_status"] == "failed" for title in r)
    assert r["address gone"]["msg"] == "1 check(s) failed: " + failures["address gone"][0]


def test_published_ports_answer_from_the_host_and_a_change_remakes_the_container(
    tmp_path, networks, containers
):
    import urllib.request

    networks.append("am-ports")
    containers.append("am-web")
    hako("network", "create", "am-ports", "--subnet", "10.213.245.0/24")
    web = {
        "name": "am-web",
        "image": "busybox",
        "command": [
            "sh",
            "-c",
            "trap 'exit 0' TERM; mkdir /w; echo hello > /w/index.html; httpd -f -p 80 -h /w & wait",
        ],
        "networks": ["am-ports"],
    }
    r = run_playbook(
        tmp_path,
        [
            task("published", "hako_container", **web, published_ports=["127.0.0.1:18093:80"]),
            task("again", "hako_container", **web, ports=["127.0.0.1:18093:80/tcp"]),
            task("bad", "hako_container", **web, published_ports=["80000:80"], _ignore_errors=True),
        ],
    )
    assert r["published"]["changed"] and r["again"]["changed"] is False
    assert r["bad"]["msg"].startswith("invalid value for published_ports:")
    with urllib.request.urlopen("http://127.0.0.1:18093/", timeout=10) as answer:
        assert answer.read() == b"hello\n"
    moved = run_playbook(
        tmp_path, [task("moved", "hako_container", **web, published_ports=["127.0.0.1:18094:80"])]
    )
    assert moved["moved"]["actions"] == ["recreate", "start"]
    with urllib.request.urlopen("http://127.0.0.1:18094/", timeout=10) as answer:
        assert answer.read() == b"hello\n"
