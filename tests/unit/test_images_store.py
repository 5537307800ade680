"""The content-addressed image store on a temporary directory (images/store.py)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from hako import lean
from hako.errors import InvalidValue, NotFound
from hako.images.store import ImageStore, normalize_reference, shift_ownership

# --------------------------------------------------------------------------
# normalize_reference


@pytest.mark.parametrize(
    ("reference", "normalized"),
    [
        ("busybox", "busybox:latest"),
        ("busybox:latest", "busybox:latest"),
        ("busybox:1.36", "busybox:1.36"),
        ("a/b:1", "a/b:1"),
        ("a/b", "a/b:latest"),
        ("library/alpine:3.19", "library/alpine:3.19"),
        ("my-app_2.x:v1_RC-2", "my-app_2.x:v1_RC-2"),
        ("app:_under", "app:_under"),
        ("app:" + "t" * 128, "app:" + "t" * 128),
    ],
)
def test_normalize_reference_adds_latest_and_keeps_good_names(reference: str, normalized: str) -> None:
    assert normalize_reference(reference) == normalized


@pytest.mark.parametrize(
    "reference",
    [
        "",
        ":tag",
        "Busybox",
        "busy box",
        "-busybox",
        "busybox-",
        "a//b",
        "/busybox",
        "busybox/",
        "../etc",
        "a/../b",
        "busybox:-tag",
        "busybox:.tag",
        "busybox:t@g",
        "busybox:a:b",
        "busybox@sha256:abc",
        "app:" + "t" * 129,
    ],
)
def test_normalize_reference_refuses_what_cannot_be_an_image_name(reference: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        normalize_reference(reference)
    assert caught.value.field == "image"
    assert caught.value.value == reference


# --------------------------------------------------------------------------
# ImageStore


def diff_id(content: str) -> str:
    return "sha256:" + hashlib.sha256(content.encode()).hexdigest()


def staged_layer(images: ImageStore, name: str, files: dict[str, str]) -> str:
    """An unpacked layer under tmp/, as a pull or build leaves it."""
    fs = os.path.join(images.tmp_dir(), name, "fs")
    os.makedirs(fs)
    for path, content in files.items():
        full = os.path.join(fs, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(content)
    return fs


def add_image(images: ImageStore, layers: list[str], tag: str | None, cmd: str = "sh"):
    """An image whose layers are named by ``layers`` (each layer's content and diff ID derive from it)."""
    for name in layers:
        if not os.path.isdir(images.layer_dir(diff_id(name))):
            images.add_layer(staged_layer(images, f"stage-{name}", {"etc/" + name: name}), diff_id(name))
    return images.add_image(image_config(layers, cmd), tag)


def image_config(layers: list[str], cmd: str) -> dict:
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": [cmd]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id(n) for n in layers]},
    }


@pytest.fixture
def images(tmp_path: Path) -> ImageStore:
    return ImageStore(str(tmp_path / "root"))


def test_add_layer_moves_the_staged_layer_into_place(images: ImageStore) -> None:
    staged = staged_layer(images, "pull-1", {"bin/sh": "shell"})
    target = images.add_layer(staged, diff_id("base"))
    assert target == images.layer_dir(diff_id("base"))
    assert target == os.path.join(images.root, "layers", diff_id("base")[7:], "fs")
    assert Path(target, "bin", "sh").read_text() == "shell"
    assert not os.path.exists(os.path.dirname(staged))


def test_add_layer_keeps_the_first_copy_of_an_identical_layer(images: ImageStore) -> None:
    images.add_layer(staged_layer(images, "pull-1", {"f": "first"}), diff_id("base"))
    staged = staged_layer(images, "pull-2", {"f": "second"})
    target = images.add_layer(staged, diff_id("base"))
    assert Path(target, "f").read_text() == "first"
    assert not os.path.exists(os.path.dirname(staged))


def test_add_image_names_the_image_by_the_sha256_of_its_config(images: ImageStore) -> None:
    image = add_image(images, ["base"], "busybox")
    config_path = Path(images.root, "configs", image.id[7:] + ".json")
    data = config_path.read_bytes()
    assert image.id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert lean.loads(data) == image.config
    assert image.short_id == image.id[7:19]
    assert image.diff_ids() == [diff_id("base")]
    assert image.tags == ["busybox:latest"]


def test_get_finds_an_image_by_tag_full_id_and_unique_prefix(images: ImageStore) -> None:
    image = add_image(images, ["base"], "busybox:1.36")
    hexid = image.id[7:]
    for reference in ("busybox:1.36", image.id, hexid, hexid[:12], hexid[:4], "sha256:" + hexid[:8]):
        found = images.get(reference)
        assert found.id == image.id, reference
        assert found.config == image.config
        assert found.tags == ["busybox:1.36"]


def test_get_normalizes_a_tag_without_its_version(images: ImageStore) -> None:
    image = add_image(images, ["base"], "busybox")
    assert images.get("busybox").id == image.id
    assert images.get("busybox:latest").id == image.id


def test_an_image_without_a_tag_is_found_by_id(images: ImageStore) -> None:
    image = add_image(images, ["base"], None)
    assert images.tags() == {}
    assert images.get(image.id).tags == []


def test_tags_map_each_name_to_its_image(images: ImageStore) -> None:
    first = add_image(images, ["base"], "busybox", cmd="sh")
    second = add_image(images, ["base", "app"], "app:1", cmd="app")
    images.tag(second.id, "app")
    assert images.tags() == {"busybox:latest": first.id, "app:1": second.id, "app:latest": second.id}
    assert images.get("app:1").tags == ["app:1", "app:latest"]
    assert [(i.id, i.tags) for i in images.list()] == sorted(
        [(first.id, ["busybox:latest"]), (second.id, ["app:1", "app:latest"])]
    )


def test_tag_moves_a_name_to_another_image(images: ImageStore) -> None:
    first = add_image(images, ["base"], "busybox", cmd="one")
    second = add_image(images, ["base"], None, cmd="two")
    images.tag(second.id, "busybox")
    assert images.get("busybox").id == second.id
    assert images.get(first.id).tags == []


def test_tag_refuses_a_bad_name(images: ImageStore) -> None:
    image = add_image(images, ["base"], None)
    with pytest.raises(InvalidValue):
        images.tag(image.id, "Bad Name")


def test_lower_dirs_lists_the_top_layer_first(images: ImageStore) -> None:
    image = add_image(images, ["base", "middle", "top"], "stack")
    assert images.lower_dirs(image) == [images.layer_dir(diff_id(n)) for n in ("top", "middle", "base")]


@pytest.mark.parametrize(
    "reference",
    ["nothing", "nothing:1", "busybox:other", "sha256:" + "0" * 64, "0000", "abc", "sha256:", "Bad Name", ""],
)
def test_get_of_an_unknown_reference_is_not_found(images: ImageStore, reference: str) -> None:
    add_image(images, ["base"], "busybox")
    with pytest.raises(NotFound, match="no such image"):
        images.get(reference)


def commands_with_a_shared_id_prefix(length: int = 4) -> tuple[str, str]:
    """Two commands whose image configs have IDs starting with the same ``length`` hex digits."""
    seen: dict[str, str] = {}
    for n in range(1_000_000):
        cmd = f"c{n}"
        data = lean.dumps(image_config(["base"], cmd)).encode()
        prefix = hashlib.sha256(data).hexdigest()[:length]
        if prefix in seen:
            return seen[prefix], cmd
        seen[prefix] = cmd
    raise AssertionError("no shared prefix found")


def test_get_of_an_ambiguous_id_prefix_is_not_found(images: ImageStore) -> None:
    first, second = (add_image(images, ["base"], None, cmd=c) for c in commands_with_a_shared_id_prefix())
    assert first.id != second.id
    prefix = first.id[7:11]
    assert second.id[7:11] == prefix
    for reference in (prefix, "sha256:" + prefix):
        with pytest.raises(NotFound):
            images.get(reference)
    # one more digit may tell them apart
    assert images.get(first.id[7:19]).id == first.id
    assert images.get(second.id[7:19]).id == second.id


def test_get_of_an_image_whose_config_is_gone_is_not_found(images: ImageStore) -> None:
    image = add_image(images, ["base"], "busybox")
    os.unlink(os.path.join(images.root, "configs", image.id[7:] + ".json"))
    with pytest.raises(NotFound):
        images.get("busybox")


def test_an_empty_store_lists_nothing(images: ImageStore) -> None:
    assert images.list() == []
    assert images.tags() == {}
    with pytest.raises(NotFound):
        images.get("busybox")


# --------------------------------------------------------------------------
# remove


def test_remove_of_one_of_several_tags_only_untags(images: ImageStore) -> None:
    image = add_image(images, ["base"], "app:1")
    images.tag(image.id, "app:2")
    removed = images.remove("app:1")
    assert removed.id == image.id
    assert images.tags() == {"app:2": image.id}
    assert images.get(image.id).tags == ["app:2"]
    assert os.path.isdir(images.layer_dir(diff_id("base")))


def test_remove_of_the_last_tag_deletes_the_image_and_its_layers(images: ImageStore) -> None:
    image = add_image(images, ["base", "top"], "app")
    images.remove("app")
    assert images.tags() == {}
    assert images.list() == []
    with pytest.raises(NotFound):
        images.get(image.id)
    for name in ("base", "top"):
        assert not os.path.exists(os.path.dirname(images.layer_dir(diff_id(name))))


def test_remove_by_id_untags_every_name_and_deletes_the_image(images: ImageStore) -> None:
    image = add_image(images, ["base"], "app:1")
    images.tag(image.id, "app:2")
    images.remove(image.id[7:19])
    assert images.tags() == {}
    with pytest.raises(NotFound):
        images.get(image.id)
    assert not os.path.exists(images.layer_dir(diff_id("base")))


def test_remove_keeps_layers_another_image_still_uses(images: ImageStore) -> None:
    kept = add_image(images, ["base", "shared"], "kept", cmd="kept")
    add_image(images, ["shared", "own"], "gone", cmd="gone")
    images.remove("gone")
    assert os.path.isdir(images.layer_dir(diff_id("base")))
    assert os.path.isdir(images.layer_dir(diff_id("shared")))
    assert not os.path.exists(os.path.dirname(images.layer_dir(diff_id("own"))))
    assert images.get("kept").id == kept.id
    assert [i.id for i in images.list()] == [kept.id]


def test_remove_leaves_nothing_of_a_removed_image_behind(images: ImageStore) -> None:
    add_image(images, ["base"], "app")
    images.remove("app")
    assert os.listdir(os.path.join(images.root, "configs")) == []
    assert os.listdir(os.path.join(images.root, "layers")) == []


def test_remove_of_an_unknown_image_is_not_found_and_changes_nothing(images: ImageStore) -> None:
    image = add_image(images, ["base"], "app")
    with pytest.raises(NotFound):
        images.remove("other")
    assert images.tags() == {"app:latest": image.id}


# --------------------------------------------------------------------------
# shift_ownership


def owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def test_shift_ownership_adds_the_offsets_to_files_dirs_and_symlinks(tmp_path: Path) -> None:
    tree = tmp_path / "fs"
    (tree / "etc" / "sub").mkdir(parents=True)
    (tree / "etc" / "passwd").write_text("x")
    (tree / "home").mkdir()
    (tree / "home" / "user-file").write_text("y")
    os.symlink("etc/passwd", tree / "link")
    os.symlink("/nonexistent", tree / "dangling")
    os.symlink("etc", tree / "dir-link")
    os.mkfifo(tree / "fifo")
    outside = tmp_path / "outside"
    outside.write_text("z")
    os.symlink(outside, tree / "to-outside")

    owners = {
        tree: (0, 0),
        tree / "etc": (0, 0),
        tree / "etc" / "sub": (5, 6),
        tree / "etc" / "passwd": (0, 42),
        tree / "home": (1000, 1000),
        tree / "home" / "user-file": (1000, 100),
        tree / "link": (0, 0),
        tree / "dangling": (7, 8),
        tree / "dir-link": (0, 0),
        tree / "fifo": (3, 4),
        tree / "to-outside": (0, 0),
    }
    for path, (uid, gid) in owners.items():
        os.lchown(path, uid, gid)
    os.chown(outside, 0, 0)

    shift_ownership(str(tree), 100000, 200000)

    for path, (uid, gid) in owners.items():
        assert owner(path) == (uid + 100000, gid + 200000), path
    assert owner(outside) == (0, 0)  # a link's target outside the tree is not touched


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o6755, 0o4711, 0o1777, 0o0644])
def test_shift_ownership_keeps_setuid_setgid_and_sticky_bits(tmp_path: Path, mode: int) -> None:
    tree = tmp_path / "fs"
    tree.mkdir()
    program = tree / "program"
    program.write_text("#!/bin/sh\n")
    os.chown(program, 0, 0)
    os.chmod(program, mode)
    shift_ownership(str(tree), 100000, 100000)
    st = os.lstat(program)
    assert (st.st_uid, st.st_gid) == (100000, 100000)
    assert stat.S_IMODE(st.st_mode) == mode


def test_shift_ownership_keeps_the_setgid_bit_of_a_directory(tmp_path: Path) -> None:
    tree = tmp_path / "fs"
    shared = tree / "shared"
    shared.mkdir(parents=True)
    os.chmod(shared, 0o2775)
    shift_ownership(str(tree), 1000, 1000)
    assert stat.S_IMODE(os.lstat(shared).st_mode) == 0o2775
    assert owner(shared) == (1000, 1000)
