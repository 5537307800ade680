"""The IPv4 address of each interface in another process's network namespace, as the kernel has it.

For checking, not configuring: a datagram socket opened inside the namespace
(setns on this thread, the socket, setns back) answers the interface ioctls
(SIOCGIFFLAGS, SIOCGIFADDR, SIOCGIFNETMASK) for that namespace. No pyroute2,
no helper process and no command inside the container, so it costs a few
system calls per interface and works whatever the container's image holds.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct

from .. import linux
from ..errors import HakoError

SIOCGIFFLAGS = 0x8913
SIOCGIFADDR = 0x8915
SIOCGIFNETMASK = 0x891B
IFF_UP = 0x1
IFNAMSIZ = 16


def _socket_in(pid: int) -> socket.socket:
    """An AF_INET datagram socket in the network namespace of process ``pid``."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            raise HakoError(f"process {pid} is gone: cannot reach its network namespace") from None
        try:
            linux.setns(target, linux.CLONE_NEWNET)
            try:
                return socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            finally:
                linux.setns(own, linux.CLONE_NEWNET)
        finally:
            os.close(target)
    finally:
        os.close(own)


def _ioctl(sock: socket.socket, request: int, name: str) -> bytes | None:
    """The ifreq the kernel fills in for interface ``name``; None when it has none (or no address)."""
    ifreq = struct.pack(f"{IFNAMSIZ}s{40 - IFNAMSIZ}x", name.encode()[: IFNAMSIZ - 1])
    try:
        return fcntl.ioctl(sock.fileno(), request, ifreq)
    except OSError as e:
        if e.errno in (errno.ENODEV, errno.EADDRNOTAVAIL, errno.ENXIO):
            return None
        raise


def interface(pid: int, name: str) -> dict | None:
    """Interface ``name`` in the network namespace of ``pid``: its address, prefix length, whether up.

    None when the namespace has no such interface; ``address`` is None when it
    has no IPv4 address.
    """
    with _socket_in(pid) as sock:
        flags = _ioctl(sock, SIOCGIFFLAGS, name)
        if flags is None:
            return None
        up = bool(struct.unpack_from("H", flags, IFNAMSIZ)[0] & IFF_UP)
        address = _ioctl(sock, SIOCGIFADDR, name)
        if address is None:
            return {"address": None, "prefix": None, "up": up}
        netmask = _ioctl(sock, SIOCGIFNETMASK, name)
        # struct sockaddr_in after the name: family (2), port (2), address (4).
        mask = struct.unpack_from("!I", netmask, IFNAMSIZ + 4)[0] if netmask is not None else 0
        return {
            "address": socket.inet_ntoa(address[IFNAMSIZ + 4 : IFNAMSIZ + 8]),
            "prefix": bin(mask).count("1"),
            "up": up,
        }
