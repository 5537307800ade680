"""Resolving --user against the container's own /etc/passwd and /etc/group."""

from __future__ import annotations

import os

from ..errors import InvalidValue


def _lookup(roots: list[str], filename: str, name: str) -> list[str] | None:
    """The first line of etc/``filename`` whose first field is ``name``, in the first root having the file."""
    for root in roots:
        path = os.path.join(root, "etc", filename)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    fields = line.rstrip("\n").split(":")
                    if fields and fields[0] == name:
                        return fields
            return None
        except (FileNotFoundError, NotADirectoryError):
            continue
    return None


def resolve_user(spec: dict, roots: list[str]) -> dict:
    """{"user", "group"} (names or numbers) -> the OCI process.user {"uid", "gid"}."""
    user = spec["user"]
    if user.isdigit():
        uid = int(user)
        entry = None
        gid = 0
    else:
        entry = _lookup(roots, "passwd", user)
        if entry is None or len(entry) < 4:
            raise InvalidValue("user", user, "no such user in the container's /etc/passwd")
        uid, gid = int(entry[2]), int(entry[3])
    group = spec.get("group")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            gentry = _lookup(roots, "group", group)
            if gentry is None or len(gentry) < 3:
                raise InvalidValue("user", group, "no such group in the container's /etc/group")
            gid = int(gentry[2])
    return {"uid": uid, "gid": gid}
