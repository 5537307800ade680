"""What a user may ask of a container, checked before anything is made.

``ContainerOptions`` is the one description of a container that the CLI and
the Ansible modules both fill in. ``validate`` turns it into the normalized
form the engine stores; every problem is an ``InvalidValue`` naming the field.
"""

from __future__ import annotations

import os

from . import text, units
from .errors import InvalidValue

_NAME_CHARS = text.ALNUM | {"_", ".", "-"}
NAMESPACE_KINDS = ("ipc", "mount", "network", "pid", "uts", "cgroup")
RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")
USERNS_DEFAULT_SIZE = 65536


_DEFAULTS: dict = {
    "command": None,
    "entrypoint": None,
    "name": None,
    "env": list,
    "hostname": None,
    "user": None,
    "workdir": None,
    "tty": False,
    "interactive": False,
    "memory": None,
    "memory_swap": None,
    "cpus": None,
    "cpu_shares": None,
    "cpuset_cpus": None,
    "cpuset_mems": None,
    "pids_limit": None,
    # kind -> "private", "host" or "container:<name>"
    "namespaces": dict,
    # None/"host", "auto" or "HOSTID[:SIZE]"
    "userns": None,
    "volumes": list,
    "tmpfs": list,
    "read_only": False,
    "auto_remove": False,
    "restart_policy": "no",
    "labels": dict,
    "stop_signal": "SIGTERM",
    "stop_timeout": 10,
    # [{"name": network, "ip": address or None, "aliases": [...]}], in interface order
    "networks": list,
    # net.* kernel settings of the container's network namespace: {key: value} or ["KEY=VALUE"]
    "sysctls": dict,
    # "[ip:]hostport:containerport[/tcp|udp]" as typed; validated into
    # [{"host_ip", "host_port", "container_port", "protocol"}]
    "ports": list,
    # Capabilities by name (NET_ADMIN, CAP_SYS_TIME, ALL) added to or dropped from Docker's default set.
    "cap_add": list,
    "cap_drop": list,
    # Every capability, no seccomp filter, no masked paths, /sys writable, every host device.
    "privileged": False,
    # Docker's --security-opt: no-new-privileges[=false], seccomp=unconfined|PROFILE.json, ...
    "security_opt": list,
    # Supplementary groups (names looked up in the container, or numbers).
    "group_add": list,
    # "/dev/host[:/dev/container][:rwm]" as typed; validated into [{"host", "container", "access"}]
    "devices": list,
    # Docker's --storage-opt: {"size": "64m"} or ["size=64m"]; only size is known
    "storage_opts": dict,
}


class ContainerOptions:
    """A container as a user asks for it, before validation.

    Keyword arguments are the keys of ``_DEFAULTS``; values are as typed
    (strings such as "64m" or "0.5" are fine). A plain class, not a
    dataclass: importing dataclasses would cost `hako run` several ms.
    """

    def __init__(self, image: str, **values) -> None:
        unknown = set(values) - set(_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown container options: {', '.join(sorted(unknown))}")
        self.image = image
        for key, default in _DEFAULTS.items():
            value = values.get(key, default)
            setattr(self, key, value() if value in (list, dict) else value)

    def as_dict(self) -> dict:
        return {"image": self.image, **{key: getattr(self, key) for key in _DEFAULTS}}


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not text.made_of(name, _NAME_CHARS, first=text.ALNUM, max_len=128):
        raise InvalidValue(
            "name", name, "use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )
    return name


def parse_signal(field_name: str, value: str | int) -> int:
    import _signal as signal  # the C module: `signal` imports enum

    upper = str(value).upper()
    valid = signal.valid_signals()
    if upper.isdigit():
        number = int(upper)
    else:
        name = upper if upper.startswith("SIG") else "SIG" + upper
        # Only real signal names: not SIG_DFL, SIG_IGN, SIG_BLOCK and friends.
        number = getattr(signal, name, None) if name[3:].isalnum() else None
    if isinstance(number, int) and number in valid:
        return int(number)
    raise InvalidValue(field_name, value, "not a signal name or number")


def _parse_namespace(kind: str, value: str) -> str:
    if value in ("", "private", None):
        return "private"
    if value == "host":
        if kind == "mount":
            raise InvalidValue("mount namespace", value, "a container always has its own mount namespace")
        return "host"
    if value.startswith("container:") and len(value) > 10:
        return value
    raise InvalidValue(f"{kind} namespace", value, "expected private, host or container:<name>")


def _parse_userns(value: str | None) -> dict | None:
    if value in (None, "", "host"):
        return None
    if value == "auto":
        return {"auto": True, "size": USERNS_DEFAULT_SIZE}
    host, _, size_text = value.partition(":")
    if not text.is_number(host) or (size_text and not text.is_number(size_text)):
        raise InvalidValue("userns", value, "expected host, auto or HOSTUID[:SIZE]")
    host_id = int(host)
    size = int(size_text or USERNS_DEFAULT_SIZE)
    if host_id == 0 or size < 1 or host_id + size > 2**32 - 1:
        raise InvalidValue("userns", value, "the host range must start above 0 and fit in 32 bits")
    return {"host_id": host_id, "size": size}


def _parse_volume(spec: str) -> dict:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0].startswith("/") or not parts[1].startswith("/"):
        raise InvalidValue("volume", spec, "expected /host/path:/container/path[:ro|rw]")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise InvalidValue("volume", spec, "the mode must be ro or rw")
    if not os.path.exists(parts[0]):
        raise InvalidValue("volume", spec, f"the host path {parts[0]} does not exist")
    return {"source": parts[0], "destination": parts[1], "readonly": mode == "ro"}


def _parse_tmpfs(spec: str) -> dict:
    path, _, options = spec.partition(":")
    if not path.startswith("/"):
        raise InvalidValue("tmpfs", spec, "expected /container/path[:options]")
    for option in filter(None, options.split(",")):
        if not _tmpfs_option_ok(option):
            raise InvalidValue("tmpfs", spec, f"unknown option {option!r}")
    return {"destination": path, "options": [o for o in options.split(",") if o]}


_TMPFS_FLAGS = ("ro", "rw", "noexec", "exec", "nosuid", "suid", "nodev", "dev")


def _tmpfs_option_ok(option: str) -> bool:
    key, eq, value = option.partition("=")
    if not eq:
        return key in _TMPFS_FLAGS
    if key == "size":
        number = value[:-1] if value[-1:] in ("k", "m", "g", "K", "M", "G", "%") else value
        return text.is_number(number)
    if key == "mode":
        return 3 <= len(value) <= 4 and text.made_of(value, frozenset("01234567"))
    return key in ("uid", "gid") and text.is_number(value)


def parse_user(value: str | None) -> dict | None:
    if value in (None, ""):
        return None
    user, colon, group = value.partition(":")
    if not text.made_of(user, _NAME_CHARS) or (colon and not text.made_of(group, _NAME_CHARS)):
        raise InvalidValue("user", value, "expected uid[:gid] or name[:group]")
    return {"user": user, "group": group or None}


def parse_restart_policy(value: str) -> str:
    """A restart policy as typed, once checked: no, always, unless-stopped or on-failure[:N]."""
    policy, colon, retries = str(value).partition(":")
    if policy not in RESTART_POLICIES or (colon and (policy != "on-failure" or not text.is_number(retries))):
        raise InvalidValue("restart", value, "expected no, always, unless-stopped or on-failure[:N]")
    return str(value)


def _parse_env(entries: list[str]) -> list[str]:
    result = []
    for entry in entries:
        name = entry.split("=", 1)[0]
        if not text.made_of(name, _NAME_CHARS, first=text.ALNUM - text.DIGITS | {"_"}):
            raise InvalidValue("env", entry, "expected NAME=value")
        result.append(entry)
    return result


def validate(options: ContainerOptions) -> dict:
    """The normalized record of ``options``; raises InvalidValue on the first bad field."""
    o = options
    if o.name is not None:
        validate_name(o.name)
    if o.hostname is not None and not text.is_hostname(o.hostname):
        raise InvalidValue("hostname", o.hostname, "not a valid host name")
    if o.workdir is not None and not o.workdir.startswith("/"):
        raise InvalidValue("workdir", o.workdir, "must be an absolute path")
    parse_restart_policy(o.restart_policy)
    for kind in o.namespaces:
        if kind not in NAMESPACE_KINDS:
            raise InvalidValue("namespace", kind, f"known kinds: {', '.join(NAMESPACE_KINDS)}")
    for key in o.labels:
        if not key:
            raise InvalidValue("label", key, "a label needs a name")

    limits = _limits(
        o.memory, o.memory_swap, o.cpus, o.cpu_shares, o.cpuset_cpus, o.cpuset_mems, o.pids_limit
    )
    record = o.as_dict()
    record.update(
        env=_parse_env(o.env),
        user=parse_user(o.user),
        namespaces={k: _parse_namespace(k, o.namespaces.get(k, "private")) for k in NAMESPACE_KINDS},
        userns=_parse_userns(o.userns),
        volumes=[_parse_volume(v) for v in o.volumes],
        tmpfs=[_parse_tmpfs(t) for t in o.tmpfs],
        limits=limits,
        stop_signal=parse_signal("stop-signal", o.stop_signal),
        stop_timeout=_stop_timeout(o.stop_timeout),
    )
    for key in ("memory", "memory_swap", "cpus", "cpu_shares", "cpuset_cpus", "cpuset_mems", "pids_limit"):
        del record[key]
    record["networks"] = _parse_networks(o.networks)
    if record["networks"] and record["namespaces"]["network"] != "private":
        raise InvalidValue(
            "network",
            record["namespaces"]["network"],
            "a container on networks has a network namespace of its own",
        )
    if o.sysctls:
        from .network.sysctls import parse

        record["sysctls"] = parse(o.sysctls)
        if record["namespaces"]["network"] != "private":
            raise InvalidValue(
                "sysctl",
                next(iter(record["sysctls"])),
                "net.* settings need a network namespace of the container's own, "
                f"not {record['namespaces']['network']}",
            )
    else:
        record["sysctls"] = {}
    record.update(_security(o))
    record["devices"] = _parse_devices(o.devices)
    record["ports"] = parse_ports(o.ports)
    record["storage_opts"] = parse_storage_opts(o.storage_opts)
    if record["ports"] and not record["networks"]:
        mode = record["namespaces"]["network"]
        why = "needs --network NAME: a port leads to the container's address on its first network"
        if mode != "private":
            why = f"a container with --network {mode} has no address of its own to publish"
        raise InvalidValue("publish", o.ports[0], why)
    if record["userns"] and record["namespaces"]["mount"] != "private":
        raise InvalidValue("userns", o.userns, "a user namespace needs a private mount namespace")
    return record


def _security(o: ContainerOptions) -> dict:
    """The privileges asked for, normalized (see security/__init__.py)."""
    from .security import check_capability_changes, parse_capabilities, parse_security_opts

    cap_add = parse_capabilities("cap-add", o.cap_add)
    cap_drop = parse_capabilities("cap-drop", o.cap_drop)
    check_capability_changes(cap_add, cap_drop)
    security_opt, profile = parse_security_opts(o.security_opt)
    return {
        "cap_add": cap_add,
        "cap_drop": cap_drop,
        "privileged": bool(o.privileged),
        "security_opt": security_opt,
        "seccomp_profile": profile,
        "group_add": parse_groups(o.group_add),
    }


def parse_groups(values) -> list[str]:
    """--group-add values: group names or numbers, each once, in the order given."""
    result = []
    for value in values or []:
        group = str(value)
        if not text.made_of(group, _NAME_CHARS) or (group.isdigit() and int(group) >= 2**32 - 1):
            raise InvalidValue("group-add", value, "expected a group name or number")
        if group not in result:
            result.append(group)
    return result


def _parse_devices(specs) -> list[dict]:
    """Devices passed through (Docker's --device), each container path once."""
    if not specs:
        return []
    from .devices import parse_device

    devices, seen = [], set()
    for spec in specs:
        device = parse_device(spec)
        if device["container"] in seen:
            raise InvalidValue("device", spec, f"{device['container']} is named twice")
        seen.add(device["container"])
        devices.append(device)
    return devices


def default_networks() -> list[dict]:
    """What a container that names no network and no network namespace joins: the default network.

    Decided by the caller (the CLI, a module), from its own environment.
    """
    from .store import default_network

    name = default_network()
    return [] if name in ("", "none") else [{"name": name, "ip": None, "aliases": []}]


def _parse_networks(entries) -> list[dict]:
    """The networks asked for: name, address (or None) and aliases, each network once."""
    if not entries:
        return []
    from .network import validate_network_name

    result, seen = [], set()
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("name"):
            raise InvalidValue("network", entry, "expected a network's name")
        name = validate_network_name(entry["name"])
        if name in seen:
            raise InvalidValue("network", name, "named twice")
        seen.add(name)
        ip = entry.get("ip") or None
        if ip is not None:
            from .network.ipam import parse_address

            ip = str(parse_address("ip", ip))
        aliases = [str(a) for a in entry.get("aliases") or []]
        for alias in aliases:
            if not text.is_hostname(alias):
                raise InvalidValue("network-alias", alias, "not a valid host name")
        result.append({"name": name, "ip": ip, "aliases": aliases})
    return result


STORAGE_OPTS = ("size",)
# The smallest writable layer with a size: an ext4 filesystem with a journal and room to write.
MIN_LAYER_SIZE = 4 << 20


def parse_storage_opts(value) -> dict[str, str]:
    """Docker's --storage-opt: ["size=64m"] (repeatable, the last of a key wins) or {"size": "64m"}.

    The options as given, checked; ``size`` must be at least 4m.
    """
    if not value:
        return {}
    if isinstance(value, dict):
        entries = [(str(key), value[key]) for key in value]
    elif isinstance(value, (list, tuple)):
        entries = []
        for entry in value:
            key, eq, item = str(entry).partition("=")
            if not eq:
                raise InvalidValue("storage-opt", entry, "expected KEY=VALUE, such as size=64m")
            entries.append((key, item))
    else:
        raise InvalidValue("storage-opt", value, "expected KEY=VALUE, such as size=64m")
    result = {}
    for key, item in entries:
        name = key.strip().lower()
        if name not in STORAGE_OPTS:
            known = ", ".join(STORAGE_OPTS)
            raise InvalidValue("storage-opt", key, f"unknown storage option; hako knows {known}")
        if isinstance(item, bool) or item is None:
            raise InvalidValue("storage-opt size", item, "expected a size such as 64m or 1g")
        text_value = str(item).strip()
        if units.parse_size("storage-opt size", text_value) < MIN_LAYER_SIZE:
            raise InvalidValue(
                "storage-opt size", text_value, "the minimum is 4m, an ext4 filesystem with its journal"
            )
        result[name] = text_value
    return result


def layer_size(record: dict) -> int | None:
    """The size limit of a container's writable layer in bytes, or None for none."""
    size = (record.get("storage_opts") or {}).get("size")
    return units.parse_size("storage-opt size", size) if size else None


MAX_PUBLISHED = 1024


def parse_ports(specs) -> list[dict]:
    """Published ports, ``[ip:]hostport:containerport[/tcp|udp]`` each; ranges ``8080-8081:80-81``."""
    result: list[dict] = []
    held: dict[tuple, set] = {}  # (protocol, host port) -> host addresses
    for spec in specs or []:
        for port in _parse_port(spec):
            addresses = held.setdefault((port["protocol"], port["host_port"]), set())
            if port["host_ip"] in addresses or (addresses and "0.0.0.0" in (addresses | {port["host_ip"]})):
                raise InvalidValue("publish", spec, f"host port {port['host_port']} is published twice")
            addresses.add(port["host_ip"])
            result.append(port)
            if len(result) > MAX_PUBLISHED:
                raise InvalidValue("publish", spec, f"at most {MAX_PUBLISHED} ports")
    return result


def _parse_port(spec) -> list[dict]:
    usage = "expected [ip:]hostport:containerport[/tcp|udp]"
    if not isinstance(spec, str):
        raise InvalidValue("publish", spec, usage)
    mapping, slash, protocol = spec.partition("/")
    if not slash:
        protocol = "tcp"
    if protocol not in ("tcp", "udp"):
        raise InvalidValue("publish", spec, "the protocol must be tcp or udp")
    if mapping.startswith("["):
        raise InvalidValue("publish", spec, "only IPv4 host addresses are supported")
    parts = mapping.split(":")
    if len(parts) == 2:
        host_ip, (host, container) = "0.0.0.0", parts
    elif len(parts) == 3:
        host_ip, host, container = parts
        if not host_ip:
            raise InvalidValue("publish", spec, usage)
        from .network.ipam import parse_address

        try:
            host_ip = str(parse_address("publish", host_ip))
        except InvalidValue:
            raise InvalidValue("publish", spec, "the host address must be IPv4, such as 127.0.0.1") from None
    elif len(parts) == 1 and parts[0]:
        raise InvalidValue("publish", spec, "give the host port too: hostport:containerport")
    else:
        raise InvalidValue("publish", spec, usage)
    hosts, containers = _port_range(spec, host), _port_range(spec, container)
    if len(hosts) != len(containers):
        raise InvalidValue(
            "publish", spec, "a range of host ports needs a container range of the same length"
        )
    if len(hosts) > MAX_PUBLISHED:
        raise InvalidValue("publish", spec, f"at most {MAX_PUBLISHED} ports")
    return [
        {"host_ip": host_ip, "host_port": h, "container_port": c, "protocol": protocol}
        for h, c in zip(hosts, containers)
    ]


def _port_range(spec: str, value: str) -> range:
    first, dash, last = value.partition("-")
    if not (text.is_number(first) and (not dash or text.is_number(last))):
        raise InvalidValue("publish", spec, "expected [ip:]hostport:containerport[/tcp|udp]")
    low, high = int(first), int(last) if dash else int(first)
    if not 1 <= low <= high <= 65535:
        raise InvalidValue("publish", spec, "ports are 1 to 65535; a range is low-high")
    return range(low, high + 1)


def _stop_timeout(value) -> int:
    seconds = units.parse_int("stop-timeout", value, minimum=0)
    if seconds > 86400:
        raise InvalidValue("stop-timeout", value, "at most 86400 seconds")
    return seconds


def _limits(memory, memory_swap, cpus, cpu_shares, cpuset_cpus, cpuset_mems, pids_limit) -> dict:
    """The resource limits as numbers, keyed as on the command line."""
    limits: dict = {}
    if memory not in (None, ""):
        limits["memory"] = units.parse_memory("memory", memory)
    if memory_swap not in (None, ""):
        swap = units.parse_memory("memory-swap", memory_swap, unlimited_ok=True)
        if swap != -1:
            if "memory" not in limits:
                raise InvalidValue("memory-swap", memory_swap, "needs --memory as well")
            if swap < limits["memory"]:
                raise InvalidValue("memory-swap", memory_swap, "must be at least the memory limit")
        limits["memory_swap"] = swap
    if cpus not in (None, ""):
        limits["cpus"] = units.parse_cpus("cpus", cpus)
    if cpu_shares not in (None, ""):
        limits["cpu_shares"] = units.parse_int("cpu-shares", cpu_shares, minimum=2)
    for key, value in (("cpuset_cpus", cpuset_cpus), ("cpuset_mems", cpuset_mems)):
        if value not in (None, ""):
            from .cgroups import parse_cpu_list

            try:
                if not parse_cpu_list(str(value)):
                    raise ValueError(value)
            except ValueError:
                raise InvalidValue(key.replace("_", "-"), value, "expected a list such as 0-1,3") from None
            limits[key] = str(value)
    if pids_limit not in (None, ""):
        pids = units.parse_int("pids-limit", pids_limit)
        if pids == 0 or pids < -1:
            raise InvalidValue("pids-limit", pids_limit, "must be positive, or -1 for unlimited")
        limits["pids_limit"] = pids
    return limits


def merge_limits(current: dict, update: dict) -> dict:
    """Limits after ``hako update``: the new values over the old, checked together."""
    merged = dict(current)
    merged.update(update)
    return _limits(
        merged.get("memory"),
        merged.get("memory_swap"),
        merged.get("cpus"),
        merged.get("cpu_shares"),
        merged.get("cpuset_cpus"),
        merged.get("cpuset_mems"),
        merged.get("pids_limit"),
    )


CPU_PERIOD = 100000


def oci_resources(limits: dict) -> dict:
    """The OCI runtime-spec ``linux.resources`` for a set of limits."""
    resources: dict = {}
    if "memory" in limits or "memory_swap" in limits:
        memory = resources.setdefault("memory", {})
        if "memory" in limits:
            memory["limit"] = limits["memory"]
            # Docker's default: as much swap as memory, unless told otherwise.
            memory["swap"] = limits.get("memory_swap", 2 * limits["memory"])
        elif "memory_swap" in limits:
            memory["swap"] = limits["memory_swap"]
    cpu = {}
    if "cpus" in limits:
        cpu["quota"] = int(limits["cpus"] * CPU_PERIOD)
        cpu["period"] = CPU_PERIOD
    if "cpu_shares" in limits:
        cpu["shares"] = limits["cpu_shares"]
    if "cpuset_cpus" in limits:
        cpu["cpus"] = limits["cpuset_cpus"]
    if "cpuset_mems" in limits:
        cpu["mems"] = limits["cpuset_mems"]
    if cpu:
        resources["cpu"] = cpu
    if "pids_limit" in limits:
        resources["pids"] = {"limit": limits["pids_limit"]}
    return resources


def unlimited_resources(old: dict, new: dict) -> dict:
    """Resources that lift the limits ``old`` had and ``new`` no longer has."""
    lifted: dict = {}
    if "memory" in old and "memory" not in new:
        lifted["memory"] = {"limit": -1, "swap": -1}
    if "cpus" in old and "cpus" not in new:
        lifted["cpu"] = {"quota": -1}
    if "pids_limit" in old and "pids_limit" not in new:
        lifted["pids"] = {"limit": -1}
    return lifted
