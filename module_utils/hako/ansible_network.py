"""hako_network: one bridge network converged to a state, planned first, then made.

Plain Python without any Ansible import (library/hako_network.py parses the
parameters and calls ``converge``). As with community.docker's
docker_network, only the options a task sets are compared, and a network
whose subnet, gateway, range, MTU, ``internal`` or ``nat`` differ is made
again (removed, then created), since containers hold addresses in it; labels
are changed in place. Unlike docker_network, containers are never
disconnected silently: a network with containers on it is made again or
removed only with ``force``, and the task fails otherwise, naming the
options and the containers.
"""

from __future__ import annotations

import os

from . import ansible_options as ao
from .engine import Engine
from .errors import HakoError, InvalidValue, NotFound

ABSENT, PRESENT = "absent", "present"
# Compared when given; all but the labels need the network made again.
NETWORK_OPTIONS = ("subnet", "gateway", "ip_range", "mtu", "internal", "nat", "labels")
REMAKE_OPTIONS = ("subnet", "gateway", "ip_range", "mtu", "internal", "nat")

# The store's field names in InvalidValue -> this module's options.
_FIELD_TO_OPTION = {"network": "name", "ip-range": "ip_range"}


def _option_error(error: InvalidValue, option: str | None = None) -> ao.OptionError:
    option = option or _FIELD_TO_OPTION.get(error.field, error.field.replace("-", "_"))
    detail = str(error).split(": ", 1)[1] if ": " in str(error) else str(error)
    if error.field.replace("-", "_") != option:
        detail = f"{error.field} {detail}"
    return ao.OptionError(option, detail)


# What the task asks for ---------------------------------------------------------


def _boolean(name: str):
    def normalize(value) -> bool:
        if not isinstance(value, bool):
            raise InvalidValue(name, value, "expected true or false")
        return value

    return normalize


def _normalizers() -> dict:
    from .network import ipam

    return {
        "subnet": lambda v: str(ipam.parse_subnet(v)),
        "gateway": lambda v: str(ipam.parse_address("gateway", v)),
        "ip_range": lambda v: str(ipam.parse_network("ip_range", v, "ranges")),
        "mtu": ipam.parse_mtu,
        "internal": _boolean("internal"),
        "nat": _boolean("nat"),
        "labels": ao._labels,
    }


def normalize(params: dict) -> dict:
    """The compared form of each network option the task sets; OptionError naming a bad one."""
    normalizers = _normalizers()
    wanted = {}
    for option in NETWORK_OPTIONS:
        value = params.get(option)
        if value is None:
            continue
        try:
            wanted[option] = normalizers[option](value)
        except InvalidValue as e:
            raise _option_error(e, option) from None
    return wanted


def check_name(name) -> str:
    from .network import validate_network_name

    try:
        return validate_network_name(name)
    except InvalidValue as e:
        raise _option_error(e, "name") from None


def actual(record: dict, option: str):
    """An option's value as the network's record holds it."""
    if option == "nat":
        return record.get("nat", True)  # records from before the field: NAT on
    return record.get(option)


def _matches(option: str, wanted, have) -> bool:
    if option == "labels":  # as in docker_network: the labels given, others may be there
        return all(have.get(key) == value for key, value in wanted.items())
    return wanted == have


def create_arguments(wanted: dict, record: dict | None = None) -> dict:
    """Networks.create keywords: the task's options, and for a network made again, what it had.

    A recreated network keeps what the task leaves out: its subnet, its
    gateway and range unless the subnet changes, its MTU, ``internal``,
    ``nat`` and labels.
    """
    if record is None:
        return {
            "subnet": wanted.get("subnet"),
            "gateway": wanted.get("gateway"),
            "ip_range": wanted.get("ip_range"),
            "mtu": wanted.get("mtu"),
            "internal": wanted.get("internal", False),
            "nat": wanted.get("nat", True),
            "labels": wanted.get("labels", {}),
        }
    same_subnet = wanted.get("subnet", record["subnet"]) == record["subnet"]
    return {
        "subnet": wanted.get("subnet", record["subnet"]),
        "gateway": wanted.get("gateway", record["gateway"] if same_subnet else None),
        "ip_range": wanted.get("ip_range", record["ip_range"] if same_subnet else None),
        "mtu": wanted.get("mtu", record["mtu"]),
        "internal": wanted.get("internal", record["internal"]),
        "nat": wanted.get("nat", actual(record, "nat")),
        "labels": {**record["labels"], **wanted.get("labels", {})},
    }


# The plan -------------------------------------------------------------------------


class NetworkPlan:
    """What converging one network does: the actions, in order, and the diff."""

    def __init__(self, name: str, record: dict | None) -> None:
        self.name = name
        self.record = record
        self.actions: list[str] = []
        self.done: list[str] = []
        self.wanted: dict = {}
        self.create_args: dict = {}
        self.predicted: dict | None = record  # the record afterwards, as far as it can be told
        # Container name -> ID, of the containers on it.
        self.members = {e["name"]: cid for cid, e in (record or {}).get("endpoints", {}).items()}

    def diff(self) -> dict:
        return {"before": view(self.record), "after": view(self.predicted)}


def view(record: dict | None) -> dict:
    """A network's options for diff mode (``{state: absent}`` without one)."""
    if record is None:
        return {"state": ABSENT}
    return {"state": PRESENT, **{option: actual(record, option) for option in NETWORK_OPTIONS}}


def plan(engine: Engine, params: dict) -> NetworkPlan:
    """Compare the wanted network with the one there; change nothing (check mode stops here)."""
    name = check_name(params["name"])
    networks = engine.networks()
    try:
        record = networks.get(name)
    except NotFound:
        record = None
    result = NetworkPlan(name, record)
    members = sorted(result.members)
    force = bool(params.get("force"))
    if (params.get("state") or PRESENT) == ABSENT:
        if record is not None:
            if members and not force:
                raise HakoError(
                    f"network {name} is in use by container(s) {', '.join(members)}: "
                    "set force: true to disconnect them first"
                )
            result.actions = [f"disconnect {member}" for member in members] + ["remove"]
            result.predicted = None
        return result

    result.wanted = wanted = normalize(params)
    if record is None:
        result.create_args = create_arguments(wanted)
        result.predicted = _check_new(networks, name, result.create_args, replacing=False)
        result.actions = ["create"]
        return result

    differing = [
        option
        for option in NETWORK_OPTIONS
        if option in wanted and not _matches(option, wanted[option], actual(record, option))
    ]
    remake = [option for option in differing if option in REMAKE_OPTIONS]
    if remake or params.get("recreate"):
        if members and not force:
            changes = ", ".join(f"{o} ({actual(record, o)} to {wanted[o]})" for o in remake) or "nothing"
            raise HakoError(
                f"network {name} must be made again to change {changes}, and container(s) "
                f"{', '.join(members)} are on it: set force: true to disconnect them first"
            )
        result.create_args = create_arguments(wanted, record)
        result.predicted = _check_new(networks, name, result.create_args, replacing=True)
        result.actions = [f"disconnect {member}" for member in members] + ["recreate"]
    elif differing:  # the labels alone
        result.predicted = dict(record, labels={**record["labels"], **wanted["labels"]})
        result.actions = ["update labels"]
    return result


def _check_new(networks, name: str, arguments: dict, replacing: bool) -> dict:
    """The record a create would make now (checked against the other networks and host routes)."""
    try:
        return networks.check_new(name, replacing=replacing, **arguments)
    except InvalidValue as e:
        raise _option_error(e) from None


# Carrying it out -------------------------------------------------------------------


def apply(engine: Engine, the_plan: NetworkPlan, params: dict) -> dict | None:
    """Carry out a plan; the network's record afterwards (None once removed)."""
    name = the_plan.name
    networks = engine.networks()
    record = the_plan.record
    if record is not None and os.path.exists(f"/sys/class/net/{record['bridge']}"):
        if any(action != "update labels" for action in the_plan.actions):
            from .network import netlink

            netlink.pyroute2()  # the bridge and veths need it: fail before anything changes
    for action in the_plan.actions:
        if action.startswith("disconnect "):
            try:
                engine.disconnect(the_plan.members[action.split(" ", 1)[1]], name)
            except NotFound:  # gone meanwhile
                pass
        elif action == "remove":
            engine.remove_network(name)
            record = None
        elif action == "recreate":
            engine.remove_network(name)
            the_plan.done.append("remove")  # until the new one exists
            record = networks.create(name, **the_plan.create_args)
            the_plan.done.pop()
        elif action == "create":
            record = networks.create(name, **the_plan.create_args)
        elif action == "update labels":
            record = networks.update_labels(name, the_plan.wanted["labels"])
        the_plan.done.append(action)
    return record


def converge(engine: Engine, params: dict, check_mode: bool) -> dict:
    """Plan and (unless in check mode) apply; the module's result."""
    from .network import document

    the_plan = plan(engine, params)
    record = the_plan.record
    if the_plan.actions and not check_mode:
        try:
            record = apply(engine, the_plan, params)
        except HakoError as e:
            e.done = list(the_plan.done)
            raise
    return {
        "changed": bool(the_plan.actions),
        "actions": list(the_plan.actions),
        "network": document(record) if record is not None else {},
        "diff": the_plan.diff(),
    }
