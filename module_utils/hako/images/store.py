"""The content-addressed image store.

Layout below ``$HAKO_ROOT/images``::

    layers/<hex>/fs/          a layer, unpacked; <hex> is its diff ID (the
                              sha256 of its uncompressed tar stream)
    layers/<hex>/shifted/U-G/ the same files owned by a user namespace's
                              range starting at host uid U, gid G (made on
                              first use by such a container)
    configs/<hex>.json        an OCI image config; <hex> is the image ID
    tags.json                 {"name:tag": "sha256:<image id>"}
    tmp/                      work in progress, never read as an image

A layer or config is written under tmp/ and renamed into place once whole,
so an interrupted build leaves nothing that reads as a good image.
"""

from __future__ import annotations

import errno
import os

from .. import lean, store, text
from ..errors import InvalidValue, NotFound

_TAG_CHARS = text.ALNUM | {"_", ".", "-"}


def normalize_reference(reference: str) -> str:
    """'busybox' -> 'busybox:latest'; refuses what cannot be an image name."""
    name, _, tag = reference.rpartition(":") if ":" in reference.split("/")[-1] else (reference, "", "")
    tag = tag or "latest"
    if not text.is_image_name(name) or not text.made_of(
        tag, _TAG_CHARS, first=text.ALNUM | {"_"}, max_len=128
    ):
        raise InvalidValue("image", reference, "not a valid image reference")
    return f"{name}:{tag}"


class Image:
    __slots__ = ("id", "config", "tags")

    def __init__(self, image_id: str, config: dict, tags: list[str]) -> None:
        self.id = image_id  # "sha256:<hex>"
        self.config = config
        self.tags = tags

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[1][:12]

    def diff_ids(self) -> list[str]:
        return list(self.config.get("rootfs", {}).get("diff_ids", []))


class ImageStore:
    def __init__(self, root: str | None = None) -> None:
        self.root = os.path.join(root or store.root_dir(), "images")

    # Paths -----------------------------------------------------------------
    def layer_dir(self, diff_id: str) -> str:
        return os.path.join(self.root, "layers", diff_id.split(":", 1)[1], "fs")

    def _config_path(self, image_id: str) -> str:
        return os.path.join(self.root, "configs", image_id.split(":", 1)[1] + ".json")

    def _tags_path(self) -> str:
        return os.path.join(self.root, "tags.json")

    def tmp_dir(self) -> str:
        path = os.path.join(self.root, "tmp")
        os.makedirs(path, exist_ok=True)
        return path

    def _lock(self):
        os.makedirs(self.root, exist_ok=True)
        return store.locked(os.path.join(self.root, ".lock"))

    # Reading ---------------------------------------------------------------
    def tags(self) -> dict[str, str]:
        return store.read_json(self._tags_path()) or {}

    def get(self, reference: str) -> Image:
        """The image a tag, a full ID or an unambiguous ID prefix names."""
        tags = self.tags()
        image_id = None
        if not reference.startswith("sha256:"):
            try:
                image_id = tags.get(normalize_reference(reference))
            except InvalidValue:
                image_id = None
        if image_id is None:
            image_id = self._by_id(reference)
        if image_id is None:
            raise NotFound(f"no such image: {reference}")
        config = store.read_json(self._config_path(image_id))
        if config is None:
            raise NotFound(f"no such image: {reference} (its config is missing)")
        return Image(image_id, config, sorted(t for t, i in tags.items() if i == image_id))

    def _by_id(self, reference: str) -> str | None:
        hexpart = reference.split(":", 1)[1] if reference.startswith("sha256:") else reference
        if not 4 <= len(hexpart) <= 64 or not text.made_of(hexpart, text.HEX):
            return None
        try:
            names = os.listdir(os.path.join(self.root, "configs"))
        except FileNotFoundError:
            return None
        found = [n[:-5] for n in names if n.endswith(".json") and n.startswith(hexpart)]
        return "sha256:" + found[0] if len(found) == 1 else None

    def list(self) -> list[Image]:
        tags = self.tags()
        images = []
        try:
            names = sorted(os.listdir(os.path.join(self.root, "configs")))
        except FileNotFoundError:
            return []
        for name in names:
            if not name.endswith(".json"):
                continue
            image_id = "sha256:" + name[:-5]
            config = store.read_json(os.path.join(self.root, "configs", name))
            if config is not None:
                images.append(Image(image_id, config, sorted(t for t, i in tags.items() if i == image_id)))
        return images

    def lower_dirs(self, image: Image, shift: tuple[int, int] | None = None) -> list[str]:
        """The image's layer directories, top layer first, as overlayfs wants them."""
        dirs = []
        for diff_id in reversed(image.diff_ids()):
            path = self.layer_dir(diff_id)
            if shift is not None:
                path = self._shifted_layer(diff_id, path, *shift)
            dirs.append(path)
        return dirs

    # Writing ---------------------------------------------------------------
    def add_layer(self, staged_fs: str, diff_id: str) -> str:
        """Move an unpacked layer from tmp/ into the store (once; identical layers are shared)."""
        target = self.layer_dir(diff_id)
        if os.path.isdir(target):
            store.remove_tree(os.path.dirname(staged_fs))
            return target
        os.makedirs(os.path.dirname(os.path.dirname(target)), exist_ok=True)
        try:
            os.rename(os.path.dirname(staged_fs), os.path.dirname(target))
        except OSError as e:
            # Another build stored the same layer first: keep theirs.
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            store.remove_tree(os.path.dirname(staged_fs))
        return target

    def add_image(self, config: dict, tag: str | None) -> Image:
        import hashlib

        data = lean.dumps(config).encode()
        image_id = "sha256:" + hashlib.sha256(data).hexdigest()
        os.makedirs(os.path.join(self.root, "configs"), exist_ok=True)
        store.atomic_write(self._config_path(image_id), data)
        if tag:
            self.tag(image_id, tag)
        return self.get(image_id)

    def tag(self, image_id: str, tag: str) -> None:
        tag = normalize_reference(tag)
        with self._lock():
            tags = self.tags()
            tags[tag] = image_id
            store.write_json(self._tags_path(), tags)

    def remove(self, reference: str) -> Image:
        """Untag; the image itself goes once no tag names it (or when named by ID).

        Layers that no remaining image uses go with it.
        """
        image = self.get(reference)
        with self._lock():
            tags = self.tags()
            try:
                tag = normalize_reference(reference)
            except InvalidValue:
                tag = None
            if tag in tags:
                del tags[tag]
                remaining = [t for t, i in tags.items() if i == image.id]
            else:
                remaining = []
                for t in image.tags:
                    tags.pop(t, None)
            store.write_json(self._tags_path(), tags)
            if remaining:
                return image
            os.unlink(self._config_path(image.id))
            used = {d for other in self.list() for d in other.diff_ids()}
            for diff_id in image.diff_ids():
                if diff_id not in used:
                    store.remove_tree(os.path.dirname(self.layer_dir(diff_id)))
        return image

    def _shifted_layer(self, diff_id: str, source: str, uid: int, gid: int) -> str:
        """A copy of a layer whose owners are moved into a user namespace's range."""
        target = os.path.join(os.path.dirname(source), "shifted", f"{uid}-{gid}")
        if os.path.isdir(target):
            return target
        import subprocess

        staging = os.path.join(self.tmp_dir(), f"shift-{diff_id[7:19]}-{uid}-{os.getpid()}")
        try:
            subprocess.run(["cp", "-a", source, staging], check=True)
            shift_ownership(staging, uid, gid)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.rename(staging, target)
        except FileExistsError:
            pass
        except OSError as e:
            raise InvalidValue("userns", f"{uid}:{gid}", f"cannot shift the image's owners: {e}") from None
        finally:
            store.remove_tree(staging)
        return target


def shift_ownership(path: str, uid: int, gid: int) -> None:
    """Add ``uid``/``gid`` to the owner of every file below ``path`` (symlinks included)."""
    _shift_one(path, uid, gid)
    for directory, dirs, files in os.walk(path):
        for name in dirs + files:
            _shift_one(os.path.join(directory, name), uid, gid)


def _shift_one(path: str, uid: int, gid: int) -> None:
    st = os.lstat(path)
    os.lchown(path, st.st_uid + uid, st.st_gid + gid)
    # chown clears the set-user-ID and set-group-ID bits: put them back.
    if st.st_mode & 0o6000 and not os.path.islink(path):
        os.chmod(path, st.st_mode & 0o7777)
