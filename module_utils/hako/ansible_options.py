"""The container options of the Ansible modules, declared as data, and how they are compared.

Plain Python without any Ansible import: the modules in library/ build their
argument_spec from ``OPTIONS`` and hand the parameters here; the tests call it
directly.

Each option names the record field it lands in, how a value the user typed is
brought to the form the record holds (``normalize``), how it is compared with
an existing container (a comparison mode: ``strict``, ``allow_more_present``
or ``ignore``) and whether a difference can be changed in place (cgroup
limits and the restart policy with one update, networks by connecting and
disconnecting) or needs the container made again. Only options the user set
are compared: an option left out means "whatever it is".
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Callable

from . import text, units
from .errors import HakoError, InvalidValue
from .options import (
    NAMESPACE_KINDS,
    _limits,
    _parse_env,
    _parse_namespace,
    _parse_networks,
    _parse_tmpfs,
    _parse_userns,
    _parse_volume,
    _stop_timeout,
    parse_restart_policy,
    parse_signal,
    parse_storage_opts,
    parse_user,
    validate_name,
)

STRICT = "strict"
IGNORE = "ignore"
ALLOW_MORE_PRESENT = "allow_more_present"
COMPARISON_MODES = (STRICT, IGNORE, ALLOW_MORE_PRESENT)

# What to do with an existing container.
NOTHING = "nothing"
UPDATE = "update"
RECREATE = "recreate"

LIMIT_OPTIONS = ("memory", "memory_swap", "cpus", "cpu_shares", "cpuset_cpus", "cpuset_mems", "pids_limit")


@dataclass(frozen=True)
class Option:
    """One container option of the modules.

    ``actual`` reads the comparable value from a container record;
    ``normalize`` turns what the user typed into the same form (raising
    InvalidValue); ``kind`` is "value", "list" (compared as a set) or "dict".
    ``matches`` (wanted, actual, mode) replaces the comparison of its kind;
    ``changes`` (wanted, actual, mode) names the in-place actions a difference
    takes, when they are not one ``update NAME``.
    """

    name: str
    type: str
    actual: Callable[[dict], Any]
    normalize: Callable[[Any], Any]
    comparison: str = STRICT
    kind: str = "value"
    in_place: bool = False
    elements: str | None = None
    aliases: tuple[str, ...] = ()
    equal: Callable[[Any, Any], bool] | None = None
    suboptions: dict | None = None
    matches: Callable[[Any, Any, str], bool] | None = None
    changes: Callable[[Any, Any, str], list[str]] | None = None

    def argument_spec(self) -> dict:
        spec: dict = {"type": self.type}
        if self.elements:
            spec["elements"] = self.elements
        if self.suboptions:
            spec["options"] = self.suboptions
        if self.aliases:
            spec["aliases"] = list(self.aliases)
        return spec


# Normalizers: the value as typed -> the value as compared ---------------------


def _words(name: str, value) -> list[str] | None:
    """A command as a list of words: a string is split as a shell would, a list kept."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as e:
            raise InvalidValue(name, value, str(e)) from None
    if isinstance(value, (list, tuple)):
        return [_scalar_text(name, item) for item in value]
    raise InvalidValue(name, value, "expected a string or a list of strings")


def _command(value) -> list[str] | None:
    return _words("command", value) or None  # empty: the image's command


def _entrypoint(value) -> list[str]:
    return _words("entrypoint", value)  # empty: no entrypoint at all


def _scalar_text(name: str, value) -> str:
    """A string; numbers become their text, booleans are refused (yes/true/True are ambiguous)."""
    if isinstance(value, bool):
        raise InvalidValue(name, value, "quote it: a YAML boolean could mean yes, true or True")
    if isinstance(value, (str, int, float)):
        return str(value)
    raise InvalidValue(name, value, "expected a string")


def _env(value) -> dict[str, str]:
    """NAME=value entries (a list) or a mapping, as a mapping; the last of a name wins."""
    if isinstance(value, dict):
        entries = [f"{key}={_scalar_text(f'env {key}', item)}" for key, item in value.items()]
    elif isinstance(value, (list, tuple)):
        entries = [_scalar_text("env", item) for item in value]
        for entry in entries:
            if "=" not in entry:
                raise InvalidValue("env", entry, "expected NAME=value")
    else:
        raise InvalidValue("env", value, "expected a mapping or a list of NAME=value")
    return env_dict(_parse_env(entries))


def env_entries(value) -> list[str]:
    """``env`` as typed (a mapping or a list of NAME=value) as NAME=value entries."""
    return [f"{key}={val}" for key, val in _env(value).items()]


def env_dict(entries: list[str]) -> dict[str, str]:
    result = {}
    for entry in entries:
        key, _, val = entry.partition("=")
        result[key] = val
    return result


def _labels(value) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidValue("labels", value, "expected a mapping")
    labels = {}
    for key, item in value.items():
        if not key:
            raise InvalidValue("labels", key, "a label needs a name")
        labels[str(key)] = _scalar_text(f"label {key}", item)
    return labels


def _hostname(value) -> str:
    value = _scalar_text("hostname", value)
    if not text.is_hostname(value):
        raise InvalidValue("hostname", value, "not a valid host name")
    return value


def _workdir(value) -> str:
    value = _scalar_text("workdir", value)
    if not value.startswith("/"):
        raise InvalidValue("workdir", value, "must be an absolute path")
    return value


def user_text(user: dict | None) -> str | None:
    if not user:
        return None
    return user["user"] + (f":{user['group']}" if user.get("group") else "")


def _user(value) -> str | None:
    return user_text(parse_user(_scalar_text("user", value)))


def _namespaces(value) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidValue("namespaces", value, f"expected a mapping of kinds ({', '.join(NAMESPACE_KINDS)})")
    result = {}
    for kind, mode in value.items():
        if kind not in NAMESPACE_KINDS:
            raise InvalidValue("namespaces", kind, f"known kinds: {', '.join(NAMESPACE_KINDS)}")
        result[kind] = _parse_namespace(kind, "private" if mode is None else _scalar_text("namespaces", mode))
    return result


def userns_text(userns: dict | None) -> str:
    if not userns:
        return "host"
    if userns.get("auto"):
        return f"auto:{userns['size']}"
    return f"{userns['host_id']}:{userns['size']}"


def _userns(value) -> str:
    return userns_text(_parse_userns(_scalar_text("userns", value)))


def _userns_equal(wanted: str, actual: str) -> bool:
    """ "auto" matches whatever range was picked, if its size is the one asked for."""
    if wanted.startswith("auto:") and actual != "host":
        return wanted.split(":")[1] == actual.split(":")[1]
    return wanted == actual


def volume_text(volume: dict) -> str:
    return f"{volume['source']}:{volume['destination']}:{'ro' if volume['readonly'] else 'rw'}"


def _volumes(value) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise InvalidValue("volumes", value, "expected a list of /host/path:/container/path[:ro|rw]")
    return [volume_text(_parse_volume(_scalar_text("volumes", item))) for item in value]


def port_text(port: dict) -> str:
    return f"{port['host_ip']}:{port['host_port']}:{port['container_port']}/{port['protocol']}"


def _published_ports(value) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise InvalidValue("publish", value, "expected a list of [ip:]hostport:containerport[/tcp|udp]")
    from .options import parse_ports

    return [port_text(p) for p in parse_ports([_scalar_text("published_ports", item) for item in value])]


def mount_as_volume(mount) -> str:
    """A ``mounts`` entry ({source, target, read_only}) as a ``volumes`` entry."""
    if not isinstance(mount, dict) or not mount.get("source") or not mount.get("target"):
        raise InvalidValue("mounts", mount, "each mount needs a source and a target")
    unknown = set(mount) - {"source", "target", "read_only", "type"}
    if unknown or mount.get("type", "bind") not in (None, "bind"):
        raise InvalidValue("mounts", mount, "a mount takes type (bind), source, target and read_only")
    return f"{mount['source']}:{mount['target']}:{'ro' if mount.get('read_only') else 'rw'}"


def tmpfs_text(tmpfs: dict) -> str:
    return tmpfs["destination"] + (":" + ",".join(tmpfs["options"]) if tmpfs["options"] else "")


def _tmpfs(value) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise InvalidValue("tmpfs", value, "expected a list of /container/path[:options]")
    return [tmpfs_text(_parse_tmpfs(_scalar_text("tmpfs", item))) for item in value]


def _boolean(name: str) -> Callable[[Any], bool]:
    def normalize(value) -> bool:
        if not isinstance(value, bool):
            raise InvalidValue(name, value, "expected true or false")
        return value

    return normalize


def _limit(name: str) -> Callable[[Any], Any]:
    def normalize(value):
        if isinstance(value, bool):
            raise InvalidValue(name, value, "expected a number")
        if name == "memory_swap":
            return units.parse_memory("memory-swap", value, unlimited_ok=True)
        return _limits(**{key: value if key == name else None for key in LIMIT_OPTIONS})[name]

    return normalize


def _sysctls(value) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidValue("sysctls", value, "expected a mapping such as {net.ipv4.ip_forward: 1}")
    from .network.sysctls import parse

    return parse(value)


def _storage_opts(value) -> dict[str, int]:
    """{size: 64m} as typed -> {"size": bytes}: 64m and 65536k are the same size."""
    if not isinstance(value, dict):
        raise InvalidValue("storage_opts", value, "expected a mapping such as {size: 64m}")
    return {
        key: units.parse_size("storage-opt size", item) for key, item in parse_storage_opts(value).items()
    }


def _record_storage_opts(record: dict) -> dict[str, int]:
    return {
        key: units.parse_size("storage-opt size", item)
        for key, item in (record.get("storage_opts") or {}).items()
    }


def _restart_policy(value) -> str:
    return parse_restart_policy(_scalar_text("restart_policy", value))


def _stop_signal(value) -> int:
    return parse_signal("stop_signal", _scalar_text("stop_signal", value))


_NETWORK_KEYS = ("name", "ip", "aliases")


def _networks(value) -> dict[str, dict]:
    """Networks as typed (names, or mappings with name, ip and aliases) -> name -> {ip, aliases}.

    In the order given (the container's eth0, eth1, ...). An ``ip`` or
    ``aliases`` left out is None: not compared.
    """
    if not isinstance(value, (list, tuple)):
        raise InvalidValue("networks", value, "expected a list of network names or of mappings")
    entries = []
    for item in value:
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            raise InvalidValue(
                "networks", item, "expected a network's name or a mapping with name, ip, aliases"
            )
        unknown = sorted(set(item) - set(_NETWORK_KEYS))
        if unknown:
            raise InvalidValue(
                "networks", item, f"unknown key {unknown[0]} (a network takes name, ip, aliases)"
            )
        aliases = item.get("aliases")
        if aliases is not None:
            if not isinstance(aliases, (list, tuple)):
                raise InvalidValue("networks", aliases, "aliases is a list of host names")
            aliases = sorted(_scalar_text("network-alias", alias) for alias in aliases)
        ip = item.get("ip")
        entries.append(
            {
                "name": item.get("name"),
                "ip": None if ip in (None, "") else _scalar_text("ip", ip),
                "aliases": aliases,
            }
        )
    parsed = _parse_networks([{**entry, "aliases": entry["aliases"] or []} for entry in entries])
    return {
        network["name"]: {"ip": network["ip"], "aliases": entry["aliases"]}
        for network, entry in zip(parsed, entries)
    }


def _record_networks(record: dict) -> dict[str, dict]:
    return {
        e["network"]: {"ip": e["ip"], "aliases": sorted(e.get("aliases", []))}
        for e in record.get("networks", [])
    }


def endpoint_matches(wanted: dict, actual: dict) -> bool:
    """A container's place on one network is as wanted: the address and aliases, where given."""
    return (wanted["ip"] is None or wanted["ip"] == actual["ip"]) and (
        wanted["aliases"] is None or wanted["aliases"] == actual["aliases"]
    )


def network_changes(wanted: dict, actual: dict | None, mode: str) -> tuple[list[str], list[str]]:
    """The networks to leave and to join so that ``actual`` is as ``wanted``.

    Under strict, networks not wanted are left. A network whose address or
    aliases differ is left and joined again: the kernel's interface and the
    held address go with the endpoint.
    """
    actual = actual or {}
    leave = [
        name
        for name, have in actual.items()
        if (name not in wanted and mode == STRICT)
        or (name in wanted and not endpoint_matches(wanted[name], have))
    ]
    join = [
        name
        for name, want in wanted.items()
        if name not in actual or not endpoint_matches(want, actual[name])
    ]
    return leave, join


def _networks_match(wanted: dict, actual: dict | None, mode: str) -> bool:
    return network_changes(wanted, actual, mode) == ([], [])


def _network_actions(wanted: dict, actual: dict | None, mode: str) -> list[str]:
    leave, join = network_changes(wanted, actual, mode)
    return [f"disconnect {name}" for name in leave] + [f"connect {name}" for name in join]


def networks_after(wanted: dict, actual: dict | None, mode: str) -> dict:
    """A container's networks after connecting and disconnecting: those kept, then those joined."""
    actual = actual or {}
    leave, join = network_changes(wanted, actual, mode)
    after = {name: have for name, have in actual.items() if name not in leave}
    after.update({name: wanted[name] for name in join})
    return after


_LIMIT_TYPES = {
    "memory": "raw",
    "memory_swap": "raw",
    "cpus": "float",
    "cpu_shares": "int",
    "cpuset_cpus": "str",
    "cpuset_mems": "str",
    "pids_limit": "int",
}


def _record_limit(name: str) -> Callable[[dict], Any]:
    return lambda record: record.get("limits", {}).get(name)


OPTIONS: tuple[Option, ...] = (
    Option("image", "str", lambda r: r.get("image_id"), lambda v: _scalar_text("image", v)),
    Option("command", "raw", lambda r: r.get("command") or None, _command),
    Option("entrypoint", "raw", lambda r: r.get("entrypoint"), _entrypoint),
    Option(
        "env",
        "raw",
        lambda r: env_dict(r.get("env", [])),
        _env,
        comparison=ALLOW_MORE_PRESENT,
        kind="dict",
    ),
    Option("hostname", "str", lambda r: r.get("hostname"), _hostname),
    Option("user", "str", lambda r: user_text(r.get("user")), _user),
    Option("workdir", "str", lambda r: r.get("workdir"), _workdir, aliases=("working_dir",)),
    Option("tty", "bool", lambda r: bool(r.get("tty")), _boolean("tty")),
    Option("interactive", "bool", lambda r: bool(r.get("interactive")), _boolean("interactive")),
    Option(
        "namespaces",
        "dict",
        lambda r: r.get("namespaces", {}),
        _namespaces,
        comparison=ALLOW_MORE_PRESENT,
        kind="dict",
    ),
    Option("userns", "str", lambda r: userns_text(r.get("userns")), _userns, equal=_userns_equal),
    *(
        Option(
            name,
            _LIMIT_TYPES[name],
            _record_limit(name),
            _limit(name),
            in_place=True,
        )
        for name in LIMIT_OPTIONS
    ),
    Option(
        "volumes",
        "list",
        lambda r: [volume_text(v) for v in r.get("volumes", [])],
        _volumes,
        kind="list",
        elements="str",
    ),
    # Docker's long form of volumes: compared together with them, as "volumes".
    Option(
        "mounts",
        "list",
        lambda r: None,
        lambda v: v,
        comparison=IGNORE,
        kind="list",
        elements="dict",
        suboptions={
            "type": {"type": "str", "choices": ["bind"], "default": "bind"},
            "source": {"type": "path", "required": True},
            "target": {"type": "str", "required": True},
            "read_only": {"type": "bool", "default": False},
        },
    ),
    Option(
        "tmpfs",
        "list",
        lambda r: [tmpfs_text(t) for t in r.get("tmpfs", [])],
        _tmpfs,
        kind="list",
        elements="str",
    ),
    Option("read_only", "bool", lambda r: bool(r.get("read_only")), _boolean("read_only")),
    # The writable layer's filesystem is made with the container: a new size makes it again.
    Option("storage_opts", "dict", _record_storage_opts, _storage_opts, kind="dict"),
    # Joined and left in place, a running container keeping its process.
    Option(
        "networks",
        "list",
        _record_networks,
        _networks,
        kind="dict",
        in_place=True,
        elements="raw",
        matches=_networks_match,
        changes=_network_actions,
    ),
    Option(
        "restart_policy",
        "str",
        lambda r: r.get("restart_policy", "no"),
        _restart_policy,
        in_place=True,
    ),
    Option(
        "labels",
        "dict",
        lambda r: r.get("labels", {}),
        _labels,
        comparison=ALLOW_MORE_PRESENT,
        kind="dict",
    ),
    Option(
        "published_ports",
        "list",
        lambda r: [port_text(p) for p in r.get("ports", [])],
        _published_ports,
        kind="list",
        elements="str",
        aliases=("ports",),
    ),
    Option("sysctls", "dict", lambda r: r.get("sysctls", {}), _sysctls),
    Option("stop_signal", "str", lambda r: r.get("stop_signal"), _stop_signal),
    # How long a stop waits: used when stopping, so not compared unless asked.
    Option("stop_timeout", "int", lambda r: r.get("stop_timeout"), _stop_timeout, comparison=IGNORE),
)

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}


def argument_spec() -> dict:
    """The argument_spec entries of the container options (no defaults: unset means "not compared")."""
    return {option.name: option.argument_spec() for option in OPTIONS}


# The CLI's field names in InvalidValue (options.py) -> the modules' option names.
_FIELD_TO_OPTION = {
    "restart": "restart_policy",
    "publish": "published_ports",
    "volume": "volumes",
    "label": "labels",
    "namespace": "namespaces",
    "network": "networks",
    "network-alias": "networks",
    "stop-signal": "stop_signal",
    "stop-timeout": "stop_timeout",
    "storage-opt": "storage_opts",
}


def option_for_field(field: str) -> str:
    """The module option an InvalidValue's field belongs to."""
    if field.endswith(" namespace"):
        return "namespaces"
    first = field.split(" ", 1)[0]
    return _FIELD_TO_OPTION.get(first, first.replace("-", "_"))


class OptionError(HakoError):
    """A module parameter with a bad value: the message names the option."""

    def __init__(self, option: str, detail: str) -> None:
        self.option = option
        super().__init__(f"invalid value for {option}: {detail}")


def _as_option_error(error: InvalidValue, option: str | None = None) -> OptionError:
    """An InvalidValue (named as the CLI names things) as an error naming the module's option."""
    option = option or option_for_field(error.field)
    detail = str(error).split(": ", 1)[1] if ": " in str(error) else str(error)
    if error.field.replace("-", "_") != option:
        detail = f"{error.field} {detail}"
    return OptionError(option, detail)


def check_name(name) -> str:
    """A container name the modules may look up (never a path), or OptionError."""
    try:
        return validate_name(name)
    except InvalidValue as e:
        raise _as_option_error(e, "name") from None


# Desired state ----------------------------------------------------------------


def normalize(params: dict) -> dict:
    """The compared form of every container option the user set (None means unset).

    ``mounts`` are folded into ``volumes``. Raises OptionError naming the option.
    """
    wanted = {}
    for option in OPTIONS:
        value = params.get(option.name)
        if value is None or option.name == "mounts":
            continue
        try:
            wanted[option.name] = option.normalize(value)
        except InvalidValue as e:
            raise _as_option_error(e, option.name) from None
    if params.get("mounts") is not None:
        try:
            extra = [mount_as_volume(m) for m in params["mounts"]]
            wanted["volumes"] = wanted.get("volumes", []) + _volumes(extra)
        except InvalidValue as e:
            raise _as_option_error(e, "mounts") from None
    return wanted


def create_options(params: dict) -> dict:
    """Keyword arguments of ContainerOptions (JSON only) for a new container from the parameters."""
    options: dict = {"image": params["image"], "name": params["name"]}
    p = {key: value for key, value in params.items() if value is not None}
    if "command" in p:
        options["command"] = _command(p["command"])
    if "entrypoint" in p:
        options["entrypoint"] = _entrypoint(p["entrypoint"])
    if "env" in p:
        options["env"] = env_entries(p["env"])
    if "labels" in p:
        options["labels"] = _labels(p["labels"])
    if "sysctls" in p:
        options["sysctls"] = {str(k): str(v) for k, v in p["sysctls"].items()}
    if "storage_opts" in p:
        options["storage_opts"] = {
            str(key): value if isinstance(value, bool) else str(value)
            for key, value in p["storage_opts"].items()
        }
    if "published_ports" in p:
        options["ports"] = [str(port) for port in p["published_ports"]]
    if "namespaces" in p:
        options["namespaces"] = {kind: str(mode or "private") for kind, mode in p["namespaces"].items()}
    volumes = list(p.get("volumes", [])) + [mount_as_volume(m) for m in p.get("mounts", [])]
    if volumes:
        options["volumes"] = [str(v) for v in volumes]
    for key in ("hostname", "user", "workdir", "userns", "tmpfs", "stop_signal"):
        if key in p:
            options[key] = p[key] if key == "tmpfs" else str(p[key])
    for key in ("tty", "interactive", "read_only", "stop_timeout", *LIMIT_OPTIONS):
        if key in p:
            options[key] = p[key]
    if "restart_policy" in p:
        options["restart_policy"] = str(p["restart_policy"])
    if "networks" in p:
        options["networks"] = [
            {"name": name, "ip": entry["ip"], "aliases": entry["aliases"] or []}
            for name, entry in _networks(p["networks"]).items()
        ]
    elif "network" not in options.get("namespaces", {}):
        from .options import default_networks

        options["networks"] = default_networks()
    return options


def check_create(params: dict) -> dict:
    """Validate a new container as a whole (limits together, paths); its record, or OptionError."""
    from .options import ContainerOptions, validate

    options = create_options(params)
    try:
        return validate(ContainerOptions(options.pop("image"), **options))
    except InvalidValue as e:
        raise _as_option_error(e) from None


# Comparison ---------------------------------------------------------------------


def comparison_modes(overrides: dict | None) -> dict[str, str]:
    """The comparison mode of each option: the defaults, then ``*``, then the user's own.

    As with community.docker, ``*`` (strict or ignore) sets every option the
    user does not name; ``allow_more_present`` fits only lists and mappings.
    """
    modes = {option.name: option.comparison for option in OPTIONS}
    overrides = dict(overrides or {})
    if "mounts" in overrides:  # compared as part of volumes
        overrides.setdefault("volumes", overrides.pop("mounts"))
    star = overrides.pop("*", None)
    if star is not None:
        if star not in (STRICT, IGNORE):
            raise OptionError("comparisons", f"'*' may be strict or ignore, not {star!r}")
        modes = {name: star for name in modes}
    for name, mode in overrides.items():
        option = BY_NAME.get(name)
        if option is None:
            raise OptionError("comparisons", f"unknown option {name!r}")
        if mode not in COMPARISON_MODES:
            raise OptionError("comparisons", f"{name}: {mode!r} is not one of {', '.join(COMPARISON_MODES)}")
        if mode == ALLOW_MORE_PRESENT and option.kind == "value":
            raise OptionError("comparisons", f"{name}: allow_more_present fits only lists and mappings")
        modes[name] = mode
    modes["mounts"] = IGNORE
    return modes


def _matches(option: Option, mode: str, wanted, actual) -> bool:
    if option.matches is not None:
        return option.matches(wanted, actual, mode)
    if option.kind == "dict":
        actual = actual or {}
        if mode == ALLOW_MORE_PRESENT:
            return all(key in actual and actual[key] == value for key, value in wanted.items())
        if option.name == "namespaces":
            # Kinds left out are private, the default.
            wanted = {**{kind: "private" for kind in NAMESPACE_KINDS}, **wanted}
        return wanted == actual
    if option.kind == "list":
        actual = actual or []
        if mode == ALLOW_MORE_PRESENT:
            return all(item in actual for item in wanted)
        return sorted(wanted) == sorted(actual)
    if option.equal is not None and wanted is not None and actual is not None:
        return option.equal(wanted, actual)
    return wanted == actual


@dataclass(frozen=True)
class Difference:
    option: str
    before: Any
    after: Any
    in_place: bool


def compare(wanted: dict, record: dict, modes: dict[str, str]) -> list[Difference]:
    """The differences between the wanted options and a container's record, option by option.

    ``wanted`` is ``normalize``'s result, with ``image`` replaced by the image
    ID it names; options the user did not set are not there and not compared.
    """
    differences = []
    for option in OPTIONS:
        if option.name not in wanted or modes.get(option.name, option.comparison) == IGNORE:
            continue
        mode = modes.get(option.name, option.comparison)
        actual = option.actual(record)
        if not _matches(option, mode, wanted[option.name], actual):
            differences.append(Difference(option.name, actual, wanted[option.name], option.in_place))
    return differences


def decide(differences: list[Difference], recreate: bool = False) -> str:
    """NOTHING, UPDATE (every difference can change in place) or RECREATE."""
    if recreate or any(not d.in_place for d in differences):
        return RECREATE
    return UPDATE if differences else NOTHING


def diff_values(wanted: dict, record: dict | None, modes: dict[str, str], decision: str) -> tuple[dict, dict]:
    """Before and after of the compared options, for diff mode.

    After a recreate the container has exactly what was asked for; after an
    update or nothing, an option that matched keeps what it had (a mapping
    may hold more than was asked under allow_more_present).
    """
    before, after = {}, {}
    for option in OPTIONS:
        name = option.name
        if name not in wanted or modes.get(name, option.comparison) == IGNORE:
            continue
        actual = option.actual(record) if record is not None else None
        if record is not None:
            before[name] = actual
        matched = record is not None and _matches(option, modes[name], wanted[name], actual)
        if name == "networks" and record is not None and decision != RECREATE:
            after[name] = networks_after(wanted[name], actual, modes[name])
        else:
            after[name] = actual if matched and decision != RECREATE else wanted[name]
    return before, after


def in_place_actions(differences: list[Difference], modes: dict[str, str]) -> list[str]:
    """The actions changing the differences in place: ``update NAME``, or the option's own."""
    actions = []
    for d in differences:
        option = BY_NAME[d.option]
        if option.changes is not None:
            actions += option.changes(d.after, d.before, modes.get(d.option, option.comparison))
        else:
            actions.append(f"update {d.option}")
    return actions


def update_arguments(differences: list[Difference], params: dict) -> dict:
    """Engine.update keywords for the in-place differences: the limits as typed, the restart policy."""
    return {
        d.option: params[d.option] for d in differences if d.in_place and BY_NAME[d.option].changes is None
    }


def exit_with_result(module, result: dict) -> None:
    """End an Ansible module with ``result``: its ``diff`` is returned only in diff mode."""
    diff = result.pop("diff", None)
    if module._diff and diff is not None:
        result["diff"] = diff
    module.exit_json(**result)
