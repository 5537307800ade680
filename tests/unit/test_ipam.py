"""Address management for bridge networks (pure functions, table-driven)."""

from __future__ import annotations

import ipaddress

import pytest
from hako.errors import InvalidValue
from hako.network import ipam

net = ipaddress.ip_network
addr = ipaddress.ip_address


@pytest.mark.parametrize(
    "text, message",
    [
        ("10.213.1.0/33", "subnet"),
        ("10.213.1.5/24", "host bits set"),
        ("10.213.1.0/31", "too small"),
        ("fd00::/64", "only IPv4"),
        ("lab", "subnet"),
    ],
)
def test_bad_subnets_name_the_field(text, message):
    with pytest.raises(InvalidValue) as e:
        ipam.parse_subnet(text)
    assert e.value.field == "subnet" and message in str(e.value)


@pytest.mark.parametrize(
    "text, ok",
    [
        ("10.213.1.10", True),
        ("10.213.1.0", False),  # the network address
        ("10.213.1.255", False),  # broadcast
        ("10.213.2.1", False),  # outside
        ("::1", False),
        ("ten", False),
    ],
)
def test_addresses_in_a_subnet(text, ok):
    subnet = net("10.213.1.0/24")
    if ok:
        assert ipam.parse_address("ip", text, subnet) == addr(text)
    else:
        with pytest.raises(InvalidValue):
            ipam.parse_address("ip", text, subnet)


def test_pick_subnet_takes_the_first_free_24_of_the_pool():
    taken = [net("10.213.0.0/24"), net("10.213.1.128/25"), net("10.0.0.0/16")]
    assert ipam.pick_subnet(taken) == net("10.213.2.0/24")
    with pytest.raises(InvalidValue, match="no free /24"):
        ipam.pick_subnet([net("10.213.0.0/16")])


@pytest.mark.parametrize(
    "ip_range, allocated, expected",
    [
        (None, [], "10.213.1.2"),  # .1 is the gateway
        (None, ["10.213.1.2", "10.213.1.3"], "10.213.1.4"),
        ("10.213.1.128/25", [], "10.213.1.129"),
        ("10.213.1.128/25", ["10.213.1.129"], "10.213.1.130"),
    ],
)
def test_next_free_skips_the_gateway_and_what_is_allocated(ip_range, allocated, expected):
    subnet = net("10.213.1.0/24")
    span = net(ip_range) if ip_range else None
    assert ipam.next_free(subnet, addr("10.213.1.1"), span, allocated) == addr(expected)


def test_a_full_subnet_says_so():
    subnet = net("10.213.1.0/30")  # .1 gateway, .2 the only host
    with pytest.raises(InvalidValue, match="no free address"):
        ipam.next_free(subnet, addr("10.213.1.1"), None, ["10.213.1.2"])


def test_host_routes_reads_proc_net_route(tmp_path):
    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"  # default: skipped
        "eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"  # 192.168.2.0/24
        "br0\t0000D50A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"  # 10.213.0.0/16
    )
    assert ipam.host_routes(str(table)) == [net("192.168.2.0/24"), net("10.213.0.0/16")]
    assert ipam.host_routes(str(tmp_path / "missing")) == []


@pytest.mark.parametrize(
    "value, ok", [(1500, True), ("9000", True), (67, False), ("big", False), (70000, False)]
)
def test_mtu(value, ok):
    if ok:
        assert ipam.parse_mtu(value) == int(value)
    else:
        with pytest.raises(InvalidValue):
            ipam.parse_mtu(value)
