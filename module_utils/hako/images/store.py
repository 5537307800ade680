"""The content-addressed image store.

Layout below ``$HAKO_ROOT/images``::

    layers/<hex>/fs/          a layer, unpacked (overlayfs whiteouts, see
                              layers.py); <hex> is its diff ID (the sha256 of
                              its uncompressed tar stream)
    layers/<hex>/layer.json   {"diff_id", "digest", "size", "media_type",
                              "unpacked_size", "entries"}: the blob it came
                              from or was packed into
    layers/<hex>/shifted/U-G/ the same files owned by a user namespace's
                              range starting at host uid U, gid G (made on
                              first use by such a container)
    blobs/sha256/<hex>        layer blobs exactly as a registry serves them
                              (what push and save send, byte for byte)
    configs/<hex>.json        an OCI image config; <hex> is the image ID
    meta/<hex>.json           what is known of an image but not part of it
                              (the registry digests it was pulled or pushed as)
    tags.json                 {"name:tag": "sha256:<image id>"}
    tmp/<kind>-<pid>-<n>/     work in progress, never read as an image; what
                              a dead process left is removed by the next writer
    tmp/partial/              downloads to resume

The tar format (layers.py: tarfile, hashlib, zlib) is imported only by the
functions that write layers: reading the store is on the path of `hako ps`.

A layer is unpacked under tmp/ and renamed into place once whole and
verified; an image's config is written only once all its layers are in place,
and its tag after that. So an interrupted build, pull or import leaves
nothing that reads as a good image.
"""

from __future__ import annotations

import errno
import os

from .. import lean, store, text
from ..errors import InvalidValue, NotFound
from .reference import normalize as normalize_reference

__all__ = ["Image", "ImageStore", "normalize_reference", "shift_ownership"]


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

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.root, "blobs", "sha256", digest.split(":", 1)[1])

    def _config_path(self, image_id: str) -> str:
        return os.path.join(self.root, "configs", image_id.split(":", 1)[1] + ".json")

    def _meta_path(self, image_id: str) -> str:
        return os.path.join(self.root, "meta", image_id.split(":", 1)[1] + ".json")

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
        """The image a tag, a full ID, an unambiguous ID prefix or a repo@digest names."""
        tags = self.tags()
        image_id = None
        if not reference.startswith("sha256:"):
            if "@" in reference:
                image_id = self._by_repo_digest(reference)
            else:
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

    def _by_repo_digest(self, reference: str) -> str | None:
        try:
            names = os.listdir(os.path.join(self.root, "meta"))
        except FileNotFoundError:
            return None
        for name in names:
            image_id = "sha256:" + name[:-5]
            if name.endswith(".json") and reference in self.meta(image_id).get("repo_digests", []):
                return image_id
        return None

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

    def config_bytes(self, image_id: str) -> bytes:
        """An image config exactly as stored (its sha256 is the image ID)."""
        with open(self._config_path(image_id), "rb") as f:
            return f.read()

    def meta(self, image_id: str) -> dict:
        return store.read_json(self._meta_path(image_id)) or {}

    def layer_info(self, diff_id: str) -> dict | None:
        """What is known of a stored layer (its blob's digest, size and media type), or None."""
        return store.read_json(os.path.join(os.path.dirname(self.layer_dir(diff_id)), "layer.json"))

    def has_layer(self, diff_id: str) -> bool:
        return self.layer_info(diff_id) is not None and os.path.isdir(self.layer_dir(diff_id))

    def image_size(self, image: Image) -> int:
        return sum((self.layer_info(d) or {}).get("unpacked_size", 0) for d in image.diff_ids())

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
    def staging(self, kind: str) -> _Staging:
        """A fresh directory under tmp/ for work in progress, removed when the block ends."""
        return _Staging(self, kind)

    def clean_tmp(self) -> None:
        """Remove what writers that died (killed mid-pull, say) left under tmp/."""
        try:
            names = os.listdir(os.path.join(self.root, "tmp"))
        except FileNotFoundError:
            return
        for name in names:
            parts = name.split("-")
            if len(parts) >= 3 and parts[-2].isdigit() and not os.path.exists(f"/proc/{parts[-2]}"):
                try:
                    store.remove_tree(os.path.join(self.root, "tmp", name))
                except OSError:
                    pass  # never a reason to fail the work that asked for a clean tmp/

    def add_layer(self, staged_fs: str, diff_id: str, info: dict | None = None) -> str:
        """Move an unpacked layer from tmp/ into the store (once; identical layers are shared).

        ``info`` (layer.json) goes in first, so a layer directory in place
        is always whole.
        """
        target = self.layer_dir(diff_id)
        staged = os.path.dirname(staged_fs)
        if self.has_layer(diff_id):
            store.remove_tree(staged)
            return target
        if os.path.lexists(os.path.dirname(target)):
            # No layer.json: what an interrupted removal left. Not a layer.
            self._discard(os.path.dirname(target))
        store.write_json(os.path.join(staged, "layer.json"), info or {"diff_id": diff_id})
        # A user namespace's root (an unprivileged host uid) walks through it.
        os.chmod(staged, 0o755)
        os.makedirs(os.path.dirname(os.path.dirname(target)), exist_ok=True)
        try:
            os.rename(staged, os.path.dirname(target))
        except OSError as e:
            # Another build stored the same layer first: keep theirs.
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            store.remove_tree(staged)
        return target

    def _keep_blob(self, path: str, digest: str) -> None:
        target = self.blob_path(digest)
        if os.path.exists(target):
            os.unlink(path)
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(path, target)

    def unpack_layer(
        self,
        stream,
        expected_diff_id: str | None = None,
        expected_digest: str | None = None,
        media_type: str | None = None,
        field: str = "layer",
    ) -> dict:
        """Unpack a layer blob read from ``stream`` into the store; its info (layer.json).

        The blob is kept as read. A digest that differs from what was
        expected (the registry's or the config's) refuses the layer and keeps
        nothing.
        """
        with self.staging("layer") as staged:
            fs = os.path.join(staged, "fs")
            os.mkdir(fs, 0o755)
            blob = os.path.join(staged, "blob")
            with open(blob, "wb") as copy:
                from . import layers as layerfmt

                result = layerfmt.unpack(stream, fs, copy_to=copy)
            if expected_digest and result.digest != expected_digest:
                raise InvalidValue(field, expected_digest, f"the data's digest is {result.digest}: refused")
            if expected_diff_id and result.diff_id != expected_diff_id:
                raise InvalidValue(
                    field, expected_diff_id, f"the unpacked tar's digest is {result.diff_id}: refused"
                )
            info = {
                "diff_id": result.diff_id,
                "digest": result.digest,
                "size": result.size,
                "media_type": media_type or _media_type(result.compression),
                "unpacked_size": result.unpacked_size,
                "entries": result.entries,
            }
            if result.dropped:
                info["dropped"] = result.dropped[:20]
            if self.has_layer(result.diff_id):
                return self.layer_info(result.diff_id) or info
            self._keep_blob(blob, result.digest)
            self.add_layer(fs, result.diff_id, info)
        return info

    def pack_layer(self, directory: str, overlay: bool = True, shift: tuple[int, int] | None = None) -> dict:
        """Make a layer of ``directory`` (left as it is): pack it into a gzipped blob, unpack that."""
        with self.staging("pack") as staged:
            blob = os.path.join(staged, "blob.tar.gz")
            with open(blob, "wb") as out:
                from . import layers as layerfmt

                sink = layerfmt.DigestWriter(out)
                layerfmt.pack(directory, sink, overlay=overlay, shift=shift)
                sink.close()
            with open(blob, "rb") as f:
                return self.unpack_layer(f, sink.diff_id, sink.digest, sink.media_type)

    def store_directory(self, built_fs: str) -> dict:
        """Move a directory built under tmp/ into the store as a layer (with its packed blob).

        What a layer cannot hold (device nodes, sockets) is removed first, so
        the directory and its blob say the same; a character device 0:0 is a
        whiteout to overlayfs and stays one.
        """
        _drop_special_files(built_fs)
        with self.staging("layer") as staged:
            staged_fs = os.path.join(staged, "fs")
            os.rename(built_fs, staged_fs)
            blob = os.path.join(staged, "blob.tar.gz")
            with open(blob, "wb") as out:
                from . import layers as layerfmt

                sink = layerfmt.DigestWriter(out)
                layerfmt.pack(staged_fs, sink, overlay=True)
                sink.close()
            info = {
                "diff_id": sink.diff_id,
                "digest": sink.digest,
                "size": sink.size,
                "media_type": sink.media_type,
                "unpacked_size": _tree_size(staged_fs),
            }
            if self.has_layer(sink.diff_id):
                return self.layer_info(sink.diff_id) or info
            self._keep_blob(blob, sink.digest)
            self.add_layer(staged_fs, sink.diff_id, info)
        return info

    def add_image(self, config: dict, tag: str | None, meta: dict | None = None) -> Image:
        """Store an image config whose layers are all in place; tag it."""
        import hashlib

        data = lean.dumps(config).encode()
        return self.add_image_config(data, "sha256:" + hashlib.sha256(data).hexdigest(), tag, meta)

    def add_image_config(
        self, data: bytes, image_id: str, tag: str | None, meta: dict | None = None
    ) -> Image:
        """Store a config exactly as given (a pulled one keeps its bytes, so its digest holds)."""
        config = lean.loads(data)
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        # Under the lock that removal takes: a layer found here cannot be
        # removed (as unused) before this config names it.
        with self._lock():
            missing = [d for d in diff_ids if not self.has_layer(d)]
            if missing:
                raise InvalidValue("image", image_id, f"layer {missing[0]} is not in the store")
            os.makedirs(os.path.join(self.root, "configs"), exist_ok=True)
            store.atomic_write(self._config_path(image_id), data)
        if meta:
            self.update_meta(image_id, meta)
        if tag:
            self.tag(image_id, tag)
        return self.get(image_id)

    def update_meta(self, image_id: str, values: dict) -> None:
        """Merge ``values`` into the image's meta record (lists are joined, without repeats)."""
        with self._lock():
            os.makedirs(os.path.join(self.root, "meta"), exist_ok=True)
            meta = self.meta(image_id)
            for key, value in values.items():
                if isinstance(value, list):
                    meta[key] = meta.get(key, []) + [v for v in value if v not in meta.get(key, [])]
                else:
                    meta[key] = value
            store.write_json(self._meta_path(image_id), meta)

    def tag(self, image_id: str, tag: str) -> None:
        tag = normalize_reference(tag)
        with self._lock():
            tags = self.tags()
            tags[tag] = image_id
            store.write_json(self._tags_path(), tags)

    def remove(self, reference: str, keep_data: bool = False) -> Image:
        """Untag; the image itself goes once no tag names it (or when named by ID).

        Layers (and their blobs) that no remaining image uses go with it.
        With ``keep_data`` only tags go (containers still stand on it).
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
            if remaining or keep_data:
                return image
            os.unlink(self._config_path(image.id))
            try:
                os.unlink(self._meta_path(image.id))
            except FileNotFoundError:
                pass
            self._remove_unused(image.diff_ids())
        return image

    def remove_unused_layers(self, diff_ids: list[str]) -> None:
        """Remove those of ``diff_ids`` (and their blobs) that no image in the store uses."""
        if diff_ids:
            with self._lock():
                self._remove_unused(diff_ids)

    def prune_layers(self) -> int:
        """Remove layers no image uses (an interrupted pull's) and partial downloads; bytes freed."""
        freed = 0
        with self._lock():
            try:
                names = os.listdir(os.path.join(self.root, "layers"))
            except FileNotFoundError:
                names = []
            used = {d for image in self.list() for d in image.diff_ids()}
            unused = ["sha256:" + n for n in names if "sha256:" + n not in used]
            freed += sum((self.layer_info(d) or {}).get("unpacked_size", 0) for d in unused)
            self._remove_unused(unused)
            # Blobs no layer names: a layer stored halfway.
            kept = set()
            for name in os.listdir(os.path.join(self.root, "layers")) if names else []:
                info = self.layer_info("sha256:" + name) or {}
                if info.get("digest"):
                    kept.add(info["digest"].split(":", 1)[1])
            blobs = os.path.join(self.root, "blobs", "sha256")
            for name in os.listdir(blobs) if os.path.isdir(blobs) else []:
                if name not in kept:
                    try:
                        freed += os.lstat(os.path.join(blobs, name)).st_size
                        os.unlink(os.path.join(blobs, name))
                    except OSError:
                        pass
        partial = os.path.join(self.root, "tmp", "partial")
        try:
            names = os.listdir(partial)
        except FileNotFoundError:
            names = []
        for name in names:
            try:
                freed += os.lstat(os.path.join(partial, name)).st_size
                os.unlink(os.path.join(partial, name))
            except OSError:
                pass
        try:
            os.rmdir(partial)
        except OSError:
            pass  # missing, or a pull is downloading into it right now
        return freed

    def _remove_unused(self, diff_ids: list[str]) -> None:
        used = {d for other in self.list() for d in other.diff_ids()}
        for diff_id in diff_ids:
            if diff_id in used:
                continue
            info = self.layer_info(diff_id) or {}
            self._discard(os.path.dirname(self.layer_dir(diff_id)))
            if info.get("digest"):
                try:
                    os.unlink(self.blob_path(info["digest"]))
                except FileNotFoundError:
                    pass

    def _discard(self, path: str) -> None:
        """Remove a tree of the store in one step: renamed under tmp/ first, then deleted.

        An interrupted removal so leaves nothing half-deleted in place (only
        a directory under tmp/ that the next writer removes).
        """
        aside = os.path.join(self.tmp_dir(), f"removing-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        store.remove_tree(aside)

    def _shifted_layer(self, diff_id: str, source: str, uid: int, gid: int) -> str:
        """A copy of a layer whose owners are moved into a user namespace's range."""
        target = os.path.join(os.path.dirname(source), "shifted", f"{uid}-{gid}")
        if os.path.isdir(target):
            return target
        import subprocess

        with self.staging(f"shift_{diff_id[7:19]}_{uid}_{gid}") as staged:
            copy = os.path.join(staged, "fs")
            try:
                subprocess.run(["cp", "-a", source, copy], check=True)
                shift_ownership(copy, uid, gid)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.rename(copy, target)
            except OSError as e:
                if not os.path.isdir(target):
                    why = f"cannot shift the image's owners: {e}"
                    raise InvalidValue("userns", f"{uid}:{gid}", why) from None
        return target


class _Staging:
    def __init__(self, images: ImageStore, kind: str) -> None:
        images.clean_tmp()
        self.path = os.path.join(images.tmp_dir(), f"{kind}-{os.getpid()}-{os.urandom(4).hex()}")

    def __enter__(self) -> str:
        os.mkdir(self.path, 0o700)
        return self.path

    def __exit__(self, *exc) -> None:
        store.remove_tree(self.path)


def _media_type(compression: str) -> str:
    from .layers import MEDIA_TYPE_TAR

    return MEDIA_TYPE_TAR if compression == "none" else f"{MEDIA_TYPE_TAR}+{compression}"


def _drop_special_files(path: str) -> None:
    import stat

    for directory, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(directory, name)
            mode = os.lstat(full)
            kind = stat.S_IFMT(mode.st_mode)
            if kind in (stat.S_IFBLK, stat.S_IFSOCK) or (kind == stat.S_IFCHR and mode.st_rdev != 0):
                os.unlink(full)


def _tree_size(path: str) -> int:
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return total


def shift_ownership(path: str, uid: int, gid: int) -> None:
    """Add ``uid``/``gid`` to the owner of every file below ``path`` (symlinks included).

    A file with several hard links is shifted once. File capabilities
    (``security.capability``, which chown clears) are written back as a user
    namespace's: version 3, with its root as the host uid ``uid``.
    """
    seen: set[int] = set()
    _shift_one(path, uid, gid, seen)
    for directory, dirs, files in os.walk(path):
        for name in dirs + files:
            _shift_one(os.path.join(directory, name), uid, gid, seen)


def _shift_one(path: str, uid: int, gid: int, seen: set[int]) -> None:
    import stat

    st = os.lstat(path)
    if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
        if st.st_ino in seen:
            return
        seen.add(st.st_ino)
    caps = None
    if stat.S_ISREG(st.st_mode):
        try:
            caps = os.getxattr(path, "security.capability")
        except OSError:
            caps = None
    os.lchown(path, st.st_uid + uid, st.st_gid + gid)
    # chown clears the set-user-ID and set-group-ID bits: put them back.
    if st.st_mode & 0o6000 and not stat.S_ISLNK(st.st_mode):
        os.chmod(path, st.st_mode & 0o7777)
    if caps:
        os.setxattr(path, "security.capability", namespaced_caps(caps, uid))


def namespaced_caps(caps: bytes, root_uid: int) -> bytes:
    """A security.capability value (version 2 or 3) as version 3 for a namespace rooted at ``root_uid``."""
    if len(caps) < 20:
        return caps
    magic = int.from_bytes(caps[:4], "little")
    magic = (magic & 0x00FFFFFF) | 0x03000000
    return magic.to_bytes(4, "little") + caps[4:20] + root_uid.to_bytes(4, "little")
