"""hako_network's plan (hako.ansible_network): what is compared, made again, refused, on records only.

The records live in a temporary state directory; no bridge is made (that
is tests/integration/test_ansible_network.py).
"""

from __future__ import annotations

import sys

import pytest
from hako import ansible_network as an
from hako.ansible_options import OptionError
from hako.engine import Engine
from hako.errors import HakoError, MissingLibrary

SUBNET = "10.213.240.0/24"


@pytest.fixture
def engine(tmp_path) -> Engine:
    return Engine(root=str(tmp_path / "root"), run=str(tmp_path / "run"))


def made(engine: Engine, members: tuple[str, ...] = (), **options) -> dict:
    """A network am-u (subnet SUBNET unless given) with ``members`` recorded on it."""
    record = engine.networks().create("am-u", **{"subnet": SUBNET, **options})
    for index, member in enumerate(members):
        engine.networks().allocate("am-u", f"{index:064x}", member)
    return record


@pytest.mark.parametrize(
    ("params", "actions"),
    [
        ({}, []),
        ({"subnet": SUBNET, "gateway": "10.213.240.1", "mtu": 1500, "internal": False, "nat": True}, []),
        ({"labels": {"course": "linuc"}}, []),  # the network may have more labels
        ({"labels": {"room": "b"}}, ["update labels"]),
        ({"labels": {"course": "lpic"}}, ["update labels"]),
        ({"subnet": "10.213.241.0/24"}, ["recreate"]),
        ({"gateway": "10.213.240.254"}, ["recreate"]),
        ({"ip_range": "10.213.240.128/25"}, ["recreate"]),
        ({"mtu": 1400}, ["recreate"]),
        ({"internal": True}, ["recreate"]),
        ({"nat": False}, ["recreate"]),
        ({"mtu": 1400, "labels": {"room": "b"}}, ["recreate"]),
        ({"recreate": True}, ["recreate"]),
        ({"state": "absent"}, ["remove"]),
    ],
)
def test_only_the_options_given_are_compared_and_all_but_labels_remake_the_network(engine, params, actions):
    made(engine, labels={"course": "linuc", "room": "a"})
    assert an.plan(engine, {"name": "am-u", **params}).actions == actions


def test_a_new_network_is_predicted_as_it_will_be_made(engine):
    plan = an.plan(engine, {"name": "am-u", "subnet": SUBNET, "mtu": 9000, "labels": {"a": "1"}})
    assert plan.actions == ["create"]
    assert plan.diff() == {
        "before": {"state": "absent"},
        "after": {
            "state": "present",
            "subnet": SUBNET,
            "gateway": "10.213.240.1",
            "ip_range": None,
            "mtu": 9000,
            "internal": False,
            "nat": True,
            "labels": {"a": "1"},
        },
    }
    assert engine.networks().list() == []  # planned, not made


def test_a_recreated_network_keeps_what_the_task_leaves_out(engine):
    record = made(engine, gateway="10.213.240.254", ip_range="10.213.240.128/25", mtu=1400, labels={"a": "1"})
    keep = an.create_arguments({"internal": True, "labels": {"b": "2"}}, record)
    assert keep == {
        "subnet": SUBNET,
        "gateway": "10.213.240.254",
        "ip_range": "10.213.240.128/25",
        "mtu": 1400,
        "internal": True,
        "nat": True,
        "labels": {"a": "1", "b": "2"},
    }
    # A new subnet: the old gateway and range do not fit it, and go.
    moved = an.create_arguments({"subnet": "10.213.241.0/24"}, record)
    assert (moved["subnet"], moved["gateway"], moved["ip_range"]) == ("10.213.241.0/24", None, None)
    plan = an.plan(engine, {"name": "am-u", "subnet": "10.213.241.0/24"})
    assert plan.diff()["after"]["gateway"] == "10.213.241.1"


def test_a_record_without_nat_reads_as_nat_on(engine):
    record = made(engine)
    del record["nat"]
    assert an.actual(record, "nat") is True


def test_containers_on_a_network_block_a_remake_or_removal_unless_forced(engine):
    made(engine, members=("c1", "c2"))
    with pytest.raises(HakoError) as caught:
        an.plan(engine, {"name": "am-u", "mtu": 1400, "internal": True})
    assert str(caught.value) == (
        "network am-u must be made again to change mtu (1500 to 1400), internal (False to True), "
        "and container(s) c1, c2 are on it: set force: true to disconnect them first"
    )
    with pytest.raises(HakoError, match="in use by container\\(s\\) c1, c2: set force: true"):
        an.plan(engine, {"name": "am-u", "state": "absent"})
    forced = an.plan(engine, {"name": "am-u", "mtu": 1400, "force": True})
    assert forced.actions == ["disconnect c1", "disconnect c2", "recreate"]
    assert an.plan(engine, {"name": "am-u", "state": "absent", "force": True}).actions == [
        "disconnect c1",
        "disconnect c2",
        "remove",
    ]
    # Labels change in place, with containers on it or not.
    assert an.plan(engine, {"name": "am-u", "labels": {"x": "y"}}).actions == ["update labels"]


@pytest.mark.parametrize(
    ("params", "option", "words"),
    [
        ({"subnet": "10.213.240.0/33"}, "subnet", "'10.213.240.0/33'"),
        ({"subnet": "fd00::/64"}, "subnet", "only IPv4"),
        ({"subnet": SUBNET, "gateway": "10.213.241.1"}, "gateway", "not in the subnet"),
        ({"gateway": "nowhere"}, "gateway", "IPv4 address"),
        ({"subnet": SUBNET, "ip_range": "10.213.241.0/25"}, "ip_range", "not inside the subnet"),
        ({"ip_range": "10.213.240.5/24"}, "ip_range", "host bits"),
        ({"mtu": 10}, "mtu", "68 to 65535"),
        ({"labels": {"on": True}}, "labels", "quote it"),
        ({"internal": "yes"}, "internal", "true or false"),
    ],
)
def test_bad_options_are_named(engine, params, option, words):
    with pytest.raises(OptionError) as caught:
        an.plan(engine, {"name": "am-new", **params})
    assert caught.value.option == option
    assert str(caught.value).startswith(f"invalid value for {option}:") and words in str(caught.value)


def test_bad_names_and_overlaps_are_named(engine):
    for bad in ("none", "host", "no spaces", "../x"):
        with pytest.raises(OptionError, match="invalid value for name"):
            an.plan(engine, {"name": bad})
    made(engine)
    with pytest.raises(OptionError, match="invalid value for subnet: .*overlaps the subnet 10.213.240.0/24"):
        an.plan(engine, {"name": "am-other", "subnet": "10.213.240.128/25"})
    # Made again, a network may keep (or overlap) its own old subnet.
    assert an.plan(engine, {"name": "am-u", "subnet": "10.213.240.0/25"}).actions == ["recreate"]


def test_a_missing_pyroute2_is_a_missing_library_named(monkeypatch):
    from hako.network import netlink

    monkeypatch.setitem(sys.modules, "pyroute2", None)  # import pyroute2 -> ImportError
    with pytest.raises(MissingLibrary) as caught:
        netlink.pyroute2()
    assert caught.value.library == "pyroute2"
    assert isinstance(caught.value, HakoError) and "apt-get install python3-pyroute2" in str(caught.value)
