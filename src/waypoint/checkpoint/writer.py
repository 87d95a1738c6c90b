"""Background persist: the caller snapshots, one thread hashes and writes; at most one save in flight.
The snapshots are kept between saves, so the next save copies and hashes only what changed."""
from __future__ import annotations

import ctypes
import threading
from concurrent.futures import Executor
from typing import Any, Callable, Mapping

import torch

from .packs import hash_algorithm

_libc = ctypes.CDLL(None, use_errno=True)
_memcmp = getattr(_libc, "memcmp", None)
if _memcmp is not None:
    _memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    _memcmp.restype = ctypes.c_int


class BackgroundSaveError(Exception):
    """A save that ran in the background failed; raised at the next call or at close()."""


class BackgroundWriter:
    """Runs one save at a time off the training thread and reports its failure later."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._what = ""
        self.last_result: Any = None

    def submit(self, fn: Callable[[], Any], what: str) -> None:
        """Wait for the save in flight (re-raising its failure), then start ``fn`` in the background."""
        self.wait()
        self._what = what

        def run() -> None:
            try:
                self.last_result = fn()
            except BaseException as exc:  # noqa: BLE001 - reported to the caller later
                self._error = exc

        self._thread = threading.Thread(target=run, name="waypoint-writer", daemon=False)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Whether a save is in flight."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        """Block until no save is in flight; raise BackgroundSaveError if the last one failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise BackgroundSaveError(f"the background save of {self._what} failed: {err}") from err


def _snapshot(t: torch.Tensor) -> torch.Tensor:
    """A private contiguous CPU copy of a tensor, taken on the caller's thread."""
    t = t.detach()
    if t.device.type != "cpu":
        return t.to("cpu", copy=True).contiguous()
    return t.clone(memory_format=torch.contiguous_format)


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two contiguous CPU tensors of one dtype and shape hold the same bytes (memcmp, stops at
    the first difference; a float compare would call -0.0 equal to 0.0 and NaN unequal to itself)."""
    n = a.numel() * a.element_size()
    if n == 0:
        return True
    if _memcmp is not None:
        return _memcmp(a.data_ptr(), b.data_ptr(), n) == 0
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


class Snapshots:
    """Private CPU copies of the last save's tensors (by key), each with the content id of its bytes once known.

    A save stages the caller's tensors here: a tensor byte-for-byte equal to its key's copy (same dtype
    and shape) is not copied, and keeps the copy's id, so it is neither hashed nor written again; any
    other is copied into its key's buffer (or a fresh one) and hashed. Only ``stage`` writes the buffers
    and nothing outside hands them out, so a copy always holds the bytes its id was computed from: the
    caller cannot have changed them since. Staging runs on the store's pool (memcmp and copies release
    the GIL); ``stage`` must not run while a save still reads the buffers (the manager waits first).
    """

    def __init__(self) -> None:
        self._bufs: dict[str, torch.Tensor] = {}
        self._ids: dict[str, str] = {}  # key -> content id of the bytes self._bufs[key] holds

    def stage(self, tensors: Mapping[str, torch.Tensor], pool: Executor, algorithm: str
              ) -> tuple[dict[str, torch.Tensor], dict[str, str | None]]:
        """The copies a save writes from, and per key the content id when provably unchanged (else None)."""
        jobs: list[tuple[str, torch.Tensor, torch.Tensor | None, str | None]] = []
        first: dict[int, str] = {}  # tied tensors arrive as one object under several keys: one copy
        used: set[int] = set()
        for key, t in tensors.items():
            if id(t) in first:
                continue
            first[id(t)] = key
            buf = self._bufs.get(key)
            if buf is not None and (id(buf) in used or buf.dtype != t.dtype or buf.shape != t.shape):
                buf = None
            prev = None
            if buf is not None:
                used.add(id(buf))
                prev = self._ids.get(key)
                if prev is not None and hash_algorithm(prev) != algorithm:
                    prev = None  # an id of another algorithm is never reused
            jobs.append((key, t, buf, prev))
        done = dict(pool.map(_stage_one, jobs))
        staged = {k: done[first[id(t)]][0] for k, t in tensors.items()}
        ids = {k: done[first[id(t)]][1] for k, t in tensors.items()}
        self._bufs = staged
        self._ids = {k: v for k, v in ids.items() if v is not None}
        return staged, ids

    def learn(self, ids: Mapping[str, str]) -> None:
        """Record the content ids a save computed for the copies ``stage`` last returned."""
        for key, cid in ids.items():
            if key in self._bufs:
                self._ids[key] = cid

    @property
    def nbytes(self) -> int:
        """Host memory the copies hold."""
        return sum(t.numel() * t.element_size() for t in {id(t): t for t in self._bufs.values()}.values())

    def clear(self) -> None:
        """Drop every copy (and the memory it holds)."""
        self._bufs, self._ids = {}, {}


def _stage_one(job: tuple[str, torch.Tensor, torch.Tensor | None, str | None]
               ) -> tuple[str, tuple[torch.Tensor, str | None]]:
    key, t, buf, prev = job
    t = t.detach()
    if buf is None:
        return key, (_snapshot(t), None)
    if t.device.type == "cpu" and t.is_contiguous() and not t.is_conj() and not t.is_neg() and same_bytes(t, buf):
        return key, (buf, prev)  # prev is None when the copy's id was never learned: hashed then
    buf.copy_(t)
    return key, (buf, None)
