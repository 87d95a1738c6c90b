"""Content-addressed tensor packs in the safetensors file format.

A tensor's content id is ``"b3:" + blake3(b"<DTYPE><shape>" + raw bytes)`` in hex, e.g. the BLAKE3 of
``b"F32[3, 4]"`` followed by the 48 data bytes (format 2); format 1 stores name tensors by the bare-hex SHA-256
of the same bytes, still readable. The prefix makes an id name its algorithm, so dedup never mixes the two. A
pack holds the tensors one save added, each named by its id (any safetensors reader opens it); its size, header
SHA-256 and tensor ids cover every byte. It is named by that SHA-256 and its writer's lease generation.

The header's ``__metadata__["checks"]`` (absent in older packs; other readers ignore it) records the XXH3-128 of
every raw tensor's bytes, which a verified restore compares instead of re-hashing: XXH3 runs at memory speed, and
the header is covered by the SHA-256 the manifest records (anyone able to forge a pack could rewrite the unkeyed
manifest too). ``verify`` still re-hashes every tensor with its content id's algorithm.

A save fingerprints each tensor with XXH3-128 on worker threads (``identify``) and reuses the content id of the
key's last record when dtype, shape and fingerprint match; otherwise BLAKE3 gives the id. Only tensors the store
lacks are written, streamed through a ring of aligned buffers into a new backend object; big packs use O_DIRECT
where the filesystem allows (several times faster than the page cache for a write plus fsync, and it does not
flood the cache), so their data starts at a 4 KiB-aligned offset (the header is padded with spaces).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from typing import Any

import blake3
import numpy as np
import torch
import xxhash

from . import compress
from .errors import IntegrityError
from .parity import encode as encode_parity
from .parity import key_of as parity_key

DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.uint16: "U16",
    torch.uint32: "U32",
    torch.uint64: "U64",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
    torch.complex64: "C64",
}
DTYPES: dict[str, torch.dtype] = {v: k for k, v in DTYPE_NAMES.items()}
PACK_FORMAT = "waypoint-pack-2"  # 1: SHA-256 ids only; 2: BLAKE3 ids ("b3:..."), SHA-256 ids of format 1 too
PACK_FORMAT_ENCODED = "waypoint-pack-3"  # 2 plus compressed tensors (compress.py), listed in __metadata__.encoded
CONTENT_HASH = "blake3"  # the algorithm of the ids new saves compute ("sha256": what format 1 wrote)
BLAKE3_PREFIX = "b3:"
_ID_WIDTH = 67  # the longest id ("b3:" + 64 hex digits), for reserving header room
_MT_MIN = 8 << 20  # tensors at least this big are hashed by BLAKE3 on several threads
HASH_NAMES = {"blake3": "BLAKE3", "sha256": "SHA-256"}
_READ_CHUNK = 256 << 10  # hashing works on pieces this big, each still in the CPU cache when hashed
_ALIGN = 4096  # O_DIRECT alignment of offsets, lengths and buffers (covers 512 B and 4 KiB sectors)
_DIRECT_MIN = 4 << 20  # packs at least this big are written with O_DIRECT where possible
_BUF_MAX = 16 << 20  # bytes per write of a big pack
_BUFS = 4  # buffers in the ring: what the device has queued while the copying thread waits for a core
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_MADV_POPULATE_WRITE = 23  # Linux >= 5.14: fault in a range of memory in one call
_libc = ctypes.CDLL(None, use_errno=True)
_madvise = getattr(_libc, "madvise", None)
if _madvise is not None:
    _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def dtype_name(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype (ValueError for unsupported ones)."""
    try:
        return DTYPE_NAMES[dtype]
    except KeyError:
        raise ValueError(f"tensors of dtype {dtype} cannot be stored") from None


def raw_bytes(tensor: torch.Tensor) -> memoryview:
    """A byte view of a contiguous CPU tensor's data (no copy)."""
    flat = tensor.reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


_local = threading.local()


def hash_algorithm(cid: str) -> str:
    """The algorithm a content id was computed with: ``blake3`` ("b3:" prefix) or ``sha256`` (bare hex)."""
    return "blake3" if cid.startswith(BLAKE3_PREFIX) else "sha256"


class ContentHasher:
    """Incremental content id of one tensor: feed its bytes with ``update``, then read ``id``."""

    def __init__(self, algorithm: str, dtype: str, shape: Sequence[int], nbytes: int) -> None:
        prefix = f"{dtype}{list(shape)}".encode()
        if algorithm == "blake3":
            self._h: Any = blake3.blake3(prefix, max_threads=blake3.blake3.AUTO if nbytes >= _MT_MIN else 1)
            self._prefix = BLAKE3_PREFIX
        elif algorithm == "sha256":
            self._h, self._prefix = hashlib.sha256(prefix), ""
        else:
            raise ValueError(f"unknown content hash '{algorithm}'")

    def update(self, data: memoryview | bytes) -> None:
        self._h.update(data)

    @property
    def id(self) -> str:
        return self._prefix + self._h.hexdigest()


def content_id(dtype: str, shape: Sequence[int], data: memoryview, algorithm: str | None = None) -> str:
    """The content id of a tensor: the hash (``CONTENT_HASH`` unless named) of its dtype, shape and bytes.
    SHA-256 hashes cache-sized copies of it (a third faster than straight from memory)."""
    algorithm = algorithm or CONTENT_HASH
    h = ContentHasher(algorithm, dtype, shape, len(data))
    if algorithm != "sha256" or len(data) <= _READ_CHUNK:
        h.update(data)
        return h.id
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = memoryview(bytearray(_READ_CHUNK))
    for start in range(0, len(data), _READ_CHUNK):
        n = min(_READ_CHUNK, len(data) - start)
        buf[:n] = data[start : start + n]
        h.update(buf[:n])
    return h.id


def to_cpu_contiguous(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor itself when already contiguous on the CPU, else a contiguous CPU copy."""
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.to("cpu")
    return tensor if tensor.is_contiguous() else tensor.contiguous()


@dataclass(frozen=True)
class TensorRecord:
    """One stored tensor: its content id, what it is, and (in a manifest's table) the pack that holds it."""

    id: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    pack: str | None = None
    check: str | None = None  # the XXH3-128 of its bytes (hex), where the writer knows it: its fingerprint

    @classmethod
    def from_json(cls, row: Any) -> TensorRecord:
        """A row of a manifest's tensor table."""
        return cls(row["id"], row["dtype"], tuple(row["shape"]), int(row["nbytes"]), row.get("pack"))

    def placed(self, pack: str | None) -> TensorRecord:
        """This record as a manifest's table holds it: in ``pack``, without its fingerprint."""
        return TensorRecord(self.id, self.dtype, self.shape, self.nbytes, pack)


@dataclass(frozen=True)
class PackInfo:
    """A pack written to the store (``parity``: the size of its parity object, 0 when it has none)."""

    name: str
    size: int
    header_sha256: str
    parity: int = 0

    def entry(self) -> dict[str, Any]:
        """What a manifest records of the pack."""
        return {"bytes": self.size, "header_sha256": self.header_sha256, **({"parity": self.parity} if self.parity else {})}


class FdReader:
    """The bytes of a new object's local file, read as a ``storage.Reader`` reads (for its parity)."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        while len(out) < length:
            chunk = os.pread(self.fd, min(length - len(out), 64 << 20), offset + len(out))
            if not chunk:
                break
            out += chunk
        return bytes(out)


def _header(
    entries: Iterable[tuple[str, str, Sequence[int], int, int]],
    pad_to: int = 0,
    align: int = 8,
    encoded: dict[str, list] | None = None,
    checks: dict[str, str] | None = None,
) -> bytes:
    """Safetensors header bytes (length prefix included), space-padded so the data starts ``align``-aligned.
    ``encoded`` maps the id of each compressed tensor to ``[codec, dtype, shape, stored id]``; ``checks``
    the id of each raw one to the XXH3-128 of its bytes (hex), what a verified restore checks."""
    entries = list(entries)
    legacy = all(hash_algorithm(e[0]) == "sha256" for e in entries) and not encoded and not checks  # as format 1 wrote it
    header: dict[str, Any] = {"__metadata__": {"format": "waypoint-pack-1" if legacy else PACK_FORMAT}}
    if encoded:
        header["__metadata__"] = {"format": PACK_FORMAT_ENCODED, "encoded": json.dumps(encoded, separators=(",", ":"))}
    if checks:
        header["__metadata__"]["checks"] = json.dumps(checks, separators=(",", ":"))
    for cid, dtype, shape, begin, end in entries:
        header[cid] = {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}
    body = json.dumps(header, separators=(",", ":")).encode()
    length = max(len(body), pad_to)
    length += (-(8 + length)) % align
    return struct.pack("<Q", length) + body.ljust(length, b" ")


def _try_direct(fd: int, on: bool) -> bool:
    """Switch O_DIRECT on or off for ``fd``; False where the filesystem (or platform) refuses it."""
    if not _O_DIRECT:
        return False
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, (flags | _O_DIRECT) if on else (flags & ~_O_DIRECT))
    except OSError:
        return False
    return on


class _PackSink:
    """Sequential writer of a pack's bytes from ``start`` on, through a ring of page-aligned buffers.

    An I/O thread writes filled buffers in order while the caller copies into the next. With ``direct`` the writes
    bypass the page cache (an EINVAL switches the rest to ordinary writes); ``finish`` truncates the padding.
    """

    def __init__(self, fd: int, start: int, total: int, direct: bool) -> None:
        self.fd, self.pos, self.direct = fd, start, direct
        size = min(_BUF_MAX, max(_ALIGN, -(-total // (2 * _BUFS) // _ALIGN) * _ALIGN))
        self.bufs = [mmap.mmap(-1, size) for _ in range(_BUFS)]
        self.arrays = [np.frombuffer(b, dtype=np.uint8) for b in self.bufs]
        self.pending: list[Future | None] = [None] * _BUFS
        self.cur, self.fill = 0, 0
        self.io = ThreadPoolExecutor(1, thread_name_prefix="waypoint-pack-io")

    def write(self, data: memoryview | bytes) -> None:
        src, done = np.frombuffer(data, dtype=np.uint8), 0
        while done < len(src):
            buf = self.arrays[self.cur]
            n = min(len(buf) - self.fill, len(src) - done)
            buf[self.fill : self.fill + n] = src[done : done + n]
            self.fill, done = self.fill + n, done + n
            if self.fill == len(buf):
                self._flush()

    def _flush(self) -> None:
        n = self.fill
        padded = -(-n // _ALIGN) * _ALIGN if self.direct else n  # only O_DIRECT needs aligned lengths
        view = memoryview(self.bufs[self.cur])[:padded]
        self.pending[self.cur] = self.io.submit(self.pwrite, view, self.pos)
        self.pos += n
        self.cur, self.fill = (self.cur + 1) % _BUFS, 0
        self._wait(self.cur)  # the next buffer must be written out before it is refilled

    def _wait(self, i: int) -> None:
        fut, self.pending[i] = self.pending[i], None
        if fut is not None:
            fut.result()

    def pwrite(self, view: memoryview, offset: int) -> None:
        """Write all of ``view`` at ``offset`` (loops over short writes)."""
        while view:
            try:
                n = os.pwrite(self.fd, view, offset)
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self.direct:
                    raise
                self.direct = _try_direct(self.fd, False)
                continue
            view, offset = view[n:], offset + n

    def finish(self) -> int:
        """Write what is buffered, wait for every write, truncate to the exact end; returns the size."""
        if self.fill:
            self._flush()
        for i in range(_BUFS):
            self._wait(i)
        os.ftruncate(self.fd, self.pos)
        return self.pos

    def close(self) -> None:
        """Stop the I/O thread (after a failure: once the write in flight returned)."""
        self.io.shutdown(wait=True)
        self.pending = [None] * _BUFS


@dataclass
class _Plan:
    """What one pack write is about: the tensors (CPU, contiguous), their (dtype, shape, nbytes), a Future of each one's
    (content id, XXH3-128 or None), whether that came from the caller (``given``: the bytes are checked when written),
    the raw data offsets if all were new, and the compressed form of each new one (Futures, or None)."""

    cpu: list[torch.Tensor]
    metas: list[tuple[str, tuple[int, ...], int]]
    ids: list[Future]
    given: list[bool]
    offsets: list[tuple[int, int]]
    encodings: list[Future | None]
    encoder: ThreadPoolExecutor | None


def _plan(
    tensors: Sequence[torch.Tensor],
    is_known: Callable[[str], bool],
    pool: ThreadPoolExecutor,
    ids: Sequence[str | TensorRecord | None] | None,
    priors: Sequence[TensorRecord | None] | None,
    compression: str,
) -> _Plan:
    """Start identifying (and compressing) every tensor on the pools; tied tensors (one object) are hashed once."""
    converted: dict[int, torch.Tensor] = {}  # tied tensors arrive as one object under several keys
    cpu = [converted.setdefault(id(t), to_cpu_contiguous(t)) for t in tensors]
    metas = [(dtype_name(t.dtype), tuple(t.shape), t.numel() * t.element_size()) for t in cpu]
    by_object: dict[int, tuple[Future, bool]] = {}
    futures, given = [], []
    for i, (t, m) in enumerate(zip(cpu, metas)):
        if id(t) not in by_object:
            cid = ids[i] if ids is not None else None
            if cid is None:
                fut = pool.submit(identify, raw_bytes(t), m[0], m[1], priors[i] if priors is not None else None)
            else:
                fut = Future()
                fut.set_result((cid, None) if isinstance(cid, str) else (cid.id, cid.check))
            by_object[id(t)] = (fut, cid is not None)
        futures.append(by_object[id(t)][0])
        given.append(by_object[id(t)][1])
    offsets, pos = [], 0
    for _dtype, _shape, nbytes in metas:
        offsets.append((pos, pos + nbytes))
        pos += nbytes
    encoder: ThreadPoolExecutor | None = None
    encodings: list[Future | None] = [None] * len(cpu)
    if compress.check_choice(compression) != "none":
        encoder = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="waypoint-encode")
        encodings = [encoder.submit(_encode_new, t, fut, is_known) for t, fut in zip(cpu, futures)]
    return _Plan(cpu, metas, futures, given, offsets, encodings, encoder)


def _reserved_header(plan: _Plan, direct: bool) -> bytes:
    """The largest header this pack could need (all tensors new; every one encoded when compressing): the data is
    written after it, and the real header is padded to its length."""
    worst: dict[str, list] = {}
    if plan.encoder is not None:
        worst = {
            f"{i:0{_ID_WIDTH}d}": [compress.CODEC, "F8_E4M3", list(m[1]), "b3:" + "0" * 64] for i, m in enumerate(plan.metas)
        }
    worst_checks = {f"{i:0{_ID_WIDTH}d}": "0" * 32 for i in range(len(plan.metas))}
    return _header(
        (
            (f"{i:0{_ID_WIDTH}d}", *(m[:2] if plan.encoder is None else ("F8_E4M3", _longer(m[1], [10**15]))), b, e)
            for i, (m, (b, e)) in enumerate(zip(plan.metas, plan.offsets))
        ),
        align=_ALIGN if direct else 8,
        encoded=worst,
        checks=worst_checks,
    )


@dataclass
class _Stream:
    """What streaming the new tensors into a pack produced."""

    records: list[TensorRecord]
    entries: list[tuple[str, str, Sequence[int], int, int]]
    encoded: dict[str, list]
    checks: dict[str, Any]  # id -> its XXH3-128, or a Future of it (the bytes of a tensor whose id was given)
    expected: dict[str, str]  # id -> the XXH3-128 the caller gave with it: the bytes written must match


def _stream(plan: _Plan, sink: _PackSink, is_known: Callable[[str], bool], pool: ThreadPoolExecutor) -> _Stream:
    """Write every tensor the store lacks, in order, through ``sink`` (hashing of later ones overlaps)."""
    out = _Stream([], [], {}, {}, {})
    pos = 0
    for i, (tensor, (dtype, shape, nbytes), future) in enumerate(zip(plan.cpu, plan.metas, plan.ids)):
        cid, check = future.result()
        out.records.append(TensorRecord(cid, dtype, shape, nbytes, check=check))
        if cid in out.checks or is_known(cid):
            continue
        blob = plan.encodings[i].result() if plan.encodings[i] is not None else None
        if blob is None:
            data = raw_bytes(tensor)
            if plan.given[i]:  # hashed on another thread while this one copies
                out.checks[cid] = pool.submit(fast_check, data)
                if check is not None:
                    out.expected[cid] = check
            else:
                out.checks[cid] = check
            sink.write(data)
            out.entries.append((cid, dtype, shape, pos, pos + nbytes))
            pos += nbytes
        else:
            out.checks[cid] = None
            sink.write(memoryview(blob))
            out.entries.append((cid, "U8", [len(blob)], pos, pos + len(blob)))
            out.encoded[cid] = [compress.CODEC, dtype, list(shape), compress.stored_id(blob)]
            pos += len(blob)
    return out


def _finished_checks(stream: _Stream) -> dict[str, str]:
    """The XXH3-128 of every raw tensor written; IntegrityError when one whose check the caller gave was changed
    (by the caller, while it was being saved) so that its bytes no longer match its id."""
    checks = {cid: c.result() if isinstance(c, Future) else c for cid, c in stream.checks.items()}
    for cid, want in stream.expected.items():
        if checks[cid] != want:
            raise IntegrityError(f"tensor {cid[:12]} changed while it was being saved; nothing was committed")
    return {cid: c for cid, c in checks.items() if c is not None}


def pack_name(header_sha256: str, generation: int | None) -> str:
    """A pack's file name: the SHA-256 of its header, and the lease generation of the writer that made it (two
    writers never write one name, so a writer that lost its lease can never remove or replace the new holder's)."""
    return f"{header_sha256}.safetensors" if generation is None else f"{header_sha256}-g{generation}.safetensors"


def write_pack(
    backend: Any,
    tensors: Sequence[torch.Tensor],
    is_known: Callable[[str], bool],
    pool: ThreadPoolExecutor,
    ids: Sequence[str | TensorRecord | None] | None = None,
    compression: str = "none",
    generation: int | None = None,
    parity: bool = False,
    priors: Sequence[TensorRecord | None] | None = None,
) -> tuple[list[TensorRecord], PackInfo | None]:
    """Identify every tensor; write those not ``is_known`` into one new pack on ``backend``; return records and the pack.

    A content id comes from ``priors`` (the key's last record) when the XXH3-128 matches, else is computed on
    ``pool``. ``ids`` may prove an id (a string: bytes just verified) or give a record whose XXH3-128 the bytes
    written are checked against (IntegrityError if they changed). The pack is committed under
    ``packs/<pack_name>``; ``compression`` and ``parity`` as in ``compress`` and ``parity``.
    """
    plan = _plan(tensors, is_known, pool, ids, priors, compression)
    obj, sink, stream = None, None, None
    try:
        obj = backend.new_object("packs/")
        total = plan.offsets[-1][1] if plan.offsets else 0
        direct = total >= _DIRECT_MIN and backend.caps.direct_io and _try_direct(obj.fd, True)
        reserved = _reserved_header(plan, direct)
        sink = _PackSink(obj.fd, len(reserved), total, direct)
        stream = _stream(plan, sink, is_known, pool)
        if plan.encoder is not None:
            plan.encoder.shutdown(wait=True)
        if not stream.entries:
            sink.close()
            obj.abort()
            return stream.records, None
        size = sink.finish()
        checks = _finished_checks(stream)
        header = _header(stream.entries, len(reserved) - 8, _ALIGN if direct else 8, stream.encoded, checks)
        assert len(header) == len(reserved)
        _write_header(sink, header)
        sink.close()
        return stream.records, _publish(backend, obj, size, hashlib.sha256(header).hexdigest(), generation, parity)
    except BaseException:
        _cancel(plan, stream)
        if sink is not None:
            sink.close()
        if obj is not None:
            obj.abort()
        raise


def _publish(backend: Any, obj: Any, size: int, header_sha: str, generation: int | None, parity: bool) -> PackInfo:
    """Commit the finished pack (``size`` bytes, complete in ``obj.fd``, nothing of it published yet) under its name;
    with ``parity``, its parity object is computed from those bytes and stored beside it after the commit."""
    name = pack_name(header_sha, generation)
    protection = b""
    if parity:
        _try_direct(obj.fd, False)  # read back through the page cache (O_DIRECT wants aligned buffers)
        protection = encode_parity(FdReader(obj.fd, size))
    obj.commit(f"packs/{name}")
    if protection:
        backend.put(parity_key(name), protection)
    return PackInfo(name, size, header_sha, len(protection))


def _write_header(sink: _PackSink, header: bytes) -> None:
    """Write the header at offset 0 (with O_DIRECT, as a whole number of aligned blocks)."""
    if sink.direct:
        block = mmap.mmap(-1, len(header))
        block.write(header)
        sink.pwrite(memoryview(block), 0)
    else:
        os.pwrite(sink.fd, header, 0)


def _cancel(plan: _Plan, stream: _Stream | None) -> None:
    """After a failure: cancel what has not started and wait for what runs (it may read the caller's tensors)."""
    for f in [*plan.ids, *(e for e in plan.encodings if e is not None)]:
        f.cancel()
    futures_wait(plan.ids)
    if stream is not None:
        futures_wait([f for f in stream.checks.values() if isinstance(f, Future)])
    if plan.encoder is not None:
        plan.encoder.shutdown(wait=True)


def _longer(a: Sequence[int], b: Sequence[int]) -> Sequence[int]:
    """Whichever shape takes more characters in a header."""
    return a if len(json.dumps(list(a), separators=(",", ":"))) >= len(json.dumps(list(b), separators=(",", ":"))) else b


def _encode_new(tensor: torch.Tensor, ident: Future, is_known: Callable[[str], bool]) -> bytes | None:
    """The compressed form of a tensor this save writes (None: store it raw, or it is known already)."""
    if is_known(ident.result()[0]):
        return None
    return compress.encode(raw_bytes(tensor), tensor.element_size())


def parse_entries(header: Any, pack_name: str) -> dict[str, dict]:
    """A pack header's tensor entries by id, with each compressed tensor's entry rewritten to what it decodes
    to: ``{"dtype", "shape", "data_offsets" (of the stored bytes), "encoding": {"codec", "stored", "nbytes"}}``.
    IntegrityError when the header is not such a mapping or its list of compressed tensors is malformed."""
    if not isinstance(header, dict):
        raise IntegrityError(f"pack {pack_name} has a damaged header")
    meta = header.pop("__metadata__", None)
    meta = meta if isinstance(meta, dict) else {}
    if meta.get("checks") is not None:
        try:
            for cid, check in json.loads(meta["checks"]).items():
                if not (isinstance(check, str) and len(check) == 32 and isinstance(header[cid], dict)):
                    raise ValueError(cid)
                header[cid]["check"] = check
        except (ValueError, TypeError, KeyError, AttributeError):
            raise IntegrityError(f"pack {pack_name} has a damaged list of checksums") from None
    encoded = meta.get("encoded")
    if encoded is None:
        return header
    try:
        table = json.loads(encoded)
        for cid, (codec, dtype, shape, sid) in table.items():
            entry = header[cid]
            if codec != compress.CODEC or entry.get("dtype") != "U8" or dtype not in DTYPES or not isinstance(sid, str):
                raise ValueError(cid)
            if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
                raise ValueError(cid)
            numel = 1
            for n in shape:
                numel *= n
            nbytes = numel * torch.empty((), dtype=DTYPES[dtype]).element_size()
            header[cid] = {
                "dtype": dtype,
                "shape": shape,
                "data_offsets": entry["data_offsets"],
                "encoding": {"codec": codec, "stored": sid, "nbytes": nbytes},
            }
    except (ValueError, TypeError, KeyError, AttributeError):
        raise IntegrityError(f"pack {pack_name} has a damaged list of compressed tensors") from None
    return header


def fingerprint_matches(prior: TensorRecord | None, dtype: str, shape: Sequence[int], check: str) -> bool:
    """Whether ``prior`` (what a key held at the last save) has this dtype, shape and XXH3-128, and an id of the
    algorithm new saves compute: then the bytes are the ones it names (XXH3-128 is not cryptographic, but an
    accidental collision of 128 bits is beyond reach)."""
    return (
        prior is not None
        and prior.check == check
        and (prior.dtype, tuple(prior.shape)) == (dtype, tuple(shape))
        and hash_algorithm(prior.id) == CONTENT_HASH
    )


def identify(data: memoryview, dtype: str, shape: Sequence[int], prior: TensorRecord | None) -> tuple[str, str]:
    """(content id, XXH3-128) of a tensor's bytes: the id of ``prior`` when its fingerprint matches (no BLAKE3)."""
    check = fast_check(data)
    if fingerprint_matches(prior, dtype, shape, check):
        return prior.id, check  # type: ignore[union-attr]
    return content_id(dtype, shape, data), check


#: bytes XXH3 reads per call: xxhash holds the GIL for a call, so a big tensor is fed in pieces and the writer,
#: the submitting thread and the other hashers get their turn in between (the digest is the one-shot digest)
_CHECK_PIECE = 1 << 20


def fast_check(data: memoryview | bytes) -> str:
    """The XXH3-128 of some bytes (hex): the checksum a verified restore compares (~10x faster than BLAKE3)."""
    view = memoryview(data).cast("B")
    if len(view) <= _CHECK_PIECE:
        return xxhash.xxh3_128_hexdigest(view)
    state = xxhash.xxh3_128()
    for start in range(0, len(view), _CHECK_PIECE):
        state.update(view[start : start + _CHECK_PIECE])
    return state.hexdigest()


def entry_nbytes(entry: dict) -> int:
    """The bytes a pack entry's tensor holds (decoded, for a compressed one)."""
    enc = entry.get("encoding")
    return enc["nbytes"] if enc else entry["data_offsets"][1] - entry["data_offsets"][0]


def decode_stored(blob: bytes | memoryview, entry: dict, record: TensorRecord, out: torch.Tensor, verify: bool) -> None:
    """Decode a compressed tensor's stored bytes into ``out``; with ``verify``, check the stored bytes against
    their id first and the decoded ones against the content id after (IntegrityError naming which failed)."""
    if verify and compress.stored_id(blob) != entry["encoding"]["stored"]:
        raise IntegrityError(f"the stored (compressed) bytes of tensor {record.id[:12]} do not match their BLAKE3")
    try:
        compress.decode(blob, out.element_size(), raw_bytes(out))
    except ValueError as exc:
        raise IntegrityError(f"the compressed tensor {record.id[:12]} {exc}") from None
    if verify:
        algorithm = hash_algorithm(record.id)
        if content_id(record.dtype, record.shape, raw_bytes(out), algorithm) != record.id:
            raise IntegrityError(f"tensor {record.id[:12]} does not match its {HASH_NAMES[algorithm]}")


def prefault(tensor: torch.Tensor, nbytes: int) -> None:
    """Fault in a fresh tensor's pages in one call (cheaper than taking one page fault per 4 KiB)."""
    if _madvise is None or nbytes < 1 << 20:
        return
    begin = -(-tensor.data_ptr() // mmap.PAGESIZE) * mmap.PAGESIZE
    end = (tensor.data_ptr() + nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if end > begin:
        _madvise(begin, end - begin, _MADV_POPULATE_WRITE)  # best effort: older kernels answer EINVAL


def _pread_into(reader: Any, view: memoryview, offset: int, record: TensorRecord) -> None:
    if reader.readinto(view, offset) != len(view):
        raise IntegrityError(f"pack data for tensor {record.id[:12]} is truncated")


def read_tensor(reader: Any, entry: dict, data_start: int, record: TensorRecord, verify: bool) -> torch.Tensor:
    """Read one tensor from an open pack (a ``storage.Reader``) into fresh memory, checking it when asked."""
    begin, end = entry["data_offsets"]
    if entry_nbytes(entry) != record.nbytes or entry["dtype"] != record.dtype or tuple(entry["shape"]) != record.shape:
        raise IntegrityError(f"pack entry {record.id[:12]} does not match the manifest")
    out = torch.empty(record.shape, dtype=DTYPES[record.dtype])
    prefault(out, record.nbytes)
    view = raw_bytes(out)
    if "encoding" in entry:
        blob = bytearray(end - begin)
        _pread_into(reader, memoryview(blob), data_start + begin, record)
        decode_stored(blob, entry, record, out, verify)
        return out
    if not verify or "check" in entry:
        _pread_into(reader, view, data_start + begin, record)
        if verify and fast_check(view) != entry["check"]:
            raise IntegrityError(f"tensor {record.id[:12]} does not match its checksum (XXH3-128)")
        return out
    algorithm = hash_algorithm(record.id)
    h = ContentHasher(algorithm, record.dtype, record.shape, 0)  # one thread: the pieces are small
    for start in range(0, record.nbytes, _READ_CHUNK):
        piece = view[start : start + _READ_CHUNK]
        _pread_into(reader, piece, data_start + begin + start, record)
        h.update(piece)
    if h.id != record.id:
        raise IntegrityError(f"tensor {record.id[:12]} does not match its {HASH_NAMES[algorithm]}")
    return out


def mapped_tensor(mm: mmap.mmap, entry: dict, data_start: int, record: TensorRecord, verify: bool) -> torch.Tensor:
    """A tensor backed by a pack's mapping (no copy; the pages are read when first touched), its content id
    checked against the mapped bytes when asked. A tensor whose offset is not a multiple of its element size
    (possible after odd-sized tensors in one pack) is copied out instead."""
    begin, end = entry["data_offsets"]
    if entry_nbytes(entry) != record.nbytes or entry["dtype"] != record.dtype or tuple(entry["shape"]) != record.shape:
        raise IntegrityError(f"pack entry {record.id[:12]} does not match the manifest")
    offset = data_start + begin
    if data_start + end > len(mm):
        raise IntegrityError(f"pack data for tensor {record.id[:12]} is truncated")
    dtype = DTYPES[record.dtype]
    if "encoding" in entry:  # compressed: decoded into fresh memory
        out = torch.empty(record.shape, dtype=dtype)
        decode_stored(memoryview(mm)[offset : data_start + end], entry, record, out, verify)
        return out
    if verify and "check" in entry:
        if fast_check(memoryview(mm)[offset : offset + record.nbytes]) != entry["check"]:
            raise IntegrityError(f"tensor {record.id[:12]} does not match its checksum (XXH3-128)")
    elif verify:
        algorithm = hash_algorithm(record.id)
        h = ContentHasher(algorithm, record.dtype, record.shape, record.nbytes)
        h.update(memoryview(mm)[offset : offset + record.nbytes])
        if h.id != record.id:
            raise IntegrityError(f"tensor {record.id[:12]} does not match its {HASH_NAMES[algorithm]}")
    if record.nbytes == 0:
        return torch.empty(record.shape, dtype=dtype)
    if offset % torch.empty((), dtype=dtype).element_size():
        out = torch.empty(record.shape, dtype=dtype)
        raw_bytes(out)[:] = memoryview(mm)[offset : offset + record.nbytes]
        return out
    numel = record.nbytes // torch.empty((), dtype=dtype).element_size()
    return torch.frombuffer(mm, dtype=dtype, count=numel, offset=offset).view(record.shape)
