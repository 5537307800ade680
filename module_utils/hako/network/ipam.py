"""Address management for bridge networks: subnets, gateways, ranges, free addresses.

Pure functions over ``ipaddress`` objects and plain records; the callers hold
the network store's lock, so two allocations never see the same free address.
"""

from __future__ import annotations

import ipaddress

from ..errors import InvalidValue

# Where `hako network create` without --subnet takes a /24 from.
POOL = ipaddress.ip_network("10.213.0.0/16")
POOL_PREFIX = 24
MIN_MTU, MAX_MTU = 68, 65535


def parse_network(field: str, text: str, what: str = "subnets") -> ipaddress.IPv4Network:
    """An IPv4 network in CIDR form; errors name ``field`` (and say that only IPv4 ``what`` are supported)."""
    try:
        network = ipaddress.ip_network(str(text), strict=True)
    except ValueError as e:
        raise InvalidValue(field, text, str(e).replace("'", "")) from None
    if network.version != 4:
        raise InvalidValue(field, text, f"only IPv4 {what} are supported")
    return network


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    """An IPv4 subnet in CIDR form with room for a gateway and hosts (/30 or larger)."""
    subnet = parse_network("subnet", text)
    if subnet.prefixlen > 30:
        raise InvalidValue("subnet", text, "too small: at most /30")
    return subnet


def parse_address(
    field: str, text: str, subnet: ipaddress.IPv4Network | None = None
) -> ipaddress.IPv4Address:
    """An IPv4 address (inside ``subnet`` and usable by a host, when given)."""
    try:
        address = ipaddress.ip_address(str(text))
    except ValueError:
        raise InvalidValue(field, text, "expected an IPv4 address such as 10.213.1.10") from None
    if address.version != 4:
        raise InvalidValue(field, text, "only IPv4 addresses are supported")
    if subnet is not None:
        if address not in subnet:
            raise InvalidValue(field, text, f"not in the subnet {subnet}")
        if address in (subnet.network_address, subnet.broadcast_address):
            raise InvalidValue(field, text, f"the network or broadcast address of {subnet}")
    return address


def parse_range(text: str, subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    try:
        ip_range = ipaddress.ip_network(str(text), strict=True)
    except ValueError as e:
        raise InvalidValue("ip-range", text, str(e).replace("'", "")) from None
    if ip_range.version != 4 or not ip_range.subnet_of(subnet):
        raise InvalidValue("ip-range", text, f"not inside the subnet {subnet}")
    return ip_range


def parse_mtu(value) -> int:
    try:
        mtu = int(str(value))
    except ValueError:
        raise InvalidValue("mtu", value, "expected a number of bytes") from None
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise InvalidValue("mtu", value, f"expected {MIN_MTU} to {MAX_MTU}")
    return mtu


def overlaps(subnet: ipaddress.IPv4Network, others) -> ipaddress.IPv4Network | None:
    """The first of ``others`` that ``subnet`` overlaps, or None."""
    for other in others:
        if subnet.overlaps(other):
            return other
    return None


def pick_subnet(
    taken, pool: ipaddress.IPv4Network = POOL, prefix: int = POOL_PREFIX
) -> ipaddress.IPv4Network:
    """The first /``prefix`` of ``pool`` that overlaps nothing in ``taken``."""
    taken = list(taken)
    for candidate in pool.subnets(new_prefix=prefix):
        if overlaps(candidate, taken) is None:
            return candidate
    raise InvalidValue("subnet", "", f"no free /{prefix} left in {pool}: give one with --subnet")


def default_gateway(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    return subnet.network_address + 1


def next_free(
    subnet: ipaddress.IPv4Network,
    gateway: ipaddress.IPv4Address,
    ip_range: ipaddress.IPv4Network | None,
    allocated,
) -> ipaddress.IPv4Address:
    """The lowest usable address of the range (or subnet) that is neither the gateway nor allocated."""
    used = {ipaddress.ip_address(a) for a in allocated}
    used.add(gateway)
    for address in (ip_range or subnet).hosts():
        if address not in used and address != subnet.broadcast_address:
            return address
    raise InvalidValue("network", str(subnet), "no free address left")


def host_routes(path: str = "/proc/net/route") -> list[ipaddress.IPv4Network]:
    """The IPv4 networks the host routes to directly or through a gateway (not the default route)."""
    networks = []
    try:
        with open(path) as f:
            rows = f.read().splitlines()[1:]
    except OSError:
        return networks
    for row in rows:
        fields = row.split()
        if len(fields) < 8:
            continue
        destination, mask = _hex_address(fields[1]), _hex_address(fields[7])
        if mask == "0.0.0.0":
            continue
        try:
            networks.append(ipaddress.ip_network(f"{destination}/{mask}", strict=False))
        except ValueError:
            continue
    return networks


def _hex_address(field: str) -> str:
    """An address as /proc/net/route prints it (hex, little-endian) in dotted form."""
    value = int(field, 16)
    return ".".join(str((value >> shift) & 0xFF) for shift in (0, 8, 16, 24))
