"""Background persist: the caller snapshots, one thread hashes and writes; at most one save in flight.
The snapshots are kept between saves, so the next save copies and hashes only what changed."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from concurrent.futures import wait as futures_wait
from typing import Any

import torch

from . import packs
from .errors import BackgroundSaveError
from .packs import dtype_name, hash_algorithm, raw_bytes
from .storage import LeaseLostError

_libc = ctypes.CDLL(None, use_errno=True)
_memcmp = getattr(_libc, "memcmp", None)
if _memcmp is not None:
    _memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    _memcmp.restype = ctypes.c_int


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
            if isinstance(err, LeaseLostError):
                raise err  # not a failed save: this writer must stop writing
            raise BackgroundSaveError(f"the background save of {self._what} failed: {err}") from err


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

    def stage(
        self, tensors: Mapping[str, torch.Tensor], pool: Executor, algorithm: str, *, wait: bool = True
    ) -> tuple[dict[str, torch.Tensor], dict[str, str | None | Future]]:
        """The copies a save writes from, and per key the content id of what it holds.

        With ``wait`` (a background save: the caller may change its tensors once this returns) every copy
        is taken before returning, and a key's id is None unless the tensor was provably unchanged. Without
        (a blocking save) the comparisons and copies run on ``pool`` after returning, each followed by
        hashing when the tensor changed, and a key's id is a Future of its id: the save writes tensor i
        while later ones are still being compared (it must wait for every future, even when failing).
        """
        jobs: list[tuple[str, torch.Tensor, torch.Tensor, bool, str | None]] = []
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
            fresh = buf is None
            if fresh:  # its pages are faulted in by the copy, on a pool thread
                buf = torch.empty(t.shape, dtype=t.dtype, device="cpu")
            jobs.append((key, t, buf, fresh, prev))
        by_key = {j[0]: j for j in jobs}
        staged = {k: by_key[first[id(t)]][2] for k, t in tensors.items()}
        self._bufs, self._ids = staged, {}  # ids are learned again once the save succeeded
        futures = {j[0]: pool.submit(_stage_one, *j[1:], None if wait else algorithm) for j in jobs}
        if wait:
            futures_wait(futures.values())  # all of them, even when one failed: none may still be copying
            ids: dict[str, str | None | Future] = {k: futures[first[id(t)]].result() for k, t in tensors.items()}
        else:
            ids = {k: futures[first[id(t)]] for k, t in tensors.items()}
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


def _stage_one(t: torch.Tensor, buf: torch.Tensor, fresh: bool, prev: str | None, algorithm: str | None) -> str | None:
    """Compare ``t`` with its copy ``buf`` and copy it there when it differs; its content id when known
    (``prev`` when unchanged), else, with ``algorithm``, the hash of the copy, else None."""
    t = t.detach()
    if fresh or not (t.device.type == "cpu" and t.is_contiguous() and not t.is_conj() and not t.is_neg() and same_bytes(t, buf)):
        buf.copy_(t)
        prev = None
    if prev is None and algorithm is not None:
        return packs.content_id(dtype_name(buf.dtype), tuple(buf.shape), raw_bytes(buf), algorithm)
    return prev
