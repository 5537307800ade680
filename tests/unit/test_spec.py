"""Reading an OCI bundle (runtime/spec.py) and resolving paths inside a root (rootfs.secure_join)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from hako.errors import HakoError, InvalidValue
from hako.runtime.rootfs import secure_join
from hako.runtime.spec import load_config, parse_mount_options, rootfs_path

# mount(2) flags as <linux/mount.h> defines them.
RDONLY, NOSUID, NODEV, NOEXEC = 0x1, 0x2, 0x4, 0x8
SYNCHRONOUS, REMOUNT, DIRSYNC, NOSYMFOLLOW = 0x10, 0x20, 0x80, 0x100
NOATIME, NODIRATIME, BIND, REC = 0x400, 0x800, 0x1000, 0x4000
UNBINDABLE, PRIVATE, SLAVE, SHARED = 1 << 17, 1 << 18, 1 << 19, 1 << 20
RELATIME, STRICTATIME = 1 << 21, 1 << 24


# --------------------------------------------------------------------------
# parse_mount_options


@pytest.mark.parametrize(
    ("options", "flags", "propagation", "data"),
    [
        ([], 0, 0, ""),
        (["ro"], RDONLY, 0, ""),
        (["rw"], 0, 0, ""),
        (["ro", "rw"], 0, 0, ""),  # a later option wins
        (["rw", "ro"], RDONLY, 0, ""),
        (["nosuid", "noexec", "nodev"], NOSUID | NOEXEC | NODEV, 0, ""),
        (["nosuid", "suid"], 0, 0, ""),
        (["nodev", "dev", "noexec", "exec"], 0, 0, ""),
        (["sync"], SYNCHRONOUS, 0, ""),
        (["sync", "async"], 0, 0, ""),
        (["dirsync"], DIRSYNC, 0, ""),
        (["remount", "ro"], REMOUNT | RDONLY, 0, ""),
        (["bind"], BIND, 0, ""),
        (["rbind"], BIND | REC, 0, ""),
        (["relatime"], RELATIME, 0, ""),
        (["relatime", "norelatime"], 0, 0, ""),
        (["strictatime"], STRICTATIME, 0, ""),
        (["noatime", "nodiratime"], NOATIME | NODIRATIME, 0, ""),
        (["noatime", "atime", "nodiratime", "diratime"], 0, 0, ""),
        (["nosymfollow"], NOSYMFOLLOW, 0, ""),
        (["private"], 0, PRIVATE, ""),
        (["rprivate"], 0, PRIVATE | REC, ""),
        (["slave"], 0, SLAVE, ""),
        (["rslave"], 0, SLAVE | REC, ""),
        (["shared"], 0, SHARED, ""),
        (["rshared"], 0, SHARED | REC, ""),
        (["unbindable"], 0, UNBINDABLE, ""),
        (["runbindable"], 0, UNBINDABLE | REC, ""),
        (["mode=755"], 0, 0, "mode=755"),
        (["size=65536k", "mode=1777"], 0, 0, "size=65536k,mode=1777"),
        (
            ["nosuid", "strictatime", "mode=755", "size=65536k"],
            NOSUID | STRICTATIME,
            0,
            "mode=755,size=65536k",
        ),
        (
            ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            NOSUID | NOEXEC,
            0,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        ),
        (["rbind", "ro", "rprivate"], BIND | REC | RDONLY, PRIVATE | REC, ""),
        (
            ["nosuid", "noexec", "nodev", "relatime", "ro", "memory"],
            NOSUID | NOEXEC | NODEV | RELATIME | RDONLY,
            0,
            "memory",
        ),
    ],
)
def test_parse_mount_options_splits_flags_propagation_and_data(
    options: list, flags: int, propagation: int, data: str
) -> None:
    assert parse_mount_options(options) == (flags, propagation, data)


# --------------------------------------------------------------------------
# load_config


def write_bundle(path: Path, config) -> str:
    """A bundle directory whose config.json holds ``config`` (a dict as JSON, or str/bytes as they are)."""
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(config, dict):
        config = json.dumps(config)
    if isinstance(config, str):
        config = config.encode()
    (path / "config.json").write_bytes(config)
    return str(path)


def good_config() -> dict:
    return {
        "ociVersion": "1.0.2",
        "process": {"args": ["sh", "-c", "true"], "cwd": "/", "env": []},
        "root": {"path": "rootfs"},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/proc/1/ns/net"}]},
    }


def test_load_config_reads_a_good_bundle(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", good_config())
    config = load_config(bundle)
    assert config == good_config()
    assert rootfs_path(bundle, config) == os.path.join(bundle, "rootfs")


def test_load_config_accepts_a_bundle_without_namespaces(tmp_path: Path) -> None:
    config = {"process": {"args": ["true"]}, "root": {"path": "/abs/rootfs"}}
    assert load_config(write_bundle(tmp_path / "b", config)) == config


def test_load_config_without_config_json_names_the_bundle(tmp_path: Path) -> None:
    with pytest.raises(HakoError) as caught:
        load_config(str(tmp_path))
    assert str(caught.value) == f"bundle {str(tmp_path)!r} has no config.json"


@pytest.mark.parametrize("text", ["", "{", "not json", '{"process": {}} trailing', b'{"a": "\xff\xfe"}'])
def test_load_config_refuses_bad_json_naming_the_file(tmp_path: Path, text) -> None:
    bundle = write_bundle(tmp_path / "b", text)
    with pytest.raises(HakoError) as caught:
        load_config(bundle)
    assert not isinstance(caught.value, InvalidValue)
    assert str(caught.value).startswith(f"{os.path.join(bundle, 'config.json')}: not valid JSON")


@pytest.mark.parametrize(
    ("change", "field", "value"),
    [
        ({"process": None}, "process", None),
        ({"process": {}}, "process.args", None),
        ({"process": {"args": []}}, "process.args", []),
        ({"root": None}, "root.path", None),
        ({"root": {"path": ""}}, "root.path", {"path": ""}),
        ({"root": {}}, "root.path", {}),
        ({"linux": {"namespaces": [{"type": "net"}]}}, "linux.namespaces.type", "net"),
        ({"linux": {"namespaces": [{"type": "pid"}, {"type": "time"}]}}, "linux.namespaces.type", "time"),
        ({"linux": {"namespaces": [{"path": "/proc/1/ns/pid"}]}}, "linux.namespaces.type", None),
    ],
)
def test_load_config_refuses_missing_or_bad_fields(tmp_path: Path, change: dict, field: str, value) -> None:
    config = {**good_config(), **change}
    with pytest.raises(InvalidValue) as caught:
        load_config(write_bundle(tmp_path / "b", config))
    assert caught.value.field == field
    assert caught.value.value == value


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '"config"',
        "null",
        '{"process": "sh", "root": {"path": "rootfs"}}',
        '{"process": {"args": ["sh"]}, "root": "rootfs"}',
        '{"process": {"args": ["sh"]}, "root": {"path": "rootfs"}, "linux": null}',
        '{"process": {"args": ["sh"]}, "root": {"path": "rootfs"}, "linux": {"namespaces": ["pid"]}}',
    ],
)
def test_load_config_refuses_fields_of_the_wrong_type(tmp_path: Path, text: str) -> None:
    with pytest.raises(HakoError):
        load_config(write_bundle(tmp_path / "b", text))


# --------------------------------------------------------------------------
# secure_join


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A small root filesystem full of links that point, if followed naively, out of it."""
    root = tmp_path / "rootfs"
    for directory in ("etc", "usr/lib", "var/lib/app", "a/b", "lib"):
        (root / directory).mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    os.symlink("/etc", root / "abs-etc")
    os.symlink("/etc/passwd", root / "abs-passwd")
    os.symlink("/../../../../../etc", root / "abs-climb")
    os.symlink("../../../../../../../etc", root / "a" / "b" / "rel-climb")
    os.symlink("../../etc", root / "a" / "b" / "rel-etc")
    os.symlink("usr/lib", root / "rel-lib")
    os.symlink("/abs-etc", root / "chain")
    os.symlink("chain", root / "chain2")
    os.symlink("a/b", root / "ab")
    os.symlink("/", root / "to-root")
    os.symlink("..", root / "var" / "up")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), root / "to-outside")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    os.symlink("self", root / "self")
    os.symlink("self-dir/x", root / "self-dir")
    return root


@pytest.mark.parametrize(
    ("path", "inside"),
    [
        ("/", ""),
        ("", ""),
        ("/etc", "etc"),
        ("etc", "etc"),
        ("/etc/passwd", "etc/passwd"),
        ("//etc/./passwd", "etc/passwd"),
        ("/missing/deeper", "missing/deeper"),
        ("/abs-etc", "etc"),
        ("/abs-etc/passwd", "etc/passwd"),
        ("/abs-passwd", "etc/passwd"),
        ("/abs-climb", "etc"),
        ("/abs-climb/passwd", "etc/passwd"),
        ("/a/b/rel-climb", "etc"),
        ("/a/b/rel-climb/passwd", "etc/passwd"),
        ("/a/b/rel-etc", "etc"),
        ("/rel-lib", "usr/lib"),
        ("/rel-lib/x", "usr/lib/x"),
        ("/chain/passwd", "etc/passwd"),
        ("/chain2/passwd", "etc/passwd"),
        ("/ab/..", "a"),  # '..' applies to where the link led
        ("/ab/rel-etc", "etc"),
        ("/to-root", ""),
        ("/to-root/to-root/etc", "etc"),
        ("/var/up/etc", "etc"),
        ("/var/up/var/up/../../etc", "etc"),
        ("/..", ""),
        ("/../../../etc", "etc"),
        ("/etc/../../../../usr/lib", "usr/lib"),
        ("../../x", "x"),
        ("/a/b/../../../../lib", "lib"),
    ],
)
def test_secure_join_resolves_links_as_if_the_root_were_slash(rootfs: Path, path: str, inside: str) -> None:
    root = str(rootfs)
    assert secure_join(root, path) == (os.path.join(root, inside) if inside else root)


def test_secure_join_keeps_a_link_to_a_host_directory_inside_the_root(rootfs: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    resolved = secure_join(str(rootfs), "/to-outside/file")
    assert resolved == os.path.join(str(rootfs), str(outside).lstrip("/"), "file")
    assert not resolved.startswith(str(outside))


@pytest.mark.parametrize(
    "path",
    [
        "/abs-etc",
        "/abs-climb/passwd",
        "/a/b/rel-climb",
        "/a/b/rel-climb/../..",
        "/chain2",
        "/to-outside",
        "/to-outside/../../..",
        "/var/up/var/up/../../..",
        "/../../..",
        "/ab/../../..",
    ],
)
def test_secure_join_never_resolves_outside_the_root(rootfs: Path, path: str) -> None:
    root = str(rootfs)
    resolved = secure_join(root, path)
    assert os.path.commonpath([root, resolved]) == root
    # what exists of the result has no link left that could lead out
    existing = resolved
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    assert os.path.commonpath([root, os.path.realpath(existing)]) == root


@pytest.mark.parametrize("path", ["/loop-a", "/loop-b/x", "/self", "/self-dir", "/a/../loop-a"])
def test_secure_join_refuses_a_symlink_loop_with_eloop(rootfs: Path, path: str) -> None:
    with pytest.raises(OSError) as caught:
        secure_join(str(rootfs), path)
    assert caught.value.errno == errno.ELOOP
