"""Per-tensor compression of pack data: byte-grouping (split float planes) + zstd.

A tensor of ``k``-byte elements is stored as its ``k`` byte planes one after the other (every element's
byte 0, then every byte 1, ...), compressed by zstd. In trained float weights the planes holding sign and
exponent repeat a few values and compress well, the low mantissa planes hardly at all; grouping them
keeps zstd from mixing the two. One-byte dtypes are compressed as they are.

In a pack an encoded tensor is a ``U8`` blob (any safetensors reader still opens the file); the header's
``__metadata__["encoded"]`` maps its content id to ``[codec, dtype, shape, stored id]`` (BLAKE3 of the stored
bytes). Verification checks the stored bytes against the stored id and the decoded ones against the content id,
which compression does not change, so deduplication spans both. A tensor that does not shrink by ``MIN_GAIN`` is
stored raw.
"""

from __future__ import annotations

import threading

import blake3
import numpy as np
import zstandard

CODEC = "zstd-bytegroup-1"
CHOICES = ("none", "zstd")
LEVEL = 1  # zstd's fastest standard level: a save must keep up with the disk (see README "Compression")
MIN_BYTES = 4096  # smaller tensors are stored raw (their few bytes are not worth a frame)
MIN_GAIN = 0.97  # stored raw unless the encoded form is at most this fraction of the raw bytes
STORED_PREFIX = "b3:"

_local = threading.local()


def check_choice(compression: str) -> str:
    """``compression`` when it is one of CHOICES (ValueError otherwise)."""
    if compression not in CHOICES:
        raise ValueError(f"compression must be one of {', '.join(CHOICES)}, not '{compression}'")
    return compression


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_local, "c", None)
    if cache is None:
        cache = _local.c = {}
    if level not in cache:  # instances are not thread-safe: one per thread and level
        cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def group_bytes(data: memoryview, itemsize: int) -> np.ndarray:
    """The byte planes of ``data`` (elements of ``itemsize`` bytes) one after another, as a new array."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if itemsize == 1:
        return raw
    return np.ascontiguousarray(raw.reshape(-1, itemsize).T)


def ungroup_bytes(planes: bytes | memoryview, itemsize: int, out: memoryview) -> None:
    """Write the elements whose byte planes are ``planes`` into ``out`` (the inverse of ``group_bytes``)."""
    src = np.frombuffer(planes, dtype=np.uint8)
    dst = np.frombuffer(out, dtype=np.uint8)
    if itemsize == 1:
        dst[:] = src
    else:
        dst.reshape(-1, itemsize)[:] = src.reshape(itemsize, -1).T


def stored_id(blob: bytes | memoryview) -> str:
    """The id of stored (encoded) bytes: BLAKE3, hex, prefixed."""
    return STORED_PREFIX + blake3.blake3(blob).hexdigest()


def encode(data: memoryview, itemsize: int, level: int = LEVEL) -> bytes | None:
    """The encoded form of one tensor's raw bytes, or None when it should be stored raw."""
    if len(data) < MIN_BYTES:
        return None
    blob = _compressor(level).compress(group_bytes(data, itemsize))
    return blob if len(blob) <= MIN_GAIN * len(data) else None


def decode(blob: bytes | memoryview, itemsize: int, out: memoryview) -> None:
    """Decode ``blob`` into ``out`` (exactly its decoded size; ValueError when it does not decode to it)."""
    try:
        planes = _decompressor().decompress(blob, max_output_size=len(out))
    except zstandard.ZstdError as exc:
        raise ValueError(f"does not decode ({exc})") from None
    if len(planes) != len(out):
        raise ValueError(f"decodes to {len(planes)} bytes, not {len(out)}")
    ungroup_bytes(planes, itemsize, out)
