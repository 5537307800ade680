"""Outbound NAT, isolation and published ports, with real rules in nftables and in iptables.

Every test runs once per firewall backend (HAKO_FIREWALL). Networks here use
10.213.100.0/24 to 10.213.149.0/24 and names starting with nat-. The only
place outside the host is a network namespace the module makes itself
("outside": 10.215.1.2/30 behind a veth whose host end is 10.215.1.1), with
a TCP server that answers each connection with the peer address it saw.
A fence (a table of the test's own) drops anything forwarded from hako's
bridges to an interface other than that veth: whatever NAT allows, test
traffic reaches no other address.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from ..conftest import container_pid, hako, stop_supervisor, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft")

HTTPD = "trap 'exit 0' TERM; mkdir /w; echo hello > /w/index.html; httpd -f -p 80 -h /w & wait"
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
PID = os.getpid()
OUTSIDE_HOST, OUTSIDE_ADDR, SERVER_PORT = "10.215.1.1", "10.215.1.2", 9000
SERVER = """
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], int(sys.argv[2])))
server.listen(16)
print("ready", flush=True)
while True:
    conn, (peer, _) = server.accept()
    print(peer, flush=True)
    conn.sendall(f"peer {peer}\\n".encode())
    conn.close()
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def ruleset() -> str:
    """What nft and iptables-save show (iptables-nft's comments only show in iptables-save)."""
    text = sh("nft", "-s", "list", "ruleset").stdout
    if shutil.which("iptables-save"):
        text += sh("iptables-save").stdout
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))  # not the times


def hakos_rules() -> list[str]:
    """Lines of the ruleset that are hako's: its table, chains (HAKO-*) and tagged rules."""
    marks = ("table ip hako ", "HAKO-", '"hako:', '"hako-net:', '"hako"', "--comment hako")
    return [line for line in ruleset().splitlines() if any(mark in line for mark in marks)]


def cid_of(name: str) -> str:
    return json.loads(hako("inspect", name).stdout)[0]["Id"]


def http(url: str, timeout: float = 5) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    with opener.open(url, timeout=timeout) as response:
        return response.read().decode()


# Fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def iptables_tables():
    """iptables-nft makes its tables (ip raw, nat, filter) on first use and keeps them empty:
    remove those this module made, if nothing is in them."""
    before = set(sh("nft", "list", "tables").stdout.splitlines())
    yield
    for line in set(sh("nft", "list", "tables").stdout.splitlines()) - before:
        family_table = line.split()[1:]
        if family_table[1:] and family_table[1] in ("raw", "nat", "filter"):
            listing = json.loads(sh("nft", "-j", "list", "table", *family_table).stdout)["nftables"]
            if not any("rule" in item for item in listing):
                sh("nft", "delete", "table", *family_table, check=False)


@pytest.fixture(params=["nftables", "iptables"])
def backend(request, monkeypatch, hako_env):
    """HAKO_FIREWALL for the test; the supervisor (which starts containers) is restarted to take it."""
    if not shutil.which("iptables" if request.param == "iptables" else "nft"):
        pytest.skip(f"{request.param} is not installed")
    stop_supervisor(hako_env["run"])
    monkeypatch.setenv("HAKO_FIREWALL", request.param)
    yield request.param
    stop_supervisor(hako_env["run"])


@pytest.fixture(scope="module")
def outside():
    """A namespace of the test's own, reached through a veth, with a server that reports its peers."""
    namespace, host_end, inner_end = f"nat-out-{PID}", f"nat-o{PID}"[:15], f"nat-i{PID}"[:15]
    fence = f"natfence{PID}"
    server = None
    try:
        sh("ip", "netns", "add", namespace)
        sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", inner_end, "netns", namespace)
        sh("ip", "addr", "add", f"{OUTSIDE_HOST}/30", "dev", host_end)
        sh("ip", "link", "set", host_end, "up")
        sh("ip", "-n", namespace, "addr", "add", f"{OUTSIDE_ADDR}/30", "dev", inner_end)
        sh("ip", "-n", namespace, "link", "set", inner_end, "up")
        sh("ip", "-n", namespace, "link", "set", "lo", "up")
        # hako's bridges may forward to this veth and nowhere else.
        subprocess.run(
            ["nft", "-f", "-"],
            input=f"""table ip {fence} {{
                chain forward {{
                    type filter hook forward priority -10; policy accept;
                    iifname "hk*" oifname != "hk*" oifname != "hako0" oifname != "{host_end}" drop
                    iifname "hako0" oifname != "hk*" oifname != "hako0" oifname != "{host_end}" drop
                }}
            }}""",
            text=True,
            check=True,
        )
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                namespace,
                sys.executable,
                "-u",
                "-c",
                SERVER,
                OUTSIDE_ADDR,
                str(SERVER_PORT),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout.readline().strip() == "ready"
        yield {"namespace": namespace, "server": server}
    finally:
        if server is not None:
            server.kill()
            server.wait()
        sh("nft", "delete", "table", "ip", fence, check=False)
        sh("ip", "link", "del", host_end, check=False)
        sh("ip", "netns", "del", namespace, check=False)


def peers_seen(server: subprocess.Popen, wait: float = 0.5) -> list[str]:
    """The peer addresses the outside server reported since the last call."""
    import select

    seen = []
    while select.select([server.stdout], [], [], wait)[0]:
        seen.append(server.stdout.readline().strip())
        wait = 0.1
    return seen


# NAT and isolation ---------------------------------------------------------------


def test_nat_shows_the_hosts_address_outside_and_no_nat_gets_nowhere(backend, outside, networks):
    networks.extend(["nat-out", "nat-quiet"])
    hako("network", "create", "nat-out", "--subnet", "10.213.100.0/24")
    hako("network", "create", "nat-quiet", "--subnet", "10.213.101.0/24", "--no-nat")
    assert json.loads(hako("network", "inspect", "nat-quiet").stdout)[0]["Options"]["nat"] == "false"
    peers_seen(outside["server"], 0)
    out = hako(
        "run", "--rm", "--network", "nat-out", "busybox", "nc", "-w", "3", OUTSIDE_ADDR, str(SERVER_PORT)
    )
    assert out.stdout == f"peer {OUTSIDE_HOST}\n"  # masqueraded: the host's address on the way out
    assert peers_seen(outside["server"]) == [OUTSIDE_HOST]
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        assert f.read().strip() == "1"
    quiet = hako("run", "--rm", "--network", "nat-quiet", "busybox", "nc", "-w", "2", OUTSIDE_ADDR,
                 str(SERVER_PORT), check=False)  # fmt: skip
    assert quiet.returncode != 0 and quiet.stdout == ""
    assert peers_seen(outside["server"]) == []  # not even unmasqueraded
    rules = ruleset()
    assert "hako-net:nat-out" in rules and "hako-net:nat-quiet" in rules


def test_two_nat_networks_are_isolated_although_forwarding_is_on(backend, networks):
    networks.extend(["nat-iso1", "nat-iso2"])
    hako("network", "create", "nat-iso1", "--subnet", "10.213.102.0/24")
    hako("network", "create", "nat-iso2", "--subnet", "10.213.103.0/24")
    hako("run", "-d", "--name", "nat-iso-a", "--network", "nat-iso1", "busybox", *SLEEP)
    try:
        hako("run", "-d", "--name", "nat-iso-b", "--network", "nat-iso2", "busybox", *SLEEP)
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            assert f.read().strip() == "1"  # the host routes between the bridges: the rules keep them apart
        ping = ["exec", "nat-iso-a", "ping", "-c", "1", "-W", "1"]
        assert hako(*ping, "10.213.103.2", check=False).returncode != 0
        assert (
            hako("exec", "nat-iso-b", "ping", "-c", "1", "-W", "1", "10.213.102.2", check=False).returncode
            != 0
        )
        hako(*ping, "10.213.102.1")  # its own gateway
    finally:
        hako("rm", "-f", "nat-iso-a", "nat-iso-b", check=False)


# Published ports ---------------------------------------------------------------------


def test_a_published_port_answers_on_loopback_and_through_the_gateway(backend, networks):
    networks.append("nat-pub")
    hako("network", "create", "nat-pub", "--subnet", "10.213.104.0/24")
    hako("run", "-d", "--name", "nat-web", "--network", "nat-pub", "-p", "127.0.0.1:18080:80",
         "-p", "10.213.104.1:18080:80", "busybox", "sh", "-c", HTTPD)  # fmt: skip
    try:
        assert wait_for(lambda: _answer("http://127.0.0.1:18080/")) == "hello\n"
        page = hako("run", "--rm", "--network", "nat-pub", "busybox", "wget", "-q", "-O", "-",
                    "http://10.213.104.1:18080/")  # fmt: skip
        assert page.stdout == "hello\n"
        row = [line for line in hako("ps").stdout.splitlines() if "nat-web" in line][0]
        assert "127.0.0.1:18080->80/tcp, 10.213.104.1:18080->80/tcp" in row
        info = json.loads(hako("inspect", "nat-web").stdout)[0]
        bindings = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"},
                               {"HostIp": "10.213.104.1", "HostPort": "18080"}]}  # fmt: skip
        assert info["NetworkSettings"]["Ports"] == bindings == info["HostConfig"]["PortBindings"]
        # Stopped: the rules go; started again: they come back.
        cid = info["Id"]
        hako("stop", "-t", "1", "nat-web")
        assert f"hako:{cid}" not in ruleset()
        assert json.loads(hako("inspect", "nat-web").stdout)[0]["NetworkSettings"]["Ports"] == {}
        with pytest.raises(OSError):
            http("http://127.0.0.1:18080/", timeout=1)
        hako("start", "nat-web")
        assert wait_for(lambda: _answer("http://127.0.0.1:18080/")) == "hello\n"
    finally:
        hako("rm", "-f", "nat-web", check=False)


def _answer(url: str) -> str | None:
    try:
        return http(url, timeout=2)
    except OSError:
        return None


def test_a_port_on_all_addresses_answers_from_outside_and_from_loopback(backend, outside, networks):
    networks.append("nat-all")
    hako("network", "create", "nat-all", "--subnet", "10.213.105.0/24", "--no-nat")
    hako(
        "run",
        "-d",
        "--name",
        "nat-all-web",
        "--network",
        "nat-all",
        "-p",
        "18081:80",
        "busybox",
        "sh",
        "-c",
        HTTPD,
    )
    try:
        assert wait_for(lambda: _answer("http://127.0.0.1:18081/")) == "hello\n"
        url = f"http://{OUTSIDE_HOST}:18081/"
        fetch = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=5).read().decode(), end='')"
        out = sh("ip", "netns", "exec", outside["namespace"], sys.executable, "-c", fetch)
        assert out.stdout == "hello\n"
    finally:
        hako("rm", "-f", "nat-all-web", check=False)


def test_a_host_port_taken_is_refused_naming_the_holder_and_leaves_nothing(backend, networks):
    networks.append("nat-clash")
    hako("network", "create", "nat-clash", "--subnet", "10.213.106.0/24")
    hako(
        "run",
        "-d",
        "--name",
        "nat-holder",
        "--network",
        "nat-clash",
        "-p",
        "127.0.0.1:18082:80",
        "busybox",
        *SLEEP,
    )
    try:
        before = ruleset()
        taken = hako("run", "-d", "--name", "nat-second", "--network", "nat-clash", "-p", "18082:80",
                     "busybox", *SLEEP, check=False)  # fmt: skip
        assert taken.returncode == 125
        assert taken.stderr == "hako: port 0.0.0.0:18082/tcp is already published by container nat-holder\n"
        assert "nat-second" not in hako("ps", "-a").stdout
        assert ruleset() == before
        members = json.loads(hako("network", "inspect", "nat-clash").stdout)[0]["Containers"]
        assert [c["Name"] for c in members.values()] == ["nat-holder"]
        # Made first, refused when started; it stays, as made.
        hako(
            "create",
            "--name",
            "nat-second",
            "--network",
            "nat-clash",
            "-p",
            "127.0.0.1:18082:81/tcp",
            "busybox",
        )
        refused = hako("start", "nat-second", check=False)
        assert refused.returncode != 0
        assert (
            refused.stderr == "Error: port 127.0.0.1:18082/tcp is already published by container nat-holder\n"
        )
        assert json.loads(hako("inspect", "nat-second").stdout)[0]["State"]["Status"] == "created"
        hako("rm", "nat-second")
        # A port a host process listens on.
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 18083))
            listener.listen()
            busy = hako("run", "-d", "--name", "nat-third", "--network", "nat-clash",
                        "-p", "127.0.0.1:18083:80", "busybox", *SLEEP, check=False)  # fmt: skip
        assert busy.returncode == 125 and "18083/tcp: a process of the host uses it" in busy.stderr
    finally:
        hako("rm", "-f", "nat-holder", "nat-second", "nat-third", check=False)


@pytest.mark.parametrize(
    "args, message",
    [
        (["-p", "8080:80"], "needs --network NAME"),
        (["--network", "host", "-p", "8080:80"], "--network host has no address"),
        (["--network", "nat-x", "-p", "80"], "give the host port too"),
        (["--network", "nat-x", "-p", "8080:80/sctp"], "tcp or udp"),
        (["--network", "nat-x", "-p", "8080:80", "-p", "127.0.0.1:8080:81"], "published twice"),
    ],
)
def test_bad_publish_options_fail_in_one_line(args, message):
    result = hako("create", *args, "busybox", check=False)
    assert result.returncode == 125
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


# Teardown and crashes ------------------------------------------------------------------


def test_teardown_leaves_no_rule_interface_or_allocation(backend, networks):
    before = set(hakos_rules())  # another hako state's, if any
    networks.append("nat-gone")
    hako("network", "create", "nat-gone", "--subnet", "10.213.107.0/24")
    bridge = json.loads(hako("network", "inspect", "nat-gone").stdout)[0]["Options"]["bridge"]
    hako(
        "run",
        "-d",
        "--name",
        "nat-short",
        "--network",
        "nat-gone",
        "-p",
        "127.0.0.1:18084:80",
        "busybox",
        *SLEEP,
    )
    cid = cid_of("nat-short")
    assert f"hako:{cid}" in ruleset()
    out = hako("run", "--rm", "--network", "nat-gone", "-p", "127.0.0.1:18085:80/udp", "busybox", "true")
    assert out.returncode == 0 and "18085" not in ruleset()
    hako("rm", "-f", "nat-short")
    rules = ruleset()
    assert f"hako:{cid}" not in rules and "hako-net:nat-gone" in rules
    hako("network", "rm", "nat-gone")
    networks.remove("nat-gone")
    assert set(hakos_rules()) <= before  # no tag, chain or table of the network's or its container's
    assert not os.path.exists(f"/sys/class/net/{bridge}")
    assert "nat-gone" not in hako("network", "ls").stdout


def crash_with_a_port(name: str, network: str, published: str, hako_env) -> str:
    """Start ``name`` with a published port, then SIGKILL the supervisor and it at once; its ID.

    Nobody records the exit, so nobody removes its rules; its network
    namespace, and with it its veth, goes with its process.
    """
    hako("run", "-d", "--name", name, "--network", network, "-p", published, "busybox", *SLEEP)
    cid = cid_of(name)
    init = container_pid(name)
    with open(os.path.join(hako_env["run"], "supervisor.pid")) as f:
        os.kill(int(f.read()), signal.SIGKILL)
    os.kill(init, signal.SIGKILL)
    wait_for(lambda: not any(n.startswith("hk" + cid[:10]) for n in os.listdir("/sys/class/net")))
    return cid


def test_what_a_crash_leaves_is_reclaimed(backend, networks, hako_env):
    networks.append("nat-crash")
    hako("network", "create", "nat-crash", "--subnet", "10.213.108.0/24")
    try:
        cid = crash_with_a_port("nat-lost", "nat-crash", "127.0.0.1:18086:80", hako_env)
        assert f"hako:{cid}" in ruleset()
        # Kernel objects a crash can leave, marked as this state's and as another's.
        owner = f"hako-root:{os.path.realpath(hako_env['root'])}"
        bridge, veth, foreign = (
            f"hk-{os.urandom(5).hex()}",
            f"hk{os.urandom(5).hex()}0",
            f"hk-{os.urandom(5).hex()}",
        )
        sh("ip", "link", "add", bridge, "type", "bridge")
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", f"hp{veth[2:]}")
        sh("ip", "link", "add", foreign, "type", "bridge")
        for name, alias in ((bridge, owner), (veth, owner), (foreign, "hako-root:/elsewhere")):
            sh("ip", "link", "set", name, "alias", alias)
        try:
            pruned = hako("system", "prune").stdout.splitlines()
            assert f"{backend} rules of container {cid[:12]}" in pruned
            assert f"bridge {bridge}" in pruned and f"veth {veth}" in pruned
            assert not any(foreign in line for line in pruned)
            assert os.path.exists(f"/sys/class/net/{foreign}")
            assert not os.path.exists(f"/sys/class/net/{bridge}") and not os.path.exists(
                f"/sys/class/net/{veth}"
            )
            assert f"hako:{cid}" not in ruleset() and "hako-net:nat-crash" in ruleset()
            assert hako("system", "prune").stdout == ""  # nothing more
        finally:
            for name in (bridge, veth, foreign):
                sh("ip", "link", "del", name, check=False)
    finally:
        hako("rm", "-f", "nat-lost", check=False)
    assert f"hako:{cid}" not in ruleset()
    # A new supervisor clears what the dead one left (its spare) and starts containers again.
    hako("run", "--rm", "--network", "nat-crash", "-p", "127.0.0.1:18086:80", "busybox", "true")


def test_the_next_start_reclaims_a_dead_containers_port(backend, networks, hako_env):
    networks.append("nat-next")
    hako("network", "create", "nat-next", "--subnet", "10.213.109.0/24")
    try:
        cid = crash_with_a_port("nat-dead", "nat-next", "127.0.0.1:18087:80", hako_env)
        # Its port is free again for the next container: the dead one's rules went on the way.
        hako("run", "-d", "--name", "nat-heir", "--network", "nat-next", "-p", "127.0.0.1:18087:80",
             "busybox", "sh", "-c", HTTPD)  # fmt: skip
        assert f"hako:{cid}" not in ruleset()
        assert wait_for(lambda: _answer("http://127.0.0.1:18087/")) == "hello\n"
    finally:
        hako("rm", "-f", "nat-dead", "nat-heir", check=False)
