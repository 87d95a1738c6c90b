"""Reading tensors out of packs on any backend, each checked as it arrives (``integrity``, ``packs``).

Local files are read straight into each tensor's fresh memory (or mapped, with ``mmap``). On a remote backend
every request costs a round trip, so the tensors wanted from one pack are grouped into runs of adjacent bytes
(never a whole pack for part of it), and the runs fetched with ranged requests of at most ``_PART`` bytes,
``_FETCHES`` at a time, a window of runs at once; the tensors of a window are then read out of the fetched bytes
and checked on the store's pool while nothing else is held.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import torch

from .integrity import entry_of, open_pack, verify_tensor
from .packs import IntegrityError, TensorRecord, mapped_tensor, read_tensor
from .storage import Backend, Reader

_RUN_MAX = 64 << 20  # bytes of one run of adjacent tensors at most
# Bytes fetched by one ranged request at most. Big requests suit servers whose cost is per request (moto reads the
# whole object for every ranged GET); on AWS S3, 8-16 MiB ranges with more in flight parallelise as well.
_PART = 64 << 20
_FETCHES = 4  # ranged requests in flight at once
_WINDOW = 2 * _FETCHES * _PART  # bytes of runs fetched before their tensors are read (more only for one huge run)


class _Fetched(Reader):
    """Byte ranges fetched ahead (by their offset in the pack), read as if they were the pack itself."""

    def __init__(self, pieces: dict[int, bytes]) -> None:
        self.starts = sorted(pieces)
        self.pieces = pieces
        self.size = max((o + len(b) for o, b in pieces.items()), default=0)

    def readinto(self, view: memoryview, offset: int) -> int:
        got = 0
        i = bisect.bisect_right(self.starts, offset) - 1
        while got < len(view) and 0 <= i < len(self.starts):
            at = offset + got - self.starts[i]
            piece = memoryview(self.pieces[self.starts[i]])[max(at, 0) :]
            if at < 0 or not piece:  # a gap: nothing was fetched there
                break
            n = min(len(piece), len(view) - got)
            view[got : got + n] = piece[:n]
            got, i = got + n, i + 1
        return got

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


def _windows(entries: Mapping[str, dict], records: Iterable[TensorRecord], pack: str) -> list[list[list[TensorRecord]]]:
    """The runs of adjacent tensors, grouped into windows of about ``_WINDOW`` bytes, in pack order."""
    windows: list[list[list[TensorRecord]]] = [[]]
    size = 0
    for run in _runs(entries, 0, records, pack):
        first, last = entry_of(entries, run[0], pack)["data_offsets"][0], entry_of(entries, run[-1], pack)["data_offsets"][1]
        if windows[-1] and size + last - first > _WINDOW:
            windows.append([])
            size = 0
        windows[-1].append(run)
        size += last - first
    return windows


def _read_remote(
    reader: Reader, entries: Mapping[str, dict], start: int, records: Mapping[str, TensorRecord], pack: str, verify: bool,
    pool: Executor,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """The tensors of one pack on a remote backend: parallel ranged requests per window, then read and checked."""
    out: dict[str, torch.Tensor] = {}
    with ThreadPoolExecutor(_FETCHES, thread_name_prefix="waypoint-fetch") as fetcher:
        for window in _windows(entries, records.values(), pack):
            parts = []
            for run in window:
                first = start + entry_of(entries, run[0], pack)["data_offsets"][0]
                last = start + entry_of(entries, run[-1], pack)["data_offsets"][1]
                parts += [(a, min(_PART, last - a)) for a in range(first, last, _PART)]
            fetched = _Fetched(dict(zip((a for a, _ in parts), fetcher.map(lambda p: reader.read(*p), parts))))
            recs = [r for run in window for r in run]
            got = list(pool.map(lambda r, f=fetched: read_tensor(f, entry_of(entries, r, pack), start, r, verify), recs))
            out.update(zip((r.id for r in recs), got))
    return out


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
            return _read_remote(reader, entries, start, records, pack, verify, pool)
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
