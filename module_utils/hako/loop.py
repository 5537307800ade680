"""Loop devices: a file as a block device, for a container's size-limited writable layer.

A loop device is attached with autoclear: the kernel detaches it by itself
once nothing holds it any more (no open descriptor, no mounted filesystem).
hako mounts such a device only inside a mount namespace that dies with its
holder (a container's, or a short-lived helper's), so a crash leaves nothing
attached on the host.

One file is never attached twice: two loop devices over one ext4 image would
mount two filesystems writing the same blocks. ``attach`` reuses the device
already backed by the file, whose filesystem the kernel then mounts once
(a second mount of one block device shares its superblock); callers
serialize attaching and mounting one file (runtime/rootfs.py: an flock on it).

Stdlib only (fcntl, struct): a container's setup calls this before it
changes its root.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

LOOP_CONTROL = "/dev/loop-control"
SYS_BLOCK = "/sys/block"

# linux/loop.h
LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_AUTOCLEAR = 4
LO_NAME_SIZE = 64

# struct loop_info64: device, inode, rdevice, offset, sizelimit (u64);
# number, encrypt_type, encrypt_key_size, flags (u32); file name, crypt
# name (64 bytes each), key (32 bytes); init (2 x u64).
_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")
# struct loop_config: fd, block_size (u32), info, reserved (8 x u64).
_CONFIG_HEAD = struct.Struct("=2I")
_CONFIG_SIZE = _CONFIG_HEAD.size + _INFO64.size + 8 * 8


def _info(flags: int, path: str) -> bytes:
    name = os.fsencode(path)[: LO_NAME_SIZE - 1]
    return _INFO64.pack(0, 0, 0, 0, 0, 0, 0, 0, flags, name, b"", b"", 0, 0)


def device_path(number: int) -> str:
    return f"/dev/loop{number}"


def backing_devices(path: str) -> list[str]:
    """The loop devices (/dev/loopN) whose backing file is ``path`` (also after it was deleted)."""
    wanted = os.path.realpath(path)
    found = []
    try:
        names = os.listdir(SYS_BLOCK)
    except OSError:
        return []
    for name in names:
        if not name.startswith("loop"):
            continue
        backing = backing_file(name)
        if backing is not None and (backing == wanted or backing == wanted + " (deleted)"):
            found.append("/dev/" + name)
    return sorted(found)


def backing_file(name: str) -> str | None:
    """The backing file of loop device ``name`` (loopN), as the kernel shows it; None if detached."""
    try:
        with open(os.path.join(SYS_BLOCK, name, "loop", "backing_file")) as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


def autoclear(name: str) -> bool:
    """Whether loop device ``name`` (loopN) detaches by itself once nothing holds it."""
    try:
        with open(os.path.join(SYS_BLOCK, name, "loop", "autoclear")) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def _backs(fd: int, st: os.stat_result) -> bool:
    """Whether the loop device open as ``fd`` is attached to the file ``st`` describes."""
    try:
        info = fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(_INFO64.size))
    except OSError as e:
        if e.errno == errno.ENXIO:  # not attached (any more)
            return False
        raise
    inode = _INFO64.unpack(info)[1]
    return inode == st.st_ino


def _open_existing(path: str, st: os.stat_result, flags: int) -> tuple[int, str] | None:
    """An open descriptor of a device already backed by ``path`` (it cannot detach while open)."""
    for device in backing_devices(path):
        try:
            fd = os.open(device, flags | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            if _backs(fd, st):
                return fd, device
        except OSError:
            pass
        os.close(fd)
    return None


def attach(path: str, read_only: bool = False) -> tuple[int, str]:
    """A loop device backed by ``path``: (its open descriptor, /dev/loopN).

    The device already backed by ``path`` if there is one, else a free one
    attached with autoclear. Close the descriptor once the filesystem on it
    is mounted (or not needed): the device then lives as long as the mount.
    """
    mode = os.O_RDONLY if read_only else os.O_RDWR
    st = os.stat(path)
    for _ in range(100):
        existing = _open_existing(path, st, mode)
        if existing is not None:
            return existing
        backing = os.open(path, mode | os.O_CLOEXEC)
        try:
            control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
            try:
                number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
            finally:
                os.close(control)
            device = device_path(number)
            fd = _open_device(device, mode)
            try:
                _configure(fd, backing, path, read_only)
            except OSError as e:
                os.close(fd)
                if e.errno == errno.EBUSY:
                    continue  # another process took this free device first
                raise OSError(
                    e.errno, f"attaching {path} to {device} failed: {os.strerror(e.errno)}"
                ) from None
            return fd, device
        finally:
            os.close(backing)
    raise OSError(errno.EBUSY, f"no free loop device for {path}")


def _open_device(device: str, mode: int) -> int:
    # The node appears a moment after LOOP_CTL_GET_FREE made a new device.
    for _ in range(200):
        try:
            return os.open(device, mode | os.O_CLOEXEC)
        except FileNotFoundError:
            import time

            time.sleep(0.005)
    return os.open(device, mode | os.O_CLOEXEC)


def _configure(fd: int, backing: int, path: str, read_only: bool) -> None:
    """Attach ``backing`` to the device ``fd`` with autoclear (read-only if asked), in one step if it can."""
    flags = LO_FLAGS_AUTOCLEAR | (1 if read_only else 0)  # LO_FLAGS_READ_ONLY = 1
    config = _CONFIG_HEAD.pack(backing, 0) + _info(flags, path) + bytes(8 * 8)
    assert len(config) == _CONFIG_SIZE
    try:
        fcntl.ioctl(fd, LOOP_CONFIGURE, config)
        return
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTTY):
            raise
    # Linux before 5.8: attach, then set autoclear (a crash between the two
    # leaves the device attached until `hako system prune` frees it).
    fcntl.ioctl(fd, LOOP_SET_FD, backing)
    try:
        fcntl.ioctl(fd, LOOP_SET_STATUS64, _info(LO_FLAGS_AUTOCLEAR, path))
    except OSError:
        fcntl.ioctl(fd, LOOP_CLR_FD, 0)
        raise


def detach(device: str) -> bool:
    """Detach ``device`` now, or, while a filesystem on it is mounted, once it is unmounted.

    False if it was not attached.
    """
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD, 0)
        return True
    except OSError as e:
        if e.errno == errno.ENXIO:
            return False
        raise
    finally:
        os.close(fd)
