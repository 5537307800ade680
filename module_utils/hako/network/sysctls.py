"""Kernel settings of a container's network namespace (Docker's --sysctl, net.* keys only).

A router container needs ``net.ipv4.ip_forward=1`` in its own network
namespace, but a container's /proc/sys is read-only. hako writes the
settings from outside, at each start, after the interfaces are made and
before the command runs: this thread joins the container's network
namespace (setns), opens the files under /proc/sys/net, and returns. A
/proc/sys/net file belongs to the namespace of whoever opened it, so the
writes land in the container's namespace; no process is forked, and the
container needs no privilege.

A key naming an interface (net.ipv4.conf.eth1.rp_filter) whose interface is
not there yet (a link whose other end is stopped) is written when that
interface is made.
"""

from __future__ import annotations

import errno
import os

from .. import linux, text
from ..errors import InvalidValue

# Under these, the component after them is an interface (or all, default).
_PER_INTERFACE = (("ipv4", "conf"), ("ipv6", "conf"), ("ipv4", "neigh"), ("ipv6", "neigh"))
_KEY_CHARS = text.ALNUM | {"_", "-", ".", "/"}


def parse(entries) -> dict[str, str]:
    """KEY=VALUE strings (or a mapping) as {key: value}; net.* keys only, known to this kernel."""
    if isinstance(entries, dict):
        pairs = [(str(k), str(v)) for k, v in entries.items()]
    else:
        pairs = []
        for entry in entries:
            key, eq, value = str(entry).partition("=")
            if not eq:
                raise InvalidValue("sysctl", entry, "expected KEY=VALUE, such as net.ipv4.ip_forward=1")
            pairs.append((key.strip(), value.strip()))
    result = {}
    for key, value in pairs:
        check_key(key)
        if not value or "\n" in value or "\0" in value:
            raise InvalidValue("sysctl", f"{key}={value}", "expected one line of value")
        result[key] = value
    return result


def check_key(key: str) -> None:
    """Refuse what is not a net.* setting of this kernel, naming the key."""
    parts = key.split(".")
    if not text.made_of(key, _KEY_CHARS) or parts[0] != "net" or len(parts) < 3:
        raise InvalidValue(
            "sysctl",
            key,
            "only net.* keys: settings of the container's network namespace",
        )
    components = [part.replace("/", ".") for part in parts]
    if any(c in ("", ".", "..") for c in components):
        raise InvalidValue("sysctl", key, "not a sysctl name")
    # An interface's settings are there only once it is: check them on "all".
    probe = list(components)
    if interface_of(key) is not None:
        probe[3] = "default" if probe[2] == "neigh" else "all"
    if not os.path.exists(os.path.join("/proc/sys", *probe)):
        raise InvalidValue("sysctl", key, "no such setting in this kernel")


def path_of(key: str) -> str:
    """The file of ``key``: dots separate; '/' stands for a dot in a name (eth0/100), as in sysctl(8)."""
    return os.path.join("/proc/sys", *(part.replace("/", ".") for part in key.split(".")))


def interface_of(key: str) -> str | None:
    """The interface a per-interface key names (net.ipv4.conf.eth1.forwarding -> eth1), else None."""
    parts = key.split(".")
    if len(parts) >= 5 and (parts[1], parts[2]) in _PER_INTERFACE and parts[3] not in ("all", "default"):
        return parts[3].replace("/", ".")
    return None


def write(pid: int, sysctls: dict[str, str], interfaces: set[str] | None = None) -> None:
    """Write ``sysctls`` in the network namespace of process ``pid``, each read back.

    With ``interfaces``, only the keys of those interfaces; without, every
    key but those of interfaces not made yet.
    """
    if interfaces is not None:
        sysctls = {k: v for k, v in sysctls.items() if interface_of(k) in interfaces}
    if not sysctls:
        return
    opened = _open_in(pid, sysctls)
    try:
        for key, fd, readable in opened:
            value = sysctls[key]
            try:
                os.write(fd, value.encode() + b"\n")
            except OSError as e:
                why = "the kernel refused the value" if e.errno == errno.EINVAL else e.strerror
                raise InvalidValue("sysctl", f"{key}={value}", why) from None
            if readable:
                kept = os.pread(fd, 4096, 0).decode(errors="replace")
                if not _same(kept, value):
                    raise InvalidValue("sysctl", f"{key}={value}", f"the kernel kept {kept.strip()!r}")
    finally:
        for _key, fd, _readable in opened:
            os.close(fd)


def _open_in(pid: int, sysctls: dict[str, str]) -> list[tuple[str, int, bool]]:
    """Open the keys' files from inside the network namespace of ``pid``; (key, fd, readable)."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    opened: list[tuple[str, int, bool]] = []
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(own)
        raise InvalidValue("sysctl", next(iter(sysctls)), f"process {pid} is gone") from None
    try:
        linux.setns(target, linux.CLONE_NEWNET)
        try:
            for key in sysctls:
                path = path_of(key)
                interface = interface_of(key)
                if interface is not None and not os.path.exists(f"/proc/sys/net/ipv4/conf/{interface}"):
                    continue  # written when the interface is made
                try:
                    opened.append((key, os.open(path, os.O_RDWR | os.O_CLOEXEC), True))
                except PermissionError:
                    try:  # a write-only setting (net.ipv4.route.flush)
                        opened.append((key, os.open(path, os.O_WRONLY | os.O_CLOEXEC), False))
                    except OSError as e:
                        raise InvalidValue("sysctl", key, f"read-only in a container: {e.strerror}") from None
                except FileNotFoundError:
                    raise InvalidValue(
                        "sysctl", key, "no such setting in a container's network namespace"
                    ) from None
        finally:
            linux.setns(own, linux.CLONE_NEWNET)
    except BaseException:
        for _key, fd, _readable in opened:
            os.close(fd)
        raise
    finally:
        os.close(target)
        os.close(own)
    return opened


def _same(kept: str, value: str) -> bool:
    """Whether the kernel's reading of a setting is the value written (whitespace and 01 vs 1 aside)."""
    a, b = kept.split(), value.split()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x != y and not (x.lstrip("-").isdigit() and y.lstrip("-").isdigit() and int(x) == int(y)):
            return False
    return True
