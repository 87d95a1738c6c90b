"""Background persist: the caller stages what changed, one thread hashes and writes; at most one save in flight.

Change detection keeps no copy of the state: ``Staging`` remembers each key's record (content id and XXH3-128
fingerprint) from the last save, and a save reuses an id whose fingerprint still matches (``packs.identify``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Container, Iterable, Mapping
from concurrent.futures import Executor
from concurrent.futures import wait as futures_wait
from typing import Any

import torch

from .errors import BackgroundSaveError
from .packs import TensorRecord, dtype_name, fast_check, fingerprint_matches, prefault, raw_bytes
from .storage import LeaseLostError


class BackgroundWriter:
    """Runs one save at a time off the training thread and reports its failure later."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._what = ""

    def submit(self, fn: Callable[[], Any], what: str) -> None:
        """Wait for the save in flight (re-raising its failure), then start ``fn`` in the background."""
        self.wait()
        self._what = what

        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported to the caller later
                self._error = exc

        self._thread = threading.Thread(target=run, name="waypoint-writer", daemon=False)
        self._thread.start()

    @property
    def busy(self) -> bool:
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


class Staging:
    """What a save compares with, and the host buffers an async save copies into.

    ``last`` holds each key's record from the last committed save (``priors``). ``stage`` copies each tensor that
    changed into a host buffer kept for its key across saves (pinned for CUDA), since the caller may change its
    tensors once an async save returns: one unchanged last time is fingerprinted first and copied only if it
    changed; one that changed last time is copied at once and fingerprinted on its copy in the background.
    ``stage`` must not run while a save still reads the buffers (the manager waits first).
    """

    def __init__(self) -> None:
        self.last: dict[str, TensorRecord] = {}
        self.moved: set[str] = set()  # keys whose content id changed at the last save
        self._bufs: dict[str, torch.Tensor] = {}

    def priors(self, keys: Iterable[str]) -> dict[str, TensorRecord]:
        """The last save's record of each of ``keys`` that has one."""
        return {k: self.last[k] for k in keys if k in self.last}

    def learn(self, records: Mapping[str, TensorRecord]) -> None:
        """Remember the records of a committed save (those with a fingerprint)."""
        self.moved = {k for k, r in records.items() if k not in self.last or self.last[k].id != r.id}
        self.last = {k: r for k, r in records.items() if r.check is not None}

    def stage(
        self, tensors: Mapping[str, torch.Tensor], pool: Executor, known: Container[str]
    ) -> tuple[dict[str, torch.Tensor], dict[str, TensorRecord]]:
        """The tensors an async save writes (the buffers of those that changed, the caller's own for the rest), and the
        record of each tensor proven unchanged (its id is in ``known``). Every copy is taken before returning."""
        first: dict[int, str] = {}  # tied tensors arrive as one object under several keys: one copy
        for key, t in tensors.items():
            first.setdefault(id(t), key)
        jobs = {key: pool.submit(self._stage_one, key, tensors[key], known) for key in first.values()}
        futures_wait(jobs.values())  # all of them, even when one failed: none may still be copying
        done = {key: job.result() for key, job in jobs.items()}
        if any(t.is_cuda for t in tensors.values()):
            torch.cuda.synchronize()  # the device-to-host copies, queued without blocking, are complete
        self._bufs = {k: b for k, (b, rec) in done.items() if rec is None}  # the memory of what changes, no more
        staged = {k: done[first[id(t)]][0] for k, t in tensors.items()}
        proven = {k: rec for k, t in tensors.items() if (rec := done[first[id(t)]][1]) is not None}
        return staged, proven

    def _stage_one(self, key: str, t: torch.Tensor, known: Container[str]) -> tuple[torch.Tensor, TensorRecord | None]:
        """``t`` itself and its record when provably unchanged, else its copy in ``key``'s buffer and None."""
        t, prior = t.detach(), self.last.get(key)
        plain = t.device.type == "cpu" and t.is_contiguous() and not t.is_conj() and not t.is_neg()
        if plain and prior is not None and key not in self.moved and prior.id in known:
            if fingerprint_matches(prior, dtype_name(t.dtype), tuple(t.shape), fast_check(raw_bytes(t))):
                return t, prior
        buf = self._bufs.get(key)
        if buf is None or buf.dtype != t.dtype or buf.shape != t.shape:
            buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=t.is_cuda)
            prefault(buf, buf.numel() * buf.element_size())
        buf.copy_(t, non_blocking=t.is_cuda)
        return buf, None

    @property
    def nbytes(self) -> int:
        """Host memory the buffers hold."""
        return sum(t.numel() * t.element_size() for t in self._bufs.values())

    def clear(self) -> None:
        """Forget the last save and drop every buffer (and the memory it holds)."""
        self.last, self.moved, self._bufs = {}, set(), {}
