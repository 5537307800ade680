"""Layer tar streams: safe unpacking (hostile archives), whiteouts, and packing back.

These write real files, owners, device nodes and trusted.* attributes, so
they run as root.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import stat
import tarfile
from pathlib import Path

import pytest
from hako.errors import InvalidValue
from hako.images import layers
from hako.images.store import ImageStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (owners, device nodes, xattrs)")


def archive(*entries, compress=None) -> bytes:
    """A tar stream of (name, kind, extra) entries: kind file/dir/symlink/hardlink/chr/fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, extra in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            data = None
            if kind == "file":
                data = extra.encode() if isinstance(extra, str) else extra
                info.size = len(data)
                info.mode = 0o644
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, extra
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, extra
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    if compress == "gzip":
        return gzip.compress(raw)
    if compress == "xz":
        return lzma.compress(raw)
    return raw


def unpack(tmp_path: Path, data: bytes) -> Path:
    target = tmp_path / "target"
    target.mkdir()
    layers.unpack(io.BytesIO(data), str(target))
    return target


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the target that no archive may touch."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "precious").write_text("keep me")
    return path


def assert_untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["precious"]
    assert (outside / "precious").read_text() == "keep me"


# Hostile archives ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["../outside/evil", "a/../../outside/evil", "./../outside/evil"])
def test_a_name_that_climbs_out_is_refused(tmp_path, outside, name) -> None:
    with pytest.raises(InvalidValue, match="climbs out"):
        unpack(tmp_path, archive(("a", "dir", None), (name, "file", "x")))
    assert_untouched(outside)


def test_an_absolute_name_is_refused(tmp_path, outside) -> None:
    with pytest.raises(InvalidValue, match="absolute path"):
        unpack(tmp_path, archive((f"{outside}/evil", "file", "x")))
    assert_untouched(outside)


def test_an_entry_below_a_symlink_to_outside_is_refused(tmp_path, outside) -> None:
    data = archive(("escape", "symlink", str(outside)), ("escape/evil", "file", "x"))
    with pytest.raises(InvalidValue, match="passes through 'escape'"):
        unpack(tmp_path, data)
    assert_untouched(outside)


def test_an_entry_below_a_relative_symlink_is_refused(tmp_path, outside) -> None:
    data = archive(("d", "dir", None), ("d/up", "symlink", "../../outside"), ("d/up/evil", "file", "x"))
    with pytest.raises(InvalidValue, match="passes through 'up'"):
        unpack(tmp_path, data)
    assert_untouched(outside)


def test_a_file_replacing_a_symlink_replaces_the_link_not_its_target(tmp_path, outside) -> None:
    target = unpack(tmp_path, archive(("p", "symlink", str(outside / "precious")), ("p", "file", "new")))
    assert not (target / "p").is_symlink()
    assert (target / "p").read_text() == "new"
    assert_untouched(outside)


def test_a_hard_link_to_a_file_outside_is_refused(tmp_path, outside) -> None:
    with pytest.raises(InvalidValue, match="hard link target"):
        unpack(tmp_path, archive(("evil", "hardlink", "../outside/precious")))
    assert_untouched(outside)


def test_a_hard_link_through_a_symlink_is_refused(tmp_path, outside) -> None:
    data = archive(("out", "symlink", str(outside)), ("evil", "hardlink", "out/precious"))
    with pytest.raises(InvalidValue, match="passes through 'out'"):
        unpack(tmp_path, data)
    assert (outside / "precious").stat().st_nlink == 1
    assert_untouched(outside)


def test_an_absolute_hard_link_is_refused(tmp_path, outside) -> None:
    with pytest.raises(InvalidValue, match="absolute path"):
        unpack(tmp_path, archive(("evil", "hardlink", str(outside / "precious"))))
    assert (outside / "precious").stat().st_nlink == 1


def test_device_nodes_are_dropped_not_made(tmp_path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    result = layers.unpack(io.BytesIO(archive(("mem", "chr", None), ("ok", "file", "fine"))), str(target))
    assert not (target / "mem").exists()
    assert result.dropped == ["mem"]
    assert (target / "ok").read_text() == "fine"


def test_more_entries_than_the_limit_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HAKO_MAX_LAYER_ENTRIES", "50")
    data = archive(*((f"f{i}", "file", "") for i in range(51)))
    with pytest.raises(InvalidValue, match="HAKO_MAX_LAYER_ENTRIES=50"):
        unpack(tmp_path, data)


def test_a_truncated_archive_is_refused(tmp_path) -> None:
    data = archive(("big", "file", "x" * 100_000), compress="gzip")
    with pytest.raises(InvalidValue):
        unpack(tmp_path, data[: len(data) // 2])


def test_not_an_archive_is_refused(tmp_path) -> None:
    with pytest.raises(InvalidValue, match="not a tar archive"):
        unpack(tmp_path, b"this is not a tar archive at all" * 40)


def test_a_refused_layer_leaves_nothing_in_the_store(tmp_path, outside) -> None:
    images = ImageStore(str(tmp_path / "root"))
    data = archive(("ok", "file", "fine"), ("escape", "symlink", str(outside)), ("escape/evil", "file", "x"))
    with pytest.raises(InvalidValue):
        images.unpack_layer(io.BytesIO(data))
    assert os.listdir(images.tmp_dir()) == []
    assert not os.path.exists(os.path.join(images.root, "layers"))
    assert not os.path.exists(os.path.join(images.root, "blobs"))
    assert_untouched(outside)


def test_a_blob_whose_digest_differs_is_refused_and_nothing_is_kept(tmp_path) -> None:
    images = ImageStore(str(tmp_path / "root"))
    data = archive(("ok", "file", "fine"), compress="gzip")
    wrong = "sha256:" + "0" * 64
    with pytest.raises(InvalidValue, match="refused"):
        images.unpack_layer(io.BytesIO(data), expected_digest=wrong)
    with pytest.raises(InvalidValue, match="refused"):
        images.unpack_layer(io.BytesIO(data), expected_diff_id=wrong)
    assert os.listdir(images.tmp_dir()) == []
    assert not os.path.exists(os.path.join(images.root, "layers"))


# What a layer holds ----------------------------------------------------------------
@pytest.mark.parametrize("compress", [None, "gzip", "xz"])
def test_digests_are_of_the_stored_and_of_the_uncompressed_bytes(tmp_path, compress) -> None:
    raw = archive(("etc", "dir", None), ("etc/motd", "file", "hello"))
    data = archive(("etc", "dir", None), ("etc/motd", "file", "hello"), compress=compress)
    target = tmp_path / "t"
    target.mkdir()
    result = layers.unpack(io.BytesIO(data), str(target))
    assert result.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert result.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert (target / "etc/motd").read_text() == "hello"


def test_owners_modes_setuid_links_and_capabilities_are_kept(tmp_path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("bin/ping")
        info.size, info.mode, info.uid, info.gid = 4, 0o4755, 0, 0
        # cap_net_raw+ep as the kernel stores it (VFS_CAP_REVISION_2)
        cap = bytes.fromhex("0100000200200000000000000000000000000000")
        info.pax_headers["SCHILY.xattr.security.capability"] = cap.decode("utf-8", "surrogateescape")
        info.pax_headers["SCHILY.xattr.trusted.overlay.opaque"] = "y"
        tar.addfile(info, io.BytesIO(b"ping"))
        info = tarfile.TarInfo("home/u/file")
        info.size, info.mode, info.uid, info.gid = 2, 0o600, 1000, 1000
        tar.addfile(info, io.BytesIO(b"hi"))
        link = tarfile.TarInfo("home/u/again")
        link.type, link.linkname = tarfile.LNKTYPE, "home/u/file"
        tar.addfile(link)
    target = unpack(tmp_path, buf.getvalue())
    ping = os.lstat(target / "bin/ping")
    assert stat.S_IMODE(ping.st_mode) == 0o4755
    assert os.getxattr(target / "bin/ping", "security.capability") == cap
    assert "trusted.overlay.opaque" not in os.listxattr(target / "bin/ping")
    file = os.lstat(target / "home/u/file")
    assert (file.st_uid, file.st_gid, stat.S_IMODE(file.st_mode)) == (1000, 1000, 0o600)
    assert os.lstat(target / "home/u/again").st_ino == file.st_ino


def test_whiteouts_become_what_overlayfs_reads(tmp_path) -> None:
    data = archive(
        ("etc", "dir", None),
        ("etc/.wh.motd", "file", ""),
        ("var", "dir", None),
        ("var/.wh..wh..opq", "file", ""),
        ("var/new", "file", "n"),
    )
    target = unpack(tmp_path, data)
    motd = os.lstat(target / "etc/motd")
    assert stat.S_ISCHR(motd.st_mode) and motd.st_rdev == 0
    assert not (target / "etc/.wh.motd").exists()
    assert os.getxattr(target / "var", layers.OPAQUE_XATTR) == b"y"
    assert not (target / "var/.wh..wh..opq").exists()


def test_pack_turns_overlay_whiteouts_back_into_tar_whiteouts_and_round_trips(tmp_path) -> None:
    source = tmp_path / "upper"
    (source / "etc").mkdir(parents=True)
    (source / "etc/hostname").write_text("lab\n")
    os.mknod(source / "etc/motd", stat.S_IFCHR, os.makedev(0, 0))
    (source / "var").mkdir()
    os.setxattr(source / "var", layers.OPAQUE_XATTR, b"y")
    (source / "var/log").write_text("x")
    os.mknod(source / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    out = io.BytesIO()
    sink = layers.DigestWriter(out)
    layers.pack(str(source), sink)
    sink.close()
    names = tarfile.open(fileobj=io.BytesIO(gzip.decompress(out.getvalue()))).getnames()
    assert names == ["etc", "etc/hostname", "etc/.wh.motd", "var", "var/.wh..wh..opq", "var/log"]
    target = tmp_path / "again"
    target.mkdir()
    result = layers.unpack(io.BytesIO(out.getvalue()), str(target))
    assert (result.digest, result.diff_id) == (sink.digest, sink.diff_id)
    assert os.getxattr(target / "var", layers.OPAQUE_XATTR) == b"y"
    assert stat.S_ISCHR(os.lstat(target / "etc/motd").st_mode)


def test_pack_is_reproducible_and_subtracts_a_user_namespace_shift(tmp_path) -> None:
    source = tmp_path / "upper"
    source.mkdir()
    (source / "f").write_text("x")
    os.chown(source / "f", 101000, 101000)
    digests = []
    for _ in range(2):
        sink = layers.DigestWriter(None)
        layers.pack(str(source), sink, shift=(100000, 100000))
        sink.close()
        digests.append(sink.diff_id)
    assert digests[0] == digests[1]
    buf = io.BytesIO()
    layers.pack(str(source), buf, shift=(100000, 100000))
    member = tarfile.open(fileobj=io.BytesIO(buf.getvalue())).getmember("f")
    assert (member.uid, member.gid) == (1000, 1000)


# What the review of hostile input found -------------------------------------------
def test_an_oversized_extended_header_is_refused_before_it_is_read(tmp_path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.pax_headers["comment"] = "x" * (layers.MAX_HEADER + 10)
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(InvalidValue, match="extended header"):
        unpack(tmp_path, buf.getvalue())


def test_a_sparse_member_is_refused(tmp_path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("huge")
        info.pax_headers.update({"GNU.sparse.map": "0,0", "GNU.sparse.size": str(10**15)})
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(InvalidValue, match="sparse"):
        unpack(tmp_path, buf.getvalue())


@pytest.mark.parametrize(
    ("headers", "name"),
    [({"mtime": "1e400"}, "f"), ({"uid": "99999999999"}, "f"), ({}, "nul\x00name"), ({}, "x" * 300)],
)
def test_numbers_and_names_the_kernel_refuses_are_one_line_errors(tmp_path, headers, name) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("placeholder")
        info.pax_headers.update({"path": name, **headers})
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(InvalidValue):
        unpack(tmp_path, buf.getvalue())


def test_a_tree_deeper_than_the_limit_is_refused(tmp_path) -> None:
    deep = "/".join(["d"] * (layers.MAX_DEPTH + 1)) + "/f"
    with pytest.raises(InvalidValue, match="deeper than"):
        unpack(tmp_path, archive((deep, "file", "x")))


def test_packing_never_follows_a_symlink_swapped_in_for_a_directory_or_file(tmp_path, outside) -> None:
    # A running container can swap a directory for a symlink between the
    # listing and the walk; the packer opens what it walks with O_NOFOLLOW.
    source = tmp_path / "upper"
    source.mkdir()
    (source / "zzz").symlink_to(outside)
    (source / "file").symlink_to(outside / "precious")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        packer = layers._Packer(tar, True, None)
        root = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert packer._directory(root, "zzz", "zzz") is None
            packer._file(root, "file", "file")
        finally:
            os.close(root)
    assert tarfile.open(fileobj=io.BytesIO(out.getvalue())).getnames() == []
    # Packed normally, they are symlinks in the layer, not what they point to.
    buf = io.BytesIO()
    layers.pack(str(source), buf)
    members = tarfile.open(fileobj=io.BytesIO(buf.getvalue())).getmembers()
    assert [(m.name, m.issym()) for m in members] == [("file", True), ("zzz", True)]


def test_a_file_that_shrinks_while_packed_is_padded_to_its_header_size(tmp_path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = layers._Exactly(fd, 10)
        assert reader.read(4) == b"abc\0"
        assert reader.read(100) == bytes(6)
        assert reader.read(5) == b""
    finally:
        os.close(fd)


def test_a_layer_left_half_removed_is_replaced_not_trusted(tmp_path) -> None:
    images = ImageStore(str(tmp_path / "root"))
    data = archive(("a", "file", "one"), ("b", "file", "two"))
    info = images.unpack_layer(io.BytesIO(data))
    layer = Path(images.layer_dir(info["diff_id"]))
    # What an interrupted removal would leave: no layer.json, some files gone.
    (layer.parent / "layer.json").unlink()
    (layer / "b").unlink()
    assert not images.has_layer(info["diff_id"])
    again = images.unpack_layer(io.BytesIO(data))
    assert again["diff_id"] == info["diff_id"] and images.has_layer(info["diff_id"])
    assert (layer / "b").read_text() == "two"
    assert [p for p in os.listdir(images.tmp_dir()) if not p.startswith("partial")] == []


def test_prune_removes_blobs_no_layer_names(tmp_path) -> None:
    images = ImageStore(str(tmp_path / "root"))
    info = images.unpack_layer(io.BytesIO(archive(("a", "file", "one"), compress="gzip")))
    stray = Path(images.blob_path("sha256:" + "cd" * 32))
    stray.write_bytes(b"left by a layer stored halfway")
    images.prune_layers()  # the layer itself is unused too: both go
    assert not stray.exists()
    assert not os.path.exists(images.blob_path(info["digest"]))


def test_shifting_owners_shifts_a_hard_linked_file_once_and_keeps_its_capabilities(tmp_path) -> None:
    from hako.images.store import namespaced_caps, shift_ownership

    tree = tmp_path / "layer"
    tree.mkdir()
    (tree / "ping").write_bytes(b"x")
    os.link(tree / "ping", tree / "ping2")
    os.link(tree / "ping", tree / "ping3")
    cap = bytes.fromhex("0100000200200000000000000000000000000000")
    os.setxattr(tree / "ping", "security.capability", cap)
    shift_ownership(str(tree), 100000, 100000)
    st = os.lstat(tree / "ping2")
    assert (st.st_uid, st.st_gid) == (100000, 100000)
    stored = os.getxattr(tree / "ping", "security.capability")
    assert stored == namespaced_caps(cap, 100000)
    assert int.from_bytes(stored[:4], "little") >> 24 == 3
    assert int.from_bytes(stored[20:24], "little") == 100000
