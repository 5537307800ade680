"""The firewall's rule table and its two renderings (hako.network.firewall), table-driven.

The kernel side (nft, iptables) is exercised by tests/integration/test_network_nat.py;
here: which rules a network and a container get, how each backend spells them,
how hako's rules are found again in what the tools print, and the decisions
(idempotence, conflicts, reclaim) over a backend kept in memory.
"""

from __future__ import annotations

import json

import pytest
from hako.errors import Conflict, HakoError, InvalidValue
from hako.network import firewall
from hako.network.firewall import (
    Firewall,
    Iptables,
    Nftables,
    Present,
    State,
    base_rules,
    ipt_rule,
    network_rules,
    nft_rule,
    port_rules,
)

from .test_options import port

CID = "c" * 64
NAT = {"name": "lab", "bridge": "hk-0123456789", "subnet": "10.213.1.0/24", "nat": True, "internal": False}
NO_NAT = dict(NAT, name="quiet", bridge="hk-abcdefabcd", subnet="10.213.2.0/24", nat=False)
INTERNAL = dict(NAT, name="inner", bridge="hk-1111111111", subnet="10.213.3.0/24", internal=True)


def rendered(rules, render) -> list[tuple[str, str]]:
    return [(r.chain, render(r)) for r in rules]


def test_the_shared_forward_rules_let_replies_and_ports_through_and_drop_between_bridges() -> None:
    assert rendered(base_rules(), nft_rule) == [
        ("forward", 'ct state established,related accept comment "hako"'),
        ("forward", 'ct status dnat accept comment "hako"'),
        ("forward", 'iifname "hk*" oifname "hk*" fib daddr . iif oif missing drop comment "hako"'),
        ("forward", 'iifname "hk*" oifname "hako0" fib daddr . iif oif missing drop comment "hako"'),
        ("forward", 'iifname "hako0" oifname "hk*" fib daddr . iif oif missing drop comment "hako"'),
        ("forward", 'jump networks comment "hako"'),
    ]
    assert rendered(base_rules(), ipt_rule)[2:4] == [
        ("forward", '-i hk+ -o hk+ -m physdev ! --physdev-is-bridged -m comment --comment "hako" -j DROP'),
        ("forward", '-i hk+ -o hako0 -m physdev ! --physdev-is-bridged -m comment --comment "hako" -j DROP'),
    ]
    assert ipt_rule(base_rules()[-1]) == '-m comment --comment "hako" -j HAKO-NETWORKS'


def test_a_nat_network_masquerades_what_leaves_and_forwards_out_not_in() -> None:
    tag = 'comment "hako-net:lab"'
    assert rendered(network_rules(NAT), nft_rule) == [
        ("guard", f'iifname "hk-0123456789" ip daddr 127.0.0.0/8 drop {tag}'),
        ("networks", f'iifname "hk-0123456789" accept {tag}'),
        ("postrouting", f'ip saddr 10.213.1.0/24 oifname != "hk-0123456789" masquerade {tag}'),
        ("networks", f'oifname "hk-0123456789" drop {tag}'),
        ("postrouting", f'oifname "hk-0123456789" ip saddr 127.0.0.0/8 masquerade {tag}'),
        ("postrouting", f'oifname "hk-0123456789" ip saddr 10.213.1.0/24 ct status dnat masquerade {tag}'),
    ]
    assert rendered(network_rules(NAT), ipt_rule)[2] == (
        "postrouting",
        '-s 10.213.1.0/24 ! -o hk-0123456789 -m comment --comment "hako-net:lab" -j MASQUERADE',
    )


@pytest.mark.parametrize("network", [NO_NAT, INTERNAL], ids=["no-nat", "internal"])
def test_a_network_without_nat_forwards_only_within_itself(network) -> None:
    bridge = network["bridge"]
    rules = rendered(network_rules(network), nft_rule)
    assert not any("masquerade" in text and "!=" in text for _, text in rules)
    assert [text.split(" comment")[0] for chain, text in rules if chain == "networks"] == [
        f'iifname "{bridge}" oifname "{bridge}" accept',
        f'iifname "{bridge}" drop',
        f'oifname "{bridge}" drop',
    ]


@pytest.mark.parametrize(
    "published, nft, iptables",
    [
        (
            port(8080, 80),
            "fib daddr type local tcp dport 8080 dnat to 10.213.1.2:80",
            "-m addrtype --dst-type LOCAL -p tcp -m tcp --dport 8080 -m comment --comment "
            f'"hako:{CID}" -j DNAT --to-destination 10.213.1.2:80',
        ),
        (
            port(5353, 53, "udp", "127.0.0.1"),
            "ip daddr 127.0.0.1 udp dport 5353 dnat to 10.213.1.2:53",
            f'-d 127.0.0.1 -p udp -m udp --dport 5353 -m comment --comment "hako:{CID}" '
            "-j DNAT --to-destination 10.213.1.2:53",
        ),
    ],
)
def test_a_published_port_is_dnat_in_prerouting_and_output(published, nft, iptables) -> None:
    rules = port_rules(CID, [published], "10.213.1.2")
    assert rendered(rules, nft_rule) == [
        ("prerouting", f'{nft} comment "hako:{CID}"'),
        ("output", f'{nft} comment "hako:{CID}"'),
    ]
    assert ipt_rule(rules[0]) == iptables


@pytest.mark.parametrize(
    "a, b, clash",
    [
        (port(80, 80), port(80, 81), True),
        (port(80, 80), port(80, 80, host_ip="127.0.0.1"), True),
        (port(80, 80, host_ip="10.0.0.1"), port(80, 80, host_ip="127.0.0.1"), False),
        (port(80, 80), port(80, 80, "udp"), False),
        (port(80, 80), port(81, 80), False),
    ],
)
def test_which_published_ports_claim_the_same_host_port(a, b, clash) -> None:
    assert firewall.overlaps(a, b) is clash and firewall.overlaps(b, a) is clash


# Reading back ----------------------------------------------------------------------

IPTABLES_SAVE = """# Generated by iptables-save
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:HAKO-OUTPUT - [0:0]
:HAKO-POSTROUTING - [0:0]
:HAKO-PREROUTING - [0:0]
-A PREROUTING -m comment --comment hako -j HAKO-PREROUTING
-A OUTPUT -m comment --comment hako -j HAKO-OUTPUT
-A POSTROUTING -m comment --comment hako -j HAKO-POSTROUTING
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A HAKO-OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 18080 -m comment --comment "hako:CID" \
-j DNAT --to-destination 10.213.1.2:80
-A HAKO-OUTPUT -m addrtype --dst-type LOCAL -p udp -m udp --dport 53 -m comment --comment "hako:CID" \
-j DNAT --to-destination 10.213.1.2:53
-A HAKO-POSTROUTING -s 10.213.1.0/24 ! -o hk-0123456789 -m comment --comment "hako-net:lab" -j MASQUERADE
-A HAKO-POSTROUTING -s 10.9.0.0/24 -m comment --comment "someone else's" -j MASQUERADE
COMMIT
*filter
:FORWARD DROP [0:0]
:HAKO-FORWARD - [0:0]
:HAKO-NETWORKS - [0:0]
-A FORWARD -m comment --comment hako -j HAKO-FORWARD
COMMIT
""".replace("CID", CID)


def test_iptables_save_output_yields_hakos_rules_only() -> None:
    state = Iptables.parse(IPTABLES_SAVE)
    assert state.exists and not state.base_ok  # no raw chain, no shared forward rules
    ours = [(r.chain, r.tag) for r in state.rules]
    assert ours == [
        ("jump", "hako"),
        ("jump", "hako"),
        ("jump", "hako"),
        ("output", f"hako:{CID}"),
        ("output", f"hako:{CID}"),
        ("postrouting", "hako-net:lab"),
        ("jump", "hako"),
    ]
    output = [r for r in state.rules if r.chain == "output"]
    assert [r.published for r in output] == [
        {"host_ip": "127.0.0.1", "protocol": "tcp", "host_port": 18080},
        {"host_ip": "0.0.0.0", "protocol": "udp", "host_port": 53},
    ]
    assert state.rules[5].ifnames == {"hk-0123456789"}
    assert state.chains == {("nat", "HAKO-OUTPUT"), ("nat", "HAKO-POSTROUTING"), ("nat", "HAKO-PREROUTING"),
                            ("filter", "HAKO-FORWARD"), ("filter", "HAKO-NETWORKS")}  # fmt: skip


def test_iptables_removal_of_everything_deletes_the_jumps_then_the_chains() -> None:
    state = Iptables.parse(IPTABLES_SAVE)
    tables = Iptables().script(state, [], [], drop=True)
    assert tables["nat"] == [
        "-D PREROUTING -m comment --comment hako -j HAKO-PREROUTING",
        "-D OUTPUT -m comment --comment hako -j HAKO-OUTPUT",
        "-D POSTROUTING -m comment --comment hako -j HAKO-POSTROUTING",
        "-F HAKO-PREROUTING",
        "-F HAKO-OUTPUT",
        "-F HAKO-POSTROUTING",
        "-X HAKO-PREROUTING",
        "-X HAKO-OUTPUT",
        "-X HAKO-POSTROUTING",
    ]
    assert tables["raw"] == []  # hako's raw chain is not there: nothing to remove


def test_iptables_deletes_a_rule_by_its_saved_line() -> None:
    state = Iptables.parse(IPTABLES_SAVE)
    doomed = [r for r in state.rules if r.tag == f"hako:{CID}"]
    tables = Iptables().script(State(state.rules, True, True), [], doomed, drop=False)
    assert tables["nat"][0].startswith("-D HAKO-OUTPUT -d 127.0.0.1/32 -p tcp")
    assert tables["filter"] == [] and len(tables["nat"]) == 2


def nft_json(*rules: dict, chains=firewall.CHAINS) -> str:
    items = [
        {"metainfo": {"json_schema_version": 1}},
        {"table": {"family": "ip", "name": "hako", "handle": 1}},
    ]
    items += [{"chain": {"family": "ip", "table": "hako", "name": c}} for c in chains]
    items += [{"rule": dict(family="ip", table="hako", **r)} for r in rules]
    return json.dumps({"nftables": items})


def match(left: dict, right, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


BASE = base_rules()
NFT_RULES = [
    {"chain": "output", "handle": 7, "comment": f"hako:{CID}", "expr": [
        match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"),
        match({"payload": {"protocol": "tcp", "field": "dport"}}, 8080),
        {"dnat": {"addr": "10.213.1.2", "port": 80}},
    ]},
    {"chain": "networks", "handle": 9, "comment": "hako-net:lab", "expr": [
        match({"meta": {"key": "iifname"}}, "hk-0123456789"), {"accept": None},
    ]},
    {"chain": "networks", "handle": 10, "expr": [{"drop": None}]},  # no tag: not hako's
    *({"chain": "forward", "handle": 20 + i, "comment": "hako", "expr": []} for i in range(len(BASE))),
]  # fmt: skip


def test_nft_json_yields_hakos_rules_with_handles_bridges_and_ports(monkeypatch) -> None:
    class Done:
        returncode, stdout, stderr = 0, nft_json(*NFT_RULES), ""

    monkeypatch.setattr(firewall.subprocess, "run", lambda *a, **k: Done)
    state = Nftables().read()
    assert state.exists and state.base_ok
    assert [(r.chain, r.tag, r.ref) for r in state.owned()] == [
        ("output", f"hako:{CID}", 7),
        ("networks", "hako-net:lab", 9),
    ]
    assert state.owned()[0].published == {"host_ip": "0.0.0.0", "protocol": "tcp", "host_port": 8080}
    assert state.owned()[1].ifnames == {"hk-0123456789"}


def test_nft_script_makes_the_table_once_then_only_adds_and_deletes() -> None:
    add = port_rules(CID, [port(8080, 80)], "10.213.1.2")[:1]
    fresh = Nftables().script(State([], False, False), add, [], drop=False).splitlines()
    assert fresh[0] == "add table ip hako"
    assert "add chain ip hako forward { type filter hook forward priority filter; policy accept; }" in fresh
    assert "add chain ip hako networks" in fresh
    assert fresh.index("flush chain ip hako forward") < fresh.index(
        'add rule ip hako forward ct state established,related accept comment "hako"'
    )
    assert fresh[-1] == f"add rule ip hako prerouting {nft_rule(add[0])}"
    existing = Present("output", f"hako:{CID}", 7)
    again = Nftables().script(State([existing], True, True), add, [existing], drop=False).splitlines()
    assert again == ["delete rule ip hako output handle 7", f"add rule ip hako prerouting {nft_rule(add[0])}"]
    assert Nftables().script(State([], True, True), [], [], drop=True) == "delete table ip hako\n"


# Choosing a backend ----------------------------------------------------------------


def test_the_backend_is_nftables_unless_told_or_missing(monkeypatch) -> None:
    tools = {"nft": "/usr/sbin/nft", "iptables": "/usr/sbin/iptables"}
    monkeypatch.setattr(firewall, "_which", tools.get)
    assert isinstance(firewall.choose_backend(""), Nftables)
    assert isinstance(firewall.choose_backend("iptables"), Iptables)
    del tools["nft"]
    assert isinstance(firewall.choose_backend(""), Iptables)
    with pytest.raises(HakoError, match="nft is not installed"):
        firewall.choose_backend("nftables")
    with pytest.raises(InvalidValue) as e:
        firewall.choose_backend("pf")
    assert e.value.field == "HAKO_FIREWALL"
    del tools["iptables"]
    with pytest.raises(HakoError, match="need nft or iptables"):
        firewall.choose_backend("")


# Decisions, over a backend kept in memory -------------------------------------------


class MemoryBackend:
    """Rules as a list; what each write asked for is kept."""

    name, holds = "memory", "everything"

    def __init__(self) -> None:
        self.rules: list[Present] = []
        self.base = False
        self.writes: list[tuple] = []
        self.handle = 0

    def read(self) -> State:
        return State(list(self.rules), self.base, bool(self.rules) or self.base)

    def write(self, state, add, remove, drop=False) -> None:
        self.writes.append((len(add), len(remove), drop))
        if drop:
            self.rules, self.base = [], False
            return
        self.base = True
        self.rules = [r for r in self.rules if r not in remove]
        for rule in add:
            self.handle += 1
            published = None
            if rule.chain == "output":
                (where, value), (_, (protocol, number)) = rule.match
                published = {"host_ip": "0.0.0.0" if where == "local" else value,
                             "protocol": protocol, "host_port": number}  # fmt: skip
            ifnames = {v.lstrip("!") for k, v in rule.match if k in ("iifname", "oifname")}
            self.rules.append(Present(rule.chain, rule.tag, self.handle, ifnames, published))


@pytest.fixture
def memory(monkeypatch, tmp_path):
    backend = MemoryBackend()
    monkeypatch.setattr(firewall, "_write_sysctl", lambda path, value: None)
    monkeypatch.setattr(firewall, "_host_port_problem", lambda port: None)
    return Firewall(str(tmp_path), backend), backend


def test_setup_is_idempotent(memory, monkeypatch) -> None:
    fw, backend = memory
    monkeypatch.setattr(firewall, "_interfaces", lambda: {"hk" + CID[:10] + "0"})
    fw.setup([NAT], CID, [port(8080, 80)], "10.213.1.2")
    count = len(backend.rules)
    assert count == len(network_rules(NAT)) + 2
    fw.setup([NAT])
    assert len(backend.rules) == count and backend.writes[-1:] == [(len(network_rules(NAT)) + 2, 0, False)]


def test_a_port_another_live_container_holds_is_refused_naming_it(memory, monkeypatch) -> None:
    fw, backend = memory
    other = "d" * 64
    monkeypatch.setattr(firewall, "_interfaces", lambda: {"hk" + CID[:10] + "0", "hk" + other[:10] + "0"})
    fw.setup([NAT], other, [port(8080, 80, host_ip="127.0.0.1")], "10.213.1.3")
    before = list(backend.rules)
    with pytest.raises(Conflict, match=r"port 0.0.0.0:8080/tcp is already published by container web"):
        fw.setup([NAT], CID, [port(8080, 80)], "10.213.1.2", holder={other: "web"}.get)
    assert backend.rules == before
    fw.setup([NAT], CID, [port(8081, 80)], "10.213.1.2")  # another port is fine


def test_a_dead_containers_rules_are_reclaimed_and_its_port_freed(memory, monkeypatch) -> None:
    fw, backend = memory
    dead = "d" * 64
    interfaces = {"hk" + dead[:10] + "0"}
    monkeypatch.setattr(firewall, "_interfaces", lambda: interfaces)
    fw.setup([NAT], dead, [port(8080, 80)], "10.213.1.3")
    interfaces.clear()  # its network namespace went: the kernel removed its veth
    interfaces.add("hk" + CID[:10] + "0")
    fw.setup([NAT], CID, [port(8080, 80)], "10.213.1.2")
    assert {r.tag for r in backend.rules} == {"hako-net:lab", f"hako:{CID}"}


def test_reclaim_and_removal_drop_the_table_once_nothing_is_left(memory, monkeypatch) -> None:
    fw, backend = memory
    monkeypatch.setattr(firewall, "_interfaces", lambda: {"hk" + CID[:10] + "0"})
    fw.setup([NAT, NO_NAT], CID, [port(8080, 80)], "10.213.1.2")
    assert fw.unpublish(CID) and not fw.unpublish(CID)
    assert fw.remove_network(NO_NAT)
    assert backend.rules and not backend.writes[-1][2]
    removed = fw.reclaim(lambda name, ifnames, interfaces: name == "lab")
    assert removed == ["hako-net:lab", firewall.EMPTY]
    assert backend.rules == [] and backend.writes[-1] == (0, 0, True)
    # A network of the same name whose bridge is another is not this one.
    fw.setup([NAT])
    assert not fw.remove_network(dict(NAT, bridge="hk-9999999999"))
