"""/etc/hosts, /etc/hostname and /etc/resolv.conf of a networked container.

The files live in the container's bundle directory and are bind-mounted over
the image's, as Docker does. /etc/hosts lists the container itself and every
container on a network it shares, by name and aliases; addresses are held
from create to removal, so the list changes only when a container joins or
leaves a network, and then the files of the running members are rewritten in
place (a bind mount follows the file's inode, not its name).
"""

from __future__ import annotations

import os

FILES = ("hosts", "hostname", "resolv.conf")


def hosts_text(record: dict, networks: dict[str, dict]) -> str:
    """The container's /etc/hosts: loopback, itself, then its networks' other members."""
    hostname = record.get("hostname") or record["id"][:12]
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    seen = set()
    for endpoint in record.get("networks", []):
        names = _unique([hostname, record["name"], *endpoint.get("aliases", [])])
        lines.append(f"{endpoint['ip']}\t{' '.join(names)}")
        seen.add(endpoint["ip"])
    for endpoint in record.get("networks", []):
        network = networks.get(endpoint["network"])
        if network is None:
            continue
        for cid, other in sorted(network["endpoints"].items(), key=lambda item: item[1]["ip"]):
            if cid == record["id"] or other["ip"] in seen:
                continue
            seen.add(other["ip"])
            lines.append(f"{other['ip']}\t{' '.join(_unique([other['name'], *other.get('aliases', [])]))}")
    return "\n".join(lines) + "\n"


def resolv_text(host_resolv: str = "/etc/resolv.conf") -> str:
    """The host's resolver settings without nameservers on loopback (unreachable from a container)."""
    try:
        with open(host_resolv) as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    kept = []
    for line in lines:
        words = line.split()
        if (
            len(words) >= 2
            and words[0] == "nameserver"
            and (words[1].startswith("127.") or words[1] == "::1")
        ):
            continue
        kept.append(line)
    return "\n".join(kept) + "\n" if kept else ""


def write_files(bundle: str, record: dict, networks: dict[str, dict]) -> dict[str, str]:
    """Write the three files into ``bundle``; destination in the container -> file."""
    contents = {
        "hosts": hosts_text(record, networks),
        "hostname": (record.get("hostname") or record["id"][:12]) + "\n",
        "resolv.conf": resolv_text(),
    }
    for name, text in contents.items():
        write_in_place(os.path.join(bundle, name), text)
    return {f"/etc/{name}": os.path.join(bundle, name) for name in FILES}


def write_in_place(path: str, text: str) -> None:
    """Replace a file's content keeping its inode, so that bind mounts of it see the change."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _unique(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        if name and name not in out:
            out.append(name)
    return out
