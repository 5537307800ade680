"""hako_verify: check that containers are what their declaration says, as the kernel sees them.

Each container is checked the way the chapter "How containers work" shows it
by hand: its process is alive, ``/proc/<pid>/ns/<kind>`` names another
namespace than the host's for every private kind (and the same one for
``host``, the other container's for ``container:<name>``), the cgroup files
hold the declared limits, and on each of its networks its interface is up
with its address, the host's end on the network's bridge, and its first
process holds the capabilities, seccomp filter and no_new_privs it was
given. The declaration is a list of hako_container options,
so the lab role hands the same list to hako_containers and to this check.
Nothing is changed; every failure is named: ``<container>: <what> is <actual>,
want <expected>``.
"""

from __future__ import annotations

import mmap
import os

from . import ansible_options as ao
from .ansible_container import find
from .cgroups import parse_cpu_list, shares_to_weight
from .engine import Engine
from .errors import Conflict, HakoError, NotFound
from .options import NAMESPACE_KINDS, oci_resources

CHECKS = ("state", "namespaces", "limits", "networks", "privileges")
RUNNING_STATES = ("started", "restarted")
PAGE_SIZE = mmap.PAGESIZE


class Check:
    """One named check of one container."""

    def __init__(self, container: str, check: str, expected, actual) -> None:
        self.container = container
        self.check = check
        self.expected = expected
        self.actual = actual

    @property
    def ok(self) -> bool:
        return self.expected == self.actual

    def as_dict(self) -> dict:
        return {
            "container": self.container,
            "check": self.check,
            "ok": self.ok,
            "expected": self.expected,
            "actual": self.actual,
        }

    def failure(self) -> str:
        return f"{self.container}: {self.check} is {_show(self.actual)}, want {_show(self.expected)}"


def _show(value) -> str:
    if value is None:
        return "absent"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def verify(engine: Engine, items: list[dict], checks: list[str] | None = None) -> dict:
    """Check each declared container; the checks made and the failures, named."""
    wanted_checks = set(CHECKS if checks is None else checks)
    unknown = wanted_checks - set(CHECKS)
    if unknown:
        raise ao.OptionError("checks", f"{sorted(unknown)[0]!r} is not one of {', '.join(CHECKS)}")
    made: list[Check] = []
    holders = _namespace_holders(engine) if "namespaces" in wanted_checks else {}
    for index, item in enumerate(items):
        try:
            made += check_container(engine, item, wanted_checks, holders)
        except HakoError as e:
            raise HakoError(f"containers[{index}] ({item.get('name')}): {e}") from None
    failures = [check.failure() for check in made if not check.ok]
    return {"checks": [check.as_dict() for check in made], "failures": failures, "verified": len(items)}


def check_container(engine: Engine, item: dict, checks: set[str], holders: dict | None = None) -> list[Check]:
    name = ao.check_name(item["name"])
    wanted = ao.normalize(item)
    state = item.get("state") or "started"
    record = find(engine, name)
    if state == "absent" or record is None:
        return [Check(name, "existence", "absent" if state == "absent" else "present", _existence(record))]
    try:
        info = engine.inspect(record["id"])
    except NotFound:
        return [Check(name, "existence", "present", "absent")]
    running = info["State"]["Running"]
    made = []
    if "state" in checks and state != "present":
        made.append(
            Check(name, "state", "running" if state in RUNNING_STATES else "stopped", _coarse(running))
        )
    if not running:
        return made
    if "namespaces" in checks:
        made += _namespace_checks(engine, record, wanted, info.get("Namespaces", {}), holders or {})
    if "limits" in checks:
        made += _limit_checks(name, record, wanted, info.get("Cgroup", {}))
    if "networks" in checks:
        made += _network_checks(engine, record, wanted, info["State"]["Pid"])
    if "privileges" in checks:
        made += _privilege_checks(record, wanted, info["State"]["Pid"])
    return made


def _existence(record: dict | None) -> str:
    return "absent" if record is None else "present"


def _coarse(running: bool) -> str:
    return "running" if running else "stopped"


# Namespaces -------------------------------------------------------------------


def _namespace_holders(engine: Engine) -> dict[tuple[str, int], list[dict]]:
    """(kind, inode) -> the records of the running containers whose first process is in that namespace."""
    from .engine import namespace_report

    holders: dict[tuple[str, int], list[dict]] = {}
    for record, status in engine.list(all=False):
        try:
            report = namespace_report(status["pid"])
        except OSError:  # it ended meanwhile
            continue
        for kind, entry in report.items():
            holders.setdefault((kind, entry["inode"]), []).append(record)
    return holders


def _namespace_checks(engine: Engine, record: dict, wanted: dict, report: dict, holders: dict) -> list[Check]:
    name = record["name"]
    declared = dict(record.get("namespaces", {}))
    declared.update(wanted.get("namespaces", {}))
    if "userns" in wanted:
        user_private = wanted["userns"] != "host"
    else:
        user_private = bool(record.get("userns"))
    expectations = {kind: declared.get(kind, "private") for kind in NAMESPACE_KINDS}
    expectations["user"] = "private" if user_private else "host"
    made = []
    for kind, mode in sorted(expectations.items()):
        entry = report.get(kind)
        if entry is None:  # the kernel lacks this kind
            continue
        check = f"{kind} namespace"
        if mode == "private":
            made.append(Check(name, check, "private", _private(engine, record, kind, entry, holders)))
        elif mode == "host":
            made.append(Check(name, check, "host's", "host's" if entry["host"] else "private"))
        else:
            other = mode.split(":", 1)[1]
            made.append(Check(name, check, f"{other}'s", _shared_with(engine, other, kind, entry)))
    return made


def _private(engine: Engine, record: dict, kind: str, entry: dict, holders: dict) -> str:
    """ "private" when the namespace is neither the host's nor another container's.

    Containers that joined this one's namespace (``container:<this>``) do not
    make it less its own.
    """
    if entry["host"]:
        return "host's"
    others = []
    for other in holders.get((kind, entry["inode"]), []):
        if other["id"] == record["id"]:
            continue
        mode = other.get("namespaces", {}).get(kind, "private")
        if mode.startswith("container:") and _resolves_to(engine, mode.split(":", 1)[1], record["id"]):
            continue
        others.append(other["name"])
    return f"shared with {', '.join(sorted(others))}" if others else "private"


def _resolves_to(engine: Engine, ref: str, cid: str) -> bool:
    try:
        return engine.resolve(ref) == cid
    except (NotFound, Conflict):
        return False


def _shared_with(engine: Engine, other: str, kind: str, entry: dict) -> str:
    """Whose namespace ``entry`` is: the other container's, or a description of why not."""
    try:
        other_info = engine.inspect(other)
    except (NotFound, Conflict):
        return f"not {other}'s ({other} does not exist)"
    other_entry = other_info.get("Namespaces", {}).get(kind)
    if other_entry is None:
        return f"not {other}'s ({other} is not running)"
    return f"{other}'s" if other_entry["inode"] == entry["inode"] else f"not {other}'s ({entry['link']})"


# Limits ------------------------------------------------------------------------


def _limit_checks(name: str, record: dict, wanted: dict, cgroup: dict) -> list[Check]:
    limits = dict(record.get("limits", {}))
    limits.update({key: wanted[key] for key in ao.LIMIT_OPTIONS if key in wanted})
    expected = oci_resources(limits)
    actual = cgroup.get("Resources", {})
    version = cgroup.get("Version")
    made = []
    for section, fields in sorted(expected.items()):
        for field, value in sorted(fields.items()):
            have = actual.get(section, {})
            if field not in have:
                continue  # the host lacks the controller or file (swap accounting off)
            made.append(
                Check(
                    name,
                    _LIMIT_NAMES[section, field],
                    *_kernel_terms(section, field, value, have[field], version),
                )
            )
    return made


_LIMIT_NAMES = {
    ("memory", "limit"): "memory limit",
    ("memory", "swap"): "memory+swap limit",
    ("cpu", "quota"): "CPU quota",
    ("cpu", "period"): "CPU period",
    ("cpu", "shares"): "CPU shares",
    ("cpu", "cpus"): "cpuset CPUs",
    ("cpu", "mems"): "cpuset memory nodes",
    ("pids", "limit"): "pids limit",
}


def _kernel_terms(section: str, field: str, expected, actual, version) -> tuple:
    """Expected and actual as the kernel can hold them (pages, cgroup v2 weights)."""
    if section == "memory" and isinstance(expected, int) and expected > 0:
        expected -= expected % PAGE_SIZE
    if (section, field) == ("cpu", "shares") and version == 2:
        return shares_to_weight(expected), shares_to_weight(actual)
    if (section, field) in (("cpu", "cpus"), ("cpu", "mems")):
        return _cpu_list(expected), _cpu_list(actual)
    return expected, actual


def _cpu_list(text):
    """A CPU or node list as the kernel writes it back ("0,1" is "0-1")."""
    try:
        ranges = parse_cpu_list(str(text))
    except ValueError:
        return text
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in ranges)


# Networks ------------------------------------------------------------------------


def _network_checks(engine: Engine, record: dict, wanted: dict, pid: int) -> list[Check]:
    """On each network (the declared ones, else those it was made with): its interface as the kernel has it.

    Inside the container's network namespace the interface hako gave it is up
    with the address (the declared one, else the one hako holds for it), and
    on the host its veth's other end is enslaved to the network's bridge.
    """
    name = record["name"]
    endpoints = {e["network"]: e for e in record.get("networks", [])}
    declared = wanted.get("networks")
    if declared is None:
        declared = {network: {"ip": None} for network in endpoints}
    if not declared:
        return []
    networks = engine.networks()
    made = []
    for network_name, want in declared.items():
        check = f"network {network_name}"
        endpoint = endpoints.get(network_name)
        try:
            network = networks.get(network_name)
        except NotFound:
            made.append(Check(name, check, "connected", "no such network"))
            continue
        if endpoint is None:
            made.append(Check(name, check, "connected", "not connected"))
            continue
        prefix = network["subnet"].split("/")[1]
        expected = (
            f"{endpoint['interface']} {want['ip'] or endpoint['ip']}/{prefix} up, on {network['bridge']}"
        )
        made.append(Check(name, check, expected, _interface_seen(record["id"], pid, endpoint["interface"])))
    return made


def _interface_seen(cid: str, pid: int, interface: str) -> str:
    """An interface as the kernel has it, in the terms of the network check."""
    from .network import ifaddr
    from .network.netlink import host_interface

    inside = ifaddr.interface(pid, interface)
    if inside is None:
        return f"no {interface}"
    address = f"{inside['address']}/{inside['prefix']}" if inside["address"] else "without an address"
    outside = host_interface(cid, int(interface[len("eth") :]))
    try:
        bridge = os.path.basename(os.readlink(f"/sys/class/net/{outside}/master"))
    except FileNotFoundError:
        bridge = "no bridge" if os.path.exists(f"/sys/class/net/{outside}") else f"no {outside} on the host"
    return f"{interface} {address} {'up' if inside['up'] else 'down'}, on {bridge}"


# Privileges ------------------------------------------------------------------------

SECCOMP_MODES = {"0": "disabled", "1": "strict", "2": "filter"}


def _privilege_checks(record: dict, wanted: dict, pid: int) -> list[Check]:
    """What the container's first process holds, from /proc/<pid>/status, against what it was given.

    The bounding set is the capability set by Docker's rules (the default
    14, cap_add, cap_drop, privileged); root in the container also holds it
    effective, any other user none. The seccomp mode is "filter" unless
    unconfined (or privileged); no_new_privs is set unless lifted.
    """
    from .security import capability_set, security_settings

    name = record["name"]
    cap_add = wanted.get("capabilities", record.get("cap_add") or [])
    cap_drop = wanted.get("cap_drop", record.get("cap_drop") or [])
    privileged = wanted.get("privileged", bool(record.get("privileged")))
    security_opt = wanted.get("security_opts", record.get("security_opt") or [])
    expected = capability_set(cap_add, cap_drop, privileged)
    settings = security_settings({"security_opt": security_opt, "privileged": privileged})
    status = _proc_status(pid)
    bounding = _capability_names(status.get("CapBnd", "0"))
    root = record["userns"]["host_id"] if record.get("userns") else 0
    declared = wanted.get("user") or (record.get("user") or {}).get("user")
    if declared:
        # Root by what was declared, not by what runs: a container declared
        # root but running as another user has no business passing.
        runs_as_root = str(declared).split(":")[0] in ("0", "root")
    else:  # the image's user: whatever it runs as
        runs_as_root = status.get("Uid", "").split()[1:2] == [str(root)]
    return [
        Check(name, "capabilities", _capability_text(expected), _capability_text(bounding)),
        Check(
            name,
            "effective capabilities",
            _capability_text(expected if runs_as_root else []),
            _capability_text(_capability_names(status.get("CapEff", "0"))),
        ),
        Check(
            name,
            "seccomp",
            "disabled" if settings["seccomp"] == "unconfined" else "filter",
            SECCOMP_MODES.get(status.get("Seccomp", ""), status.get("Seccomp")),
        ),
        Check(name, "no_new_privs", settings["no_new_privileges"], status.get("NoNewPrivs") == "1"),
    ]


def _proc_status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:  # it ended meanwhile: every check fails, naming what is missing
        return {}


def _capability_names(mask: str) -> list[str]:
    from .linux import CAPABILITIES

    value = int(mask, 16)
    return [name for number, name in enumerate(CAPABILITIES) if value & (1 << number)]


def _capability_text(names: list[str]) -> str:
    """A capability set as the checks show it: the names in the kernel's order, or "none"."""
    from .linux import CAPABILITY_NUMBERS

    return ", ".join(sorted(names, key=CAPABILITY_NUMBERS.__getitem__)) or "none"


def host_namespaces() -> dict[str, str]:
    """The namespaces of this process (the host's, as the module sees them): kind -> link."""
    from .linux import NAMESPACES

    links = {}
    for kind, (_flag, proc_name) in NAMESPACES.items():
        try:
            links[kind] = os.readlink(f"/proc/self/ns/{proc_name}")
        except OSError:
            continue
    return links
