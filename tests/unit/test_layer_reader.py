"""DigestReader: digests of both forms, every compression, bounded pieces, its thread ended."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import threading

import pytest
from hako.errors import InvalidValue
from hako.images import layers

DATA = os.urandom(300_000) + b"\0" * 3_000_000 + os.urandom(100_000)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def inflaters() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "hako-inflate"]


@pytest.mark.parametrize(
    "compress",
    [
        lambda d: d,
        gzip.compress,
        bz2.compress,
        lzma.compress,
        # Concatenated members, as pigz and some registries write them.
        lambda d: gzip.compress(d[:1000]) + gzip.compress(d[1000:]),
    ],
    ids=["none", "gzip", "bzip2", "xz", "gzip-members"],
)
def test_both_digests_in_any_read_size(compress) -> None:
    blob = compress(DATA)
    for size in (512, 10240, 1 << 20, -1):
        copy = io.BytesIO()
        reader = layers.DigestReader(io.BytesIO(blob), copy_to=copy)
        out = []
        while True:
            chunk = reader.read(size)
            if not chunk:
                break
            assert size < 0 or len(chunk) <= size
            out.append(chunk)
            if size < 0:
                assert reader.read(size) == b""
                break
        reader.close()
        assert b"".join(out) == DATA
        assert (reader.diff_id, reader.digest, reader.size) == (sha(DATA), sha(blob), len(blob))
        assert copy.getvalue() == blob
    assert inflaters() == []


def test_a_small_blob_that_inflates_a_lot_comes_in_bounded_pieces() -> None:
    zeros = b"\0" * (64 << 20)
    decompressor = layers._Decompressor("gzip")
    sizes = [len(p) for p in decompressor.pieces(gzip.compress(zeros))]
    assert sum(sizes) == len(zeros) and max(sizes) <= layers.PIECE
    reader = layers.DigestReader(io.BytesIO(lzma.compress(zeros)))
    reader.drain()
    assert reader.diff_id == sha(zeros)


def test_a_truncated_or_damaged_stream_is_refused() -> None:
    blob = gzip.compress(DATA)
    with pytest.raises(InvalidValue, match="ends early"):
        layers.DigestReader(io.BytesIO(blob[: len(blob) // 2])).drain()
    damaged = blob[:100] + bytes(b ^ 0xFF for b in blob[100:200]) + blob[200:]
    with pytest.raises(InvalidValue, match="damaged"):
        layers.DigestReader(io.BytesIO(damaged)).drain()
    assert inflaters() == []


def test_a_reader_given_up_on_ends_its_thread() -> None:
    reader = layers.DigestReader(io.BytesIO(gzip.compress(DATA * 4)))
    assert reader.read(100) == DATA[:100]
    assert inflaters()
    reader.close()
    assert inflaters() == []
