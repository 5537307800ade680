"""A container's privileges: capabilities, no_new_privs, seccomp, --privileged.

What a user asks (Docker's ``--cap-add``, ``--cap-drop``, ``--privileged``,
``--security-opt``) is checked here into the record's form, and a record
becomes the OCI fields the runtime applies: ``process.capabilities``,
``process.noNewPrivileges`` and ``linux.seccomp``. A seccomp profile is in
Docker's format (the default one is profile.py); it is resolved against the
container's capabilities and the host's architecture into the OCI form,
which the runtime compiles with libseccomp.
"""

from __future__ import annotations

import os

from ..errors import InvalidValue
from ..linux import CAPABILITIES, CAPABILITY_NUMBERS

# Docker's default set.
DEFAULT_CAPABILITIES = (
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
)

ACTIONS = (
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_LOG",
    "SCMP_ACT_TRACE",
)
OPERATORS = (
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
)
# uname's machine -> libseccomp's name for the native architecture.
MACHINE_ARCHES = {
    "x86_64": "SCMP_ARCH_X86_64",
    "i686": "SCMP_ARCH_X86",
    "aarch64": "SCMP_ARCH_AARCH64",
    "armv7l": "SCMP_ARCH_ARM",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "s390x": "SCMP_ARCH_S390X",
    "riscv64": "SCMP_ARCH_RISCV64",
}
SECURITY_OPTS = "no-new-privileges[=true|false], seccomp=unconfined|PROFILE.json, systempaths=unconfined"


def parse_capability(field: str, name) -> str:
    """``net_admin``, ``NET_ADMIN`` or ``CAP_NET_ADMIN`` as ``CAP_NET_ADMIN``; ``all`` as ``ALL``."""
    text = str(name).strip().upper()
    if text == "ALL":
        return "ALL"
    full = text if text.startswith("CAP_") else "CAP_" + text
    if full not in CAPABILITY_NUMBERS:
        raise InvalidValue(field, name, "not a capability (e.g. NET_ADMIN, SYS_TIME, ALL)")
    return full


def parse_capabilities(field: str, names) -> list[str]:
    """A list of capability names, normalized, each once, sorted."""
    if isinstance(names, str):
        names = [names]
    return sorted({parse_capability(field, name) for name in names or []})


def check_capability_changes(cap_add: list[str], cap_drop: list[str]) -> None:
    both = sorted(set(cap_add) & set(cap_drop))
    if both:
        raise InvalidValue("cap-drop", both[0], "is also in cap-add")


def capability_set(
    cap_add, cap_drop, privileged: bool, available: list[str] | None = None, base=DEFAULT_CAPABILITIES
) -> list[str]:
    """The capabilities a process holds, by Docker's rules.

    ``ALL`` in cap_add starts from every capability, ``ALL`` in cap_drop from
    none, otherwise from ``base`` (the default set); then the named ones are added and
    dropped. ``available`` are the capabilities hako itself can hand on (its
    bounding set): "every capability" means those, and adding another is refused.
    """
    if available is None:
        from ..linux import bounding_capabilities

        available = bounding_capabilities()
    known = [name for name in CAPABILITIES if name in available]
    missing = sorted(set(cap_add) - {"ALL"} - set(known))
    if missing:
        raise InvalidValue(
            "cap-add", missing[0], "this host's root does not hold it (not in its bounding set)"
        )
    if privileged:
        return list(known)
    if "ALL" in cap_add:
        held = set(known)
    elif "ALL" in cap_drop:
        held = set()
    else:
        held = set(base)
    held |= set(cap_add) - {"ALL"}
    held -= set(cap_drop)
    return [name for name in known if name in held]


def oci_capabilities(names: list[str]) -> dict:
    """process.capabilities holding ``names`` in every set but the ambient one.

    The runtime gives a user other than root only its ambient capabilities
    (none by default), inheritable ones included: with an inheritable set, a
    file's inheritable capabilities would reach such a process's permitted
    set on exec (CVE-2022-24769). Root keeps all four sets.
    """
    return {
        "bounding": list(names),
        "effective": list(names),
        "permitted": list(names),
        "inheritable": list(names),
        "ambient": [],
    }


def parse_security_opts(values) -> tuple[list[str], dict | None]:
    """Docker's ``--security-opt`` values: (the normalized options, a custom seccomp profile or None).

    A profile file is read now, as Docker does: the container keeps the
    profile it was made with even if the file changes or goes.
    """
    result: dict[str, str] = {}
    profile = None
    for value in values or []:
        text = str(value)
        key, sep, setting = text.partition("=")
        if not sep:
            key, sep, setting = text.partition(":")
        if key == "no-new-privileges":
            setting = setting or "true"
            if setting not in ("true", "false"):
                raise InvalidValue("security-opt", value, "no-new-privileges takes true or false")
        elif key == "seccomp":
            if not setting:
                raise InvalidValue("security-opt", value, "seccomp takes unconfined or a profile's path")
            if setting != "unconfined":
                profile = load_profile(setting, f"seccomp={setting}")
                setting = os.path.abspath(setting)
        elif key == "systempaths":
            if setting != "unconfined":
                raise InvalidValue("security-opt", value, "systempaths takes unconfined")
        else:
            raise InvalidValue("security-opt", value, f"known options: {SECURITY_OPTS}")
        result[key] = setting
    return [f"{key}={setting}" for key, setting in sorted(result.items())], profile


def security_settings(record: dict) -> dict:
    """{"no_new_privileges", "seccomp" ("default", "unconfined" or "custom"), "systempaths"} of a record."""
    opts = dict(opt.split("=", 1) for opt in record.get("security_opt") or [])
    privileged = bool(record.get("privileged"))
    seccomp = opts.get("seccomp", "unconfined" if privileged else "default")
    return {
        "no_new_privileges": opts.get("no-new-privileges", "false" if privileged else "true") == "true",
        "seccomp": seccomp if seccomp in ("default", "unconfined") else "custom",
        "systempaths": "unconfined" if privileged else opts.get("systempaths", "default"),
    }


def load_profile(path: str, field_value: str) -> dict:
    """A Docker-format seccomp profile from ``path``, checked."""
    import json

    try:
        with open(path, "rb") as f:
            data = f.read(4 << 20)
    except OSError as e:
        raise InvalidValue("security-opt", field_value, e.strerror) from None
    try:
        profile = json.loads(data)
    except ValueError as e:
        raise InvalidValue("security-opt", field_value, f"not JSON: {e}") from None
    check_profile(profile, field_value)
    return profile


def check_profile(profile, field_value: str) -> None:
    """Refuse a profile that is not in Docker's (or the OCI) format, naming the first bad entry."""

    def bad(why: str):
        return InvalidValue("security-opt", field_value, why)

    if not isinstance(profile, dict):
        raise bad("a profile is a JSON object")
    if profile.get("defaultAction") not in ACTIONS:
        raise bad(f"defaultAction {profile.get('defaultAction')!r} is not one of {', '.join(ACTIONS)}")
    for key in ("architectures", "syscalls", "archMap"):
        if not isinstance(profile.get(key, []), list):
            raise bad(f"{key} must be a list")
    for index, rule in enumerate(profile.get("syscalls", [])):
        where = f"syscalls[{index}]"
        if not isinstance(rule, dict):
            raise bad(f"{where} is not an object")
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise bad(f"{where} names no system call")
        if rule.get("action") not in ACTIONS:
            raise bad(f"{where}: action {rule.get('action')!r} is not one of {', '.join(ACTIONS)}")
        for arg in rule.get("args") or []:
            if not isinstance(arg, dict) or arg.get("op") not in OPERATORS:
                raise bad(f"{where}: an argument's op must be one of {', '.join(OPERATORS)}")
            if not isinstance(arg.get("index"), int) or not 0 <= arg["index"] <= 5:
                raise bad(f"{where}: an argument's index must be 0 to 5")
            for key in ("value", "valueTwo"):
                if not isinstance(arg.get(key, 0), int) or arg.get(key, 0) < 0:
                    raise bad(f"{where}: an argument's {key} must be a number")


def native_arch() -> str:
    machine = os.uname().machine
    return MACHINE_ARCHES.get(machine, "SCMP_ARCH_" + machine.upper())


def _kernel_version() -> tuple[int, ...]:
    release = os.uname().release
    numbers = []
    for part in release.split("-")[0].split(".")[:2]:
        numbers.append(int(part) if part.isdigit() else 0)
    return tuple(numbers)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in str(text).split(".")[:2])


def oci_seccomp(profile: dict, capabilities: list[str], arch: str | None = None) -> dict:
    """A Docker-format profile resolved into OCI ``linux.seccomp`` for one container.

    A rule whose ``includes`` the container does not meet (capabilities it
    lacks, other architectures, a newer kernel), or whose ``excludes`` it
    meets, is left out, as Docker does.
    """
    arch = arch or native_arch()
    held = set(capabilities)
    architectures = list(profile.get("architectures") or [])
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == arch:
            architectures = [arch, *entry.get("subArchitectures", [])]
    if not architectures:
        architectures = [arch]
    kernel = _kernel_version()
    syscalls = []
    for rule in profile.get("syscalls", []):
        includes = rule.get("includes") or {}
        excludes = rule.get("excludes") or {}
        if includes.get("caps") and not set(includes["caps"]) <= held:
            continue
        if includes.get("arches") and not set(includes["arches"]) & set(architectures):
            continue
        if includes.get("minKernel") and kernel < _version(includes["minKernel"]):
            continue
        if set(excludes.get("caps") or ()) & held or set(excludes.get("arches") or ()) & {arch}:
            continue
        names = rule.get("names") or [rule["name"]]
        entry = {"names": list(names), "action": rule["action"]}
        if rule.get("errnoRet") is not None:
            entry["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            entry["args"] = [
                {
                    "index": a["index"],
                    "value": a.get("value", 0),
                    "valueTwo": a.get("valueTwo", 0),
                    "op": a["op"],
                }
                for a in rule["args"]
            ]
        syscalls.append(entry)
    result = {"defaultAction": profile["defaultAction"], "architectures": architectures, "syscalls": syscalls}
    if profile.get("defaultErrnoRet") is not None:
        result["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return result


def oci_fields(record: dict, capabilities: list[str] | None = None) -> dict:
    """The OCI fields of a record's privileges: {"capabilities", "noNewPrivileges", "seccomp" or None},
    and the ``settings`` they come from (security_settings).

    ``capabilities`` overrides the record's set (an exec with its own).
    """
    settings = security_settings(record)
    if capabilities is None:
        capabilities = capability_set(
            record.get("cap_add") or [], record.get("cap_drop") or [], bool(record.get("privileged"))
        )
    seccomp = None
    if settings["seccomp"] != "unconfined":
        if settings["seccomp"] == "custom":
            profile = record["seccomp_profile"]
        else:
            from .profile import default_profile

            profile = default_profile()
        seccomp = oci_seccomp(profile, capabilities)
    return {
        "capabilities": oci_capabilities(capabilities),
        "noNewPrivileges": settings["no_new_privileges"],
        "seccomp": seccomp,
        "settings": settings,
    }


def exec_privileges(record: dict, process: dict, privileged: bool, cap_add, cap_drop) -> tuple[dict, dict]:
    """An exec's own privileges: (its OCI seccomp, {} for none; its process object).

    It starts from the container's capabilities; ``privileged`` gives it
    every capability and no filter, ``cap_add``/``cap_drop`` change the set
    by Docker's rules (``ALL`` too). A filter from a profile is resolved
    again for the exec's capabilities.
    """
    add = parse_capabilities("cap-add", cap_add)
    drop = parse_capabilities("cap-drop", cap_drop)
    check_capability_changes(add, drop)
    from ..linux import bounding_capabilities

    available = bounding_capabilities()
    own = capability_set(
        record.get("cap_add") or [], record.get("cap_drop") or [], bool(record.get("privileged")), available
    )
    names = capability_set(add, drop, privileged, available, base=own)
    process = dict(process, capabilities=oci_capabilities(names))
    if privileged:
        process["noNewPrivileges"] = False
        return {}, process
    fields = oci_fields(record, names)
    return fields["seccomp"] or {}, process
