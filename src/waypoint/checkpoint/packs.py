"""Content-addressed tensor packs in the safetensors file format.

A tensor's content id is ``sha256(b"<DTYPE><shape>" + raw bytes)``, e.g. the hash of ``b"F32[3, 4]"``
followed by the 48 data bytes. A pack holds the tensors one save added, each named by its id, so any
safetensors reader (``safe_open``) can open a pack. A pack's integrity is its size, the SHA-256 of its
header and the id of every tensor in it: together they cover every byte, in one hashing pass.

Writing streams tensor bytes straight from tensor memory (no serialised copy of the state), hashing the
next tensors on a worker thread while the current one is written.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from .durable import create_exclusive, fsync_dir, rename_noreplace, write_all

DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.uint16: "U16", torch.uint32: "U32", torch.uint64: "U64",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
    torch.complex64: "C64",
}
DTYPES: dict[str, torch.dtype] = {v: k for k, v in DTYPE_NAMES.items()}
PACK_FORMAT = "waypoint-pack-1"
_HASH_CHUNK = 64 << 20


class IntegrityError(Exception):
    """Stored bytes do not match their recorded hash, size or structure."""


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


def content_id(dtype: str, shape: Sequence[int], data: memoryview) -> str:
    """The content id of a tensor: SHA-256 of its dtype, shape and bytes."""
    h = hashlib.sha256(f"{dtype}{list(shape)}".encode())
    for start in range(0, len(data), _HASH_CHUNK):
        h.update(data[start:start + _HASH_CHUNK])
    return h.hexdigest()


def to_cpu_contiguous(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor itself when already contiguous on the CPU, else a contiguous CPU copy."""
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.to("cpu")
    return tensor if tensor.is_contiguous() else tensor.contiguous()


@dataclass(frozen=True)
class TensorRecord:
    """One tensor of a save: where it lives and what it is."""

    id: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class PackInfo:
    """A pack file written to disk."""

    name: str
    size: int
    header_sha256: str


def _header(entries: Iterable[tuple[str, str, Sequence[int], int, int]], pad_to: int = 0) -> bytes:
    """Safetensors header bytes (length prefix included), space-padded to 8-byte alignment."""
    header = {"__metadata__": {"format": PACK_FORMAT}}
    for cid, dtype, shape, begin, end in entries:
        header[cid] = {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}
    body = json.dumps(header, separators=(",", ":")).encode()
    length = max(len(body), pad_to)
    length += (-(8 + length)) % 8
    return struct.pack("<Q", length) + body.ljust(length, b" ")


def write_pack(packs_dir: Path, tensors: Sequence[torch.Tensor], is_known: Callable[[str], bool],
               pool: ThreadPoolExecutor) -> tuple[list[TensorRecord], PackInfo | None]:
    """Hash every tensor; write those not ``is_known`` into one new pack; return records and the pack.

    Hashing of later tensors overlaps with writing earlier ones. The pack is written to a temporary
    name, fsynced, then renamed to ``<header sha256>.safetensors`` and the directory fsynced.
    """
    converted: dict[int, torch.Tensor] = {}  # tied tensors arrive as one object under several keys
    cpu = [converted.setdefault(id(t), to_cpu_contiguous(t)) for t in tensors]
    metas = [(dtype_name(t.dtype), tuple(t.shape), t.numel() * t.element_size()) for t in cpu]
    by_object: dict[int, Future] = {}
    futures = [by_object.setdefault(id(t), pool.submit(content_id, m[0], m[1], raw_bytes(t))) if id(t) not in by_object
               else by_object[id(t)] for t, m in zip(cpu, metas)]
    # Reserve room for the largest possible header (all tensors new); the real one is padded to it.
    offsets, pos = [], 0
    for dtype, shape, nbytes in metas:
        offsets.append((pos, pos + nbytes))
        pos += nbytes
    reserved = _header(((f"{i:064d}", m[0], m[1], b, e) for i, (m, (b, e)) in enumerate(zip(metas, offsets))))
    tmp = packs_dir / f".tmp-{uuid.uuid4().hex}.safetensors"
    records: list[TensorRecord] = []
    entries: list[tuple[str, str, Sequence[int], int, int]] = []
    in_pack: set[str] = set()
    fd = create_exclusive(tmp)
    try:
        os.lseek(fd, len(reserved), os.SEEK_SET)
        pos = 0
        for tensor, (dtype, shape, nbytes), future in zip(cpu, metas, futures):
            cid = future.result()
            records.append(TensorRecord(cid, dtype, shape, nbytes))
            if cid in in_pack or is_known(cid):
                continue
            write_all(fd, raw_bytes(tensor))
            entries.append((cid, dtype, shape, pos, pos + nbytes))
            in_pack.add(cid)
            pos += nbytes
        if not entries:
            os.close(fd)
            fd = -1
            tmp.unlink()
            return records, None
        header = _header(entries, pad_to=len(reserved) - 8)
        assert len(header) == len(reserved)
        os.pwrite(fd, header, 0)
        os.fsync(fd)
        size = os.fstat(fd).st_size
        os.close(fd)
        fd = -1
        header_sha = hashlib.sha256(header).hexdigest()
        final = packs_dir / f"{header_sha}.safetensors"
        try:
            rename_noreplace(tmp, final)
        except FileExistsError:  # the identical pack exists already (same header => same tensors)
            tmp.unlink()
        fsync_dir(packs_dir)
        return records, PackInfo(final.name, size, header_sha)
    except BaseException:
        for f in futures:
            f.cancel()
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise


def read_header(path: Path) -> tuple[dict, int, str]:
    """Parse a pack's header: (entries by id, data start offset, header sha256)."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise IntegrityError(f"pack {path.name} is truncated")
        (length,) = struct.unpack("<Q", prefix)
        if length > 100 << 20:
            raise IntegrityError(f"pack {path.name} has an implausible header length")
        body = f.read(length)
    if len(body) != length:
        raise IntegrityError(f"pack {path.name} is truncated")
    header_sha = hashlib.sha256(prefix + body).hexdigest()
    try:
        entries = json.loads(body)
    except ValueError:
        raise IntegrityError(f"pack {path.name} has a damaged header") from None
    entries.pop("__metadata__", None)
    return entries, 8 + length, header_sha


def read_tensor(fd: int, entry: dict, data_start: int, record: TensorRecord, verify: bool) -> torch.Tensor:
    """Read one tensor from an open pack into fresh memory, checking its content id when asked."""
    begin, end = entry["data_offsets"]
    if end - begin != record.nbytes or entry["dtype"] != record.dtype or tuple(entry["shape"]) != record.shape:
        raise IntegrityError(f"pack entry {record.id[:12]} does not match the manifest")
    out = torch.empty(record.shape, dtype=DTYPES[record.dtype])
    view = raw_bytes(out)
    got = os.preadv(fd, [view], data_start + begin) if record.nbytes else 0
    while got < record.nbytes:  # short reads
        n = os.preadv(fd, [view[got:]], data_start + begin + got)
        if n == 0:
            raise IntegrityError(f"pack data for tensor {record.id[:12]} is truncated")
        got += n
    if verify and content_id(record.dtype, record.shape, view) != record.id:
        raise IntegrityError(f"tensor {record.id[:12]} does not match its SHA-256")
    return out
