"""Bridge networks: real bridges, veth pairs and addresses in real network namespaces.

Every network here gets a subnet of 10.213.0.0/16 and no route anywhere
else: the containers reach each other and their gateway (the bridge on this
machine), nothing beyond. The leak check after each test (conftest) sees to it
that no interface is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from ..conftest import HAKO, container_pid, hako, wait_for

COMMAND = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


def network(name: str) -> dict:
    return json.loads(hako("network", "inspect", name).stdout)[0]


def addresses(container: str) -> dict[str, str]:
    """Interface -> IPv4 address/prefix inside the container."""
    out = hako("exec", container, "ip", "-4", "-o", "addr").stdout
    result = {}
    for line in out.splitlines():
        words = line.split()
        result[words[1]] = words[3]
    return result


def run(name: str, *args: str) -> None:
    hako("run", "-d", "--name", name, *args, "busybox", *COMMAND)


def test_create_inspect_list_and_remove_a_network(networks):
    networks.append("nlab")
    nid = hako(
        "network", "create", "nlab", "--subnet", "10.213.31.0/24", "--label", "course=linuc"
    ).stdout.strip()
    doc = network("nlab")
    assert doc["Id"] == nid and doc["Driver"] == "bridge"
    assert doc["IPAM"]["Config"] == [{"Subnet": "10.213.31.0/24", "Gateway": "10.213.31.1", "IPRange": None}]
    assert doc["Labels"] == {"course": "linuc"} and doc["Containers"] == {}
    listed = hako("network", "ls").stdout.splitlines()
    assert listed[0].split()[:4] == ["NETWORK", "ID", "NAME", "DRIVER"]
    assert any(line.split()[1:3] == ["nlab", "bridge"] for line in listed[1:])
    assert nid[:12] in hako("network", "ls", "-q").stdout.split()
    # The bridge is made when the first container needs it, and goes with the network.
    bridge = doc["Options"]["bridge"]
    run("nl1", "--network", "nlab")
    assert os.path.exists(f"/sys/class/net/{bridge}")
    hako("rm", "-f", "nl1")
    assert hako("network", "rm", "nlab").stdout.strip() == "nlab"
    networks.remove("nlab")
    assert not os.path.exists(f"/sys/class/net/{bridge}")
    assert "nlab" not in hako("network", "ls").stdout


def test_a_subnet_is_picked_when_none_is_given_and_never_twice(networks):
    networks.extend(["nauto1", "nauto2"])
    hako("network", "create", "nauto1")
    hako("network", "create", "nauto2")
    first, second = (network(n)["IPAM"]["Config"][0]["Subnet"] for n in ("nauto1", "nauto2"))
    assert first != second
    assert first.startswith("10.213.") and second.startswith("10.213.")


@pytest.mark.parametrize(
    "args, message",
    [
        (["nbad", "--subnet", "10.213.1.0/33"], "subnet"),
        (["nbad", "--subnet", "10.213.1.5/24"], "subnet"),
        (["nbad", "--subnet", "fd00::/64"], "only IPv4"),
        (["nbad", "--subnet", "10.213.1.0/24", "--gateway", "10.213.2.1"], "not in the subnet"),
        (["nbad", "--subnet", "10.213.1.0/24", "--ip-range", "10.213.2.0/25"], "not inside the subnet"),
        (["nbad", "--mtu", "20"], "mtu"),
        (["none"], "reserved"),
        (["../x"], "network"),
        (["nbad", "--driver", "macvlan"], "only bridge"),
    ],
)
def test_bad_network_options_fail_in_one_line_and_make_nothing(args, message):
    result = hako("network", "create", *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "nbad" not in hako("network", "ls").stdout


def test_an_overlapping_subnet_or_a_taken_name_is_refused(networks):
    networks.append("nover")
    hako("network", "create", "nover", "--subnet", "10.213.40.0/24")
    clash = hako("network", "create", "nover2", "--subnet", "10.213.40.128/25", check=False)
    assert clash.returncode != 0 and "overlaps the subnet 10.213.40.0/24" in clash.stderr
    twice = hako("network", "create", "nover", "--subnet", "10.213.41.0/24", check=False)
    assert twice.returncode != 0 and "already exists" in twice.stderr


def test_containers_on_a_network_reach_each_other_by_name(networks, containers):
    networks.append("nweb")
    containers.extend(["nw-web", "nw-client"])
    hako("network", "create", "nweb", "--subnet", "10.213.32.0/24")
    hako("run", "-d", "--name", "nw-web", "--network", "nweb", "--ip", "10.213.32.10", "--hostname", "www",
         "--network-alias", "site", "busybox", "sh", "-c",
         "trap 'exit 0' TERM; mkdir /w; hostname > /w/index.html; httpd -f -p 80 -h /w & wait")  # fmt: skip
    run("nw-client", "--network", "nweb")
    assert addresses("nw-web")["eth0"] == "10.213.32.10/24"
    client_ip = addresses("nw-client")["eth0"]
    assert client_ip == "10.213.32.2/24"  # the first free one after the gateway
    # Names resolve through /etc/hosts, which lists every member of the network.
    hosts = hako("exec", "nw-client", "cat", "/etc/hosts").stdout
    assert "10.213.32.10\tnw-web site\n" in hosts
    assert hako("exec", "nw-web", "cat", "/etc/hostname").stdout == "www\n"
    assert "10.213.32.2\t" in hako("exec", "nw-web", "cat", "/etc/hosts").stdout  # added when nw-client came
    for target in ("nw-web", "site", "10.213.32.10"):
        page = hako("exec", "nw-client", "wget", "-q", "-O", "-", f"http://{target}/")
        assert page.stdout == "www\n"
    hako("exec", "nw-client", "ping", "-c", "1", "-W", "2", "10.213.32.1")  # the gateway: the bridge
    # Inside: lo and eth0 only; the default route goes to the gateway.
    links = hako("exec", "nw-client", "ls", "/sys/class/net").stdout.split()
    assert sorted(links) == ["eth0", "lo"]
    assert "default via 10.213.32.1 dev eth0" in hako("exec", "nw-client", "ip", "route").stdout
    doc = network("nweb")
    assert {c["Name"]: c["IPv4Address"] for c in doc["Containers"].values()} == {
        "nw-web": "10.213.32.10/24",
        "nw-client": "10.213.32.2/24",
    }
    info = json.loads(hako("inspect", "nw-web").stdout)[0]
    assert info["NetworkSettings"]["Networks"]["nweb"] == {
        "IPAddress": "10.213.32.10",
        "Interface": "eth0",
        "Aliases": ["site"],
    }


def test_two_networks_are_isolated(networks, containers):
    networks.extend(["niso1", "niso2"])
    containers.extend(["ni-a", "ni-b"])
    hako("network", "create", "niso1", "--subnet", "10.213.33.0/24")
    hako("network", "create", "niso2", "--subnet", "10.213.34.0/24")
    run("ni-a", "--network", "niso1")
    run("ni-b", "--network", "niso2")
    b_ip = addresses("ni-b")["eth0"].split("/")[0]
    assert hako("exec", "ni-a", "ping", "-c", "1", "-W", "1", b_ip, check=False).returncode != 0
    assert "ni-b" not in hako("exec", "ni-a", "cat", "/etc/hosts").stdout


def test_an_address_in_use_is_refused_and_leaves_nothing(networks, containers):
    networks.append("nclash")
    containers.extend(["nc-1", "nc-2"])
    hako("network", "create", "nclash", "--subnet", "10.213.35.0/24")
    run("nc-1", "--network", "nclash", "--ip", "10.213.35.7")
    taken = hako("run", "-d", "--name", "nc-2", "--network", "nclash", "--ip", "10.213.35.7", "busybox",
                 "true", check=False)  # fmt: skip
    assert taken.returncode != 0 and "10.213.35.7" in taken.stderr and "nc-1" in taken.stderr
    gateway = hako("create", "--name", "nc-2", "--network", "nclash", "--ip", "10.213.35.1", "busybox",
                   check=False)  # fmt: skip
    assert gateway.returncode != 0 and "gateway" in gateway.stderr
    outside = hako("create", "--name", "nc-2", "--network", "nclash", "--ip", "10.9.9.9", "busybox",
                   check=False)  # fmt: skip
    assert outside.returncode != 0 and "not in the subnet" in outside.stderr
    assert "nc-2" not in hako("ps", "-a").stdout
    assert [c["Name"] for c in network("nclash")["Containers"].values()] == ["nc-1"]
    missing = hako("create", "--network", "nosuchnet", "busybox", check=False)
    assert missing.returncode != 0 and "no such network: nosuchnet" in missing.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ip", "10.213.1.5"], "needs --network NAME"),
        (["--network", "none", "--network", "nfoo"], "give one of none"),
        (["--network", "host", "--network-alias", "x"], "needs --network NAME"),
        (["--network", "nfoo", "--network", "nfoo"], "named twice"),
        (["--network", "nfoo", "--ip", "300.1.1.1"], "IPv4 address"),
    ],
)
def test_bad_container_network_options_fail_in_one_line(args, message):
    result = hako("create", *args, "busybox", check=False)
    assert result.returncode != 0
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_connect_and_disconnect_a_running_container(networks, containers):
    networks.extend(["ncon1", "ncon2"])
    containers.extend(["ncn-a", "ncn-b"])
    hako("network", "create", "ncon1", "--subnet", "10.213.36.0/24")
    hako("network", "create", "ncon2", "--subnet", "10.213.37.0/24", "--ip-range", "10.213.37.128/25")
    run("ncn-a", "--network", "ncon1")
    run("ncn-b", "--network", "ncon2")
    hako("network", "connect", "--alias", "alpha", "ncon2", "ncn-a")
    assert addresses("ncn-a") == {"lo": "127.0.0.1/8", "eth0": "10.213.36.2/24", "eth1": "10.213.37.130/24"}
    assert "10.213.37.130\tncn-a alpha\n" in hako("exec", "ncn-b", "cat", "/etc/hosts").stdout
    hako("exec", "ncn-b", "ping", "-c", "1", "-W", "2", "alpha")
    again = hako("network", "connect", "ncon2", "ncn-a", check=False)
    assert again.returncode != 0 and "already on network ncon2" in again.stderr
    hako("network", "disconnect", "ncon2", "ncn-a")
    assert set(addresses("ncn-a")) == {"lo", "eth0"}
    assert "alpha" not in hako("exec", "ncn-b", "cat", "/etc/hosts").stdout
    assert [c["Name"] for c in network("ncon2")["Containers"].values()] == ["ncn-b"]


def test_a_restarted_container_keeps_its_address_and_gets_its_interfaces_again(networks, containers):
    networks.append("nrst")
    containers.append("nr-1")
    hako("network", "create", "nrst", "--subnet", "10.213.38.0/24")
    run("nr-1", "--network", "nrst", "--ip", "10.213.38.77")
    before = container_pid("nr-1")
    hako("restart", "-t", "1", "nr-1")
    assert container_pid("nr-1") != before
    assert addresses("nr-1")["eth0"] == "10.213.38.77/24"
    hako("stop", "-t", "1", "nr-1")
    ours = "hk" + inspect_id("nr-1")[:10]
    # The kernel removes the pair in a worker of its own once the namespace has gone (under load, later).
    wait_for(lambda: not any(name.startswith(ours) for name in os.listdir("/sys/class/net")), timeout=5)
    hako("start", "nr-1")
    assert addresses("nr-1")["eth0"] == "10.213.38.77/24"


def inspect_id(name: str) -> str:
    return json.loads(hako("inspect", name).stdout)[0]["Id"]


def test_a_network_in_use_is_not_removed_unless_forced(networks, containers):
    networks.append("nuse")
    containers.append("nu-1")
    hako("network", "create", "nuse", "--subnet", "10.213.39.0/24")
    run("nu-1", "--network", "nuse")
    refused = hako("network", "rm", "nuse", check=False)
    assert refused.returncode != 0 and "in use by container(s) nu-1" in refused.stderr
    hako("network", "rm", "-f", "nuse")
    networks.remove("nuse")
    assert set(addresses("nu-1")) == {"lo"}
    assert json.loads(hako("inspect", "nu-1").stdout)[0]["NetworkSettings"]["Networks"] == {}


def test_addresses_never_collide_under_twenty_concurrent_runs(networks, containers):
    networks.append("nconc")
    names = [f"nk-{i}" for i in range(20)]
    containers.extend(names)
    hako("network", "create", "nconc", "--subnet", "10.213.42.0/24")

    def start(name: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*HAKO, "run", "-d", "--name", name, "--network", "nconc", "busybox", *COMMAND],
            capture_output=True,
            text=True,
            timeout=120,
        )

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(start, names))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    held = {c["Name"]: c["IPv4Address"] for c in network("nconc")["Containers"].values()}
    assert sorted(held) == sorted(names)
    assert len(set(held.values())) == 20
    assert {addresses(name)["eth0"] for name in names} == set(held.values())
    for name in names:
        hako("rm", "-f", name)
    assert network("nconc")["Containers"] == {}


def test_run_rm_on_a_network_releases_its_address(networks):
    networks.append("nrm")
    hako("network", "create", "nrm", "--subnet", "10.213.43.0/24")
    out = hako("run", "--rm", "--network", "nrm", "busybox", "sh", "-c", "ip -4 -o addr show eth0")
    assert "10.213.43.2/24" in out.stdout
    assert network("nrm")["Containers"] == {}


def test_a_container_naming_no_network_joins_the_default_one(containers):
    env = dict(os.environ)
    env.pop("HAKO_DEFAULT_NETWORK")  # the session's containers have none
    containers.extend(["nd-1", "nd-2", "nd-none"])
    try:
        hako("run", "-d", "--name", "nd-1", "busybox", *COMMAND, env=env)
        hako("run", "-d", "--name", "nd-2", "--network-alias", "second", "busybox", *COMMAND, env=env)
        hako("run", "-d", "--name", "nd-none", "--network", "none", "busybox", *COMMAND, env=env)
        doc = network("hako")
        assert sorted(c["Name"] for c in doc["Containers"].values()) == ["nd-1", "nd-2"]
        subnet = doc["IPAM"]["Config"][0]["Subnet"]
        assert subnet.startswith("10.213.") and subnet.endswith("/24")
        assert doc["Options"]["bridge"] != "hako0"  # that name is the host's own state's
        assert set(addresses("nd-1")) == {"lo", "eth0"}
        hako("exec", "nd-1", "ping", "-c", "1", "-W", "2", "second")
        assert set(addresses("nd-none")) == {"lo"}
    finally:
        for name in ("nd-1", "nd-2", "nd-none"):
            hako("rm", "-f", name, check=False)
        hako("network", "rm", "hako", check=False)
