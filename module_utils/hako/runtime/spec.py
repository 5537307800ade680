"""Reading an OCI runtime-spec bundle: config.json and what its fields mean."""

from __future__ import annotations

import os

from .. import lean, linux
from ..errors import HakoError, InvalidValue

OCI_VERSION = "1.0.2"

# The PATH a process gets when neither the image nor the user sets one.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# OCI mount options that are mount(2) flags: name -> (flag, clear?).
_MOUNT_FLAGS = {
    "ro": (linux.MS_RDONLY, False),
    "rw": (linux.MS_RDONLY, True),
    "nosuid": (linux.MS_NOSUID, False),
    "suid": (linux.MS_NOSUID, True),
    "nodev": (linux.MS_NODEV, False),
    "dev": (linux.MS_NODEV, True),
    "noexec": (linux.MS_NOEXEC, False),
    "exec": (linux.MS_NOEXEC, True),
    "sync": (linux.MS_SYNCHRONOUS, False),
    "async": (linux.MS_SYNCHRONOUS, True),
    "dirsync": (linux.MS_DIRSYNC, False),
    "remount": (linux.MS_REMOUNT, False),
    "bind": (linux.MS_BIND, False),
    "rbind": (linux.MS_BIND | linux.MS_REC, False),
    "relatime": (linux.MS_RELATIME, False),
    "norelatime": (linux.MS_RELATIME, True),
    "strictatime": (linux.MS_STRICTATIME, False),
    "nostrictatime": (linux.MS_STRICTATIME, True),
    "noatime": (linux.MS_NOATIME, False),
    "atime": (linux.MS_NOATIME, True),
    "nodiratime": (linux.MS_NODIRATIME, False),
    "diratime": (linux.MS_NODIRATIME, True),
    "nosymfollow": (linux.MS_NOSYMFOLLOW, False),
    "symfollow": (linux.MS_NOSYMFOLLOW, True),
}
_PROPAGATION = {
    "private": linux.MS_PRIVATE,
    "rprivate": linux.MS_PRIVATE | linux.MS_REC,
    "slave": linux.MS_SLAVE,
    "rslave": linux.MS_SLAVE | linux.MS_REC,
    "shared": linux.MS_SHARED,
    "rshared": linux.MS_SHARED | linux.MS_REC,
    "unbindable": linux.MS_UNBINDABLE,
    "runbindable": linux.MS_UNBINDABLE | linux.MS_REC,
}

# Annotation through which the engine asks hako's runtime to mount the
# container's overlay root inside the container's own mount namespace, so the
# host never holds the mount and it vanishes with the container.
OVERLAY_ANNOTATION = "io.hako.rootfs.overlay"
# A filesystem image (a size-limited writable layer, see engine/storage.py)
# that hako's runtime mounts, in the same mount namespace, on the directory
# LAYER_TARGET_ANNOTATION names before it mounts the overlay.
LAYER_SOURCE_ANNOTATION = "io.hako.rootfs.layer.source"
LAYER_TARGET_ANNOTATION = "io.hako.rootfs.layer.target"


def parse_mount_options(options: list[str]) -> tuple[int, int, str]:
    """Split OCI mount options into (flags, propagation flags, data string)."""
    flags = 0
    propagation = 0
    data = []
    for option in options:
        if option in _MOUNT_FLAGS:
            flag, clear = _MOUNT_FLAGS[option]
            if clear:
                flags &= ~flag
            else:
                flags |= flag
        elif option in _PROPAGATION:
            propagation |= _PROPAGATION[option]
        else:
            data.append(option)
    return flags, propagation, ",".join(data)


def load_config(bundle: str) -> dict:
    """Read and check the fields of ``bundle``/config.json that the runtime relies on."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            config = lean.loads(f.read())
    except FileNotFoundError:
        raise HakoError(f"bundle {bundle!r} has no config.json") from None
    except ValueError as e:
        raise HakoError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise InvalidValue("config.json", type(config).__name__, "expected an object")
    process = config.get("process")
    if not isinstance(process, dict):
        raise InvalidValue("process", process, "expected an object")
    args = process.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise InvalidValue("process.args", args, "a command (a list of strings) is required")
    root = config.get("root")
    if not isinstance(root, dict) or not isinstance(root.get("path"), str) or not root["path"]:
        raise InvalidValue("root.path", root, "a root filesystem is required")
    linux_conf = config.get("linux", {})
    if not isinstance(linux_conf, dict):
        raise InvalidValue("linux", linux_conf, "expected an object")
    namespaces = linux_conf.get("namespaces", [])
    if not isinstance(namespaces, list):
        raise InvalidValue("linux.namespaces", namespaces, "expected a list")
    for ns in namespaces:
        if not isinstance(ns, dict) or ns.get("type") not in linux.NAMESPACES:
            raise InvalidValue("linux.namespaces.type", ns.get("type") if isinstance(ns, dict) else ns)
    return config


def rootfs_path(bundle: str, config: dict) -> str:
    return os.path.join(bundle, config["root"]["path"])


def namespaces(config: dict) -> list[dict]:
    return config.get("linux", {}).get("namespaces", [])
