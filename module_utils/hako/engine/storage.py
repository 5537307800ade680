"""A size limit on a container's writable layer (Docker's ``--storage-opt size=N``).

overlayfs cannot limit its upper directory by itself, and the usual way
(project quotas of XFS or ext4) needs a host filesystem made for it. hako
gives a container with a size a filesystem of its own instead: a sparse file
of that size in the container's directory, formatted ext4, which holds the
overlay's upper and work directories::

    $HAKO_ROOT/containers/<id>/layer.ext4   the filesystem (sparse: costs what is written)
    $HAKO_ROOT/containers/<id>/layer/       where it is mounted: upper/ and work/ inside

A write past the size fails inside the container with ENOSPC ("No space
left on device"); the host's disk only ever gives the file its size.

The filesystem is mounted where the overlay is: inside the container's own
mount namespace, as each start sets up its root (see runtime/rootfs.py),
from a loop device attached with autoclear. The host never holds the mount;
when the container's last process exits, its mount namespace goes, the
filesystem is unmounted and the loop device detaches by itself. A start
that fails, a crashed supervisor or a host reboot leave nothing attached.

Reading the layer while the container is stopped (``hako commit``) mounts it
the same way, in a helper process's private mount namespace that lives as
long as the reading does (``upper_dir``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time

from .. import linux, loop
from ..errors import HakoError, InvalidValue
from ..options import layer_size
from ..runtime.rootfs import mount_layer

LAYER_IMAGE = "layer.ext4"
LAYER_MOUNT = "layer"


def image_path(directory: str) -> str:
    return os.path.join(directory, LAYER_IMAGE)


def mount_point(directory: str) -> str:
    return os.path.join(directory, LAYER_MOUNT)


def layer_dirs(directory: str, record: dict) -> tuple[str, str]:
    """The overlay's upper and work directories of the container in ``directory``."""
    base = mount_point(directory) if layer_size(record) else directory
    return os.path.join(base, "upper"), os.path.join(base, "work")


def layer_annotations(directory: str) -> dict[str, str]:
    """The OCI annotations asking hako's runtime to mount the layer before the overlay."""
    from ..runtime.spec import LAYER_SOURCE_ANNOTATION, LAYER_TARGET_ANNOTATION

    return {LAYER_SOURCE_ANNOTATION: image_path(directory), LAYER_TARGET_ANNOTATION: mount_point(directory)}


def _mkfs() -> str:
    for candidate in (shutil.which("mkfs.ext4"), "/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise HakoError("a storage size needs mkfs.ext4 (e2fsprogs), which is not installed")


def make_layer(directory: str, record: dict, owner: int = 0) -> None:
    """Make the size-limited filesystem of a new container: a sparse file formatted ext4.

    Its root holds ``upper`` and ``work``, owned by ``owner`` (a user
    namespace's root on the host). The caller removes ``directory`` if this
    fails.
    """
    size = layer_size(record)
    if not size:
        return
    if not os.path.exists(loop.LOOP_CONTROL):
        raise HakoError(f"a storage size needs loop devices, and this host has no {loop.LOOP_CONTROL}")
    image = image_path(directory)
    try:
        with open(image, "xb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.truncate(size)
    except OSError as e:
        raise InvalidValue(
            "storage-opt size", record["storage_opts"]["size"], f"cannot make {image}: {e.strerror}"
        ) from None
    seed = os.path.join(directory, ".layer-seed")
    os.mkdir(seed, 0o755)
    try:
        for sub in ("upper", "work"):
            os.mkdir(os.path.join(seed, sub), 0o755)
            os.chown(os.path.join(seed, sub), owner, owner)
        os.chown(seed, owner, owner)
        command = [
            _mkfs(),
            "-q",
            "-F",
            "-t",
            "ext4",
            "-m",
            "0",  # no blocks kept for root: the container's root is who writes
            "-L",
            "hako-layer",
            # Discarding a fresh sparse file zeroes nothing and lets mkfs mark the
            # inode tables zeroed: nothing writes them later, the file stays sparse.
            "-E",
            f"root_owner={owner}:{owner},discard,lazy_itable_init=1,lazy_journal_init=1",
            "-d",
            seed,
            image,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            why = detail[-1] if detail else f"exit status {result.returncode}"
            raise HakoError(f"mkfs.ext4 of the writable layer failed: {why}")
    finally:
        shutil.rmtree(seed, ignore_errors=True)
    os.mkdir(mount_point(directory), 0o755)


@contextlib.contextmanager
def upper_dir(engine, record: dict):
    """The path of a container's upper directory, readable for the duration of the block.

    Without a size, the directory itself. With one, the layer is mounted in
    a helper process's private mount namespace and reached through
    /proc/PID/root: it is unmounted (and its loop device detached) when the
    helper exits, at the end of the block or when this process dies.
    """
    directory = engine.container_dir(record["id"])
    if not layer_size(record):
        yield os.path.join(directory, "upper")
        return
    holder = _Holder(image_path(directory), mount_point(directory))
    try:
        yield f"/proc/{holder.pid}/root{mount_point(directory)}/upper"
    finally:
        holder.close()


class _Holder:
    """A child process holding a mount of the layer in a mount namespace of its own."""

    def __init__(self, image: str, target: str) -> None:
        hold_r, hold_w = os.pipe2(os.O_CLOEXEC)
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                # Nothing of the parent's but the two pipes: an flock it holds
                # must not outlive its own release.
                for name in os.listdir("/proc/self/fd"):
                    if int(name) > 2 and int(name) not in (hold_r, report_w):
                        with contextlib.suppress(OSError):
                            os.close(int(name))
                linux.unshare(linux.CLONE_NEWNS)
                linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
                mount_layer(image, target)
                os.write(report_w, b"ok")
                os.close(report_w)
                # Until the parent closes its end, or dies.
                os.read(hold_r, 1)
                code = 0
            except BaseException as e:  # noqa: BLE001 - everything must reach the parent
                with contextlib.suppress(OSError):
                    os.write(report_w, str(e).encode()[:4000] or type(e).__name__.encode())
            finally:
                os._exit(code)
        os.close(hold_r)
        os.close(report_w)
        self.pid = pid
        self._hold = hold_w
        try:
            report = os.read(report_r, 4096)
        finally:
            os.close(report_r)
        if report != b"ok":
            self.close()
            raise HakoError(f"cannot mount the writable layer {image}: {report.decode(errors='replace')}")

    def close(self) -> None:
        if self._hold is not None:
            os.close(self._hold)
            self._hold = None
            while True:
                try:
                    os.waitpid(self.pid, 0)
                    break
                except ChildProcessError:
                    break
                except InterruptedError:
                    continue


def wait_detached(directory: str, timeout: float = 5.0) -> bool:
    """Wait until no loop device is backed by the layer in ``directory``; True once none is.

    After a container's last process has exited its layer is unmounted and
    its loop device detached, normally before the exit is reported; this
    covers a helper (a commit) still reading it.
    """
    image = image_path(directory)
    deadline = time.monotonic() + timeout
    while loop.backing_devices(image):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def reclaim(engine) -> list[str]:
    """Detach the loop devices of this state's layers that nothing will detach; one line each.

    Every device hako attaches has autoclear, set in the same step on Linux
    5.8 and later; on an older kernel a start that crashed between attaching
    and setting it leaves a device without. Those are the leftovers.
    """
    removed = []
    containers = os.path.realpath(engine.containers_dir) + os.sep
    try:
        names = sorted(os.listdir(loop.SYS_BLOCK))
    except OSError:
        return []
    for name in names:
        backing = loop.backing_file(name) if name.startswith("loop") else None
        if not backing or not backing.startswith(containers) or loop.autoclear(name):
            continue
        parts = backing[len(containers) :].split(os.sep)
        if len(parts) == 2 and parts[1].split(" ")[0] == LAYER_IMAGE and loop.detach("/dev/" + name):
            removed.append(f"loop device /dev/{name} of container {parts[0][-64:][:12]}")
    return removed
