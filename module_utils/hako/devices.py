"""Which device nodes a container may use: Docker's ``--device`` and the default rules.

Root inside a container is still root to the kernel's device drivers: a
learner who can open /dev/sda or /dev/mem of the shared host owns it. Two
things keep that from happening, and both are described here in the OCI
runtime spec's terms:

* ``linux.resources.devices``: the cgroup's device rules (v1: the devices
  controller; v2: an eBPF program, see cgroups/ebpf.py). A default container
  may create any node (``m``) but open only the standard ones (null, zero,
  full, random, urandom, tty, console, ptmx and its pseudo-terminals) and
  the devices passed with ``--device``.
* ``linux.devices``: the nodes the runtime makes in the container's /dev,
  resolved here by stat when the config is written.

A privileged container gets every device: an allow-all rule and a node for
each character and block device in the host's /dev.
"""

from __future__ import annotations

import os
import posixpath
import stat

from .errors import InvalidValue

ACCESS = "rwm"

# (type, major, minor, path) of the nodes every container may open; minor
# None is any minor. All but pts are in the container's /dev (ptmx as a link
# into its devpts, console only when a runtime makes one).
DEFAULT_NODES = (
    ("c", 1, 3, "/dev/null"),
    ("c", 1, 5, "/dev/zero"),
    ("c", 1, 7, "/dev/full"),
    ("c", 1, 8, "/dev/random"),
    ("c", 1, 9, "/dev/urandom"),
    ("c", 5, 0, "/dev/tty"),
    ("c", 5, 1, "/dev/console"),
    ("c", 5, 2, "/dev/ptmx"),
    ("c", 136, None, "/dev/pts"),
)

# Trees of the host's /dev that a privileged container does not copy: the
# container has its own.
_OWN_TREES = ("pts", "shm", "mqueue")


def parse_device(spec: str) -> dict:
    """Docker's ``/dev/host[:/dev/container][:perms]`` -> {"host", "container", "access"}.

    ``perms`` is made of r (read), w (write) and m (mknod); rwm by default.
    The host path must be a character or block device node (a symbolic link
    to one is followed, as Docker does).
    """
    if not isinstance(spec, str) or not spec:
        raise InvalidValue("device", spec, "expected /dev/host[:/dev/container][:rwm]")
    parts = spec.split(":")
    if len(parts) > 3:
        raise InvalidValue("device", spec, "expected /dev/host[:/dev/container][:rwm]")
    host = parts[0]
    container, access = host, ACCESS
    if len(parts) == 3:
        container, access = parts[1], parts[2]
    elif len(parts) == 2:
        if parts[1].startswith("/"):
            container = parts[1]
        else:
            access = parts[1]
    if not host.startswith("/"):
        raise InvalidValue("device", spec, f"the host path {host!r} is not absolute")
    if not container.startswith("/"):
        raise InvalidValue("device", spec, f"the container path {container!r} is not absolute")
    if "\0" in spec or posixpath.normpath(container) == "/":
        raise InvalidValue("device", spec, "the container path must name a file")
    if not access or any(c not in ACCESS for c in access) or len(set(access)) != len(access):
        raise InvalidValue("device", spec, "permissions are made of r, w and m, each at most once")
    _node("device", spec, host)
    return {
        "host": host,
        "container": posixpath.normpath(container),
        "access": "".join(c for c in ACCESS if c in access),
    }


def _node(field: str, value: object, path: str) -> os.stat_result:
    """The stat of host device node ``path``; InvalidValue if it is none."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise InvalidValue(field, value, f"{path}: {e.strerror.lower()}") from None
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise InvalidValue(field, value, f"{path} is not a character or block device")
    return st


def node_entry(path: str, st: os.stat_result) -> dict:
    """The OCI ``linux.devices`` entry making a node at ``path`` like the one ``st`` describes."""
    return {
        "path": path,
        "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def rule(allow: bool, kind: str = "a", major: int | None = None, minor: int | None = None, access=ACCESS):
    """One OCI ``linux.resources.devices`` rule; a wildcard type, major or minor is left out."""
    entry: dict = {"allow": allow}
    if kind != "a":
        entry["type"] = kind
    if major is not None:
        entry["major"] = major
    if minor is not None:
        entry["minor"] = minor
    entry["access"] = access
    return entry


def default_rules() -> list[dict]:
    """The rules of every unprivileged container: deny all, mknod any, open the standard nodes."""
    rules = [rule(False), rule(True, "c", access="m"), rule(True, "b", access="m")]
    rules += [rule(True, kind, major, minor) for kind, major, minor, _path in DEFAULT_NODES]
    return rules


def host_nodes(root: str = "/dev") -> list[dict]:
    """``linux.devices`` entries for every device node in the host's /dev and its subdirectories.

    What a privileged container gets: /dev/pts, /dev/shm and /dev/mqueue
    (the container has its own) and the standard nodes are left out, and
    symbolic links are not followed.
    """
    defaults = {path for _kind, _major, _minor, path in DEFAULT_NODES}
    entries = []
    for directory, subdirs, files in os.walk(root):
        if directory == root:
            subdirs[:] = [d for d in subdirs if d not in _OWN_TREES]
        subdirs.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            inside = "/dev" + path[len(root) :]
            if inside in defaults:
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue  # gone meanwhile (hot-unplugged)
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                entries.append(node_entry(inside, st))
    return entries


def oci_devices(devices: list[dict], privileged: bool = False) -> tuple[list[dict], list[dict]]:
    """(``linux.devices``, ``linux.resources.devices``) of a container.

    ``devices`` are what ``parse_device`` returns; each host node is looked
    up now (InvalidValue if it has gone since). A passed device's access
    holds for its number wherever a node of it is: ``--device
    /dev/zero:/dev/z0:r`` makes /dev/zero read-only too. A privileged
    container also gets every host node and may use any device.
    """
    nodes = host_nodes() if privileged else []
    rules = [rule(True)] if privileged else default_rules()
    for device in devices:
        entry = node_entry(device["container"], _node("device", device["host"], device["host"]))
        nodes = [n for n in nodes if n["path"] != entry["path"]] + [entry]
        if not privileged:
            new = rule(True, entry["type"], entry["major"], entry["minor"], device["access"])
            same = {k: new[k] for k in ("type", "major", "minor")}
            rules = [r for r in rules if {k: r.get(k) for k in same} != same] + [new]
    return nodes, rules


def docker_devices(devices: list[dict]) -> list[dict]:
    """Passed devices as ``docker inspect`` shows them (HostConfig.Devices)."""
    return [
        {"PathOnHost": d["host"], "PathInContainer": d["container"], "CgroupPermissions": d["access"]}
        for d in devices
    ]
