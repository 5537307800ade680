"""Turning a container record into an OCI runtime-spec config.json."""

from __future__ import annotations

from .. import security
from ..devices import oci_devices
from ..options import oci_resources
from ..runtime.spec import OCI_VERSION, OVERLAY_ANNOTATION

# The OCI defaults (as runc's `spec` writes them) for what to hide and what
# to make read-only under /proc and /sys.
MASKED_PATHS = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
READONLY_PATHS = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
]

_NS_TYPES = {
    "ipc": "ipc",
    "mount": "mount",
    "network": "network",
    "pid": "pid",
    "uts": "uts",
    "cgroup": "cgroup",
}


V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "freezer")


def default_mounts(
    cgroup_mode: str, private_cgroupns: bool, v1_hierarchies: list[tuple[str, list[str]]] | None = None
) -> list[dict]:
    """The mounts every container gets.

    ``v1_hierarchies`` lists the host's v1 hierarchies as (directory name,
    controllers): co-mounted controllers ("cpu,cpuacct" on most hosts) can
    only be mounted together. By default each controller is its own.
    """
    if v1_hierarchies is None:
        v1_hierarchies = [(c, [c]) for c in V1_CONTROLLERS]
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
    ]
    if private_cgroupns:
        if cgroup_mode == "unified":
            mounts.append(
                {
                    "destination": "/sys/fs/cgroup",
                    "type": "cgroup2",
                    "source": "cgroup",
                    "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
                }
            )
        else:
            # On v1 each controller is its own hierarchy; in a private cgroup
            # namespace each shows the container's own cgroup as its root.
            mounts.append(
                {
                    "destination": "/sys/fs/cgroup",
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "options": ["nosuid", "noexec", "nodev", "mode=755", "size=64k", "ro"],
                }
            )
            for directory, controllers in v1_hierarchies:
                mounts.append(
                    {
                        "destination": f"/sys/fs/cgroup/{directory}",
                        "type": "cgroup",
                        "source": "cgroup",
                        "options": ["nosuid", "noexec", "nodev", "relatime", "ro", *controllers],
                    }
                )
    return mounts


def build_config(
    record: dict,
    image_config: dict,
    lower_dirs: list[str],
    upper: str,
    work: str,
    namespace_paths: dict[str, str],
    id_map: dict | None,
    user: dict,
    cgroup_mode: str,
    cgroups_path: str,
    v1_hierarchies: list[tuple[str, list[str]]] | None = None,
) -> dict:
    """The config.json of one start of a container.

    ``namespace_paths`` maps a kind to the /proc/PID/ns path of the container
    it joins; ``id_map`` is {"host_id", "size"} for a private user namespace;
    ``user`` is the resolved {"uid", "gid", "additionalGids"}.
    """
    image = image_config.get("config", {})
    process_args = process_command(record, image)
    env = _merge_env(image.get("Env", []), record["env"])
    if record["tty"]:
        env = with_terminal_env(env)
    hostname = record.get("hostname") or record["id"][:12]
    if not any(e.startswith("HOSTNAME=") for e in env) and record["namespaces"]["uts"] == "private":
        env.append(f"HOSTNAME={hostname}")

    namespaces = []
    for kind, mode in record["namespaces"].items():
        if mode == "private":
            namespaces.append({"type": _NS_TYPES[kind]})
        elif mode.startswith("container:"):
            namespaces.append({"type": _NS_TYPES[kind], "path": namespace_paths[kind]})
    if id_map:
        namespaces.insert(0, {"type": "user"})

    mounts = default_mounts(cgroup_mode, record["namespaces"]["cgroup"] == "private", v1_hierarchies)
    privileges = security.oci_fields(record)
    unconfined_paths = privileges["settings"]["systempaths"] == "unconfined"
    if record.get("privileged"):
        # As Docker's --privileged: /sys and the cgroup hierarchies writable.
        for mount in mounts:
            if mount["type"] in ("sysfs", "cgroup", "cgroup2") or mount["destination"] == "/sys/fs/cgroup":
                mount["options"] = [o for o in mount["options"] if o != "ro"]
    own = []
    for volume in record["volumes"]:
        options = ["rbind", "ro" if volume["readonly"] else "rw"]
        own.append(
            {
                "destination": volume["destination"],
                "type": "bind",
                "source": volume["source"],
                "options": options,
            }
        )
    for tmpfs in record["tmpfs"]:
        # Docker's defaults (noexec, nosuid, nodev) unless the user says exec, suid or dev.
        options = ["noexec", "nosuid", "nodev", *tmpfs["options"]]
        if not any(o.startswith("size=") for o in options):
            options.append("size=65536k")
        own.append(
            {"destination": tmpfs["destination"], "type": "tmpfs", "source": "tmpfs", "options": options}
        )
    # Shallower first, as Docker orders them: `--tmpfs /srv -v X:/srv/data`
    # must not hide the volume under the tmpfs.
    mounts += sorted(own, key=lambda m: m["destination"].rstrip("/").count("/"))

    devices = record.get("devices") or []
    nodes, device_rules = oci_devices(devices, bool(record.get("privileged")))
    if id_map and nodes:
        # No mknod in a user namespace: the host's nodes are bound in.
        host_paths = {d["container"]: d["host"] for d in devices}
        for node in nodes:
            source = host_paths.get(node["path"], node["path"])
            mounts.append(
                {"destination": node["path"], "type": "bind", "source": source, "options": ["bind"]}
            )
        nodes = []

    linux: dict = {
        "namespaces": namespaces,
        "resources": {**oci_resources(record["limits"]), "devices": device_rules},
        "cgroupsPath": cgroups_path,
        "maskedPaths": [] if unconfined_paths else list(MASKED_PATHS),
        "readonlyPaths": [] if unconfined_paths else list(READONLY_PATHS),
    }
    if privileges["seccomp"]:
        linux["seccomp"] = privileges["seccomp"]
    if nodes:
        linux["devices"] = nodes
    if id_map:
        mapping = [{"containerID": 0, "hostID": id_map["host_id"], "size": id_map["size"]}]
        linux["uidMappings"] = mapping
        linux["gidMappings"] = mapping
    overlay = f"lowerdir={':'.join(lower_dirs)},upperdir={upper},workdir={work}"
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": bool(record["tty"]),
            "user": user,
            "args": process_args,
            "env": env,
            "cwd": record.get("workdir") or image.get("WorkingDir") or "/",
            "rlimits": [],
            "capabilities": privileges["capabilities"],
            "noNewPrivileges": privileges["noNewPrivileges"],
        },
        "root": {"path": "rootfs", "readonly": bool(record["read_only"])},
        "hostname": hostname,
        "mounts": mounts,
        "annotations": {OVERLAY_ANNOTATION: overlay, "io.hako.name": record["name"]},
        "linux": linux,
    }


def process_command(record: dict, image: dict) -> list[str]:
    """Docker's rule: entrypoint (the user's or the image's) followed by the command."""
    entrypoint = record.get("entrypoint")
    if entrypoint is None:
        entrypoint = image.get("Entrypoint") or []
        command = record.get("command") or image.get("Cmd") or []
    else:
        command = record.get("command") or []
    args = list(entrypoint) + list(command)
    return args


def with_terminal_env(env: list[str]) -> list[str]:
    """A process with a terminal gets TERM=xterm unless it sets TERM itself."""
    return env if any(e.startswith("TERM=") for e in env) else [*env, "TERM=xterm"]


def _merge_env(image_env: list[str], user_env: list[str]) -> list[str]:
    merged: dict[str, str] = {}
    for entry in list(image_env) + list(user_env):
        name, _, value = entry.partition("=")
        merged[name] = value
    return [f"{k}={v}" for k, v in merged.items()]
