"""Links between two containers: their records, kept from `hako link` to `hako link rm`.

A link is a point-to-point veth pair whose two ends are interfaces inside
two containers (containerlab's links: router to router, host to switch).
Its record says, for each end, the container, the interface's name inside,
and optionally an address (CIDR), an MTU, routes through the other end, and
a shape (see shaping.py)::

    {"id": "3f1c0a9e2b7d", "created": 1700000000.0,
     "ends": [{"container": ID, "name": "r1", "interface": "eth1",
               "address": "10.214.1.1/30", "mtu": 1500, "routes": ["10.214.2.0/30"],
               "shape": {"rate": 1250000}},
              {...}]}

All links live in one file, ``$HAKO_ROOT/links.json``, changed only under
``$HAKO_ROOT/.links.lock``: a container's start reads one file to find its
links, and a lab of many links is one read. The kernel side (the veth pair
made between two network namespaces) is in netlink.py; this module imports
no netlink library.
"""

from __future__ import annotations

import os
import time

from .. import store, text
from ..errors import InvalidValue, NotFound

LINKS_FILE = "links.json"
LOCK_FILE = ".links.lock"
MAX_INTERFACE_NAME = 15  # IFNAMSIZ - 1
RESERVED_INTERFACES = ("lo", "all", "default")
_INTERFACE_CHARS = text.ALNUM | {"_", "-", "."}


def parse_end(field: str, value: str) -> tuple[str, str]:
    """CONTAINER:INTERFACE -> (container, interface), both checked for form."""
    container, colon, interface = str(value).partition(":")
    if not colon or not container or not interface:
        raise InvalidValue(field, value, "expected CONTAINER:INTERFACE, such as r1:eth1")
    return container, validate_interface(field, value, interface)


def validate_interface(field: str, value: str, name: str) -> str:
    """An interface name the kernel takes: 1-15 letters, digits, '_', '-', '.'; not lo."""
    if (
        not text.made_of(name, _INTERFACE_CHARS, first=text.ALNUM, max_len=MAX_INTERFACE_NAME)
        or name in RESERVED_INTERFACES
    ):
        raise InvalidValue(
            field,
            value,
            f"an interface name is 1 to {MAX_INTERFACE_NAME} letters, digits, '_', '-' or '.', "
            "starting with a letter or digit, and not lo",
        )
    return name


def parse_address(field: str, value: str) -> str:
    """An IPv4 address with its prefix (10.214.1.1/30), usable by a host."""
    import ipaddress

    try:
        address = ipaddress.ip_interface(str(value))
    except ValueError:
        raise InvalidValue(
            field, value, "expected an IPv4 address with its prefix, such as 10.214.1.1/30"
        ) from None
    if address.version != 4:
        raise InvalidValue(field, value, "only IPv4 addresses are supported")
    if "/" not in str(value):
        raise InvalidValue(field, value, "give the prefix length too, such as 10.214.1.1/30")
    net = address.network
    if net.prefixlen < 31 and address.ip in (net.network_address, net.broadcast_address):
        raise InvalidValue(field, value, f"the network or broadcast address of {net}")
    return str(address)


def parse_route(field: str, value: str) -> str:
    """A destination to route through a link's other end: default or a network (10.214.2.0/30)."""
    import ipaddress

    if value in ("default", "0.0.0.0/0"):
        return "default"
    try:
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError as e:
        raise InvalidValue(field, value, str(e).replace("'", "")) from None
    if net.version != 4:
        raise InvalidValue(field, value, "only IPv4 destinations are supported")
    return str(net)


def new_end(
    side: str,
    cid: str,
    name: str,
    interface: str,
    address: str | None = None,
    mtu=None,
    routes=(),
    shape: dict | None = None,
) -> dict:
    """End ``side`` ("a" or "b") of a link, its values checked (errors name --ip-a, --route-b...)."""
    from .ipam import parse_mtu

    return {
        "container": cid,
        "name": name,
        "interface": validate_interface("link", f"{name}:{interface}", interface),
        "address": parse_address(f"ip-{side}", address) if address else None,
        "mtu": parse_mtu(mtu) if mtu not in (None, "") else None,
        "routes": [parse_route(f"route-{side}", r) for r in routes],
        "shape": dict(shape) if shape else None,
    }


def new_link(a: dict, b: dict) -> dict:
    """A link record of two ends (see new_end), checked as a pair."""
    import ipaddress

    if a["container"] == b["container"] and a["interface"] == b["interface"]:
        raise InvalidValue("link", f"{a['name']}:{a['interface']}", "both ends are the same interface")
    if a["address"] and b["address"]:
        first, second = ipaddress.ip_interface(a["address"]), ipaddress.ip_interface(b["address"])
        if first.ip == second.ip:
            raise InvalidValue("ip-b", b["address"], "the same address as the other end")
        if first.network != second.network:
            raise InvalidValue("ip-b", b["address"], f"not in the subnet {first.network} of the other end")
    for end, other, field in ((a, b, "route-a"), (b, a, "route-b")):
        if end["routes"] and not other["address"]:
            raise InvalidValue(field, end["routes"][0], "routes go through the other end: give it an address")
    return {"id": os.urandom(6).hex(), "created": time.time(), "ends": [a, b]}


def peer_of(link: dict, index: int) -> dict:
    return link["ends"][1 - index]


def end_label(end: dict) -> str:
    return f"{end['name']}:{end['interface']}"


class Links:
    """The links of one hako state directory.

    ``load`` and ``save`` read and replace the whole list; a caller that
    changes it holds ``lock()`` from its load to its save.
    """

    def __init__(self, root: str | None = None) -> None:
        self.root = root or store.root_dir()
        self.path = os.path.join(self.root, LINKS_FILE)

    def lock(self):
        os.makedirs(self.root, exist_ok=True)
        return store.locked(os.path.join(self.root, LOCK_FILE))

    def load(self) -> list[dict]:
        document = store.read_json(self.path)
        return list(document["links"]) if document else []

    def save(self, links: list[dict]) -> None:
        store.write_json(self.path, {"links": links})

    # Queries (over a loaded list) ------------------------------------------------
    @staticmethod
    def of_container(links: list[dict], cid: str) -> list[dict]:
        return [link for link in links if any(end["container"] == cid for end in link["ends"])]

    @staticmethod
    def interfaces(links: list[dict], cid: str) -> set[str]:
        """The interface names container ``cid`` has from links."""
        return {end["interface"] for link in links for end in link["ends"] if end["container"] == cid}

    @staticmethod
    def find(links: list[dict], cid: str, interface: str) -> tuple[dict, int] | None:
        """The link that has ``interface`` of container ``cid`` as an end, and which end it is."""
        for link in links:
            for index, end in enumerate(link["ends"]):
                if end["container"] == cid and end["interface"] == interface:
                    return link, index
        return None

    def get(self, links: list[dict], cid: str, interface: str, label: str) -> tuple[dict, int]:
        found = self.find(links, cid, interface)
        if found is None:
            raise NotFound(f"no link at {label}")
        return found

    # Changes -----------------------------------------------------------------------
    def forget_container(self, cid: str) -> list[dict]:
        """Remove every link of container ``cid`` (it is being removed); the links removed."""
        if not os.path.exists(self.path):
            return []
        with self.lock():
            links = self.load()
            gone = self.of_container(links, cid)
            if gone:
                self.save([link for link in links if link not in gone])
        return gone
