"""Links between containers, shaping and sysctls: real veth pairs, qdiscs and namespaces.

Every address here is in 10.214.0.0/16 and every container is named lk-*:
the containers reach each other over the links and bridges the tests make,
nothing beyond. The leak check after each test (conftest) sees to it that no
interface is left on the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from ..conftest import HAKO, container_pid, hako, wait_for
from .test_network import COMMAND, addresses, run


def interfaces(container: str) -> set[str]:
    return set(hako("exec", container, "ls", "/sys/class/net").stdout.split())


def links() -> list[list[str]]:
    """`hako link ls` rows, split into cells (every cell is one word)."""
    return [line.split() for line in hako("link", "ls").stdout.splitlines()[1:]]


def root_qdisc(container: str, interface: str) -> str:
    """The kind of the interface's root qdisc, as the host's tc sees it in the container's namespace."""
    out = subprocess.run(
        [
            "nsenter",
            f"--net=/proc/{container_pid(container)}/ns/net",
            "tc",
            "qdisc",
            "show",
            "dev",
            interface,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()[1]


def ping(source: str, address: str) -> subprocess.CompletedProcess:
    return hako("exec", source, "ping", "-c", "1", "-W", "2", address, check=False)


def one_line_error(result: subprocess.CompletedProcess, text: str) -> None:
    assert result.returncode == 125, result
    assert text in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.fixture
def lab(containers):
    """h1 - r - h2: two /30 links through a router that forwards; routes kept with the links."""
    containers.extend(["lk-h1", "lk-r", "lk-h2"])
    run("lk-h1")
    run("lk-r", "--sysctl", "net.ipv4.ip_forward=1")
    run("lk-h2")
    hako("link", "lk-h1:eth1", "lk-r:eth1", "--ip-a", "10.214.1.1/30", "--ip-b", "10.214.1.2/30",
         "--route-a", "10.214.2.0/30")  # fmt: skip
    hako("link", "lk-r:eth2", "lk-h2:eth1", "--ip-a", "10.214.2.1/30", "--ip-b", "10.214.2.2/30",
         "--route-b", "10.214.1.0/30")  # fmt: skip
    return containers


def test_a_router_container_forwards_between_two_links_with_routes_added_inside(containers):
    containers.extend(["lk-a1", "lk-ar", "lk-a2"])
    run("lk-a1")
    run("lk-ar", "--sysctl", "net.ipv4.ip_forward=1")
    run("lk-a2")
    hako("link", "lk-a1:eth1", "lk-ar:eth1", "--ip-a", "10.214.11.1/30", "--ip-b", "10.214.11.2/30")
    hako("link", "lk-ar:eth2", "lk-a2:eth1", "--ip-a", "10.214.12.1/30", "--ip-b", "10.214.12.2/30")
    assert addresses("lk-ar") == {"lo": "127.0.0.1/8", "eth1": "10.214.11.2/30", "eth2": "10.214.12.1/30"}
    assert ping("lk-a1", "10.214.12.2").returncode != 0  # no route yet
    # Changing routes takes CAP_NET_ADMIN, which a default container lacks.
    denied = hako("exec", "lk-a1", "ip", "route", "add", "10.214.12.0/30", "via", "10.214.11.2", check=False)
    assert "Operation not permitted" in denied.stderr
    admin = ("exec", "--cap-add", "NET_ADMIN")
    hako(*admin, "lk-a1", "ip", "route", "add", "10.214.12.0/30", "via", "10.214.11.2")
    hako(*admin, "lk-a2", "ip", "route", "add", "10.214.11.0/30", "via", "10.214.12.1")
    result = ping("lk-a1", "10.214.12.2")
    assert result.returncode == 0 and "ttl=63" in result.stdout  # one hop: through the router
    # The setting is the router's own: the hosts' namespaces keep theirs.
    assert hako("exec", "lk-ar", "cat", "/proc/sys/net/ipv4/ip_forward").stdout == "1\n"
    info = json.loads(hako("inspect", "lk-ar").stdout)[0]
    assert info["HostConfig"]["Sysctls"] == {"net.ipv4.ip_forward": "1"}


def test_restarting_the_router_or_a_host_makes_their_links_again(lab):
    assert "ttl=63" in ping("lk-h1", "10.214.2.2").stdout
    rows = links()
    assert [(r[1], r[2], r[3], r[4], r[-1]) for r in rows] == [
        ("lk-h1:eth1", "10.214.1.1/30", "lk-r:eth1", "10.214.1.2/30", "up"),
        ("lk-r:eth2", "10.214.2.1/30", "lk-h2:eth1", "10.214.2.2/30", "up"),
    ]
    hako("restart", "-t", "1", "lk-r")
    assert addresses("lk-r") == {"lo": "127.0.0.1/8", "eth1": "10.214.1.2/30", "eth2": "10.214.2.1/30"}
    assert "ttl=63" in ping("lk-h1", "10.214.2.2").stdout
    hako("restart", "-t", "1", "lk-h1")
    assert interfaces("lk-r") == {"lo", "eth1", "eth2"}  # its stale end replaced, not doubled
    assert "ttl=63" in ping("lk-h1", "10.214.2.2").stdout
    # A stopped end takes the pair with it; the other container keeps running without it.
    hako("stop", "-t", "1", "lk-r")
    wait_for(lambda: interfaces("lk-h1") == {"lo"} and interfaces("lk-h2") == {"lo"})
    assert [r[-1] for r in links()] == ["down", "down"]
    hako("start", "lk-r")
    assert [r[-1] for r in links()] == ["up", "up"]
    assert "ttl=63" in ping("lk-h2", "10.214.1.1").stdout


def test_a_link_made_while_one_end_is_stopped_comes_up_when_it_starts(containers):
    containers.extend(["lk-s1", "lk-s2"])
    run("lk-s1")
    hako("create", "--name", "lk-s2", "--sysctl", "net.ipv4.conf.eth3.rp_filter=2", "busybox", *COMMAND)
    hako("link", "lk-s1:eth3", "lk-s2:eth3", "--ip-a", "10.214.13.1/30", "--ip-b", "10.214.13.2/30")
    assert interfaces("lk-s1") == {"lo"} and links()[0][-1] == "down"
    hako("start", "lk-s2")
    assert ping("lk-s1", "10.214.13.2").returncode == 0
    # A setting of a link's interface is written once the interface is there.
    assert hako("exec", "lk-s2", "cat", "/proc/sys/net/ipv4/conf/eth3/rp_filter").stdout == "2\n"


def measure_rate(sender: str, receiver: str, address: str, rate_bits: int) -> float:
    """Send about 2.5 s worth of bytes over TCP; the payload's bits per second.

    Timed inside, by the one clock every namespace shares (/proc/uptime):
    from just before the sender starts to when its nc ends, which is when
    the receiver has read everything and closed its side.
    """
    blocks = max(8, int(rate_bits * 2.5 / 8 / 65536))
    listener = subprocess.Popen(
        [*HAKO, "exec", "-i", receiver, "sh", "-c", "nc -l -p 5001 | wc -c"],
        stdin=subprocess.PIPE,  # open until the end: nc would take its end of file for the end
        stdout=subprocess.PIPE,
        text=True,
    )
    try:

        def listening() -> bool:
            return ":5001 " in hako("exec", receiver, "netstat", "-ltn").stdout

        wait_for(listening)
        script = (
            f"read t0 rest < /proc/uptime; dd if=/dev/zero bs=64k count={blocks} 2>/dev/null "
            f"| nc {address} 5001; read t1 rest < /proc/uptime; echo $t0 $t1"
        )
        t0, t1 = map(float, hako("exec", sender, "sh", "-c", script, timeout=60).stdout.split())
        received = int(listener.communicate(timeout=10)[0])
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.communicate()
    assert received == blocks * 65536
    return received * 8 / (t1 - t0)


def test_a_rate_limited_link_measures_within_15_percent_of_its_rate(containers):
    containers.extend(["lk-t1", "lk-t2"])
    run("lk-t1")
    run("lk-t2")
    hako("link", "lk-t1:eth1", "lk-t2:eth1", "--ip-a", "10.214.14.1/30", "--ip-b", "10.214.14.2/30",
         "--rate", "10mbit")  # fmt: skip
    assert root_qdisc("lk-t1", "eth1") == "tbf" and root_qdisc("lk-t2", "eth1") == "tbf"
    measured = measure_rate("lk-t1", "lk-t2", "10.214.14.2", 10_000_000)
    print(f"link --rate 10mbit: {measured / 1e6:.2f} Mbit/s of TCP payload")
    assert abs(measured - 10e6) <= 0.15 * 10e6, measured
    # The other direction is shaped as well, and `hako shape` changes a rate in place.
    hako("shape", "lk-t2:eth1", "--rate", "8mbit")
    assert hako("shape", "lk-t2:eth1").stdout == "rate 8mbit\n"
    measured = measure_rate("lk-t2", "lk-t1", "10.214.14.1", 8_000_000)
    print(f"shape --rate 8mbit: {measured / 1e6:.2f} Mbit/s of TCP payload")
    assert abs(measured - 8e6) <= 0.15 * 8e6, measured


def test_a_network_interface_is_shaped_and_stays_shaped_across_a_restart(networks, containers):
    networks.append("lk-net")
    containers.extend(["lk-n1", "lk-n2"])
    hako("network", "create", "lk-net", "--subnet", "10.214.200.0/24")
    run("lk-n1", "--network", "lk-net", "--ip", "10.214.200.11")
    run("lk-n2", "--network", "lk-net", "--ip", "10.214.200.12")
    hako("shape", "lk-n1:eth0", "--rate", "8mbit", "--burst", "16k")
    assert root_qdisc("lk-n1", "eth0") == "tbf"
    measured = measure_rate("lk-n1", "lk-n2", "10.214.200.12", 8_000_000)
    print(f"network eth0 --rate 8mbit: {measured / 1e6:.2f} Mbit/s of TCP payload")
    assert abs(measured - 8e6) <= 0.15 * 8e6, measured
    hako("restart", "-t", "1", "lk-n1")
    assert root_qdisc("lk-n1", "eth0") == "tbf"
    assert hako("shape", "lk-n1:eth0").stdout == "rate 8mbit burst 16384b\n"
    hako("shape", "lk-n1:eth0", "--clear")
    assert root_qdisc("lk-n1", "eth0") == "noqueue"
    hako("restart", "-t", "1", "lk-n1")
    assert root_qdisc("lk-n1", "eth0") == "noqueue"


def netem_available() -> bool:
    """What the host's tc says, in a network namespace of its own."""
    probe = ["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]
    return subprocess.run(probe, capture_output=True).returncode == 0


@pytest.mark.parametrize(
    "options",
    [
        ["--delay", "20ms"],
        ["--delay", "20ms", "--jitter", "5ms"],
        ["--loss", "1%"],
        ["--rate", "5mbit", "--loss", "1%"],
    ],
)
def test_delay_jitter_and_loss_need_netem_and_fail_clean_without_it(containers, options):
    containers.extend(["lk-d1", "lk-d2"])
    run("lk-d1")
    run("lk-d2")
    hako("link", "lk-d1:eth1", "lk-d2:eth1", "--ip-a", "10.214.15.1/30", "--ip-b", "10.214.15.2/30")
    hako("shape", "lk-d1:eth1", "--rate", "20mbit")
    result = hako("shape", "lk-d1:eth1", *options, check=False)
    if result.returncode == 0:  # a kernel with netem
        assert root_qdisc("lk-d1", "eth1") == "netem"
        return
    assert not netem_available()
    one_line_error(
        result, "hako: shape: this kernel has no netem qdisc (delay, jitter and loss need it); --rate works"
    )
    # Nothing half applied: the rate set before is still the one, in the kernel and in the record.
    assert root_qdisc("lk-d1", "eth1") == "tbf"
    assert hako("shape", "lk-d1:eth1").stdout == "rate 20mbit\n"
    assert root_qdisc("lk-d2", "eth1") == "noqueue"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lk-e1:eth1", "lk-nosuch:eth1"], "no such container: lk-nosuch"),
        (
            ["lk-e1:eth0", "lk-e2:eth1"],
            "container lk-e1 already has an interface eth0 (from a network lk-enet)",
        ),
        (["lk-e1:eth5", "lk-e2:eth1"], "container lk-e1 already has an interface eth5 (from a link)"),
        (["lk-e1:eth1", "lk-e2:eth1", "--rate", "10mbits"], "invalid value for rate: '10mbits'"),
        (["lk-e1:eth1", "lk-e2:eth1", "--rate", "0"], "invalid value for rate: '0'"),
        (
            ["lk-e1:eth1", "lk-e2:eth1", "--ip-a", "10.214.16.1/33"],
            "invalid value for ip-a: '10.214.16.1/33'",
        ),
        (["lk-e1:eth1", "lk-e2:eth1", "--ip-b", "10.214.16.2"], "invalid value for ip-b: '10.214.16.2'"),
        (
            ["lk-e1:eth1", "lk-e2:eth1", "--ip-a", "10.214.16.1/30", "--ip-b", "10.214.17.2/30"],
            "not in the subnet",
        ),
        (["lk-e1:eth1", "lk-e2:eth1", "--route-a", "default"], "give it an address"),
        (["lk-e1:eth1", "lk-e2:eth1", "--mtu", "20"], "invalid value for mtu: '20'"),
        (["lk-e1:lo", "lk-e2:eth1"], "invalid value for link: 'lk-e1:lo'"),
        (["lk-e1:eth1", "lk-e1:eth1"], "both ends are the same interface"),
        (["lk-e1", "lk-e2:eth1"], "expected CONTAINER:INTERFACE"),
        (["lk-e1:eth1", "lk-ehost:eth1"], "uses the network namespace host: it cannot have links"),
    ],
)
def test_bad_links_fail_in_one_line_and_make_nothing(networks, containers, args, message):
    networks.append("lk-enet")
    containers.extend(["lk-e1", "lk-e2", "lk-e3", "lk-ehost"])
    hako("network", "create", "lk-enet", "--subnet", "10.214.201.0/24")
    run("lk-e1", "--network", "lk-enet")
    run("lk-e2")
    hako("create", "--name", "lk-e3", "busybox")
    hako("create", "--name", "lk-ehost", "--network", "host", "busybox")
    hako("link", "lk-e1:eth5", "lk-e3:eth5")  # lk-e3 is stopped: a record, no pair yet
    before = links()
    one_line_error(hako("link", *args, check=False), message)
    assert links() == before
    assert interfaces("lk-e1") == {"lo", "eth0"} and interfaces("lk-e2") == {"lo"}


def test_an_interface_made_inside_is_not_taken_over(containers):
    containers.extend(["lk-i1", "lk-i2"])
    run("lk-i1")
    run("lk-i2")
    inside = ["nsenter", f"--net=/proc/{container_pid('lk-i2')}/ns/net", "ip", "link"]
    subprocess.run([*inside, "add", "eth7", "type", "veth", "peer", "name", "eth8"], check=True)
    one_line_error(
        hako("link", "lk-i1:eth1", "lk-i2:eth7", check=False),
        "container lk-i2 already has an interface eth7 (made inside)",
    )
    assert links() == [] and interfaces("lk-i1") == {"lo"} and interfaces("lk-i2") == {"lo", "eth7", "eth8"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lk-b1:eth1", "--rate", "fast"], "invalid value for rate: 'fast'"),
        (["lk-b1:eth1", "--burst", "32k"], "invalid value for burst: '32k' (needs --rate)"),
        (["lk-b1:eth1", "--delay", "20"], "invalid value for delay: '20'"),
        (["lk-b1:eth1", "--jitter", "5ms"], "needs --delay"),
        (["lk-b1:eth1", "--loss", "200%"], "invalid value for loss: '200%'"),
        (
            ["lk-b1:eth9", "--rate", "1mbit"],
            "container lk-b1 has no interface eth9 (from a network or a link)",
        ),
        (["lk-nosuch:eth1", "--rate", "1mbit"], "no such container: lk-nosuch"),
        (["lk-b1:eth1", "--clear", "--rate", "1mbit"], "--clear takes no other option"),
    ],
)
def test_bad_shapes_fail_in_one_line_and_change_nothing(containers, args, message):
    containers.extend(["lk-b1", "lk-b2"])
    run("lk-b1")
    run("lk-b2")
    hako("link", "lk-b1:eth1", "lk-b2:eth1", "--rate", "4mbit")
    one_line_error(hako("shape", *args, check=False), message)
    assert hako("shape", "lk-b1:eth1").stdout == "rate 4mbit\n"
    assert root_qdisc("lk-b1", "eth1") == "tbf"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sysctl", "kernel.shmmax=1"], "invalid value for sysctl: 'kernel.shmmax' (only net.* keys"),
        (["--sysctl", "net.ipv4.no_such=1"], "no such setting in this kernel"),
        (["--sysctl", "net.ipv4.ip_forward"], "expected KEY=VALUE"),
        (["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"], "not host"),
    ],
)
def test_bad_sysctls_are_refused_before_anything_is_made(args, message):
    one_line_error(hako("run", "--name", "lk-bad", *args, "busybox", "true", check=False), message)
    assert "lk-bad" not in hako("ps", "-a").stdout


def test_a_value_the_kernel_refuses_fails_the_start_in_one_line(containers):
    containers.append("lk-v")
    result = hako("run", "-d", "--name", "lk-v", "--sysctl", "net.ipv4.ip_forward=yes", "busybox", "true",
                  check=False)  # fmt: skip
    one_line_error(
        result, "invalid value for sysctl: 'net.ipv4.ip_forward=yes' (the kernel refused the value)"
    )
    assert "lk-v" not in hako("ps", "-a").stdout  # run -d takes back a container that did not start


def host_interfaces_like_links(before: set[str]) -> set[str]:
    """New host interfaces a link could have left: its ends' names, or a kernel-named veth.

    (Other hako sessions may be making bridges and veths on this host meanwhile.)
    """
    return {n for n in set(os.listdir("/sys/class/net")) - before if n.startswith(("eth", "veth"))}


def test_removing_a_container_removes_its_links_and_leaves_no_interface(containers):
    containers.extend(["lk-f1", "lk-f2", "lk-f3"])
    before = set(os.listdir("/sys/class/net"))
    run("lk-f1")
    run("lk-f2")
    hako("create", "--name", "lk-f3", "busybox", *COMMAND)
    hako("link", "lk-f1:eth1", "lk-f2:eth1", "--rate", "1mbit")
    hako("link", "lk-f2:eth2", "lk-f3:eth1")
    hako("link", "lk-f1:eth2", "lk-f3:eth2")
    assert len(links()) == 3
    assert host_interfaces_like_links(before) == set()  # the pairs are made in the containers
    hako("rm", "-f", "lk-f1")
    assert [(r[1], r[3]) for r in links()] == [("lk-f2:eth2", "lk-f3:eth1")]
    wait_for(lambda: interfaces("lk-f2") == {"lo"})  # eth1 went with lk-f1's namespace
    hako("rm", "lk-f3")
    assert links() == []
    assert host_interfaces_like_links(before) == set()


def test_link_rm_of_running_ends_removes_both_interfaces(containers):
    containers.extend(["lk-g1", "lk-g2"])
    run("lk-g1")
    run("lk-g2")
    first = hako("link", "lk-g1:eth1", "lk-g2:eth1").stdout.strip()
    hako("link", "lk-g1:eth2", "lk-g2:eth2")
    hako("link", "lk-g1:eth3", "lk-g1:eth4")  # a container looped to itself
    assert interfaces("lk-g1") == {"lo", "eth1", "eth2", "eth3", "eth4"}
    assert hako("link", "rm", "lk-g2:eth2").stdout == "lk-g2:eth2\n"  # either end names it
    assert interfaces("lk-g1") == {"lo", "eth1", "eth3", "eth4"} and interfaces("lk-g2") == {"lo", "eth1"}
    hako("link", "rm", first, "lk-g1:eth4")  # or its ID
    assert interfaces("lk-g1") == {"lo"} and interfaces("lk-g2") == {"lo"}
    assert links() == []
    missing = hako("link", "rm", "lk-g1:eth1", check=False)
    assert missing.returncode == 1 and "no link at lk-g1:eth1" in missing.stderr


def test_a_network_joined_later_skips_the_names_links_hold(networks, containers):
    networks.append("lk-jnet")
    containers.extend(["lk-j1", "lk-j2"])
    hako("network", "create", "lk-jnet", "--subnet", "10.214.202.0/24")
    run("lk-j1")
    run("lk-j2")
    hako("link", "lk-j1:eth0", "lk-j2:eth0", "--ip-a", "10.214.18.1/30", "--ip-b", "10.214.18.2/30")
    hako("network", "connect", "lk-jnet", "lk-j1")
    assert addresses("lk-j1") == {"lo": "127.0.0.1/8", "eth0": "10.214.18.1/30", "eth1": "10.214.202.2/24"}
    hako("shape", "lk-j1:eth1", "--rate", "2mbit")
    hako("network", "disconnect", "lk-jnet", "lk-j1")
    # Its shape went with it: the next network to get the name starts unshaped.
    gone = hako("shape", "lk-j1:eth1", check=False)
    one_line_error(gone, "container lk-j1 has no interface eth1 (from a network or a link)")


def test_twenty_containers_in_a_line_come_up_linked(containers):
    names = [f"lk-l{i}" for i in range(20)]
    containers.extend(names)
    for name in names:
        run(name, "--sysctl", "net.ipv4.ip_forward=1")
    started = time.monotonic()
    for i in range(19):
        hako("link", f"{names[i]}:eth1", f"{names[i + 1]}:eth2",
             "--ip-a", f"10.214.{100 + i}.1/30", "--ip-b", f"10.214.{100 + i}.2/30")  # fmt: skip
    assert time.monotonic() - started < 60
    assert all(row[-1] == "up" for row in links()) and len(links()) == 19
    assert ping("lk-l0", "10.214.100.2").returncode == 0
    assert ping("lk-l19", "10.214.118.1").returncode == 0
