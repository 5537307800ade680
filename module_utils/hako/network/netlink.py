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
import os
import sys

from .. import linux
from ..errors import HakoError, MissingLibrary

_HOST = None


def pyroute2():
    """The pyroute2 package; from the system's site-packages when Python runs without them (-S)."""
    try:
        import pyroute2 as module
    except ImportError:
        import site

        for path in [*site.getsitepackages(), "/usr/lib/python3/dist-packages"]:
            if os.path.isdir(path) and path not in sys.path:
                sys.path.append(path)
        try:
            import pyroute2 as module
        except ImportError:
            raise MissingLibrary(
                "pyroute2", "networking needs pyroute2 (Debian: apt-get install python3-pyroute2)"
            ) from None
    return module


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


@contextlib.contextmanager
def inside(pid: int):
    """A netlink socket in the network namespace of process ``pid``."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(own)
        raise HakoError(f"process {pid} is gone: cannot reach its network namespace") from None
    try:
        linux.setns(target, linux.CLONE_NEWNET)
        try:
            socket = pyroute2().IPRoute()
        finally:
            linux.setns(own, linux.CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(own)
    try:
        yield socket
    finally:
        socket.close()


def lookup(ipr, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def host_interface(cid: str, index: int) -> str:
    return f"hk{cid[:10]}{index}"


# Bridges -------------------------------------------------------------------------


def ensure_bridge(network: dict) -> int:
    """The network's bridge, made (with the gateway's address) and up; its index."""
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
            ipr.link("set", index=index, mtu=network["mtu"])
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


def attach(pid: int, record: dict, networks: dict[str, dict], endpoints: list[dict] | None = None) -> None:
    """Give the container whose first process is ``pid`` its interfaces on its networks.

    ``endpoints`` (default: all of the record's) are the ones to make now.
    Each veth pair is made with its inner end already in the container's
    namespace and named (moving an interface between namespaces costs the
    kernel 15-20 ms; making it there, under a millisecond). The default
    route goes through the gateway of the first network that is not
    internal, when the container has no default route yet. On failure,
    every interface made here is removed again.
    """
    ipr = host()
    cid = record["id"]
    endpoints = record.get("networks", []) if endpoints is None else endpoints
    made = []
    try:
        pairs = []
        for endpoint in endpoints:
            network = networks[endpoint["network"]]
            bridge = ensure_bridge(network)
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
                ipr.link("set", index=lookup(ipr, outside), master=bridge, mtu=network["mtu"], state="up")
            pairs.append((endpoint, network))
        with inside(pid) as ns:
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
        if any(r.get_attr("RTA_GATEWAY") for r in ns.get_routes(family=2)):
            return
        with errors(f"default route of {record['name']} via {network['gateway']}"):
            ns.route("add", dst="0.0.0.0/0", gateway=network["gateway"])
        return


def detach(cid: str, interface: str) -> bool:
    """Remove a running container's interface (both ends of its veth); whether it was there."""
    ipr = host()
    name = host_interface(cid, int(interface[len("eth") :]))
    with errors(f"interface {name}"):
        index = lookup(ipr, name)
        if index is None:
            return False
        ipr.link("del", index=index)
    return True
