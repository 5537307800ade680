"""The kernel side of networks, through pyroute2: bridges, veth pairs, addresses, routes.

Only networked operations import this (pyroute2 costs ~0.15-0.25 s to import);
the supervisor, which starts containers, imports it once and keeps one
netlink socket. A container's side is configured through a netlink socket
opened inside its network namespace (setns on this thread, the socket, setns
back), so no helper process is forked.

Each container interface is one veth pair: ``hk<id10><n>`` on the host,
enslaved to the network's bridge, and ``eth<n>`` inside (made there
directly). When the
container's network namespace goes, the kernel removes the pair, so a
stopped or crashed container leaves no interface behind.
"""

from __future__ import annotations

import contextlib
import errno
import os

from .. import linux
from ..errors import Conflict, HakoError

_HOST = None


def pyroute2():
    """The pyroute2 package (see syslib.system_module)."""
    from ..syslib import system_module

    return system_module(
        ("pyroute2",), "pyroute2", "networking needs pyroute2 (Debian: apt-get install python3-pyroute2)"
    )


def host() -> object:
    """This process's netlink socket in the host's network namespace (made once)."""
    global _HOST
    if _HOST is None:
        _HOST = pyroute2().IPRoute()
    return _HOST


def reset() -> None:
    """Forget the host socket (after a fork, a child must not share it)."""
    global _HOST
    _HOST = None


class NetlinkFailure(HakoError):
    pass


@contextlib.contextmanager
def errors(what: str):
    """Turn pyroute2's NetlinkError into one readable line."""
    netlink_error = pyroute2().NetlinkError
    try:
        yield
    except netlink_error as e:
        code = e.code if hasattr(e, "code") else e.args[0]
        raise NetlinkFailure(f"{what}: {os.strerror(code) if isinstance(code, int) else e}") from None


def _open_inside(pid: int):
    """A new netlink socket in the network namespace of process ``pid`` (setns there and back)."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(own)
        raise HakoError(f"process {pid} is gone: cannot reach its network namespace") from None
    try:
        linux.setns(target, linux.CLONE_NEWNET)
        try:
            return pyroute2().IPRoute()
        finally:
            linux.setns(own, linux.CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(own)


@contextlib.contextmanager
def inside(pid: int, ns=None):
    """A netlink socket in the network namespace of process ``pid`` (``ns`` if one is given)."""
    if ns is not None:
        yield ns
        return
    socket = _open_inside(pid)
    try:
        yield socket
    finally:
        socket.close()


class Sockets:
    """Netlink sockets in containers' network namespaces, one per namespace, for one batch of work.

    Wiring a lab touches most namespaces several times (a router has a link
    to each neighbour); each socket is opened once and all close together.
    """

    def __init__(self) -> None:
        self._by_pid: dict[int, object] = {}

    def get(self, pid: int):
        socket = self._by_pid.get(pid)
        if socket is None:
            socket = self._by_pid[pid] = _open_inside(pid)
        return socket

    def close(self) -> None:
        for socket in self._by_pid.values():
            with contextlib.suppress(Exception):
                socket.close()
        self._by_pid.clear()

    def __enter__(self) -> Sockets:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def lookup(ipr, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def host_interface(cid: str, index: int) -> str:
    return f"hk{cid[:10]}{index}"


# Bridges -------------------------------------------------------------------------


def ensure_bridge(network: dict, owner: str | None = None) -> int:
    """The network's bridge, made (with the gateway's address) and up; its index.

    ``owner`` goes in the alias of a bridge made here: which hako state it
    belongs to (what `hako system prune` checks before removing one).
    """
    ipr = host()
    name = network["bridge"]
    prefix = int(network["subnet"].split("/")[1])
    with errors(f"bridge {name} of network {network['name']}"):
        index = lookup(ipr, name)
        if index is None:
            try:
                ipr.link("add", ifname=name, kind="bridge")
            except pyroute2().NetlinkError as e:
                if getattr(e, "code", None) != 17:  # EEXIST: made meanwhile
                    raise
            index = lookup(ipr, name)
            ipr.link("set", index=index, mtu=network["mtu"], **({"ifalias": owner} if owner else {}))
        addresses = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=2)}
        if network["gateway"] not in addresses:
            try:
                ipr.addr("add", index=index, address=network["gateway"], prefixlen=prefix)
            except pyroute2().NetlinkError as e:
                if getattr(e, "code", None) != 17:
                    raise
        ipr.link("set", index=index, state="up")
    return index


def remove_bridge(network: dict) -> bool:
    """Delete the network's bridge if it is there; whether it was."""
    ipr = host()
    with errors(f"bridge {network['bridge']}"):
        index = lookup(ipr, network["bridge"])
        if index is None:
            return False
        ipr.link("del", index=index)
    return True


# Containers ----------------------------------------------------------------------


def attach(
    pid: int,
    record: dict,
    networks: dict[str, dict],
    endpoints: list[dict] | None = None,
    ns=None,
    owner: str | None = None,
) -> None:
    """Give the container whose first process is ``pid`` its interfaces on its networks.

    ``endpoints`` (default: all of the record's) are the ones to make now.
    Each veth pair is made with its inner end already in the container's
    namespace and named (moving an interface between namespaces costs the
    kernel 15-20 ms; making it there, under a millisecond). The default
    route goes through the gateway of the first network that is not
    internal, when the container has no default route yet. On failure,
    every interface made here is removed again. ``ns``, if given, is a
    netlink socket already open in the container's network namespace.
    ``owner`` goes in the alias of the host-side interfaces (see
    ensure_bridge).
    """
    ipr = host()
    cid = record["id"]
    endpoints = record.get("networks", []) if endpoints is None else endpoints
    made = []
    try:
        pairs = []
        for endpoint in endpoints:
            network = networks[endpoint["network"]]
            bridge = ensure_bridge(network, owner)
            outside = host_interface(cid, int(endpoint["interface"][len("eth") :]))
            with errors(f"veth for {record['name']} on network {network['name']}"):
                peer = {"ifname": endpoint["interface"], "net_ns_pid": pid}
                try:
                    ipr.link("add", ifname=outside, kind="veth", peer=peer)
                except pyroute2().NetlinkError as e:
                    if getattr(e, "code", None) != 17:  # EEXIST: left by a crash at just the wrong moment
                        raise
                    ipr.link("del", index=lookup(ipr, outside))
                    ipr.link("add", ifname=outside, kind="veth", peer=peer)
                made.append(outside)
                alias = {"ifalias": owner} if owner else {}
                ipr.link(
                    "set", index=lookup(ipr, outside), master=bridge, mtu=network["mtu"], state="up", **alias
                )
            pairs.append((endpoint, network))
        with inside(pid, ns) as ns:
            for endpoint, network in pairs:
                with errors(f"{endpoint['interface']} of {record['name']}"):
                    index = lookup(ns, endpoint["interface"])
                    prefix = int(network["subnet"].split("/")[1])
                    ns.link("set", index=index, mtu=network["mtu"])
                    ns.addr("add", index=index, address=endpoint["ip"], prefixlen=prefix)
                    ns.link("set", index=index, state="up")
            _default_route(ns, record, pairs)
    except BaseException:
        for name in made:
            with contextlib.suppress(Exception):
                index = lookup(ipr, name)
                if index is not None:
                    ipr.link("del", index=index)
        raise


def _default_route(ns, record: dict, pairs: list[tuple[dict, dict]]) -> None:
    for _endpoint, network in pairs:
        if network.get("internal"):
            continue
        if any(r["dst_len"] == 0 and r.get_attr("RTA_GATEWAY") for r in ns.get_routes(family=2)):
            return
        with errors(f"default route of {record['name']} via {network['gateway']}"):
            ns.route("add", dst="0.0.0.0/0", gateway=network["gateway"])
        return


def detach(cid: str, interface: str) -> bool:
    """Remove a running container's interface (both ends of its veth); whether it was there."""
    return remove_interface(host(), host_interface(cid, int(interface[len("eth") :])))


# Links between containers ------------------------------------------------------


def make_link(sockets: Sockets, link: dict, pids: list[int], replace: bool = True) -> None:
    """Make ``link`` (a record of links.py) between the network namespaces of ``pids`` (one per end).

    One netlink request makes the veth pair with each end already in its
    container's namespace and named (no interface is ever on the host, and
    none is moved: a move waits for an RCU grace period). An interface of
    the same name already there is, with ``replace``, a stale end of this
    link and removed first; without, it is refused. Then each end gets its
    address and MTU, goes up, gets its shape, and its routes through the
    other end's address. On failure the pair is removed again.
    """
    from .links import end_label

    ends = link["ends"]
    sockets_of = [sockets.get(pid) for pid in pids]
    what = f"link {end_label(ends[0])} {end_label(ends[1])}"
    with errors(what):
        for ns, end in zip(sockets_of, ends):
            stale = lookup(ns, end["interface"])
            if stale is not None and not replace:
                raise Conflict(
                    f"container {end['name']} already has an interface {end['interface']} (made inside)"
                )
            if stale is not None:
                ns.link("del", index=stale)
        peer = {"ifname": ends[1]["interface"], "net_ns_pid": pids[1]}
        if ends[1]["mtu"]:
            peer["mtu"] = ends[1]["mtu"]
        mtu = {"mtu": ends[0]["mtu"]} if ends[0]["mtu"] else {}
        sockets_of[0].link("add", ifname=ends[0]["interface"], kind="veth", peer=peer, **mtu)
    try:
        indexes = []
        for ns, end in zip(sockets_of, ends):
            with errors(f"{what}: {end_label(end)}"):
                index = lookup(ns, end["interface"])
                if end["address"]:
                    address, prefix = end["address"].split("/")
                    ns.addr("add", index=index, address=address, prefixlen=int(prefix))
                ns.link("set", index=index, state="up")
            indexes.append(index)
        for ns, index, end, other in zip(sockets_of, indexes, ends, reversed(ends)):
            if end.get("shape"):
                apply_shape(ns, index, end["shape"], end_label(end))
            for route in end.get("routes", []):
                gateway = other["address"].split("/")[0]
                with errors(f"{what}: route {route} via {gateway} in {end['name']}"):
                    ns.route(
                        "replace",
                        dst="0.0.0.0/0" if route == "default" else route,
                        gateway=gateway,
                        oif=index,
                    )
    except BaseException:
        with contextlib.suppress(Exception):
            remove_interface(sockets_of[0], ends[0]["interface"])
        raise


def remove_interface(ns, name: str) -> bool:
    """Delete interface ``name`` (a veth's other end goes with it) where socket ``ns`` is; whether it was."""
    with errors(f"interface {name}"):
        index = lookup(ns, name)
        if index is None:
            return False
        ns.link("del", index=index)
    return True


# Shaping -----------------------------------------------------------------------

TC_ROOT = 0xFFFFFFFF
# How long a packet may wait in a token bucket before it is dropped.
TBF_LATENCY_US = 50_000
NO_NETEM = "shape: this kernel has no netem qdisc (delay, jitter and loss need it); --rate works"
_NETEM: bool | None = None


def has_netem() -> bool:
    """Whether the kernel has the netem qdisc, tried on the loopback of a network namespace made for it."""
    global _NETEM
    if _NETEM is None:
        own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            linux.unshare(linux.CLONE_NEWNET)  # this thread only; the namespace goes with the socket
            try:
                probe = pyroute2().IPRoute()
            finally:
                linux.setns(own, linux.CLONE_NEWNET)
        finally:
            os.close(own)
        try:
            probe.tc("add", "netem", lookup(probe, "lo"), delay=1000)
            _NETEM = True
        except pyroute2().NetlinkError as e:
            if getattr(e, "code", None) not in (errno.ENOENT, errno.EINVAL, errno.EOPNOTSUPP):
                raise NetlinkFailure(f"netem: {os.strerror(e.code)}") from None
            _NETEM = False
        finally:
            probe.close()
    return _NETEM


def apply_shape(ns, index: int, shape: dict | None, what: str) -> None:
    """Give interface ``index`` (in the namespace of socket ``ns``) the root qdisc of ``shape``.

    A rate alone is a token bucket (tbf); delay, jitter or loss make it
    netem, which also takes the rate. The qdisc replaces the interface's
    root qdisc in one request, so a refusal leaves the old one in place.
    ``shape`` None or empty removes it (back to the kernel's default).
    """
    from .shaping import default_burst, needs_netem

    if not shape:
        clear_shape(ns, index, what)
        return
    if needs_netem(shape):
        kind = "netem"
        params = {
            "delay": shape.get("delay", 0),
            "jitter": shape.get("jitter", 0),
            "loss": shape.get("loss", 0),
        }
        if "rate" in shape:
            params["rate"] = shape["rate"]
    else:
        kind = "tbf"
        mtu = ns.get_links(index)[0].get_attr("IFLA_MTU")
        burst = shape.get("burst") or default_burst(shape["rate"], mtu)
        params = {"rate": shape["rate"], "burst": burst, "latency": TBF_LATENCY_US}
    try:
        ns.tc("replace", kind, index, **params)
    except pyroute2().NetlinkError as e:
        code = getattr(e, "code", None)
        if kind == "netem" and code in (errno.ENOENT, errno.EOPNOTSUPP):
            raise NetlinkFailure(NO_NETEM) from None
        raise NetlinkFailure(
            f"shape of {what}: {os.strerror(code) if isinstance(code, int) else e}"
        ) from None


def clear_shape(ns, index: int, what: str) -> None:
    """Remove the interface's root qdisc, if it has one of its own."""
    try:
        ns.tc("del", index=index, parent=TC_ROOT)
    except pyroute2().NetlinkError as e:
        if getattr(e, "code", None) not in (errno.ENOENT, errno.EINVAL):  # none to remove
            raise NetlinkFailure(f"shape of {what}: {os.strerror(e.code)}") from None


def root_qdisc(ns, index: int) -> str | None:
    """The kind of the interface's root qdisc (None for the kernel's default)."""
    for qdisc in ns.get_qdiscs(index=index):
        if qdisc["parent"] == TC_ROOT and qdisc["handle"]:
            return qdisc.get_attr("TCA_KIND")
    return None
