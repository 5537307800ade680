"""This package's own files, wherever it runs from: a directory, or the zip Ansible sends a module in."""

from __future__ import annotations

import hashlib
import os

from . import store
from .errors import HakoError

PACKAGE = "hako"


def tree_files(package_dir: str) -> dict[str, bytes]:
    """The Python files of a package directory (none if it is missing), by path inside it."""
    files: dict[str, bytes] = {}
    for directory, subdirs, names in os.walk(package_dir):
        subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                with open(path, "rb") as f:
                    files[os.path.relpath(path, package_dir)] = f.read()
    return files


def package_files() -> dict[str, bytes]:
    """This package's Python files, by path inside it, whether it runs from a directory or a zip."""
    package_dir = os.path.dirname(os.path.abspath(__file__))
    if os.path.isdir(package_dir):
        return tree_files(package_dir)
    files: dict[str, bytes] = {}
    archive, inner = package_dir, []
    while archive and not os.path.isfile(archive):
        archive, tail = os.path.split(archive)
        inner.insert(0, tail)
    if not archive:
        raise HakoError(f"cannot find the archive holding {package_dir}")
    import zipfile

    prefix = "/".join(inner) + "/"
    with zipfile.ZipFile(archive) as payload:
        for name in sorted(payload.namelist()):
            if name.startswith(prefix) and name.endswith(".py"):
                files[name[len(prefix) :]] = payload.read(name)
    return files


def files_digest(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
    return digest.hexdigest()


def write_package(files: dict[str, bytes], parent: str) -> None:
    """Put ``files`` at ``parent``/hako as a whole: readers see the old tree or the new one."""
    os.makedirs(parent, mode=0o755, exist_ok=True)
    target = os.path.join(parent, PACKAGE)
    staging = os.path.join(parent, f".{PACKAGE}.{os.getpid()}.new")
    old = os.path.join(parent, f".{PACKAGE}.{os.getpid()}.old")
    try:
        for name, data in files.items():
            path = os.path.join(staging, name)
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, 0o644)
        if os.path.isdir(target):
            os.rename(target, old)
        os.rename(staging, target)
    finally:
        store.remove_tree(staging)
        store.remove_tree(old)
