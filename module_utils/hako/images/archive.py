"""Image archives and root filesystem tarballs, in and out of the image store.

* ``import_rootfs``: a root filesystem tarball (plain, gzip, bzip2, xz or
  zstd) becomes a one-layer image (`hako image import`).
* ``load``: an OCI image archive (a tar holding ``oci-layout``,
  ``index.json`` and ``blobs/``), an OCI image layout directory, or a
  docker-save archive (``manifest.json``, configs, layer tars), maybe
  compressed, into the store (`hako image load`). Every blob is checked
  against the digest that names it and every layer against the diff ID its
  config gives; an archive that fails a check leaves nothing in the store.
* ``save``: images as an OCI image archive that also carries Docker's
  ``manifest.json``, so ``docker load`` and ``podman load`` take it too
  (`hako image save`). The layer blobs are the store's, byte for byte, so a
  save and a load give back the same image ID.
* ``export``: a container's whole filesystem, as the container sees it, as
  a tar (`hako export`).

A tar archive read from a file is read by random access: a layer is unpacked
straight from its member, never extracted to disk first. Only a compressed
archive or one arriving on a pipe is first copied, decompressed, to a single
file under the store's tmp/.

No file of an archive is read further than the archive says it is long: a
blob must be exactly the size its descriptor gives; a sparse tar member, or
one longer than its archive, is refused; in a layout directory only regular
files are read, and a symbolic link is followed only while it stays inside
the directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import sys
import tarfile
import time

from .. import lean
from ..errors import HakoError, InvalidValue, NotFound
from . import layers as layerfmt
from .reference import is_digest, normalize, parse, remote

# Media types --------------------------------------------------------------------
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)
# The layer media types of the OCI image spec, by the blob's compression.
OCI_LAYER_TYPES = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'

COMPRESSIONS = ("none", "gzip", "bzip2", "xz", "zstd")
MAX_JSON = 16 << 20  # an index, manifest or config larger than this is not one
MAX_MEMBERS = 100_000  # an image archive has a few files per layer, not this many
CHUNK = layerfmt.CHUNK


# Root filesystem tarballs -------------------------------------------------------
def import_rootfs(
    images,
    source,
    label: str,
    tag: str | None = None,
    changes: list[str] | tuple[str, ...] = (),
    message: str | None = None,
):
    """Make a one-layer image of the root filesystem tarball read from ``source``; the Image.

    ``label`` names the source in errors and in the image's history ("-"
    for standard input). The tag and the changes are checked before
    anything is read, and a tarball that is refused (a name climbing out,
    a link leading out, too many entries, a damaged stream) leaves no layer
    and no image.
    """
    from ..runtime.spec import DEFAULT_PATH
    from . import changes as changefmt
    from .busybox import architecture

    if tag:
        tag = normalize(tag)
    settings = changefmt.apply({"Env": [f"PATH={DEFAULT_PATH}"]}, list(changes))
    try:
        with _reading("archive", label):
            stream = _Peeked(source)
            if layerfmt.compression_of(stream.head) in ("bzip2", "xz"):
                # Not a compression the OCI image spec names: keep the layer's
                # blob gzipped instead, so save and push hand out a blob any
                # tool reads.
                stream = _Gzipped(layerfmt.DigestReader(stream))
            info = images.unpack_layer(stream)
    except InvalidValue as e:
        if e.field in ("archive", "layer") and e.value in COMPRESSIONS:
            # The layer code names the stream by its compression: name the file.
            raise InvalidValue("archive", label, _why(e)) from None
        raise
    created = _now()
    config = {
        "architecture": architecture(),
        "os": "linux",
        "created": created,
        "config": settings,
        "rootfs": {"type": "layers", "diff_ids": [info["diff_id"]]},
        "history": [
            {
                "created": created,
                "created_by": "hako image import",
                "comment": message if message is not None else f"Imported from {label}",
            }
        ],
    }
    try:
        return images.add_image(config, tag)
    except BaseException:
        _discard_layers(images, [info["diff_id"]])
        raise


class _Peeked:
    """A binary stream whose first bytes were read ahead (to tell its compression) and are read again."""

    def __init__(self, raw) -> None:
        self._raw = raw
        head = b""
        while len(head) < 8:
            data = raw.read(8 - len(head))
            if not data:
                break
            head += data
        self.head = head
        self._pending = head

    def read(self, n: int = -1) -> bytes:
        if self._pending:
            if n < 0:
                out, self._pending = self._pending + self._raw.read(), b""
                return out
            out, self._pending = self._pending[:n], self._pending[n:]
            return out
        return self._raw.read(n)


class _Gzipped:
    """A binary stream of the gzip of what ``reader`` (an uncompressed stream) gives."""

    def __init__(self, reader) -> None:
        import zlib

        self._reader = reader
        self._zlib = zlib.compressobj(6, zlib.DEFLATED, 31)
        self._buffer = b""
        self._done = False

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buffer) < n):
            data = self._reader.read(CHUNK)
            if data:
                self._buffer += self._zlib.compress(data)
            else:
                self._buffer += self._zlib.flush()
                self._done = True
        if n < 0:
            n = len(self._buffer)
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out


# Reading archives ---------------------------------------------------------------
# Every file of an archive is read through a _Blob: at most as many bytes as the
# archive says the file has (its tar header, or the size of a regular file of a
# layout directory), and a file that ends sooner is an error. Sparse members,
# devices, FIFOs and symbolic links out of a layout are refused before any byte
# of them is read; what a descriptor says a blob's size is, it must be.
MAX_LINKS = 16  # symbolic (or hard) links followed, one to the next, inside an archive


class _Blob:
    """A file of an archive, read up to its ``size`` (bytes) and no further."""

    def __init__(self, raw, size: int, name: str, label: str) -> None:
        self._raw = raw
        self.size = size
        self.name = name
        self._label = label
        self._left = size

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if n is None or n < 0 else min(n, self._left)
        try:
            data = self._raw.read(want)
        except (tarfile.TarError, EOFError):
            data = b""
        if not data and want:
            done = self.size - self._left
            why = f"{self.name} ends after {done} of its {self.size} bytes: the archive is damaged"
            raise InvalidValue("archive", self._label, why)
        self._left -= len(data)
        return data

    def read_all(self) -> bytes:
        parts = []
        while True:
            data = self.read(CHUNK)
            if not data:
                return b"".join(parts)
            parts.append(data)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> _Blob:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _TarArchive:
    """The files of a plain tar archive on a seekable file, read by name without extracting it."""

    def __init__(self, fileobj, label: str) -> None:
        self.label = label
        self._file = fileobj
        try:
            self._open()
        except BaseException:
            fileobj.close()
            raise

    def _open(self) -> None:
        label = self.label
        length = os.fstat(self._file.fileno()).st_size
        try:
            self._tar = tarfile.open(fileobj=self._file, mode="r:")
        except tarfile.TarError as e:
            raise InvalidValue("archive", label, f"not a tar archive ({e})") from None
        self._members: dict[str, tarfile.TarInfo] = {}
        try:
            for count, member in enumerate(self._tar, 1):
                if count > MAX_MEMBERS:
                    raise InvalidValue(
                        "archive", label, f"more than {MAX_MEMBERS} entries: not an image archive"
                    )
                name = _member_name(member.name)
                self._check_member(member, name or member.name, length)
                if name:
                    self._members[name] = member
        except (tarfile.TarError, EOFError) as e:
            raise InvalidValue("archive", label, f"a damaged tar archive ({e})") from None

    def _check_member(self, member: tarfile.TarInfo, name: str, length: int) -> None:
        """Refuse a member whose data cannot be what its header says (read, it would never end)."""
        if member.issparse():
            # Its header may stand for any amount of zeros (GNU.sparse.size) stored in no bytes.
            why = f"{name} is a sparse file: an image archive holds none, refused"
            raise InvalidValue("archive", self.label, why)
        if member.isreg() and member.offset_data + member.size > length:
            why = f"{name} says it is {member.size} bytes, more than the archive holds: refused"
            raise InvalidValue("archive", self.label, why)

    def exists(self, name: str) -> bool:
        return name in self._members

    def open(self, name: str) -> _Blob:
        import posixpath

        member = self._members.get(name)
        found = name
        for _ in range(MAX_LINKS):
            if member is None or not (member.issym() or member.islnk()):
                break
            # A link leads to another member of the archive, never out of it.
            if member.issym():
                target = posixpath.join(posixpath.dirname(found), member.linkname)
            else:
                target = member.linkname
            found = _member_name(target)
            member = self._members.get(found)
        if member is None:
            where = "" if found == name else f" (a link in it leads to {found}, not there)"
            raise InvalidValue("archive", self.label, f"{name} is missing from it{where}")
        if member.issym() or member.islnk():
            raise InvalidValue("archive", self.label, f"{name}: more than {MAX_LINKS} links lead on")
        if not member.isreg():
            raise InvalidValue("archive", self.label, f"{name} is not a file in it")
        self._check_member(member, found, os.fstat(self._file.fileno()).st_size)
        try:
            stream = self._tar.extractfile(member)
        except (KeyError, tarfile.TarError):
            stream = None
        if stream is None:
            raise InvalidValue("archive", self.label, f"{name} is not a file in it")
        return _Blob(stream, member.size, name, self.label)

    def close(self) -> None:
        self._tar.close()
        self._file.close()


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _DirArchive:
    """The files of an OCI image layout directory (or an extracted docker-save archive).

    A file is found without following a symbolic link as the system would:
    a link is read and followed by name, inside the directory, and one that
    leads out of it (absolute, or climbing above it with '..') is refused;
    each directory on the way and the file itself are then opened with
    O_NOFOLLOW. A file is read only if it is a regular one.
    """

    def __init__(self, path: str) -> None:
        self.label = path
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _resolve(self, name: str) -> list[str] | None:
        """The path of ``name`` in the directory, its symbolic links followed by name; None if missing.

        A link that leads out of the directory is refused.
        """
        pending = layerfmt.clean_name(name, "archive file")
        done: list[str] = []
        links = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if not done:
                    raise InvalidValue("archive", self.label, f"{name}: a link in it leads out of the layout")
                done.pop()
                continue
            path = "/".join([*done, part])
            try:
                mode = os.stat(path, dir_fd=self._fd, follow_symlinks=False).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return None
            if stat.S_ISLNK(mode):
                links += 1
                target = os.readlink(path, dir_fd=self._fd)
                if target.startswith("/") or links > MAX_LINKS:
                    what = name if path == name else f"{name}: {path}"
                    why = f"{what} is a link out of the layout ({target}), refused"
                    raise InvalidValue("archive", self.label, why)
                pending = [p for p in target.split("/") if p not in ("", ".")] + pending
                continue
            done.append(part)
        return done

    def exists(self, name: str) -> bool:
        try:
            parts = self._resolve(name)
        except InvalidValue:
            return True  # there, but refused: open says why
        if not parts:
            return False
        mode = os.stat("/".join(parts), dir_fd=self._fd, follow_symlinks=False).st_mode
        return not stat.S_ISDIR(mode)

    def open(self, name: str) -> _Blob:
        parts = self._resolve(name)
        if parts is None:
            raise InvalidValue("archive", self.label, f"{name} is missing from it")
        if not parts:
            raise InvalidValue("archive", self.label, f"{name} is not a file in it")
        fd = os.dup(self._fd)
        try:
            for part in parts[:-1]:
                parent, fd = fd, -1
                try:
                    fd = os.open(part, _DIRECTORY, dir_fd=parent)
                finally:
                    os.close(parent)
            mode = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False).st_mode
            if not stat.S_ISREG(mode):
                kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
                raise InvalidValue("archive", self.label, f"{name} is {kind}: refused")
            # O_NONBLOCK: a FIFO put there since must not hang the open.
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            file_fd = os.open(parts[-1], flags, dir_fd=fd)
        except OSError as e:
            why = f"{name} cannot be read ({_describe(e)}): refused"
            raise InvalidValue("archive", self.label, why) from None
        finally:
            if fd >= 0:
                os.close(fd)
        try:
            info = os.fstat(file_fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidValue("archive", self.label, f"{name} is not a regular file: refused")
            os.set_blocking(file_fd, True)
            return _Blob(os.fdopen(file_fd, "rb"), info.st_size, name, self.label)
        except BaseException:
            os.close(file_fd)
            raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _member_name(name: str) -> str:
    import posixpath

    name = posixpath.normpath("/" + name).lstrip("/")
    return "" if name == "." else name


def _open_archive(path: str | None, staged: str):
    """The archive at ``path`` (a file or a directory) or on standard input (None or "-")."""
    if path is not None and path != "-":
        if os.path.isdir(path):
            return _DirArchive(path)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"no such file: {path}") from None
        label = path
    else:
        if os.isatty(0):
            raise InvalidValue("input", "-", "standard input is a terminal: use -i FILE or redirect it")
        f = os.fdopen(os.dup(0), "rb")
        label = "-"
    try:
        if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            head = f.read(8)
            f.seek(0)
            if layerfmt.compression_of(head) == "none":
                return _TarArchive(f, label)  # it closes f
        # Compressed, or on a pipe: a plain copy to read by random access.
        spool = os.path.join(staged, "archive.tar")
        _spool(f, spool, label)
    except BaseException:
        f.close()
        raise
    f.close()
    return _TarArchive(open(spool, "rb"), label)


def _spool(source, path: str, label: str) -> None:
    try:
        with _reading("archive", label):
            reader = layerfmt.DigestReader(source)
            with open(path, "wb") as out:
                while True:
                    data = reader.read(CHUNK)
                    if not data:
                        break
                    out.write(data)
    except InvalidValue as e:
        if e.field == "archive":
            raise
        raise InvalidValue("archive", label, _why(e)) from None


def _read_json(archive, name: str):
    """A JSON document of the archive that no descriptor names (index.json, manifest.json, oci-layout)."""
    with archive.open(name) as f:
        if f.size > MAX_JSON:
            raise InvalidValue("archive", archive.label, f"{name} is larger than {MAX_JSON} bytes")
        data = f.read_all()
    return _parse_json(archive, name, data)


def _parse_json(archive, name: str, data: bytes):
    """A document's JSON: UTF-8, as the image spec has it and as the store reads it back."""
    import json

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidValue("archive", archive.label, f"{name} is not UTF-8 JSON ({e.reason})") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise InvalidValue("archive", archive.label, f"{name} is not JSON ({e})") from None
    except RecursionError:
        raise InvalidValue("archive", archive.label, f"{name} is not JSON (it nests too deep)") from None


def _blob_name(digest: object, archive, where: str) -> str:
    if not isinstance(digest, str) or not is_digest(digest):
        why = f"{where} names blob {digest!r}: hako reads sha256 digests (sha256: and 64 hex digits)"
        raise InvalidValue("archive", archive.label, why)
    return "blobs/sha256/" + digest[7:]


def _blob_size(archive, descriptor: dict, name: str, where: str) -> int:
    """The size a descriptor gives its blob: a count of bytes, which the blob must have."""
    if "size" not in descriptor:
        raise InvalidValue("archive", archive.label, f"{where} gives blob {name} no size")
    size = descriptor["size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        why = f"{where} gives blob {name} the size {size!r}: a descriptor's size is its blob's count of bytes"
        raise InvalidValue("archive", archive.label, why)
    return size


def _open_blob(archive, name: str, size: int | None, where: str) -> _Blob:
    """A blob of the archive; with ``size``, one of exactly that many bytes (as its descriptor says)."""
    f = archive.open(name)
    if size is not None and f.size != size:
        f.close()
        raise InvalidValue("blob", name, f"it is {f.size} bytes, {where} says {size}: refused")
    return f


def _blob_bytes(archive, descriptor: object, where: str) -> tuple[bytes, str]:
    """A (small, JSON) blob a descriptor points at, checked against its digest and size."""
    if not isinstance(descriptor, dict):
        raise InvalidValue("archive", archive.label, f"{where} is not a descriptor")
    digest = descriptor.get("digest")
    name = _blob_name(digest, archive, where)
    size = _blob_size(archive, descriptor, name, where)
    if size > MAX_JSON:
        why = f"{where} says it is {size} bytes, larger than {MAX_JSON}: not a manifest or config"
        raise InvalidValue("blob", name, why)
    with _open_blob(archive, name, size, where) as f:
        data = f.read_all()
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise InvalidValue("blob", name, f"its content's digest is {actual}: the archive is damaged, refused")
    return data, name


def _check_file_digest(archive, name: str, digest: str, size: int | None, where: str) -> None:
    """Read a blob through and compare its sha256 with ``digest``."""
    sha = hashlib.sha256()
    with _reading("blob", name), _open_blob(archive, name, size, where) as f:
        while True:
            data = f.read(CHUNK)
            if not data:
                break
            sha.update(data)
    actual = "sha256:" + sha.hexdigest()
    if actual != digest:
        raise InvalidValue("blob", name, f"its content's digest is {actual}: the archive is damaged, refused")


def _check_diff_id(archive, name: str, diff_id: str, size: int | None, where: str) -> None:
    """Read a layer blob through (decompressing it) and compare its diff ID with ``diff_id``."""
    with _reading("layer blob", name), _open_blob(archive, name, size, where) as f:
        reader = layerfmt.DigestReader(f)
        try:
            reader.drain()
        finally:
            reader.close()
    if reader.diff_id != diff_id:
        why = f"its uncompressed digest is {reader.diff_id}, the config says {diff_id}: refused"
        raise InvalidValue("layer blob", name, why)


# Planning a load ----------------------------------------------------------------
class _Planned:
    """One image of an archive, checked: its config bytes and where each layer's blob is."""

    __slots__ = ("image_id", "config", "layers", "names")

    def __init__(self, image_id: str, config: bytes, layers: list, names: list[str]) -> None:
        self.image_id = image_id
        self.config = config
        # (diff_id, blob digest or None, blob name, its size or None, where they are given)
        self.layers = layers
        self.names = names


def host_platform() -> tuple[str, str]:
    from .busybox import architecture

    return "linux", architecture()


def local_name(name: object) -> str | None:
    """An image name as hako keeps it ('docker.io/library/busybox:1' -> 'busybox:1'); None if unusable."""
    if not isinstance(name, str):
        return None
    try:
        ref = parse(name)
    except InvalidValue:
        return None
    if not ref.tag:
        return None  # name@digest only: nothing to tag
    registry, repository = ref.registry, ref.repository
    if registry in ("docker.io", "index.docker.io"):
        registry = ""
        if repository.startswith("library/") and repository.count("/") == 1:
            repository = repository[len("library/") :]
    text = f"{registry}/{repository}:{ref.tag}" if registry else f"{repository}:{ref.tag}"
    try:
        return normalize(text)
    except InvalidValue:
        return None


def _names_of(annotations: object) -> list[str]:
    """The image name a descriptor's annotations give (containerd's first, then the OCI ref name)."""
    if not isinstance(annotations, dict):
        return []
    full = local_name(annotations.get(CONTAINERD_NAME))
    if full:
        return [full]
    ref_name = annotations.get(REF_NAME)
    # A bare word ("latest", "v1") is a tag of the layout, not an image name.
    if isinstance(ref_name, str) and (":" in ref_name or "/" in ref_name):
        name = local_name(ref_name)
        if name:
            return [name]
    return []


def _platform(descriptor: dict) -> tuple[str, str, str] | None:
    platform = descriptor.get("platform")
    if not isinstance(platform, dict):
        return None
    return (
        str(platform.get("os", "")),
        str(platform.get("architecture", "")),
        str(platform.get("variant", "")),
    )


def _host_choice(archive, descriptors: list[dict], where: str) -> dict:
    """The one descriptor of several platforms that runs on this host."""
    host_os, host_arch = host_platform()
    with_platform = [d for d in descriptors if _platform(d) is not None]
    if not with_platform and len(descriptors) == 1:
        return descriptors[0]
    matching = [d for d in with_platform if _platform(d)[:2] == (host_os, host_arch)]
    if not matching:
        have = sorted({"/".join(p for p in _platform(d) if p) for d in with_platform}) or ["no platform"]
        why = f"{where} has no image for {host_os}/{host_arch} (it has {', '.join(have)})"
        raise InvalidValue("archive", archive.label, why)
    preferred = {"arm64": "v8", "arm": "v7"}.get(host_arch, "")
    matching.sort(key=lambda d: _platform(d)[2] not in ("", preferred))
    return matching[0]


def _manifests_in(archive, descriptor: object, names: list[str], where: str, depth: int = 0) -> list:
    """The image manifests a descriptor of index.json leads to: itself, or its index's host one."""
    if not isinstance(descriptor, dict):
        raise InvalidValue("archive", archive.label, f"{where} holds something that is not a descriptor")
    media_type = descriptor.get("mediaType")
    if media_type in MANIFEST_TYPES:
        return [(descriptor, names)]
    if media_type not in INDEX_TYPES:
        return []  # signatures, attestations and other artifacts: not images
    if depth >= 4:
        raise InvalidValue("archive", archive.label, "its indexes nest more than 4 deep")
    data, name = _blob_bytes(archive, descriptor, where)
    index = _parse_json(archive, name, data)
    children = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(children, list):
        raise InvalidValue("archive", archive.label, f"index {name} has no manifests list")
    candidates = [
        c for c in children if isinstance(c, dict) and c.get("mediaType") in MANIFEST_TYPES + INDEX_TYPES
    ]
    if not candidates:
        return []
    chosen = _host_choice(archive, candidates, f"index {name}")
    return _manifests_in(archive, chosen, names, f"index {name}", depth + 1)


def _pick_platforms(archive, found: list) -> list:
    """Of several manifests under one name for different platforms, the host's."""
    groups: dict[tuple[str, ...], list] = {}
    for descriptor, names in found:
        groups.setdefault(tuple(names), []).append((descriptor, names))
    picked = []
    for names, entries in groups.items():
        platforms = {_platform(d) for d, _ in entries}
        if len(entries) > 1 and len(platforms) > 1:
            chosen = _host_choice(
                archive, [d for d, _ in entries], "index.json" + (f" ({names[0]})" if names else "")
            )
            picked.append((chosen, list(names)))
        else:
            picked += entries
    return picked


def _plan_manifest(archive, descriptor: dict, names: list[str]) -> _Planned | None:
    """The image a manifest describes, checked; None for an artifact that is no image (a signature)."""
    data, name = _blob_bytes(archive, descriptor, "index.json")
    manifest = _parse_json(archive, name, data)
    if (
        not isinstance(manifest, dict)
        or manifest.get("mediaType", descriptor["mediaType"]) not in MANIFEST_TYPES
    ):
        raise InvalidValue("blob", name, "not an image manifest")
    config_descriptor = manifest.get("config")
    if (
        isinstance(config_descriptor, dict)
        and config_descriptor.get("mediaType", OCI_CONFIG) not in CONFIG_TYPES
    ):
        return None
    config_bytes, config_name = _blob_bytes(archive, config_descriptor, f"the config of manifest {name}")
    image_id = config_descriptor["digest"]
    diff_ids = _diff_ids(archive, config_name, config_bytes)
    descriptors = manifest.get("layers")
    if not isinstance(descriptors, list) or len(descriptors) != len(diff_ids):
        count = len(descriptors) if isinstance(descriptors, list) else 0
        why = f"it lists {count} layers, its config {config_name} has {len(diff_ids)} diff IDs"
        raise InvalidValue("manifest", name, why)
    planned = []
    for layer, diff_id in zip(descriptors, diff_ids):
        if not isinstance(layer, dict) or layer.get("mediaType") not in LAYER_TYPES:
            media_type = layer.get("mediaType") if isinstance(layer, dict) else layer
            why = f"a layer of media type {media_type!r}: hako reads tar layers (plain, gzip, zstd)"
            raise InvalidValue("manifest", name, why)
        where = f"manifest {name}"
        blob = _blob_name(layer.get("digest"), archive, where)
        planned.append((diff_id, layer["digest"], blob, _blob_size(archive, layer, blob, where), where))
    return _Planned(image_id, config_bytes, planned, names)


def _diff_ids(archive, name: str, data: bytes) -> list[str]:
    """The diff IDs of an image config, which must be UTF-8 JSON the store can keep and read back."""
    config = _parse_json(archive, name, data)
    if not isinstance(config, dict):
        raise InvalidValue(
            "config", name, f"not an image config (a JSON {type(config).__name__}, not an object)"
        )
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and is_digest(d) for d in diff_ids):
        raise InvalidValue("config", name, "not an image config (no rootfs.diff_ids of sha256 digests)")
    if not isinstance(config.get("config", {}), (dict, type(None))):
        raise InvalidValue("config", name, "not an image config (its config is not an object)")
    return diff_ids


def _plan_oci(archive) -> list[_Planned]:
    if archive.exists("oci-layout"):
        layout = _read_json(archive, "oci-layout")
        version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise InvalidValue(
                "archive", archive.label, f"oci-layout has imageLayoutVersion {version!r}, not 1.x"
            )
    index = _read_json(archive, "index.json")
    descriptors = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(descriptors, list):
        raise InvalidValue("archive", archive.label, "index.json has no manifests list")
    found = []
    for descriptor in descriptors:
        names = _names_of(descriptor.get("annotations") if isinstance(descriptor, dict) else None)
        found += _manifests_in(archive, descriptor, names, "index.json")
    plans = [_plan_manifest(archive, d, names) for d, names in _pick_platforms(archive, found)]
    return [plan for plan in plans if plan is not None]


def _plan_docker(archive) -> list[_Planned]:
    entries = _read_json(archive, "manifest.json")
    if not isinstance(entries, list):
        raise InvalidValue("archive", archive.label, "manifest.json is not a list of images")
    plans = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise InvalidValue("archive", archive.label, "manifest.json holds an entry without a Config")
        config_name = _member_name(entry["Config"])
        with archive.open(config_name) as f:
            if f.size > MAX_JSON:
                raise InvalidValue("blob", config_name, f"larger than {MAX_JSON} bytes: not a config")
            config_bytes = f.read_all()
        image_id = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        named = _digest_in_name(config_name)
        if named and named != image_id:
            why = f"its content's digest is {image_id}: the archive is damaged, refused"
            raise InvalidValue("blob", config_name, why)
        diff_ids = _diff_ids(archive, config_name, config_bytes)
        layer_names = entry.get("Layers")
        if not isinstance(layer_names, list) or not all(isinstance(n, str) for n in layer_names):
            raise InvalidValue(
                "archive", archive.label, f"manifest.json: the entry of {config_name} has no Layers"
            )
        if len(layer_names) != len(diff_ids):
            why = (
                f"manifest.json lists {len(layer_names)} layers, its config {config_name} has {len(diff_ids)}"
            )
            raise InvalidValue("archive", archive.label, why)
        tags = entry.get("RepoTags")
        if tags is None:
            tags = []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            why = f"manifest.json: the entry of {config_name} has RepoTags that are not a list of names"
            raise InvalidValue("archive", archive.label, why)
        planned = []
        for layer_name, diff_id in zip(layer_names, diff_ids):
            layer_name = _member_name(layer_name)
            # Docker 25 and hako put the layers among the OCI blobs, named by digest.
            digest = _digest_in_name(layer_name) if layer_name.startswith("blobs/sha256/") else None
            # No size is given: a layer is read as far as the archive's own header says.
            planned.append((diff_id, digest, layer_name, None, "manifest.json"))
        names = [n for n in (local_name(t) for t in tags) if n]
        plans.append(_Planned(image_id, config_bytes, planned, names))
    return plans


def _digest_in_name(name: str) -> str | None:
    """The digest a blob's file name gives: blobs/sha256/<hex> or <hex>.json."""
    base = name.rsplit("/", 1)[-1]
    if base.endswith(".json"):
        base = base[:-5]
    digest = "sha256:" + base
    return digest if is_digest(digest) else None


def _plan(archive) -> list[_Planned]:
    """The images of an archive, every manifest and config checked; layers are checked as they are read."""
    if archive.exists("index.json"):
        plans = _plan_oci(archive)
        if archive.exists("manifest.json"):
            # Docker's own archives name images there too.
            with contextlib.suppress(InvalidValue):
                tags = {p.image_id: p.names for p in _plan_docker(archive)}
                for plan in plans:
                    plan.names += [n for n in tags.get(plan.image_id, []) if n not in plan.names]
    elif archive.exists("manifest.json"):
        plans = _plan_docker(archive)
    else:
        why = "neither an OCI image archive (index.json) nor a docker-save archive (manifest.json)"
        raise InvalidValue("archive", archive.label, why)
    merged: dict[str, _Planned] = {}
    for plan in plans:
        if plan.image_id in merged:
            kept = merged[plan.image_id]
            kept.names += [n for n in plan.names if n not in kept.names]
        else:
            merged[plan.image_id] = plan
    if not merged:
        raise InvalidValue("archive", archive.label, "it holds no image")
    return list(merged.values())


# Loading ------------------------------------------------------------------------
def load(images, path: str | None = None, tag: str | None = None) -> list[tuple[str, list[str]]]:
    """Load the images of the archive at ``path`` (None: standard input); (image ID, names) of each.

    Layers already in the store are not unpacked again (their blobs are
    still read, to check them). On any failure the layers this load added
    are removed again and no image or tag is written.
    """
    if tag:
        tag = normalize(tag)
    with images.staging("load") as staged:
        archive = _open_archive(path, staged)
        try:
            plans = _plan(archive)
            if tag and len(plans) != 1:
                raise InvalidValue("tag", tag, f"the archive holds {len(plans)} images: --tag names one")
            if tag and tag not in plans[0].names:
                plans[0].names.append(tag)
            added: list[str] = []
            try:
                _store_layers(images, archive, plans, added)
                for plan in plans:
                    names = plan.names
                    images.add_image_config(plan.config, plan.image_id, names[0] if names else None)
                    for name in names[1:]:
                        images.tag(plan.image_id, name)
            except BaseException:
                _discard_layers(images, added)
                raise
        finally:
            archive.close()
    return [(plan.image_id, plan.names) for plan in plans]


def _store_layers(images, archive, plans: list[_Planned], added: list[str]) -> None:
    done = set()
    for plan in plans:
        for diff_id, digest, name, size, where in plan.layers:
            if diff_id in done:
                continue
            done.add(diff_id)
            if images.has_layer(diff_id):
                if archive.exists(name):
                    if digest:
                        _check_file_digest(archive, name, digest, size, where)
                    else:
                        _check_diff_id(archive, name, diff_id, size, where)
                continue
            try:
                with _reading("layer blob", name), _open_blob(archive, name, size, where) as stream:
                    images.unpack_layer(stream, diff_id, digest, field=f"layer blob {name}")
            except InvalidValue as e:
                if e.field.startswith("layer blob") or e.field == "blob":
                    raise
                if e.field == "archive" and e.value == archive.label:
                    raise  # the archive's own error (a file that ends too soon) names the file
                # A damaged or hostile layer: say which blob it is.
                raise InvalidValue("layer blob", name, str(e)) from None
            added.append(diff_id)


def _discard_layers(images, diff_ids: list[str]) -> None:
    """Remove layers (and their blobs) that no image in the store uses."""
    images.remove_unused_layers(diff_ids)


# Saving -------------------------------------------------------------------------
def save(images, references: list[str], out) -> None:
    """Write the images ``references`` name to ``out`` (a binary file) as an OCI image archive.

    An image named by a tag is annotated with it (``ref.name`` as hako
    names it, ``io.containerd.image.name`` fully qualified) and listed with
    it in Docker's manifest.json; one named by ID goes without a name, as
    Docker does.
    """
    chosen: dict[str, tuple] = {}
    tags = images.tags()
    for reference in references:
        image = images.get(reference)
        name = None
        if not reference.startswith("sha256:"):
            with contextlib.suppress(InvalidValue):
                candidate = normalize(reference)
                if tags.get(candidate) == image.id:
                    name = candidate
        names = chosen.setdefault(image.id, (image, []))[1]
        if name and name not in names:
            names.append(name)
    with images.staging("save") as staged:
        blobs: dict[str, tuple] = {}  # digest -> (path, size) or (bytes,)
        index, docker = [], []
        for image, names in chosen.values():
            config = _stored_config(images, image)
            blobs[image.id] = (config,)
            descriptors = [_layer_blob(images, image, diff_id, staged, blobs) for diff_id in image.diff_ids()]
            manifest = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": image.id, "size": len(config)},
                "layers": descriptors,
            }
            data = lean.dumps(manifest).encode()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            blobs[digest] = (data,)
            platform = {
                "architecture": image.config.get("architecture", ""),
                "os": image.config.get("os", ""),
            }
            if image.config.get("variant"):
                platform["variant"] = image.config["variant"]
            for name in names or [None]:
                entry = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(data), "platform": platform}
                if name:
                    entry["annotations"] = {CONTAINERD_NAME: str(remote(name)), REF_NAME: name}
                index.append(entry)
            docker.append(
                {
                    "Config": "blobs/sha256/" + image.id[7:],
                    "RepoTags": names or None,
                    "Layers": ["blobs/sha256/" + d["digest"][7:] for d in descriptors],
                }
            )
        index_doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index}
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "oci-layout", LAYOUT)
            _add_bytes(tar, "index.json", lean.dumps(index_doc).encode())
            _add_bytes(tar, "manifest.json", lean.dumps(docker).encode())
            _add_directory(tar, "blobs")
            _add_directory(tar, "blobs/sha256")
            for digest in sorted(blobs):
                _add_blob(tar, digest, blobs[digest])


def _stored_config(images, image) -> bytes:
    data = images.config_bytes(image.id)
    if "sha256:" + hashlib.sha256(data).hexdigest() != image.id:
        raise HakoError(f"image {image.short_id}: its stored config no longer matches its ID (damaged store)")
    return data


def _layer_blob(images, image, diff_id: str, staged: str, blobs: dict) -> dict:
    """The descriptor of a layer's stored blob (noted in ``blobs``), made OCI-typed if it is not."""
    info = images.layer_info(diff_id)
    path = images.blob_path(info["digest"]) if info and info.get("digest") else None
    if path is None or not os.path.isfile(path):
        raise HakoError(f"image {image.short_id}: layer {diff_id[7:19]} has no stored blob to save")
    with open(path, "rb") as f:
        compression = layerfmt.compression_of(f.read(8))
    digest = info["digest"]
    if compression not in OCI_LAYER_TYPES:
        # bzip2 or xz: no OCI media type names them; gzip it again.
        path, digest = _regzip(path, staged, diff_id)
        compression = "gzip"
    size = os.stat(path).st_size
    blobs[digest] = (path, size)
    return {"mediaType": OCI_LAYER_TYPES[compression], "digest": digest, "size": size}


def _regzip(path: str, staged: str, diff_id: str) -> tuple[str, str]:
    target = os.path.join(staged, diff_id[7:] + ".tar.gz")
    with _reading("layer", diff_id), open(path, "rb") as source, open(target, "wb") as out:
        reader = layerfmt.DigestReader(source)
        sink = layerfmt.DigestWriter(out)
        while True:
            data = reader.read(CHUNK)
            if not data:
                break
            sink.write(data)
        sink.close()
    if sink.diff_id != diff_id:
        raise HakoError(f"layer {diff_id[7:19]}: its stored blob is damaged")
    return target, sink.digest


def _tar_info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.mode = 0o644
    return info


def _add_bytes(tar, name: str, data: bytes) -> None:
    import io

    tar.addfile(_tar_info(name, len(data)), io.BytesIO(data))


def _add_directory(tar, name: str) -> None:
    tar.addfile(_tar_info(name, directory=True))


class _Hashing:
    """A reader that hashes what passes through it."""

    def __init__(self, f) -> None:
        self._f = f
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.sha.update(data)
        return data


def _add_blob(tar, digest: str, blob: tuple) -> None:
    name = "blobs/sha256/" + digest[7:]
    if len(blob) == 1:
        _add_bytes(tar, name, blob[0])
        return
    path, size = blob
    with open(path, "rb") as f:
        reader = _Hashing(f)
        tar.addfile(_tar_info(name, size), reader)
    if "sha256:" + reader.sha.hexdigest() != digest:
        raise HakoError(f"the stored blob {digest} is damaged: its content has another digest")


# Exporting a container ----------------------------------------------------------
def export(engine, reference: str, out) -> None:
    """Write the filesystem container ``reference`` sees (image layers, its own on top) to ``out``.

    A child process with a private mount namespace mounts a read-only
    overlay of the layers and packs it; when it ends, however it ends, the
    mount goes with its namespace. Files of a container with a user
    namespace are written with the owners they have inside it.
    """
    import signal

    from .. import linux

    cid = engine.resolve(reference)
    record = engine.load(cid)
    try:
        image = engine.images.get(record["image_id"])
    except NotFound:
        raise NotFound(f"container {record['name']}: its image {record['image_id'][7:19]} is gone") from None
    userns = record.get("userns")
    shift = (userns["host_id"], userns["host_id"]) if userns else None
    lower = engine.images.lower_dirs(image, shift)
    from ..engine import storage

    directory = engine.container_dir(cid)
    # A size-limited layer is a filesystem of its own, mounted by the child below.
    sized = bool(record.get("storage_opts"))
    upper = storage.layer_dirs(directory, record)[0]
    if not (os.path.isfile(storage.image_path(directory)) if sized else os.path.isdir(upper)):
        raise NotFound(f"container {record['name']}: its writable layer is gone")
    with engine.images.staging("export") as staged:
        root = os.path.join(staged, "root")
        os.mkdir(root, 0o700)
        dirs = [upper, *lower]
        if len(dirs) < 2:
            # overlayfs wants two lower layers when it has no upper one.
            dirs.append(os.path.join(staged, "empty"))
            os.mkdir(dirs[-1])
        options = "lowerdir=" + ":".join(_overlay_escape(d) for d in dirs)
        out.flush()
        parent = os.getpid()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.close(read_end)
                linux.set_parent_death_signal(signal.SIGKILL)
                if os.getppid() == parent:
                    linux.unshare(linux.CLONE_NEWNS)
                    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
                    if sized:
                        storage.mount_layer(storage.image_path(directory), storage.mount_point(directory))
                    linux.mount("overlay", root, "overlay", linux.MS_RDONLY, options)
                    layerfmt.pack(root, out, overlay=False, shift=shift)
                    out.flush()
                    code = 0
            except BaseException as e:  # noqa: BLE001 - everything must reach the parent
                with contextlib.suppress(OSError):
                    os.write(write_end, _describe(e).encode()[:4000])
            finally:
                os._exit(code)
        os.close(write_end)
        try:
            with os.fdopen(read_end, "rb") as errors:
                message = errors.read().decode(errors="replace")
            _, status = os.waitpid(pid, 0)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        if status != 0:
            if "Broken pipe" in message:
                raise BrokenPipeError(message)
            raise HakoError(f"cannot export container {record['name']}: {message or f'status {status}'}")


def _overlay_escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


# Output -------------------------------------------------------------------------
@contextlib.contextmanager
def output(path: str | None):
    """Where an archive goes: a file, written under a temporary name and renamed once whole; or stdout."""
    if path in (None, "-"):
        if os.isatty(1):
            raise InvalidValue("output", "-", "refusing to write a tar archive to a terminal: use -o FILE")
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    if os.path.isdir(path):
        raise InvalidValue("output", path, "a directory: name a file")
    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        # A device or a pipe (-o /dev/null, a FIFO): write into it, never replace it.
        with open(path, "wb") as f:
            yield f
        return
    path = os.path.realpath(path)  # through a symbolic link, as a shell redirection goes
    directory = os.path.dirname(path)
    # A new file of a name no one can guess: never one put there before (a link to follow).
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(8).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o666)
    except FileNotFoundError:
        raise InvalidValue("output", path, f"no such directory: {directory}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# Small helpers ------------------------------------------------------------------
@contextlib.contextmanager
def _reading(field: str, value: str):
    """Turn what a damaged compressed or tar stream raises into one clear error naming ``value``."""
    import lzma
    import zlib

    try:
        yield
    except (zlib.error, lzma.LZMAError, EOFError, tarfile.TarError) as e:
        raise InvalidValue(field, value, f"a damaged stream ({_describe(e)})") from None
    except OSError as e:
        if e.errno is not None:
            raise
        # bz2 reports bad data as an OSError without an errno.
        raise InvalidValue(field, value, f"a damaged stream ({e})") from None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return str(e) or type(e).__name__


def _why(e: InvalidValue) -> str:
    """The reason part of an InvalidValue's message ("... (why)")."""
    text = str(e)
    start = text.find(" (")
    return text[start + 2 : -1] if start >= 0 and text.endswith(")") else text


__all__ = ["export", "host_platform", "import_rootfs", "load", "local_name", "output", "save"]
