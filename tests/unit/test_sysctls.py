"""--sysctl: net.* keys only, known to this kernel; their files; interfaces they name."""

from __future__ import annotations

import pytest
from hako.errors import InvalidValue
from hako.network import sysctls


def test_key_value_pairs_become_a_mapping() -> None:
    assert sysctls.parse(["net.ipv4.ip_forward=1", "net.ipv4.ping_group_range=0 100"]) == {
        "net.ipv4.ip_forward": "1",
        "net.ipv4.ping_group_range": "0 100",
    }
    assert sysctls.parse({"net.ipv4.ip_forward": 1}) == {"net.ipv4.ip_forward": "1"}
    # An interface's settings are checked against "all": the interface comes later.
    assert sysctls.parse(["net.ipv4.conf.eth1.rp_filter=2"]) == {"net.ipv4.conf.eth1.rp_filter": "2"}


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("kernel.shmmax=1", "only net.* keys"),
        ("vm.swappiness=10", "only net.* keys"),
        ("net.ipv4.ip_forward", "KEY=VALUE"),
        ("net.ipv4.ip_forward=", "one line"),
        ("net.ipv4.no_such_setting=1", "no such setting"),
        ("net.ipv4.conf.eth1.no_such=1", "no such setting"),
        ("net..ipv4=1", "not a sysctl name"),
        ("net.ipv4.conf.eth1/../..=1", "not a sysctl name"),
        ("net/ipv4/ip_forward=1", "only net.* keys"),
        ("net.ipv4.ip forward=1", "only net.* keys"),
    ],
)
def test_other_keys_are_refused_naming_them(entry, why) -> None:
    with pytest.raises(InvalidValue) as caught:
        sysctls.parse([entry])
    assert caught.value.field == "sysctl" and why in str(caught.value)


@pytest.mark.parametrize(
    ("key", "path", "interface"),
    [
        ("net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward", None),
        ("net.ipv4.conf.all.forwarding", "/proc/sys/net/ipv4/conf/all/forwarding", None),
        ("net.ipv4.conf.eth1.rp_filter", "/proc/sys/net/ipv4/conf/eth1/rp_filter", "eth1"),
        ("net.ipv6.conf.eth0/100.disable_ipv6", "/proc/sys/net/ipv6/conf/eth0.100/disable_ipv6", "eth0.100"),
        ("net.ipv4.neigh.eth2.gc_stale_time", "/proc/sys/net/ipv4/neigh/eth2/gc_stale_time", "eth2"),
        ("net.ipv4.neigh.default.gc_thresh1", "/proc/sys/net/ipv4/neigh/default/gc_thresh1", None),
    ],
)
def test_a_key_names_its_file_and_its_interface(key, path, interface) -> None:
    assert sysctls.path_of(key) == path
    assert sysctls.interface_of(key) == interface


@pytest.mark.parametrize(
    ("kept", "value", "same"),
    [
        ("1\n", "1", True),
        ("0\t100\n", "0 100", True),
        ("1\n", "01", True),
        ("0\n", "1", False),
        ("a b", "a", False),
    ],
)
def test_a_value_read_back_is_compared_as_the_kernel_prints_it(kept, value, same) -> None:
    assert sysctls._same(kept, value) is same
