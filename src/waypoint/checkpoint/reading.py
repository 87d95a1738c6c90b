"""Reading tensors out of packs on any backend, each checked as it arrives (``integrity``, ``packs``).

Local files are read straight into each tensor's fresh memory (or mapped, with ``mmap``). On a remote backend
every request costs a round trip, so the byte ranges of the tensors wanted from one pack are fetched as few
ranged requests as they are contiguous runs (never a whole pack for part of it), several at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Executor
from typing import Any

import torch

from .integrity import entry_of, open_pack, verify_tensor
from .packs import IntegrityError, TensorRecord, mapped_tensor, read_tensor
from .storage import Backend, Reader

_RUN_MAX = 64 << 20  # bytes fetched by one ranged request at most


class _Fetched(Reader):
    """Bytes fetched in one request, read as if they were the pack itself (offsets are the pack's)."""

    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.offset = memoryview(data), offset
        self.size = offset + len(data)

    def readinto(self, view: memoryview, offset: int) -> int:
        got = self.data[offset - self.offset : offset - self.offset + len(view)]
        view[: len(got)] = got
        return len(got)

    def close(self) -> None:
        pass


def _runs(entries: Mapping[str, dict], start: int, records: Iterable[TensorRecord], pack: str) -> list[list[TensorRecord]]:
    """The records grouped into runs of adjacent bytes in the pack (each at most ``_RUN_MAX``), in pack order."""
    placed = sorted(records, key=lambda r: entry_of(entries, r, pack)["data_offsets"][0])
    runs: list[list[TensorRecord]] = []
    end = begin = -1
    for rec in placed:
        b, e = entry_of(entries, rec, pack)["data_offsets"]
        if runs and b == end and e - begin <= _RUN_MAX:
            runs[-1].append(rec)
        else:
            runs.append([rec])
            begin = b
        end = e
    return runs


def _read_run(
    reader: Reader, entries: Mapping[str, dict], start: int, run: list[TensorRecord], pack: str, verify: bool
) -> list[tuple[str, torch.Tensor]]:
    """One ranged request for a run of adjacent tensors, then each read (and checked) out of the bytes fetched."""
    first = entry_of(entries, run[0], pack)["data_offsets"][0]
    last = entry_of(entries, run[-1], pack)["data_offsets"][1]
    fetched = _Fetched(reader.read(start + first, last - first), start + first)
    return [(r.id, read_tensor(fetched, entry_of(entries, r, pack), start, r, verify)) for r in run]


def read_pack(
    backend: Backend,
    manifest: Mapping[str, Any],
    pack: str,
    records: Mapping[str, TensorRecord],
    *,
    verify: bool,
    mmap: bool,
    pool: Executor,
) -> dict[str, torch.Tensor]:
    """The tensors ``records`` (by content id) of one pack, each checked when ``verify``."""
    entries, start, reader = open_pack(backend, pack, manifest)
    with reader:
        if mmap:
            mm = reader.mmap(populate=verify)
            runner = pool.map if verify else map  # an unverified mapping reads nothing
            got = runner(lambda r: mapped_tensor(mm, entry_of(entries, r, pack), start, r, verify), records.values())
            return dict(zip(records, got))
        if backend.caps.remote:
            runs = _runs(entries, start, records.values(), pack)
            parts = pool.map(lambda run: _read_run(reader, entries, start, run, pack, verify), runs)
            return {cid: t for part in parts for cid, t in part}
        got = pool.map(lambda r: read_tensor(reader, entry_of(entries, r, pack), start, r, verify), records.values())
        return dict(zip(records, got))


def iter_pack(
    backend: Backend, manifest: Mapping[str, Any], pack: str, keyed: list[tuple[str, TensorRecord]], verify: bool
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(key, tensor)`` of one pack one at a time (memory: one tensor)."""
    entries, start, reader = open_pack(backend, pack, manifest)
    with reader:
        for key, rec in keyed:
            yield key, read_tensor(reader, entry_of(entries, rec, pack), start, rec, verify)


def verify_pack(
    backend: Backend, manifest: Mapping[str, Any], pack: str, records: list[TensorRecord], pool: Executor
) -> tuple[list[str], list[str]]:
    """Re-hash the ``records`` of one pack with their content ids: (problems, ids of damaged tensors)."""
    try:
        entries, start, reader = open_pack(backend, pack, manifest)
    except IntegrityError as exc:
        return [str(exc)], [r.id for r in records]
    with reader:
        results = list(pool.map(lambda r: verify_tensor(reader, entries, start, r, pack), records))
    bad = [(rec.id, err) for rec, err in zip(records, results) if err]
    return [err for _cid, err in bad], [cid for cid, _err in bad]
