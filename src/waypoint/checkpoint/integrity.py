"""Reading a checkpoint's files as the store trusts them: regular files only (a symlink, a directory or a
FIFO in their place is damage, never followed or waited on), each checked against what the manifest
recorded (size, SHA-256 of state.json and of every pack header, content id of every tensor, re-hashed
with the algorithm the id and its manifest name: BLAKE3 for format 2, SHA-256 for format 1).

Every problem is an ``IntegrityError`` whose message names the file, so ``verify`` can report it and
``restore("latest")`` can skip the checkpoint with a warning.
"""

from __future__ import annotations

import errno
import hashlib
import json
import struct
from collections.abc import Mapping
from typing import Any

import torch

from . import manifest as mf
from .packs import (
    DTYPES,
    HASH_NAMES,
    ContentHasher,
    IntegrityError,
    TensorRecord,
    decode_stored,
    entry_nbytes,
    hash_algorithm,
    parse_entries,
)
from .storage import Backend, Reader

_VERIFY_CHUNK = 16 << 20
_FIRST_READ = 64 << 10
_MAX_HEADER = 100 << 20


def read_state(backend: Backend, name: str, manifest: Mapping[str, Any]) -> bytes:
    """The bytes of checkpoint ``name``'s state.json, checked against its manifest."""
    try:
        data = backend.read(f"{name}/{mf.STATE_JSON}")
    except FileNotFoundError:
        raise IntegrityError(f"{name}/{mf.STATE_JSON} is missing") from None
    except OSError as exc:
        raise IntegrityError(f"{name}/{mf.STATE_JSON} cannot be read ({exc.strerror or exc})") from None
    if hashlib.sha256(data).hexdigest() != manifest["files"][mf.STATE_JSON]["sha256"]:
        raise IntegrityError(f"{name}/{mf.STATE_JSON} does not match its SHA-256")
    return data


def open_pack(backend: Backend, pack_name: str, manifest: Mapping[str, Any]) -> tuple[dict, int, Reader]:
    """Open a pack, checking its size and header SHA-256 against the manifest: (entries by tensor id, data start
    offset, reader); the caller closes the reader."""
    expected = manifest["packs"].get(pack_name)
    try:
        reader = backend.open(f"packs/{pack_name}")
    except FileNotFoundError:
        raise IntegrityError(f"pack {pack_name} is missing") from None
    except OSError as exc:
        what = {errno.ELOOP: "is a symbolic link", errno.EINVAL: "is not a regular file"}.get(
            exc.errno, f"cannot be read ({exc.strerror or exc})"
        )
        raise IntegrityError(f"pack {pack_name} {what}") from None
    try:
        entries, start = check_header(reader, pack_name, expected)
    except BaseException as exc:
        reader.close()
        if isinstance(exc, OSError):
            raise IntegrityError(f"pack {pack_name} cannot be read ({exc.strerror or exc})") from None
        raise
    return entries, start, reader


def check_header(reader: Any, pack_name: str, expected: Mapping[str, Any] | None) -> tuple[dict, int]:
    """A pack's tensor entries and data start, its size and header SHA-256 checked against what the manifest
    recorded (``expected``); IntegrityError otherwise."""
    header = _read_header(reader, pack_name)
    if expected is None or reader.size != expected["bytes"] or hashlib.sha256(header).hexdigest() != expected["header_sha256"]:
        raise IntegrityError(f"pack {pack_name} does not match its recorded size and header SHA-256")
    try:
        return parse_entries(json.loads(header[8:]), pack_name), len(header)
    except ValueError:
        raise IntegrityError(f"pack {pack_name} has a damaged header") from None


def check_pack(reader: Any, pack_name: str, expected: Mapping[str, Any]) -> str | None:
    """The first problem of a whole pack read through ``reader`` (size, header, every tensor), or None."""
    try:
        entries, start = check_header(reader, pack_name, expected)
    except IntegrityError as exc:
        return str(exc)
    for cid, entry in entries.items():
        rec = TensorRecord(cid, entry["dtype"], tuple(entry["shape"]), entry_nbytes(entry))
        problem = verify_tensor(reader, entries, start, rec, pack_name)
        if problem:
            return problem
    return None


def _read_header(reader: Any, pack_name: str) -> bytes:
    """The header bytes (length prefix included) of an open pack, read from the very object that was opened."""
    prefix = reader.read(0, min(reader.size, _FIRST_READ))  # one request holds most headers whole
    if len(prefix) < 8:
        raise IntegrityError(f"pack {pack_name} is truncated")
    (length,) = struct.unpack("<Q", prefix[:8])
    if length > _MAX_HEADER:
        raise IntegrityError(f"pack {pack_name} has an implausible header length")
    if 8 + length > len(prefix):
        prefix += reader.read(len(prefix), 8 + length - len(prefix))
    if len(prefix) < 8 + length:
        raise IntegrityError(f"pack {pack_name} is truncated")
    return prefix[: 8 + length]


def entry_of(entries: Mapping[str, dict], rec: TensorRecord, pack_name: str) -> dict:
    """A tensor's header entry in its pack (IntegrityError when the pack lacks it)."""
    entry = entries.get(rec.id)
    if entry is None:
        raise IntegrityError(f"pack {pack_name} lacks tensor {rec.id[:12]}")
    return entry


def verify_tensor(reader: Any, entries: Mapping[str, dict], start: int, rec: TensorRecord, pack_name: str) -> str | None:
    """Re-hash one tensor of an open pack; the problem found, or None when it matches its content id."""
    entry = entries.get(rec.id)
    if entry is None or entry_nbytes(entry) != rec.nbytes:
        return f"pack {pack_name} lacks tensor {rec.id[:12]}"
    if "encoding" in entry:
        return _verify_encoded(reader, entry, start, rec, pack_name)
    algorithm = hash_algorithm(rec.id)
    h = ContentHasher(algorithm, rec.dtype, rec.shape, rec.nbytes)  # big ones on several threads
    pos, end = start + entry["data_offsets"][0], start + entry["data_offsets"][1]
    while pos < end:
        try:
            chunk = reader.read(pos, min(_VERIFY_CHUNK, end - pos))
        except OSError as exc:  # EIO from a failing disk: this checkpoint's problem, not verify's crash
            return f"pack {pack_name} cannot be read ({exc.strerror or exc})"
        if not chunk:
            return f"pack {pack_name} is truncated"
        h.update(chunk)
        pos += len(chunk)
    return None if h.id == rec.id else f"tensor {rec.id[:12]} in pack {pack_name} does not match its {HASH_NAMES[algorithm]}"


def _verify_encoded(reader: Any, entry: Mapping[str, Any], start: int, rec: TensorRecord, pack_name: str) -> str | None:
    """Check a compressed tensor: its stored bytes against their BLAKE3, then its decoded bytes against its content id."""
    begin, end = entry["data_offsets"]
    try:
        blob = reader.read(start + begin, end - begin)
    except OSError as exc:
        return f"pack {pack_name} cannot be read ({exc.strerror or exc})"
    if len(blob) != end - begin:
        return f"pack {pack_name} is truncated"
    try:
        decode_stored(blob, dict(entry), rec, torch.empty(rec.shape, dtype=DTYPES[rec.dtype]), True)
    except IntegrityError as exc:
        return f"{exc} (pack {pack_name})"
    return None
