"""Links between containers, shaping and sysctls, as the engine does them: records, locks, wiring.

A link's record (network/links.py) lives from `hako link` to `hako link rm`
or the removal of either container. Its veth pair exists while both
containers run: made at once when both already do, otherwise by whichever
starts second. When either stops, its network namespace goes and the kernel
removes the pair; the next start makes it again, with its addresses,
routes and shape, so a lab survives a node's restart.

Locks: a container's lock, then the links lock (``Links.lock``), never the
other way round. A start holds its container's lock and takes the links
lock to wire its links, after its run-state is written; `hako link` holds
both containers' locks and the links lock. So whichever of a start and a
`hako link` comes second sees the other: no link is left unmade, and one
made twice is replaced (the second making removes the first).
"""

from __future__ import annotations

import contextlib
import os

from ..errors import Conflict, HakoError, NotFound


def _links(engine):
    from ..network.links import Links

    return Links(engine.root)


def has_links(engine, cid: str) -> bool:
    """Whether container ``cid`` is an end of some link (one read; no lock)."""
    from .. import store

    document = store.read_json(os.path.join(engine.root, "links.json"))
    return bool(document) and any(
        end["container"] == cid for link in document["links"] for end in link["ends"]
    )


def link_interfaces(engine, cid: str) -> set[str]:
    """The interface names container ``cid`` has from links."""
    links = _links(engine)
    return links.interfaces(links.load(), cid)


def _private_netns(record: dict) -> None:
    mode = record["namespaces"]["network"]
    if mode != "private":
        raise Conflict(f"container {record['name']} uses the network namespace {mode}: it cannot have links")


# Create ---------------------------------------------------------------------------


def create_links(engine, specs: list[dict]) -> list[dict]:
    """Make links; each spec: a, b ("CONTAINER:IF"), ip_a, ip_b, mtu, rate, routes_a, routes_b.

    Every spec is checked before anything is made. The links whose two
    containers run are wired at once; the others when their containers
    start. All or nothing: on a failure, the pairs made here are removed
    and no record is kept.
    """
    from ..network import links as linkrec
    from ..network.shaping import parse_shape

    wanted = []
    for spec in specs:
        ends = []
        for side in ("a", "b"):
            ref, interface = linkrec.parse_end("link", spec[side])
            cid = engine.resolve(ref)
            record = engine.load(cid)
            _private_netns(record)
            shape = parse_shape(rate=spec["rate"]) if spec.get("rate") not in (None, "") else None
            ends.append(
                linkrec.new_end(
                    side,
                    cid,
                    record["name"],
                    interface,
                    spec.get(f"ip_{side}"),
                    spec.get("mtu"),
                    spec.get(f"routes_{side}") or (),
                    shape,
                )
            )
        wanted.append(linkrec.new_link(*ends))
    cids = sorted({end["container"] for link in wanted for end in link["ends"]})
    links = _links(engine)
    with contextlib.ExitStack() as held:
        for cid in cids:
            held.enter_context(engine._lock(cid))
        held.enter_context(links.lock())
        current = links.load()
        records = {cid: engine.load(cid) for cid in cids}
        taken = {cid: _interfaces(records[cid], current) for cid in cids}
        for link in wanted:
            for end in link["ends"]:
                if end["interface"] in taken[end["container"]]:
                    raise Conflict(
                        f"container {end['name']} already has an interface {end['interface']} "
                        f"(from a {taken[end['container']][end['interface']]})"
                    )
                taken[end["container"]][end["interface"]] = "link"
        _wire(engine, wanted, records)
        links.save(current + wanted)
    return wanted


def _interfaces(record: dict, links: list[dict]) -> dict[str, str]:
    """Interface name -> what it comes from ("network hako", "link"), for a container."""
    from ..network.links import Links

    names = {e["interface"]: f"network {e['network']}" for e in record.get("networks", [])}
    names.update(dict.fromkeys(Links.interfaces(links, record["id"]), "link"))
    return names


def _wire(engine, links: list[dict], records: dict[str, dict]) -> None:
    """Make the pairs of ``links`` whose containers both run; on failure, remove those made."""
    from ..network import netlink

    made = []
    with netlink.Sockets() as sockets:
        try:
            for link in links:
                pids = _running_pids(engine, link)
                if pids is None:
                    continue
                netlink.make_link(sockets, link, pids, replace=False)
                made.append((link, pids))
                _interface_sysctls(link, pids, records)
        except BaseException:
            for link, pids in made:
                with contextlib.suppress(Exception):
                    netlink.remove_interface(sockets.get(pids[0]), link["ends"][0]["interface"])
            raise


def _running_pids(engine, link: dict, known: dict[str, int] | None = None) -> list[int] | None:
    """The init pid of each end's container, or None unless both run."""
    pids = []
    for end in link["ends"]:
        pid = (known or {}).get(end["container"])
        if pid is None:
            state = engine.run_state(end["container"])
            if state is None:
                return None
            pid = state["pid"]
        pids.append(pid)
    return pids


def _interface_sysctls(link: dict, pids: list[int], records: dict[str, dict]) -> None:
    """Write the ends' containers' sysctls that name the link's interfaces (made just now)."""
    from ..network import sysctls

    for end, pid in zip(link["ends"], pids):
        settings = (records.get(end["container"]) or {}).get("sysctls")
        if settings:
            sysctls.write(pid, settings, {end["interface"]})


# Start ----------------------------------------------------------------------------


def wire_at_start(engine, record: dict, pid: int, sockets) -> None:
    """At a start, after the networks' interfaces: the links to running containers, shapes, sysctls.

    A link whose other end stops meanwhile is skipped (it comes back when
    that container starts); any other failure fails the start.
    """
    from ..network import netlink

    cid = record["id"]
    for interface, shape in (record.get("shaping") or {}).items():
        ns = sockets.get(pid)
        index = netlink.lookup(ns, interface)
        if index is not None:
            netlink.apply_shape(ns, index, shape, f"{record['name']}:{interface}")
    if has_links(engine, cid):
        links = _links(engine)
        with links.lock():
            for link in links.of_container(links.load(), cid):
                pids = _running_pids(engine, link, {cid: pid})
                if pids is None:
                    continue
                try:
                    netlink.make_link(sockets, link, pids)
                except HakoError:
                    others = [end["container"] for end in link["ends"] if end["container"] != cid]
                    if all(engine.run_state(other) is not None for other in others):
                        raise
                    continue  # the other end stopped meanwhile
                records = {cid: record}
                for end in link["ends"]:
                    if end["container"] != cid:
                        with contextlib.suppress(NotFound):
                            records[end["container"]] = engine.load(end["container"])
                _interface_sysctls(link, pids, {k: v for k, v in records.items() if k != cid})
    if record.get("sysctls"):
        from ..network import sysctls

        sysctls.write(pid, record["sysctls"])


# Remove ---------------------------------------------------------------------------


def remove_link(engine, ref: str) -> dict:
    """Remove the link that ``ref`` names (CONTAINER:IF, either end, or its ID); a wired pair goes at once."""
    from ..network import netlink

    links = _links(engine)
    with links.lock():
        current = links.load()
        link = _find(engine, links, current, ref)
        for end in link["ends"]:
            state = engine.run_state(end["container"])
            if state is None:
                continue
            try:
                with netlink.inside(state["pid"]) as ns:
                    netlink.remove_interface(ns, end["interface"])
            except HakoError:
                if engine.run_state(end["container"]) is not None:
                    raise
            # Deleting one end of a veth deletes both: the other has gone with it.
        links.save([other for other in current if other["id"] != link["id"]])
    return link


def _find(engine, links, current: list[dict], ref: str) -> dict:
    from ..network import links as linkrec

    if ":" not in ref:
        for link in current:
            if link["id"] == ref or (len(ref) >= 4 and link["id"].startswith(ref)):
                return link
        raise NotFound(f"no such link: {ref}")
    container, interface = linkrec.parse_end("link", ref)
    cid = engine.resolve(container)
    return links.get(current, cid, interface, ref)[0]


def list_links(engine) -> list[dict]:
    """Every link, each with "up": whether its pair exists now (both containers run)."""
    links = _links(engine)
    result = []
    for link in links.load():
        result.append(dict(link, up=_running_pids(engine, link) is not None))
    return result


# Shaping --------------------------------------------------------------------------


def shape(engine, ref: str, shape: dict | None) -> dict:
    """Shape what leaves interface IF of a container (``ref`` is CONTAINER:IF); None clears it.

    The shape is kept (in the link's record for a link's end, in the
    container's record for a network's interface) and applied at every
    start; a running container's interface is changed at once. Delay,
    jitter and loss need netem: without it, nothing is changed or kept.
    Returns {"container", "interface", "shape"}.
    """
    from ..network import links as linkrec
    from ..network import netlink
    from ..network.shaping import needs_netem

    container, interface = linkrec.parse_end("shape", ref)
    cid = engine.resolve(container)
    record = engine.load(cid)
    if needs_netem(shape) and not netlink.has_netem():
        raise HakoError(netlink.NO_NETEM)
    label = f"{record['name']}:{interface}"
    if any(e["interface"] == interface for e in record.get("networks", [])):
        with engine._lock(cid):
            record = engine.load(cid)
            _apply_now(engine, cid, interface, shape, label)
            shaping = dict(record.get("shaping") or {})
            if shape:
                shaping[interface] = shape
            else:
                shaping.pop(interface, None)
            record["shaping"] = shaping
            engine._save(record)
        return {"container": record["name"], "interface": interface, "shape": shape}
    links = _links(engine)
    with links.lock():
        current = links.load()
        found = links.find(current, cid, interface)
        if found is None:
            raise NotFound(
                f"container {record['name']} has no interface {interface} (from a network or a link)"
            )
        link, index = found
        if _running_pids(engine, link) is not None:
            _apply_now(engine, cid, interface, shape, label)
        link["ends"][index]["shape"] = shape or None
        links.save(current)
    return {"container": record["name"], "interface": interface, "shape": shape}


def _apply_now(engine, cid: str, interface: str, shape: dict | None, label: str) -> None:
    """Shape a running container's interface now (nothing if the container is stopped)."""
    from ..network import netlink

    state = engine.run_state(cid)
    if state is None:
        return
    with netlink.inside(state["pid"]) as ns:
        index = netlink.lookup(ns, interface)
        if index is None:
            raise NotFound(f"{label}: no such interface in the running container")
        netlink.apply_shape(ns, index, shape, label)


def current_shape(engine, ref: str) -> dict | None:
    """The shape kept for CONTAINER:IF (None if it has none)."""
    from ..network import links as linkrec

    container, interface = linkrec.parse_end("shape", ref)
    cid = engine.resolve(container)
    record = engine.load(cid)
    if any(e["interface"] == interface for e in record.get("networks", [])):
        return (record.get("shaping") or {}).get(interface)
    links = _links(engine)
    found = links.find(links.load(), cid, interface)
    if found is None:
        raise NotFound(f"container {record['name']} has no interface {interface} (from a network or a link)")
    return found[0]["ends"][found[1]]["shape"]
