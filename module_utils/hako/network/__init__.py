"""Bridge networks: their records, and the addresses containers hold on them.

A network is a record in ``$HAKO_ROOT/networks/<name>.json``: its subnet,
gateway, optional allocation range, MTU, bridge device, and its endpoints,
one per container attached (the container's address, name and aliases). The
endpoints live in the network's own record and change only under the store's
lock, so addresses never collide, also across concurrent `hako run`s, and
survive restarts and reboots: a container keeps its address from create to
removal. The kernel side (bridge, veths, addresses, routes) is in netlink.py;
this module imports no netlink library, so `hako run --network none` pays
nothing for networking.
"""

from __future__ import annotations

import os
import time

from .. import store
from ..errors import Conflict, InvalidValue, NotFound

# Values of --network that are no network's name.
RESERVED = ("none", "host", "private", "bridge", "default")
DEFAULT_NETWORK = "hako"
DEFAULT_BRIDGE = "hako0"
DEFAULT_MTU = 1500
INTERFACE_PREFIX = "eth"


def validate_network_name(name) -> str:
    from ..options import validate_name

    try:
        validate_name(name)
    except InvalidValue:
        raise InvalidValue(
            "network", name, "use letters, digits, '_', '.' and '-', starting with a letter or digit"
        ) from None
    if name in RESERVED or len(name) > 64:
        raise InvalidValue("network", name, f"reserved or too long (not {', '.join(RESERVED)}; 64 at most)")
    return name


class Networks:
    """The bridge networks of one hako state directory."""

    def __init__(self, root: str | None = None) -> None:
        self.dir = os.path.join(root or store.root_dir(), "networks")

    def is_hosts(self) -> bool:
        """Whether this is the host's own state directory (/var/lib/hako), not a private one."""
        return os.path.dirname(self.dir) == "/var/lib/hako"

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, f"{name}.json")

    def lock(self):
        os.makedirs(self.dir, exist_ok=True)
        return store.locked(os.path.join(self.dir, ".lock"))

    # Reading -----------------------------------------------------------------
    def get(self, name: str) -> dict:
        record = store.read_json(self._path(validate_network_name(name)))
        if record is None:
            raise NotFound(f"no such network: {name}")
        return record

    def exists(self, name: str) -> bool:
        return os.path.exists(self._path(name))

    def list(self) -> list[dict]:
        try:
            names = sorted(
                n[:-5] for n in os.listdir(self.dir) if n.endswith(".json") and not n.startswith(".")
            )
        except FileNotFoundError:
            return []
        records = [store.read_json(self._path(n)) for n in names]
        return [r for r in records if r is not None]

    def _save(self, record: dict) -> None:
        store.write_json(self._path(record["name"]), record)

    # Networks ----------------------------------------------------------------
    def create(self, name: str, **options) -> dict:
        """Make a network's record (the bridge is made when a container first needs it).

        ``options`` are those of ``_new_record``: subnet, gateway, ip_range,
        mtu, internal, labels, nat.
        """
        validate_network_name(name)
        with self.lock():
            if self.exists(name):
                raise Conflict(f"network {name} already exists")
            record = self._new_record(name, self.list(), **options)
            self._save(record)
        return record

    def check_new(self, name: str, replacing: bool = False, **options) -> dict:
        """The record ``create`` would make now with ``options``, without making it.

        Raises InvalidValue or Conflict as ``create`` would. With ``replacing``,
        as if the network ``name`` were already gone: its subnet is free, and
        the route its bridge may still have is its own.
        """
        validate_network_name(name)
        records = self.list()
        others = [r for r in records if r["name"] != name]
        if not replacing and len(others) != len(records):
            raise Conflict(f"network {name} already exists")
        return self._new_record(name, others, routed=records, **options)

    def _new_record(
        self,
        name: str,
        others: list,
        routed: list | None = None,
        *,
        subnet=None,
        gateway=None,
        ip_range=None,
        mtu=None,
        internal=False,
        labels=None,
        nat=True,
    ) -> dict:
        """A new network's record, checked against the ``others`` (and the host's routes but ``routed``'s)."""
        from . import ipam

        taken = [ipam.parse_subnet(r["subnet"]) for r in others]
        ours = [ipam.parse_subnet(r["subnet"]) for r in (others if routed is None else routed)]
        if subnet:
            net = ipam.parse_subnet(subnet)
            clash = ipam.overlaps(net, taken)
            if clash is not None:
                raise InvalidValue("subnet", subnet, f"overlaps the subnet {clash} of another hako network")
            route = ipam.overlaps(net, _host_networks(ours))
            if route is not None:
                raise InvalidValue("subnet", subnet, f"overlaps {route}, which the host routes to")
        else:
            net = ipam.pick_subnet(taken + _host_networks(ours))
        gw = ipam.parse_address("gateway", gateway, net) if gateway else ipam.default_gateway(net)
        span = ipam.parse_range(ip_range, net) if ip_range else None
        nid = os.urandom(32).hex()
        return {
            "id": nid,
            "name": name,
            "driver": "bridge",
            # hako0 for the host's own default network; another state
            # directory's (a test's, a benchmark's) must not take it.
            "bridge": DEFAULT_BRIDGE if name == DEFAULT_NETWORK and self.is_hosts() else f"hk-{nid[:10]}",
            "subnet": str(net),
            "gateway": str(gw),
            "ip_range": str(span) if span else None,
            "mtu": ipam.parse_mtu(mtu) if mtu not in (None, "") else DEFAULT_MTU,
            "internal": bool(internal),
            # Containers reach beyond the host through it (masquerading); a
            # record from before the field existed reads as true.
            "nat": bool(nat),
            "labels": dict(labels or {}),
            "created": time.time(),
            "endpoints": {},
        }

    def update_labels(self, name: str, labels: dict) -> dict:
        """Set these labels on a network (others it has are kept); its record."""
        with self.lock():
            record = self.get(name)
            record["labels"].update(labels)
            self._save(record)
        return record

    def remove(self, name: str, force: bool = False) -> dict:
        """Remove a network's record; refused while containers are attached, unless ``force``.

        Returns the record as it was (the caller removes the bridge and
        detaches the containers it listed).
        """
        with self.lock():
            record = self.get(name)
            if record["endpoints"] and not force:
                names = sorted(e["name"] for e in record["endpoints"].values())
                raise Conflict(f"network {name} is in use by container(s) {', '.join(names)}")
            os.unlink(self._path(name))
        return record

    # Endpoints ---------------------------------------------------------------
    def allocate(self, name: str, cid: str, cname: str, ip: str | None = None, aliases=()) -> dict:
        """Give container ``cid`` an address on network ``name`` (``ip`` if free); the endpoint."""
        from . import ipam

        with self.lock():
            record = self.get(name)
            if cid in record["endpoints"]:
                raise Conflict(f"container {cname} is already on network {name}")
            net = ipam.parse_subnet(record["subnet"])
            held = {e["ip"]: e["name"] for e in record["endpoints"].values()}
            if ip:
                address = ipam.parse_address("ip", ip, net)
                if str(address) == record["gateway"]:
                    raise InvalidValue("ip", ip, f"the gateway of network {name}")
                if str(address) in held:
                    raise Conflict(
                        f"address {address} on network {name} is in use by container {held[str(address)]}"
                    )
            else:
                span = ipam.parse_subnet(record["ip_range"]) if record["ip_range"] else None
                address = ipam.next_free(net, ipam.parse_address("gateway", record["gateway"]), span, held)
            endpoint = {"ip": str(address), "name": cname, "aliases": list(aliases)}
            record["endpoints"][cid] = endpoint
            self._save(record)
        return endpoint

    def release(self, cid: str, names=None) -> list[str]:
        """Take container ``cid`` off the named networks (all by default); the networks it left."""
        left = []
        with self.lock():
            for record in self.list():
                if (names is None or record["name"] in names) and cid in record["endpoints"]:
                    del record["endpoints"][cid]
                    self._save(record)
                    left.append(record["name"])
        return left

    def ensure_default(self) -> dict:
        """The default network, made on first use."""
        try:
            return self.get(DEFAULT_NETWORK)
        except NotFound:
            try:
                return self.create(DEFAULT_NETWORK)
            except Conflict:  # made meanwhile
                return self.get(DEFAULT_NETWORK)


def _host_networks(ours) -> list:
    """The host's routed networks, less the ones hako's own bridges route."""
    from . import ipam

    return [route for route in ipam.host_routes() if route not in ours]


def document(record: dict) -> dict:
    """A network as `hako network inspect` shows it (Docker's field names)."""
    from ..engine import _iso

    prefix = record["subnet"].split("/")[1]
    return {
        "Name": record["name"],
        "Id": record["id"],
        "Created": _iso(record["created"]),
        "Driver": record["driver"],
        "IPAM": {
            "Config": [
                {"Subnet": record["subnet"], "Gateway": record["gateway"], "IPRange": record["ip_range"]}
            ]
        },
        "Internal": record["internal"],
        "Options": {
            "bridge": record["bridge"],
            "mtu": str(record["mtu"]),
            "nat": str(bool(record.get("nat", True)) and not record["internal"]).lower(),
        },
        "Labels": record["labels"],
        "Containers": {
            cid: {"Name": e["name"], "IPv4Address": f"{e['ip']}/{prefix}", "Aliases": e.get("aliases", [])}
            for cid, e in sorted(record["endpoints"].items())
        },
    }


def interface_name(index: int) -> str:
    return f"{INTERFACE_PREFIX}{index}"
