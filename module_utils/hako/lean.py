"""Lean stand-ins for standard modules whose import costs more than a container start.

``json``, ``socket``, ``signal``, ``shutil``, ``re`` and ``argparse`` each pull
in ``enum``, ``re`` or both: together about 10 ms on a lab host, half of what
`hako run` may take in all. The C modules under them (``_json``,
``_socket``, ``_signal``) import in microseconds, so the hot path uses them
through these few functions; everything off the hot path uses the standard
modules as usual.
"""

from __future__ import annotations

import _json
import _socket
import os
import struct

AF_UNIX = _socket.AF_UNIX
SOCK_SEQPACKET = _socket.SOCK_SEQPACKET
SOCK_CLOEXEC = _socket.SOCK_CLOEXEC
SOL_SOCKET = _socket.SOL_SOCKET
SCM_RIGHTS = _socket.SCM_RIGHTS


# JSON ------------------------------------------------------------------------


class _DecodeContext:
    """What _json's C scanner reads from a decoder: plain JSON, nothing custom."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


_scan = _json.make_scanner(_DecodeContext())
_WHITESPACE = " \t\n\r"


def loads(text: str | bytes) -> object:
    """json.loads for documents hako writes and reads."""
    if isinstance(text, bytes):
        text = text.decode()
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration:
        raise ValueError(f"not JSON: {text[:40]!r}") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"extra data after JSON at offset {end}")
    return value


def _unserializable(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_encode = _json.make_encoder(
    None, _unserializable, _json.encode_basestring_ascii, None, ":", ",", True, False, True
)


def dumps(value: object) -> str:
    """Compact JSON with sorted keys (json.dumps(sort_keys=True, separators=(",", ":")))."""
    return "".join(_encode(value, 0))


def read_json(path: str) -> object | None:
    """The JSON document at ``path``, or None if there is no such file."""
    try:
        with open(path, "rb") as f:
            return loads(f.read())
    except FileNotFoundError:
        return None


# Sockets ---------------------------------------------------------------------


def socketpair() -> tuple[_socket.socket, _socket.socket]:
    """A close-on-exec SOCK_SEQPACKET pair: one message per send, end of file on close."""
    a, b = _socket.socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)
    return a, b


def unix_socket() -> _socket.socket:
    return _socket.socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)


def accept(listener) -> _socket.socket:
    """Accept a connection on a listening socket made by unix_socket()."""
    fd, _addr = listener._accept()
    conn = _socket.socket(AF_UNIX, SOCK_SEQPACKET, 0, fd)
    os.set_inheritable(fd, False)
    return conn


def send_fds(sock, data: bytes, fds: list[int] | tuple[int, ...]) -> None:
    # struct, not array: array imports collections.abc.
    ancillary = [(SOL_SOCKET, SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
    sock.sendmsg([data], ancillary)


def recv_fds(sock, size: int = 65536, max_fds: int = 4) -> tuple[bytes, list[int]]:
    """One message and the descriptors that came with it (made close-on-exec)."""
    data, ancillary, _flags, _addr = sock.recvmsg(size, _socket.CMSG_SPACE(max_fds * 4))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == SOL_SOCKET and kind == SCM_RIGHTS:
            fds += struct.unpack(f"{len(payload) // 4}i", payload[: len(payload) // 4 * 4])
    for fd in fds:
        os.set_inheritable(fd, False)
    return data, fds


# Files -----------------------------------------------------------------------


def rmtree(path: str) -> None:
    """Remove a directory tree without following symbolic links; a missing tree is fine.

    It walks down and back up through directory descriptors, one open at a
    time, so any depth works (a container can make a tree deeper than
    PATH_MAX or than Python's recursion allows).
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return
    except OSError as e:
        if e.errno not in (20, 40):  # ENOTDIR, ELOOP: a file or a symlink
            raise
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    below: list[str] = []
    try:
        while True:
            child = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        child = entry.name
                        break
                    try:
                        os.unlink(entry.name, dir_fd=fd)
                    except FileNotFoundError:
                        pass
            if child is not None:
                down = os.open(child, flags, dir_fd=fd)
                os.close(fd)
                fd = down
                below.append(child)
                continue
            if not below:
                break
            up = os.open("..", flags, dir_fd=fd)
            os.close(fd)
            fd = up
            os.rmdir(below.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
