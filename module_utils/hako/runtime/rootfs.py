"""The container's filesystem, set up inside its new mount namespace.

Everything here runs in the container's first process after it has entered
its namespaces and before it executes the user's command. The mounts live only
in the container's mount namespace: when its last process exits the kernel
drops them, so a crash can never leave a container mount on the host.
"""

from __future__ import annotations

import errno
import os
import stat

from .. import linux
from .spec import (
    LAYER_SOURCE_ANNOTATION,
    LAYER_TARGET_ANNOTATION,
    OVERLAY_ANNOTATION,
    namespaces,
    parse_mount_options,
)

# Device nodes every container gets (the OCI runtime spec's default devices).
DEFAULT_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEFAULT_SYMLINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
    "core": "/proc/kcore",
}


def secure_join(root: str, path: str) -> str:
    """Resolve ``path`` as if ``root`` were '/', never leaving ``root``.

    Symbolic links met on the way are followed relative to ``root``, so a
    link in an image pointing at /etc cannot make a mount land on the host.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:
                raise OSError(errno.ELOOP, f"too many symbolic links resolving {path!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _make_target(target: str, is_dir: bool) -> None:
    if os.path.lexists(target):
        return
    if is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def _bind(source: str, target: str, flags: int) -> None:
    """Bind mount, then remount to apply flags the first call ignores (ro, nosuid, ...)."""
    linux.mount(source, target, None, linux.MS_BIND | (flags & linux.MS_REC))
    extra = flags & ~(linux.MS_BIND | linux.MS_REC)
    if extra:
        _remount(target, extra)


def _remount(target: str, flags: int) -> None:
    """Change the flags of the mount at ``target`` (not of its filesystem)."""
    # A remount must keep the flags the kernel locked on the mount (in a
    # user namespace it refuses to drop nosuid, nodev, noexec or ro).
    kept = os.statvfs(target).f_flag & (linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC | linux.MS_RDONLY)
    linux.mount(None, target, None, linux.MS_BIND | linux.MS_REMOUNT | flags | kept)


def _remount_read_only(target: str) -> None:
    _remount(target, linux.MS_RDONLY)


def mount_one(rootfs: str, entry: dict) -> None:
    """Mount one OCI ``mounts`` entry below ``rootfs``."""
    kind = entry.get("type") or ("bind" if "bind" in entry.get("options", []) else "none")
    source = entry.get("source")
    flags, propagation, data = parse_mount_options(entry.get("options", []))
    target = secure_join(rootfs, entry["destination"])
    if kind == "bind" or flags & linux.MS_BIND:
        _make_target(target, os.path.isdir(source))
        _bind(source, target, flags | linux.MS_BIND)
        if flags & linux.MS_RDONLY and flags & linux.MS_REC:
            # `-v /:/host:ro` must not leave /host/dev or /host/sys writable.
            linux.make_tree_read_only(target)
    else:
        _make_target(target, True)
        try:
            linux.mount(source, target, kind, flags, data or None)
        except PermissionError:
            # sysfs and mqueue refuse a new instance when the network or IPC
            # namespace is not owned by the container's user namespace
            # (a shared --net host or --ipc host): show the host's instead.
            # It must be a recursive bind (the kernel refuses to separate a
            # mount from the submounts it locked for this user namespace);
            # the read-only remount reaches only the top, but what lies below
            # belongs to the host's root, out of the container root's reach,
            # and the container's own /sys/fs/cgroup is mounted over it.
            host = {"sysfs": "/sys", "mqueue": "/dev/mqueue"}.get(kind)
            if host is None:
                raise
            _bind(host, target, flags | linux.MS_BIND | linux.MS_REC)
    if propagation:
        linux.mount(None, target, None, propagation)


def populate_dev(rootfs: str, devices: list[dict], userns: bool = False) -> None:
    """Give /dev its standard nodes and links, and make the ``linux.devices`` nodes.

    The standard nodes are bind mounts of the host's own: that works in a
    user namespace too, where mknod is refused. A ``linux.devices`` entry is
    made with mknod (its type, numbers, mode and owner), in place of a
    standard node at the same path; in a user namespace the host's node at
    the same path is bound there instead.
    """
    dev = os.path.join(rootfs, "dev")
    given = {os.path.normpath(device["path"]) for device in devices}
    for name in DEFAULT_DEVICES:
        if f"/dev/{name}" in given:
            continue  # the entry makes it
        target = os.path.join(dev, name)
        _make_target(target, False)
        linux.mount(f"/dev/{name}", target, None, linux.MS_BIND)
    for device in devices:
        target = secure_join(rootfs, device["path"])
        if userns:
            _make_target(target, False)
            linux.mount(device["path"], target, None, linux.MS_BIND)
        else:
            make_node(target, device)
    for name, link in DEFAULT_SYMLINKS.items():
        path = os.path.join(dev, name)
        if not os.path.lexists(path):
            os.symlink(link, path)


def premountable(entry: dict, mounts: list[dict]) -> bool:
    """Whether a mount is a bind made before a user namespace (see premount_binds).

    Not one below /proc, /dev or /sys, nor below another kind of mount of
    the container's (a tmpfs made later inside would hide it).
    """
    if not (entry.get("type") == "bind" or "bind" in entry.get("options", [])):
        return False
    destination = entry["destination"].rstrip("/") + "/"
    if destination.split("/")[1:2] in (["proc"], ["dev"], ["sys"]):
        return False
    return not any(
        m.get("type") not in (None, "bind")
        and "bind" not in m.get("options", [])
        and destination.startswith(m["destination"].rstrip("/") + "/")
        for m in mounts
    )


def premount_binds(rootfs: str, config: dict) -> None:
    """Bind a user-namespace container's volumes while still the host's root.

    Its root (an unprivileged host uid) may not reach a volume's source
    (below a directory only root can enter); the host's root can. The
    container's mount namespace, made with its user namespace, gets these
    mounts locked: read-only stays read-only.
    """
    mounts = config.get("mounts", [])
    for entry in mounts:
        if premountable(entry, mounts):
            mount_one(rootfs, entry)


def make_node(target: str, device: dict) -> None:
    """mknod an OCI ``linux.devices`` entry at ``target`` (replacing a file already there)."""
    kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK}.get(device.get("type"))
    if kind is None:
        raise OSError(errno.EINVAL, f"device {device['path']!r}: type {device.get('type')!r} is not c or b")
    mode = device.get("fileMode", 0o666) & 0o7777
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.lexists(target) and not os.path.isdir(target):
        os.unlink(target)
    os.mknod(target, kind | mode, os.makedev(device["major"], device["minor"]))
    os.chmod(target, mode)  # the umask took its share
    os.chown(target, device.get("uid", 0), device.get("gid", 0))


def mount_layer(image: str, target: str) -> None:
    """Mount the ext4 filesystem in the file ``image`` on ``target``, in this mount namespace.

    Its loop device is the one already backed by ``image`` (its container is
    running, or being committed: the kernel then shares one filesystem) or a
    new one with autoclear; either way it lives exactly as long as the mounts
    of it. An flock on ``image`` makes finding or attaching the device and
    mounting it one step for every process doing it, so that no two attach
    the same file.
    """
    import fcntl

    from .. import loop

    lock = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fd, device = loop.attach(image)
        try:
            linux.mount(device, target, "ext4", 0, None)
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else str(e)
            raise OSError(e.errno, f"mounting the writable layer {image} ({device}) failed: {why}") from None
        finally:
            os.close(fd)
    finally:
        os.close(lock)


def mount_root(bundle: str, config: dict, rootfs: str) -> None:
    """Make ``rootfs`` a mount point holding the container's root filesystem."""
    annotations = config.get("annotations", {})
    overlay = annotations.get(OVERLAY_ANNOTATION)
    layer = annotations.get(LAYER_SOURCE_ANNOTATION)
    if layer:
        mount_layer(layer, annotations[LAYER_TARGET_ANNOTATION])
    if overlay:
        linux.mount("overlay", rootfs, "overlay", 0, overlay)
    else:
        # pivot_root needs the new root to be a mount point.
        linux.mount(rootfs, rootfs, None, linux.MS_BIND | linux.MS_REC)


# What a spare prepares ahead (see stage_mounts): the trees every default
# container has, moved into its root when its job arrives.
STAGED_TREES = ("/proc", "/dev", "/sys")


def _mount_all(base: str, mounts: list[dict]) -> None:
    """Mount OCI ``mounts`` below ``base``, in order."""
    read_only_later = []
    for index, entry in enumerate(mounts):
        # A read-only mount with others below it (the tmpfs holding the
        # cgroup hierarchies) is made read-only once they are in place.
        below = entry["destination"].rstrip("/") + "/"
        if "ro" in entry.get("options", []) and any(
            m["destination"].startswith(below) for m in mounts[index + 1 :]
        ):
            entry = dict(entry, options=[o for o in entry["options"] if o != "ro"])
            read_only_later.append(entry)
        mount_one(base, entry)
    for entry in read_only_later:
        _remount_read_only(secure_join(base, entry["destination"]))


def stage_mounts(staging: str, plan: dict) -> None:
    """Mount a default container's /proc, /dev and /sys ahead, below ``staging``.

    Runs in a spare's init, already PID 1 of its new namespaces (so /proc,
    sysfs and mqueue show the right ones), in its own mount namespace.
    ``plan`` holds the default "mounts", "maskedPaths" and "readonlyPaths".
    """
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    linux.mount("tmpfs", staging, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=64k,mode=755")
    _mount_all(staging, plan["mounts"])
    populate_dev(staging, [])
    for path in plan["maskedPaths"]:
        mask_path(staging + path)
    for path in plan["readonlyPaths"]:
        make_readonly(staging + path)


def fits_staged(config: dict, plan: dict) -> bool:
    """Whether ``config`` wants exactly the staged trees (then only its extra mounts remain)."""
    linux_conf = config.get("linux", {})
    count = len(plan["mounts"])
    return (
        config.get("mounts", [])[:count] == plan["mounts"]
        and not any(
            m["destination"].split("/")[1:2] == [t[1:]]
            for m in config["mounts"][count:]
            for t in STAGED_TREES
        )
        and linux_conf.get("maskedPaths", []) == plan["maskedPaths"]
        and linux_conf.get("readonlyPaths", []) == plan["readonlyPaths"]
        and not linux_conf.get("devices")
    )


def enter_rootfs(
    bundle: str, config: dict, rootfs: str, staged: tuple[str, dict] | None = None, premounted: bool = False
) -> None:
    """Build the container's mount tree and make it the process's root.

    ``staged`` is (staging directory, plan) when stage_mounts prepared the
    default trees and the config fits them: they are moved in, not made.
    ``premounted``: the root is already mounted (before a user namespace was
    made); it is bound onto itself, since pivot_root refuses the locked copy
    a user namespace's mount namespace has of it.
    """
    # Nothing mounted from here on may propagate back to the host.
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    if premounted:
        linux.mount(rootfs, rootfs, None, linux.MS_BIND | linux.MS_REC)
    else:
        mount_root(bundle, config, rootfs)
    mounts = config.get("mounts", [])
    if staged is not None:
        staging, plan = staged
        for tree in STAGED_TREES:
            target = secure_join(rootfs, tree)
            _make_target(target, True)
            linux.mount(staging + tree, target, None, linux.MS_MOVE)
        _mount_all(rootfs, mounts[len(plan["mounts"]) :])
    else:
        if premounted:
            mounts = [m for m in mounts if not premountable(m, mounts)]
        _mount_all(rootfs, mounts)
        userns = any(ns.get("type") == "user" for ns in namespaces(config))
        populate_dev(rootfs, config.get("linux", {}).get("devices", []), userns)

    # pivot_root(".", ".") stacks the old root under the new one at "/";
    # detaching it leaves only the container's tree, with no directory to
    # create or remove inside the image.
    os.chdir(rootfs)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")

    linux_conf = config.get("linux", {})
    if staged is None:
        for path in linux_conf.get("maskedPaths", []):
            mask_path(path)
        for path in linux_conf.get("readonlyPaths", []):
            make_readonly(path)
    if config["root"].get("readonly"):
        linux.mount(None, "/", None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY)


def mask_path(path: str) -> None:
    """Hide ``path``: an empty read-only tmpfs over a directory, /dev/null over a file."""
    try:
        if os.path.isdir(path):
            linux.mount("tmpfs", path, "tmpfs", linux.MS_RDONLY, "size=0")
        else:
            linux.mount("/dev/null", path, None, linux.MS_BIND)
    except FileNotFoundError:
        pass


def make_readonly(path: str) -> None:
    try:
        _bind(path, path, linux.MS_REC | linux.MS_RDONLY)
    except FileNotFoundError:
        pass
