"""Parity for packs: a sibling object ``packs/<pack>.parity`` from which a damaged pack is rebuilt.

Layout. A pack of S bytes is cut into K = 16 stripes of L = ceil(S / 16) bytes (the last padded with zeros),
and each stripe into rows of C bytes (C = min(1 MiB, L); L is rounded up to whole rows). Row r of all 16 stripes
is one Reed-Solomon code word with M = 2 parity chunks (ISA-L's Vandermonde code through pyeclib, the erasure-coding
library of OpenStack Swift: BSD-licensed, shipped in its wheel). Any 2 damaged chunks of a row are rebuilt, so:

- any damage within one contiguous region of up to S/16 bytes (it touches at most 2 stripes), anywhere;
- a truncated tail of up to S/16 bytes;
- any damage confined to 2 stripes.

Which chunks are damaged is known from their XXH3-128 checksums, recorded in the parity object with the
checksums of its own parity chunks; the object's JSON header is covered by a SHA-256 stored before it, so a
damaged parity object is recognised as such (and rewritten from an intact pack). The repaired pack is checked
as any pack is (size, header SHA-256, every tensor's checksum) before it replaces the damaged one atomically.

Parity costs about 1 CPU-second per GiB to compute (one read of the pack and the encoding); ``checkpoint.parity``
says whether saves write it (see docs/checkpoints.md for the measured cost).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import xxhash

from .errors import IntegrityError

K, M = 16, 2
CHUNK = 1 << 20
FORMAT = "waypoint-parity-1"
CODEC = "isa_l_rs_vand"
SUFFIX = ".parity"


def key_of(pack: str) -> str:
    return f"packs/{pack}{SUFFIX}"


@functools.lru_cache(maxsize=1)
def _driver() -> Any:
    from pyeclib.ec_iface import ECDriver

    return ECDriver(k=K, m=M, ec_type=CODEC)


@functools.lru_cache(maxsize=8)
def _headers(chunk: int) -> list[bytes]:
    """The 80-byte fragment headers of a code word of ``chunk``-byte chunks (they depend on sizes, not data)."""
    frags = _driver().encode(bytes(chunk * K))
    return [f[: len(f) - chunk] for f in frags]


@dataclass(frozen=True)
class Layout:
    """Where a pack's chunks lie: ``size`` bytes in K stripes of ``rows`` chunks of ``chunk`` bytes."""

    size: int
    chunk: int
    rows: int

    @classmethod
    def of(cls, size: int) -> Layout:
        stripe = max(1, math.ceil(size / K))
        chunk = min(CHUNK, stripe)
        return cls(size, chunk, math.ceil(stripe / chunk))

    @property
    def stripe(self) -> int:
        return self.chunk * self.rows

    def span(self, stripe: int, row: int) -> tuple[int, int]:
        """Byte range [begin, end) of a chunk in the pack (empty past its end)."""
        begin = stripe * self.stripe + row * self.chunk
        return min(begin, self.size), min(begin + self.chunk, self.size)


def _check(data: bytes | memoryview) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def _read_chunk(reader: Any, layout: Layout, stripe: int, row: int) -> bytes:
    """A chunk as the code word holds it: its bytes in the pack, zero-padded to ``chunk`` (short when truncated)."""
    begin, end = layout.span(stripe, row)
    data = reader.read(begin, end - begin) if end > begin else b""
    expected = end - begin
    return data + bytes(layout.chunk - len(data)) if len(data) == expected else data


def encode(reader: Any) -> bytes:
    """The parity object of the pack ``reader`` reads (read once, row by row)."""
    layout = Layout.of(reader.size)
    checks: list[list[str]] = [[""] * layout.rows for _ in range(K)]
    parity: list[bytes] = []
    driver = _driver()
    for row in range(layout.rows):
        chunks = [_read_chunk(reader, layout, s, row) for s in range(K)]
        for s, chunk in enumerate(chunks):
            checks[s][row] = _check(chunk)
        frags = driver.encode(b"".join(chunks))
        parity += [f[len(f) - layout.chunk :] for f in frags[K:]]
    head = {
        "format": FORMAT,
        "codec": CODEC,
        "k": K,
        "m": M,
        "size": layout.size,
        "chunk": layout.chunk,
        "rows": layout.rows,
        "checks": checks,
        "parity_checks": [_check(p) for p in parity],
    }
    body = json.dumps(head, separators=(",", ":")).encode()
    return struct.pack("<Q", len(body)) + hashlib.sha256(body).digest() + body + b"".join(parity)


@dataclass
class Parity:
    """A parsed parity object (IntegrityError when it is damaged or not one)."""

    layout: Layout
    checks: list[list[str]]
    parity: list[bytes]  # M chunks per row, row-major

    @classmethod
    def parse(cls, raw: bytes, pack: str) -> Parity:
        try:
            (n,) = struct.unpack("<Q", raw[:8])
            digest, body = raw[8:40], raw[40 : 40 + n]
            if hashlib.sha256(body).digest() != digest:
                raise ValueError("header checksum")
            head = json.loads(body)
            if head["format"] != FORMAT or head["codec"] != CODEC or (head["k"], head["m"]) != (K, M):
                raise ValueError("format")
            layout = Layout(int(head["size"]), int(head["chunk"]), int(head["rows"]))
            payload = raw[40 + n :]
            parity = [payload[i * layout.chunk : (i + 1) * layout.chunk] for i in range(layout.rows * M)]
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            raise IntegrityError(f"the parity of pack {pack} is damaged ({exc})") from None
        if [_check(p) for p in parity] != head["parity_checks"]:
            raise IntegrityError(f"the parity of pack {pack} is damaged (a parity chunk fails its checksum)")
        return cls(layout, head["checks"], parity)


def damaged_chunks(reader: Any, par: Parity) -> dict[int, list[int]]:
    """Per row, the stripes whose chunk fails its checksum (or is cut short)."""
    bad: dict[int, list[int]] = {}
    for row in range(par.layout.rows):
        for s in range(K):
            chunk = _read_chunk(reader, par.layout, s, row)
            if len(chunk) != par.layout.chunk or _check(chunk) != par.checks[s][row]:
                bad.setdefault(row, []).append(s)
    return bad


def rebuild(reader: Any, par: Parity, pack: str) -> dict[tuple[int, int], bytes]:
    """The damaged chunks of a pack, rebuilt: {(stripe, row): bytes}. IntegrityError naming why when a row has more
    damaged chunks than the parity can rebuild."""
    bad = damaged_chunks(reader, par)
    driver, headers, out = _driver(), _headers(par.layout.chunk), {}
    for row, stripes in bad.items():
        if len(stripes) > M:
            raise IntegrityError(
                f"pack {pack} has {len(stripes)} damaged stripes in one row and its parity rebuilds at most {M}; "
                "restore it from a backup"
            )
        good = [headers[s] + _read_chunk(reader, par.layout, s, row) for s in range(K) if s not in stripes]
        good += [headers[K + i] + par.parity[row * M + i] for i in range(M)]
        for s, frag in zip(stripes, driver.reconstruct(good, stripes)):
            out[(s, row)] = bytes(frag[len(frag) - par.layout.chunk :])
    return out


def repaired_bytes(reader: Any, par: Parity, fixed: dict[tuple[int, int], bytes], begin: int, end: int) -> bytes:
    """Bytes [begin, end) of the repaired pack (the intact bytes from ``reader``, rebuilt chunks where damaged)."""
    lay = par.layout
    out = bytearray()
    pos = begin
    while pos < end:
        stripe, offset = divmod(pos, lay.stripe)
        row, inner = divmod(offset, lay.chunk)
        take = min(end - pos, lay.chunk - inner)
        if (stripe, row) in fixed:
            out += fixed[(stripe, row)][inner : inner + take]
        else:
            out += reader.read(pos, take)
        pos += take
    return bytes(out)
