"""An image made from the host's busybox-static: offline, a few megabytes, seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from ..errors import HakoError
from ..runtime.spec import DEFAULT_PATH
from .store import Image, ImageStore

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"


def find_busybox() -> str:
    for path in BUSYBOX_CANDIDATES:
        if os.path.isfile(path) and _is_static(path):
            return path
    raise HakoError(
        "no static busybox on this host: install the busybox-static package (apt-get install busybox-static)"
    )


def _is_static(path: str) -> bool:
    # A static ELF has no PT_INTERP program header; reading it avoids a
    # dependency on file(1).
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff = int.from_bytes(head[32:40], "little")
        phentsize = int.from_bytes(head[54:56], "little")
        phnum = int.from_bytes(head[56:58], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(int.from_bytes(table[i * phentsize : i * phentsize + 4], "little") != 3 for i in range(phnum))


def populate_rootfs(rootfs: str, busybox: str) -> None:
    """Lay out a minimal root filesystem around ``busybox`` and its applet links."""
    for directory in (
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "root",
        "home",
        "var/log",
        "dev",
        "proc",
        "sys",
        "run",
    ):
        os.makedirs(os.path.join(rootfs, directory), exist_ok=True)
    os.makedirs(os.path.join(rootfs, "tmp"), exist_ok=True)
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    os.chmod(os.path.join(rootfs, "root"), 0o700)
    shutil.copy2(busybox, os.path.join(rootfs, "bin/busybox"))
    applets = subprocess.run(
        [busybox, "--list-full"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        link = os.path.join(rootfs, applet)
        if applet == "bin/busybox" or os.path.lexists(link):
            continue
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.relpath(os.path.join(rootfs, "bin/busybox"), os.path.dirname(link)), link)
    for name, text in (("passwd", _PASSWD), ("group", _GROUP), ("hostname", "busybox\n")):
        with open(os.path.join(rootfs, "etc", name), "w") as f:
            f.write(text)


def architecture() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def build(images: ImageStore, tag: str = "busybox:latest") -> Image:
    """Build (or rebuild) the busybox image and tag it."""
    busybox = find_busybox()
    with images.staging("busybox") as staged:
        fs = os.path.join(staged, "fs")
        os.mkdir(fs, 0o755)
        populate_rootfs(fs, busybox)
        diff_id = images.store_directory(fs)["diff_id"]
    version = subprocess.run([busybox], capture_output=True, text=True).stdout.split("\n", 1)[0]
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    config = {
        "architecture": architecture(),
        "os": "linux",
        "created": created,
        "config": {"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": f"hako image build busybox ({version.strip()})"}],
    }
    return images.add_image(config, tag)
