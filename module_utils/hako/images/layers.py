"""Layers as tar streams: unpack one safely into a directory, pack a directory into one.

A layer on disk is a directory overlayfs can stack directly: a deleted file
is a character device 0:0 (a whiteout) and a directory that hides what lies
below it has the ``trusted.overlay.opaque`` attribute. In a tar stream (the
OCI and Docker format) the same facts are ``.wh.NAME`` and ``.wh..wh..opq``
entries; unpack and pack translate between the two.

Unpacking never writes outside its target, whatever the archive says:

* names that are absolute or climb with ``..`` are refused;
* every parent directory is opened without following symlinks, so an entry
  below a symlink (``evil -> /etc`` then ``evil/passwd``) is refused;
* a hard link must name an earlier entry of the same archive, found the same
  way;
* device nodes are dropped (a container's /dev is made when it starts), and
  so are extended attributes other than ``user.*`` and ``security.capability``;
* an archive with more entries than ``HAKO_MAX_LAYER_ENTRIES`` (default one
  million) is refused.

The caller unpacks into a fresh staging directory and removes it if this
raises, so a refused archive leaves nothing behind.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tarfile
import zlib

from ..errors import InvalidValue

OPAQUE_XATTR = "trusted.overlay.opaque"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
KEPT_XATTRS = ("user.", "security.capability")
CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

MEDIA_TYPE_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_TAR = "application/vnd.oci.image.layer.v1.tar"


def max_entries() -> int:
    try:
        return int(os.environ.get("HAKO_MAX_LAYER_ENTRIES", "1000000"))
    except ValueError:
        value = os.environ["HAKO_MAX_LAYER_ENTRIES"]
        raise InvalidValue("HAKO_MAX_LAYER_ENTRIES", value, "not a number") from None


# Reading compressed streams ---------------------------------------------------
def compression_of(head: bytes) -> str:
    """The compression a stream's first bytes show: gzip, bzip2, xz, zstd or none."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"


PIECE = 1 << 20  # the most a decompressor hands out at once (a small blob may inflate a lot)
QUEUE_DEPTH = 8  # pieces decompressed ahead of the reader


class _Decompressor:
    """One compression format's decompressor that carries on across concatenated members."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._new()

    def _new(self) -> None:
        if self.kind == "gzip":
            self._d = zlib.decompressobj(wbits=31)
            self._errors: tuple = (zlib.error,)
        elif self.kind == "bzip2":
            import bz2

            self._d = bz2.BZ2Decompressor()
            self._errors = (OSError, EOFError, ValueError)
        else:
            import lzma

            self._d = lzma.LZMADecompressor()
            self._errors = (lzma.LZMAError, EOFError, ValueError)

    @property
    def eof(self) -> bool:
        return self._d.eof

    def pieces(self, data: bytes):
        """The decompressed bytes of ``data``, in pieces of at most PIECE bytes."""
        while True:
            try:
                out = self._d.decompress(data, PIECE)
            except self._errors as e:
                raise InvalidValue("archive", self.kind, f"the compressed data is damaged ({e})") from None
            if out:
                yield out
            if self._d.eof:
                data = self._d.unused_data
                if not data:
                    return
                self._new()
                continue
            if self.kind == "gzip":
                # What did not fit waits in unconsumed_tail (or, at exactly
                # PIECE bytes out, maybe inside zlib).
                data = self._d.unconsumed_tail
                if not data and len(out) < PIECE:
                    return
            else:
                if self._d.needs_input:
                    return
                data = b""

    def decompress(self, data: bytes) -> bytes:
        return b"".join(self.pieces(data))


class _Source:
    """The stream as stored: read, digested and copied as it goes (by one thread at a time)."""

    def __init__(self, raw, copy_to) -> None:
        self.raw = raw
        self.copy_to = copy_to
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = CHUNK) -> bytes:
        data = self.raw.read(n)
        if data:
            self.hash.update(data)
            self.size += len(data)
            if self.copy_to is not None:
                self.copy_to.write(data)
        return data


class _Inflater:
    """Reads, digests, copies and decompresses a stream in a thread of its own.

    zlib, bz2, lzma, sha256 and file writes release the GIL, so this work
    runs beside the reader's (parsing the tar, making files). The pieces go
    through a short queue; the last item is None, or the exception that
    stopped the thread.
    """

    def __init__(self, source: _Source, kind: str, head: bytes, tar_hash) -> None:
        import queue
        import threading

        self.source = source
        self.kind = kind
        self.head = head
        self.tar_hash = tar_hash
        self.queue: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="hako-inflate", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            decompressor = _Decompressor(self.kind) if self.kind != "none" else None
            data, self.head = self.head, b""
            while data:
                for piece in decompressor.pieces(data) if decompressor else (data,):
                    self.tar_hash.update(piece)
                    if not self._put(piece):
                        return
                data = self.source.read(CHUNK)
            if decompressor is not None and not decompressor.eof and self.source.size:
                raise InvalidValue("layer", self.kind, "the compressed stream ends early")
            self._put(None)
        except BaseException as e:  # noqa: BLE001 - handed to the reading thread
            self._put(e)

    def _put(self, item) -> bool:
        """Queue an item; False once the reader has stopped (and would never take it)."""
        import queue

        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def next(self) -> bytes:
        item = self.queue.get()
        if item is None:
            self.thread.join()
            return b""
        if isinstance(item, BaseException):
            self.thread.join()
            raise item
        return item

    def stop(self) -> None:
        """End the thread early (the reader gave up on the stream)."""
        self.stopped.set()
        self.thread.join()


class DigestReader:
    """A file-like reader over a (maybe compressed) stream that digests both forms.

    ``digest`` is the sha256 of the bytes as stored (a registry's blob
    digest), ``diff_id`` that of the uncompressed tar stream (the layer's
    identity in an image config); both are final once the stream is read to
    its end (``drain``). Reading, digesting and decompressing happen in a
    thread of their own (``close`` ends it if the stream is not read to its
    end); ``copy_to``, a binary file, receives the bytes as stored.
    """

    def __init__(self, raw, copy_to=None) -> None:
        self._source = _Source(raw, copy_to)
        self._tar_hash = hashlib.sha256()
        self._buffer = b""
        self._pos = 0
        self._eof = False
        self._zstd = None
        self._inflater: _Inflater | None = None
        head = self._source.read(CHUNK)
        self.compression = compression_of(head)
        if self.compression == "zstd":
            first = self._start_zstd(head)
            self._tar_hash.update(first)
            self._buffer = first
            self._head = b""
        else:
            self._head = head

    @property
    def size(self) -> int:
        return self._source.size

    def _start_zstd(self, head: bytes) -> bytes:
        # No zstd in the standard library before 3.14: the zstd program
        # decompresses, fed from a thread so that digests still see the
        # stored bytes.
        import shutil
        import subprocess
        import threading

        if shutil.which("zstd") is None:
            raise InvalidValue("layer", "zstd", "unpacking it needs the zstd program (apt-get install zstd)")
        self._zstd = subprocess.Popen(
            ["zstd", "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )

        def feed(first: bytes) -> None:
            try:
                data = first
                while data:
                    self._zstd.stdin.write(data)
                    data = self._source.read(CHUNK)
            except (BrokenPipeError, OSError, ValueError):
                pass
            finally:
                try:
                    self._zstd.stdin.close()
                except OSError:
                    pass

        self._feeder = threading.Thread(target=feed, args=(head,), daemon=True)
        self._feeder.start()
        return self._zstd.stdout.read(CHUNK)

    def _more(self) -> bytes:
        if self._zstd is not None:
            data = self._zstd.stdout.read(CHUNK)
            if data:
                self._tar_hash.update(data)
            else:
                self._feeder.join()
                if self._zstd.wait() != 0:
                    raise InvalidValue("layer", "zstd", "the zstd stream is corrupt")
            return data
        if self._inflater is None:
            head, self._head = self._head, b""
            self._inflater = _Inflater(self._source, self.compression, head, self._tar_hash)
        return self._inflater.next()

    def read(self, n: int = -1) -> bytes:
        # The buffer is consumed by moving an offset: cutting the rest off a
        # piece of a megabyte for each 10 KiB read would copy it again and again.
        while not self._eof and (n < 0 or len(self._buffer) - self._pos < n):
            data = self._more()
            if not data:
                self._eof = True
                break
            if self._pos:
                self._buffer = self._buffer[self._pos :] + data
                self._pos = 0
            else:
                self._buffer += data
        if n < 0:
            n = len(self._buffer) - self._pos
        out = self._buffer[self._pos : self._pos + n]
        self._pos += len(out)
        if self._pos >= len(self._buffer):
            self._buffer, self._pos = b"", 0
        return out

    def drain(self) -> None:
        """Read to the end (the tar's zero blocks and padding belong to its digest)."""
        self._buffer, self._pos = b"", 0
        while not self._eof:
            if not self._more():
                self._eof = True

    def close(self) -> None:
        """Stop reading (the stream may be left unread): end the thread and the zstd process."""
        if self._inflater is not None and not self._eof:
            self._inflater.stop()
        if self._zstd is not None and self._zstd.poll() is None:
            self._zstd.kill()
            self._zstd.wait()
            self._feeder.join()
        if self._zstd is not None:
            self._zstd.stdout.close()

    def __del__(self) -> None:
        try:
            if self._inflater is not None and not self._eof:
                self._inflater.stopped.set()
        except AttributeError:
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._source.hash.hexdigest()

    @property
    def diff_id(self) -> str:
        return "sha256:" + self._tar_hash.hexdigest()


# Unpacking ----------------------------------------------------------------------
class Unpacked:
    __slots__ = ("diff_id", "digest", "size", "compression", "entries", "dropped", "unpacked_size")

    def __init__(self, reader: DigestReader, entries: int, dropped: list[str], unpacked_size: int) -> None:
        self.diff_id = reader.diff_id
        self.digest = reader.digest
        self.size = reader.size
        self.compression = reader.compression
        self.entries = entries
        self.dropped = dropped
        self.unpacked_size = unpacked_size  # bytes of regular files (a hard link counted once)


class _LimitedTarInfo(tarfile.TarInfo):
    """A tar header whose extended headers (pax, GNU long names) are read only up to a size.

    tarfile reads such a header whole into memory: a 3 MB gzip of zeros can
    declare a 3 GiB pax header.
    """

    def _proc_member(self, tar):
        if self.type in _EXTENDED_TYPES and self.size > MAX_HEADER:
            why = f"an extended header of {self.size} bytes"
            raise InvalidValue("archive entry", self.name or "(header)", why)
        return super()._proc_member(tar)


_EXTENDED_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                   tarfile.GNUTYPE_LONGLINK)  # fmt: skip
MAX_HEADER = 1 << 20
# Deeper trees are refused: each level is a directory descriptor while packing.
MAX_DEPTH = 256


def clean_name(name: str, field: str = "archive entry") -> list[str]:
    """An entry's path as components; refuses absolute paths and any '..'."""
    if name.startswith("/"):
        raise InvalidValue(field, name, "an absolute path (an archive entry must stay inside its target)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidValue(field, name, "climbs out of the target with '..'")
    if len(parts) > MAX_DEPTH:
        raise InvalidValue(field, name[:200] + "...", f"deeper than {MAX_DEPTH} directories")
    return parts


class _Target:
    """A directory being unpacked into, reached only through file descriptors."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._cached: tuple[tuple[str, ...], int] | None = None

    def close(self) -> None:
        self._forget()
        os.close(self.fd)

    def _forget(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def parent(self, parts: list[str], name: str, create: bool = True, keep: bool = True) -> int:
        """An fd of the directory holding ``parts[-1]``, walked without following symlinks.

        With ``keep`` it is cached as the current parent (closed by the next
        call for another); without, the caller closes it.
        """
        key = tuple(parts[:-1])
        if keep and self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        fd = os.dup(self.fd)
        try:
            for part in key:
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise InvalidValue(
                            "archive entry", name, f"passes through {part!r}, which is not a directory"
                        ) from None
                    raise
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        if keep:
            self._forget()
            self._cached = (key, fd)
        return fd

    def clear(self, parent: int, base: str, keep_dir: bool) -> bool:
        """Make room for a new entry ``base``; True if a directory is kept in place."""
        try:
            st = os.lstat(base, dir_fd=parent)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            # The cached fd is this entry's parent, never inside what goes.
            _remove_tree_at(parent, base)
        else:
            os.unlink(base, dir_fd=parent)
        return False


def _remove_tree_at(parent: int, base: str) -> None:
    fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
    try:
        for entry in os.scandir(fd):
            if entry.is_dir(follow_symlinks=False):
                _remove_tree_at(fd, entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(base, dir_fd=parent)


def _pax_xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    kept = []
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            name = key[len("SCHILY.xattr.") :]
            if name.startswith(KEPT_XATTRS) and not name.startswith("user.overlay."):
                kept.append((name, value.encode("utf-8", "surrogateescape")))
    return kept


def unpack(source, target: str, copy_to=None) -> Unpacked:
    """Unpack the tar stream ``source`` (a binary file, maybe compressed) into ``target``.

    ``copy_to``, a binary file, receives the bytes exactly as read (to keep
    the blob). Returns the digests of what was read.
    """
    limit = max_entries()
    where = _Target(target)
    reader = None
    dropped: list[str] = []
    directories: list[tuple[list[str], int]] = []
    entries = 0
    unpacked_size = 0
    try:
        reader = DigestReader(source, copy_to)
        try:
            tar = tarfile.open(
                fileobj=reader, mode="r|", format=tarfile.PAX_FORMAT, errorlevel=2, tarinfo=_LimitedTarInfo
            )
        except tarfile.ReadError as e:
            raise InvalidValue("archive", reader.compression, f"not a tar archive ({e})") from None
        try:
            while True:
                try:
                    member = tar.next()
                except (ValueError, OverflowError) as e:  # a number tarfile cannot read
                    raise InvalidValue("archive", reader.compression, f"a damaged header ({e})") from None
                if member is None:
                    break
                tar.members = []  # a stream needs no index of what it has read
                entries += 1
                if entries > limit:
                    raise InvalidValue(
                        "archive", f"{entries}+ entries", f"more than HAKO_MAX_LAYER_ENTRIES={limit}"
                    )
                try:
                    _unpack_one(tar, member, where, dropped, directories)
                except (OSError, ValueError, OverflowError) as e:
                    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                    raise InvalidValue("archive entry", member.name[:300], why) from None
                if member.isreg():
                    unpacked_size += member.size
        except tarfile.TarError as e:
            raise InvalidValue("archive", reader.compression, f"a damaged tar stream ({e})") from None
        except EOFError:
            raise InvalidValue("archive", reader.compression, "the archive ends inside an entry") from None
        reader.drain()
        # Directory times last: creating entries inside changes them.
        for parts, mtime in reversed(directories):
            if parts:
                parent = where.parent(parts, "/".join(parts), create=False)
                os.utime(parts[-1], (mtime, mtime), dir_fd=parent, follow_symlinks=False)
            else:
                os.utime(where.fd, (mtime, mtime))
    finally:
        where.close()
        if reader is not None:
            reader.close()
    return Unpacked(reader, entries, dropped, unpacked_size)


def _unpack_one(tar, member: tarfile.TarInfo, where: _Target, dropped: list[str], directories: list) -> None:
    name = member.name
    parts = clean_name(name)
    if not parts:
        if member.isdir():
            os.chown(where.fd, member.uid, member.gid)
            os.chmod(where.fd, member.mode & 0o7777)
            directories.append(([], int(member.mtime)))
        return
    base = parts[-1]
    if base.startswith(WHITEOUT_PREFIX):
        parent = where.parent(parts, name)
        if base == OPAQUE_MARKER:
            os.setxattr(parent, OPAQUE_XATTR, b"y")
        elif not base.startswith(".wh..wh."):
            hidden = base[len(WHITEOUT_PREFIX) :]
            if hidden in ("", ".", ".."):
                raise InvalidValue("archive entry", name, "a whiteout of nothing")
            where.clear(parent, hidden, keep_dir=False)
            os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
        return
    if member.issparse():
        raise InvalidValue("archive entry", name, "a sparse file (not supported in a layer)")
    if member.ischr() or member.isblk():
        dropped.append(name)
        return
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk() or member.isfifo()):
        dropped.append(name)
        return
    parent = where.parent(parts, name)
    mode = member.mode & 0o7777
    # Directories, files and symlinks are made first and make room only if
    # the name is taken (mostly it is not: no lstat per entry). Neither
    # mkdir, symlink nor open(O_CREAT|O_EXCL|O_NOFOLLOW) follows a symlink
    # where the name is.
    if member.isdir():
        try:
            os.mkdir(base, 0o700, dir_fd=parent)
        except FileExistsError:
            if not where.clear(parent, base, keep_dir=True):
                os.mkdir(base, 0o700, dir_fd=parent)
        fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
        try:
            _set_metadata(fd, member, mode)
        finally:
            os.close(fd)
        directories.append((parts, int(member.mtime)))
    elif member.isreg():
        try:
            fd = os.open(base, _NEW_FILE, 0o600, dir_fd=parent)
        except FileExistsError:
            where.clear(parent, base, keep_dir=False)
            fd = os.open(base, _NEW_FILE, 0o600, dir_fd=parent)
        try:
            data = tar.extractfile(member)
            while True:
                chunk = data.read(CHUNK)
                if not chunk:
                    break
                os.write(fd, chunk)
            _set_metadata(fd, member, mode)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)
    elif member.issym():
        try:
            os.symlink(member.linkname, base, dir_fd=parent)
        except FileExistsError:
            where.clear(parent, base, keep_dir=False)
            os.symlink(member.linkname, base, dir_fd=parent)
        os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        os.utime(base, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)
    elif member.islnk():
        where.clear(parent, base, keep_dir=False)
        _hard_link(member, name, where, parent, base)
    else:  # fifo
        where.clear(parent, base, keep_dir=False)
        os.mkfifo(base, 0o600, dir_fd=parent)
        os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        os.chmod(base, mode, dir_fd=parent)


def _hard_link(member: tarfile.TarInfo, name: str, where: _Target, parent: int, base: str) -> None:
    link_parts = clean_name(member.linkname, "hard link target")
    if not link_parts:
        raise InvalidValue("hard link target", member.linkname, f"{name} links to the archive's root")
    # Its own fd: looking up the target must not disturb the cached parent.
    link_parent = None
    try:
        link_parent = where.parent(link_parts, member.linkname, create=False, keep=False)
        if stat.S_ISDIR(os.lstat(link_parts[-1], dir_fd=link_parent).st_mode):
            raise InvalidValue("hard link target", member.linkname, f"{name} links to a directory")
        os.link(link_parts[-1], base, src_dir_fd=link_parent, dst_dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        raise InvalidValue("hard link target", member.linkname, f"{name}: no earlier such entry") from None
    finally:
        if link_parent is not None:
            os.close(link_parent)


def _set_metadata(fd: int, member: tarfile.TarInfo, mode: int) -> None:
    os.fchown(fd, member.uid, member.gid)
    # After the owner: chown clears set-user-ID and set-group-ID bits.
    os.fchmod(fd, mode)
    for key, value in _pax_xattrs(member):
        os.setxattr(fd, key, value)


# Packing ------------------------------------------------------------------------
class DigestWriter:
    """A sink for a tar stream: digests it, gzips it (or not) into ``out``, digests that."""

    def __init__(self, out, compress: bool = True, level: int = 6) -> None:
        self._out = out
        self._tar_hash = hashlib.sha256()
        self._blob_hash = hashlib.sha256()
        self._gzip = zlib.compressobj(level, zlib.DEFLATED, 31) if compress else None
        self.size = 0
        self.media_type = MEDIA_TYPE_GZIP if compress else MEDIA_TYPE_TAR

    def write(self, data: bytes) -> int:
        self._tar_hash.update(data)
        self._emit(self._gzip.compress(data) if self._gzip else data)
        return len(data)

    def _emit(self, data: bytes) -> None:
        if data:
            self._blob_hash.update(data)
            self.size += len(data)
            if self._out is not None:
                self._out.write(data)

    def close(self) -> None:
        if self._gzip is not None:
            self._emit(self._gzip.flush())
            self._gzip = None

    @property
    def diff_id(self) -> str:
        return "sha256:" + self._tar_hash.hexdigest()

    @property
    def digest(self) -> str:
        return "sha256:" + self._blob_hash.hexdigest()


def pack(directory: str, sink, overlay: bool = True, shift: tuple[int, int] | None = None) -> None:
    """Write ``directory`` as a layer tar stream to ``sink`` (sorted, reproducible).

    With ``overlay``, whiteouts and opaque directories become ``.wh.``
    entries; ``shift`` (uid, gid) is subtracted from owners (a user
    namespace's upper layer). Device nodes and sockets are left out.

    The tree may belong to a running container, which can swap a directory
    for a symlink at any moment: it is walked through directory descriptors
    and every file is opened without following symlinks, so nothing outside
    ``directory`` is ever read; what vanishes meanwhile is left out, and a
    file that shrinks is padded to the size its header gave.
    """
    root = os.open(directory, _DIR_FLAGS)
    try:
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _Packer(tar, overlay, shift).run(root)
    finally:
        os.close(root)


class _Packer:
    def __init__(self, tar, overlay: bool, shift) -> None:
        self.tar = tar
        self.overlay = overlay
        self.shift = shift
        self.links: dict[tuple[int, int], str] = {}

    def run(self, root: int) -> None:
        # Depth first in name order, without recursion: (fd, prefix, names left).
        stack = [(root, "", iter(sorted(os.listdir(root))))]
        try:
            while stack:
                fd, prefix, names = stack[-1]
                name = next(names, None)
                if name is None:
                    stack.pop()
                    if fd != root:
                        os.close(fd)
                    continue
                child = self._entry(fd, name, prefix + name)
                if child is not None:
                    if len(stack) > MAX_DEPTH:
                        os.close(child)
                        raise InvalidValue("layer", prefix + name, f"deeper than {MAX_DEPTH} directories")
                    stack.append((child, prefix + name + "/", iter(sorted(os.listdir(child)))))
        finally:
            for fd, _prefix, _names in stack:
                if fd != root:
                    os.close(fd)

    def _info(self, arcname: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
        info = tarfile.TarInfo(arcname)
        info.type = kind
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        if self.shift is not None:
            info.uid = max(0, info.uid - self.shift[0])
            info.gid = max(0, info.gid - self.shift[1])
        info.mtime = int(st.st_mtime)
        info.uname = info.gname = ""
        return info

    def _entry(self, parent: int, name: str, arcname: str) -> int | None:
        """Add one entry; for a directory, return its open descriptor to walk next."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        mode = st.st_mode
        if stat.S_ISCHR(mode) and st.st_rdev == 0 and self.overlay:
            head, _, base = arcname.rpartition("/")
            info = tarfile.TarInfo((head + "/" if head else "") + WHITEOUT_PREFIX + base)
            info.mtime = int(st.st_mtime)
            self.tar.addfile(info)
            return None
        if stat.S_ISLNK(mode):
            try:
                target = os.readlink(name, dir_fd=parent)
            except (FileNotFoundError, OSError):
                return None
            info = self._info(arcname, st, tarfile.SYMTYPE)
            info.linkname = target
            self.tar.addfile(info)
            return None
        if stat.S_ISFIFO(mode):
            self.tar.addfile(self._info(arcname, st, tarfile.FIFOTYPE))
            return None
        if stat.S_ISDIR(mode):
            return self._directory(parent, name, arcname)
        if stat.S_ISREG(mode):
            self._file(parent, name, arcname)
        return None  # sockets and device nodes: not part of an image

    def _directory(self, parent: int, name: str, arcname: str) -> int | None:
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return None  # gone or swapped for something else meanwhile
            raise
        try:
            st = os.fstat(fd)
            info = self._info(arcname, st, tarfile.DIRTYPE)
            self._xattrs(fd, info)
            self.tar.addfile(info)
            if self.overlay and _getxattr(fd, OPAQUE_XATTR) == b"y":
                marker = tarfile.TarInfo(arcname + "/" + OPAQUE_MARKER)
                marker.mtime = int(st.st_mtime)
                self.tar.addfile(marker)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _file(self, parent: int, name: str, arcname: str) -> None:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ELOOP):
                return
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = self.links.get(key)
                if first is not None:
                    info = self._info(arcname, st, tarfile.LNKTYPE)
                    info.linkname = first
                    self.tar.addfile(info)
                    return
                self.links[key] = arcname
            info = self._info(arcname, st, tarfile.REGTYPE)
            info.size = st.st_size
            self._xattrs(fd, info)
            self.tar.addfile(info, _Exactly(fd, st.st_size))
        finally:
            os.close(fd)

    @staticmethod
    def _xattrs(fd: int, info: tarfile.TarInfo) -> None:
        try:
            names = os.listxattr(fd)
        except OSError:
            return
        for key in sorted(names):
            if key.startswith(KEPT_XATTRS) and not key.startswith("user.overlay."):
                value = _getxattr(fd, key)
                if value is not None:
                    info.pax_headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")


def _getxattr(fd: int, key: str) -> bytes | None:
    try:
        return os.getxattr(fd, key)
    except OSError:
        return None


class _Exactly:
    """A file read as exactly ``size`` bytes: zeros if it shrank, its first ``size`` if it grew."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = os.read(self.fd, n) if n else b""
        if len(data) < n:  # the file shrank meanwhile
            data += bytes(n - len(data))
        self.left -= n
        return data
