"""hako_containers' links: a topology's wires converged with its containers, in the same module run.

A declared link is two ends (``CONTAINER:INTERFACE``) with optional
addresses, MTU, rate and routes, as `hako link` takes them. Links are
compared by their ends: one declared and missing is made, one whose values
differ is made again, and one between two containers of the task that is
not declared is removed. New links are made in one batch (one netlink
socket per namespace), so a 20-node line comes up in one call.
"""

from __future__ import annotations

from . import ansible_options as ao
from .engine import Engine
from .errors import HakoError, InvalidValue

LINK_KEYS = ("a", "b", "ip_a", "ip_b", "mtu", "rate", "routes_a", "routes_b")


def _ends_key(a: str, b: str) -> frozenset:
    return frozenset((a, b))


def normalize_link(index: int, link: dict) -> dict:
    """A declared link in the form it is compared in: both ends, values checked."""
    from .network import links as linkrec
    from .network.ipam import parse_mtu
    from .network.shaping import parse_shape

    where = f"links[{index}]"
    if not isinstance(link, dict):
        raise ao.OptionError(where, f"{link!r} (expected a mapping with a and b)")
    unknown = set(link) - set(LINK_KEYS)
    if unknown:
        raise ao.OptionError(where, f"unknown key {sorted(unknown)[0]!r} (known: {', '.join(LINK_KEYS)})")
    try:
        ends = {}
        for side in ("a", "b"):
            if not link.get(side):
                raise InvalidValue(side, link.get(side), "expected CONTAINER:INTERFACE")
            name, interface = linkrec.parse_end(side, str(link[side]))
            ends[side] = {
                "end": f"{name}:{interface}",
                "address": linkrec.parse_address(f"ip-{side}", link[f"ip_{side}"])
                if link.get(f"ip_{side}")
                else None,
                "routes": [linkrec.parse_route(f"route-{side}", r) for r in link.get(f"routes_{side}") or []],
            }
        mtu = parse_mtu(link["mtu"]) if link.get("mtu") not in (None, "") else None
        rate = parse_shape(rate=link["rate"])["rate"] if link.get("rate") not in (None, "") else None
    except InvalidValue as e:
        raise ao.OptionError(where, str(e)) from None
    return {"a": ends["a"], "b": ends["b"], "mtu": mtu, "rate": rate, "spec": dict(link)}


def _current(engine: Engine) -> list[dict]:
    """The links as they are: each as normalize_link's form, keyed by container names."""
    from .engine import links as engine_links

    current = []
    for link in engine_links.list_links(engine):
        first, second = link["ends"]
        ends = {}
        for side, end in (("a", first), ("b", second)):
            ends[side] = {
                "end": f"{end['name']}:{end['interface']}",
                "address": end["address"],
                "routes": end["routes"],
            }
        rate = (first.get("shape") or {}).get("rate")
        mtu = first.get("mtu")
        current.append({"id": link["id"], "a": ends["a"], "b": ends["b"], "mtu": mtu, "rate": rate})
    return current


def _same(wanted: dict, have: dict) -> bool:
    """Same values, whichever way round the two ends are written."""
    if (wanted["mtu"], wanted["rate"]) != (have["mtu"], have["rate"]):
        return False
    pairs = {have["a"]["end"]: have["a"], have["b"]["end"]: have["b"]}
    return all(
        wanted[side]["end"] in pairs
        and (wanted[side]["address"], wanted[side]["routes"])
        == (pairs[wanted[side]["end"]]["address"], pairs[wanted[side]["end"]]["routes"])
        for side in ("a", "b")
    )


def plan_links(engine: Engine, declared: list[dict], names: set[str]) -> dict:
    """What converging the links changes: links to make (specs), links to remove (IDs), labels of each."""
    wanted = [normalize_link(i, link) for i, link in enumerate(declared)]
    seen: set = set()
    for i, link in enumerate(wanted):
        key = _ends_key(link["a"]["end"], link["b"]["end"])
        if key in seen:
            raise ao.OptionError(f"links[{i}]", f"{link['a']['end']} - {link['b']['end']} is declared twice")
        seen.add(key)
    current = _current(engine)
    by_ends = {_ends_key(c["a"]["end"], c["b"]["end"]): c for c in current}
    make, remove, labels = [], [], {"create": [], "recreate": [], "remove": []}
    for link in wanted:
        key = _ends_key(link["a"]["end"], link["b"]["end"])
        label = f"{link['a']['end']} - {link['b']['end']}"
        have = by_ends.get(key)
        if have is None:
            make.append(link["spec"])
            labels["create"].append(label)
        elif not _same(link, have):
            remove.append(have["id"])
            make.append(link["spec"])
            labels["recreate"].append(label)
    for key, have in by_ends.items():
        containers = {end.split(":", 1)[0] for end in key}
        if key not in seen and containers <= names:
            remove.append(have["id"])
            labels["remove"].append(f"{have['a']['end']} - {have['b']['end']}")
    return {"make": make, "remove": remove, "labels": labels}


def apply_links(engine: Engine, planned: dict) -> None:
    from .engine import links as engine_links

    for link_id in planned["remove"]:
        engine_links.remove_link(engine, link_id)
    if planned["make"]:
        specs = []
        for spec in planned["make"]:
            specs.append(
                {
                    "a": spec["a"],
                    "b": spec["b"],
                    "ip_a": spec.get("ip_a"),
                    "ip_b": spec.get("ip_b"),
                    "mtu": spec.get("mtu"),
                    "rate": spec.get("rate"),
                    "routes_a": spec.get("routes_a") or [],
                    "routes_b": spec.get("routes_b") or [],
                }
            )
        engine_links.create_links(engine, specs)


def converge_links(engine: Engine, declared: list[dict], names: set[str], check_mode: bool) -> dict:
    """Plan and (unless in check mode) apply; the result's ``links`` entry."""
    planned = plan_links(engine, declared, names)
    changed = bool(planned["make"] or planned["remove"])
    if changed and not check_mode:
        try:
            apply_links(engine, planned)
        except HakoError as e:
            raise HakoError(f"links: {e}") from None
    return {"changed": changed, **planned["labels"]}
