"""Where hako keeps its state, and how it writes it safely.

``HAKO_ROOT`` (default /var/lib/hako) survives reboots: images, container
bundles and records. ``HAKO_RUN`` (default /run/hako) is emptied by a reboot:
the pids of running containers, the supervisor's socket, locks. A container
whose run-state is gone is therefore read as stopped, never as broken.

Records are written atomically (temporary file, fsync, rename), so a reader
sees the old record or the new one, never half of one. Writers that must not
interleave take an ``flock`` lock.
"""

from __future__ import annotations

import fcntl
import os

from . import lean


def root_dir() -> str:
    return os.environ.get("HAKO_ROOT", "/var/lib/hako")


def run_dir() -> str:
    return os.environ.get("HAKO_RUN", "/run/hako")


def default_network() -> str:
    """The network a container joins when it names none (``HAKO_DEFAULT_NETWORK``; "none": no network)."""
    return os.environ.get("HAKO_DEFAULT_NETWORK", "hako")


def cgroup_parent() -> str:
    """The cgroup under which every container's cgroup is made (``HAKO_CGROUP_PARENT``)."""
    return os.environ.get("HAKO_CGROUP_PARENT", "hako")


def atomic_write(path: str, data: bytes | str, mode: int = 0o644, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` so that no reader sees a partial file."""
    if isinstance(data, str):
        data = data.encode()
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: str, value: object, sync: bool = True) -> None:
    """Write a record (compact JSON, sorted keys) atomically."""
    atomic_write(path, lean.dumps(value) + "\n", sync=sync)


def read_json(path: str) -> dict | None:
    """The record at ``path``, or None if there is none."""
    return lean.read_json(path)


class locked:
    """Hold an flock on ``path`` (created if missing) for a ``with`` block."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> int:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise
        return self.fd

    def __exit__(self, *exc) -> bool:
        os.close(self.fd)
        return False


def remove_tree(path: str) -> None:
    """Remove a directory tree; a tree that is not there is fine."""
    lean.rmtree(path)
