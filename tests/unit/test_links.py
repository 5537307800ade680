"""Link records: ends as typed, the checks on a pair, and the store's queries (no kernel)."""

from __future__ import annotations

import pytest
from hako.errors import InvalidValue, NotFound
from hako.network import links

A, B, C = "a" * 64, "b" * 64, "c" * 64


def end(side="a", cid=A, name="r1", interface="eth1", address=None, routes=(), mtu=None):
    return links.new_end(side, cid, name, interface, address, mtu, routes, None)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("r1:eth1", ("r1", "eth1")), ("lab.r-2:e0", ("lab.r-2", "e0")), ("r1:eth0.100", ("r1", "eth0.100"))],
)
def test_an_end_is_container_colon_interface(text, parsed) -> None:
    assert links.parse_end("link", text) == parsed


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("r1", "CONTAINER:INTERFACE"),
        ("r1:", "CONTAINER:INTERFACE"),
        (":eth1", "CONTAINER:INTERFACE"),
        ("r1:lo", "not lo"),
        ("r1:eth1/2", "interface name"),
        ("r1:a23456789012345x", "1 to 15"),
        ("r1:-x", "starting with a letter"),
        ("r1:eth 1", "interface name"),
    ],
)
def test_bad_ends_are_refused_naming_the_value(text, why) -> None:
    with pytest.raises(InvalidValue) as caught:
        links.parse_end("link", text)
    assert caught.value.value == text and why in str(caught.value)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("10.214.1.1", "prefix length"),
        ("10.214.1.1/33", "IPv4 address with its prefix"),
        ("10.214.1.0/30", "network or broadcast"),
        ("10.214.1.3/30", "network or broadcast"),
        ("fd00::1/64", "only IPv4"),
        ("ten/30", "IPv4 address"),
    ],
)
def test_bad_addresses_name_their_side(text, why) -> None:
    with pytest.raises(InvalidValue) as caught:
        end("b", address=text)
    assert caught.value.field == "ip-b" and why in str(caught.value)


def test_point_to_point_prefixes_use_every_address() -> None:
    assert end(address="10.214.1.0/31")["address"] == "10.214.1.0/31"
    assert end(address="10.214.1.7/32")["address"] == "10.214.1.7/32"


def test_routes_are_networks_or_default() -> None:
    assert end(routes=["10.214.2.0/30", "default", "0.0.0.0/0"])["routes"] == [
        "10.214.2.0/30",
        "default",
        "default",
    ]
    with pytest.raises(InvalidValue) as caught:
        end("a", routes=["10.214.2.1/30"])
    assert caught.value.field == "route-a" and "host bits" in str(caught.value)


@pytest.mark.parametrize(
    ("a", "b", "field", "why"),
    [
        (end(), end("b"), "link", "same interface"),
        (end(address="10.214.1.1/30"), end("b", B, address="10.214.1.1/30"), "ip-b", "same address"),
        (end(address="10.214.1.1/30"), end("b", B, address="10.214.1.5/30"), "ip-b", "not in the subnet"),
        (end(routes=["default"]), end("b", B), "route-a", "give it an address"),
    ],
)
def test_a_pair_is_checked_as_a_pair(a, b, field, why) -> None:
    with pytest.raises(InvalidValue) as caught:
        links.new_link(a, b)
    assert caught.value.field == field and why in str(caught.value)


def test_a_container_may_be_linked_to_itself_on_two_interfaces() -> None:
    link = links.new_link(end(interface="eth1"), end("b", interface="eth2"))
    assert [e["interface"] for e in link["ends"]] == ["eth1", "eth2"]
    assert len(link["id"]) == 12


def test_the_store_finds_links_by_either_end_and_forgets_a_container(tmp_path) -> None:
    store = links.Links(str(tmp_path))
    assert store.load() == [] and store.forget_container(A) == []
    ab = links.new_link(end(cid=A, interface="eth1"), end("b", B, "r2", "eth1"))
    bc = links.new_link(end(cid=B, name="r2", interface="eth2"), end("b", C, "r3", "eth1"))
    with store.lock():
        store.save([ab, bc])
    current = store.load()
    assert links.Links.of_container(current, B) == [ab, bc]
    assert links.Links.interfaces(current, B) == {"eth1", "eth2"}
    assert links.Links.find(current, C, "eth1") == (bc, 1)
    assert links.Links.find(current, C, "eth2") is None
    with pytest.raises(NotFound, match="no link at r3:eth2"):
        store.get(current, C, "eth2", "r3:eth2")
    assert store.forget_container(A) == [ab]
    assert store.load() == [bc]
    assert links.peer_of(bc, 0)["name"] == "r3" and links.end_label(bc["ends"][0]) == "r2:eth2"
