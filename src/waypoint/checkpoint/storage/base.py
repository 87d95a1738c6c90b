"""Where a store's bytes live: the ``Backend`` interface, what a backend promises (``Capabilities``) and the
single writer's ``Lease``.

The shape follows restic's backend and ``torch.distributed.checkpoint``'s storage layer. Keys are ``/``-separated
names relative to the store's root (``packs/<name>.safetensors``, ``step_000000120/manifest.json``). The store
never asks which backend it has: it reads ``caps``. Adding a backend means one module implementing this
interface, and the parametrised backend suite.
"""

from __future__ import annotations

import mmap
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from waypoint.errors import EXIT_FAILED

from ..errors import CheckpointError

LEASE_LOCK = "lock"  # held until the process ends; cannot be lost while it lives (a POSIX record lock)
LEASE_EXPIRING = "expiring"  # held while renewed; lost when it expires (an object with an expiry)


class BackendError(CheckpointError):
    """The storage cannot be reached or refuses access (one sentence)."""


class LeaseLostError(CheckpointError):
    """This writer's lease expired or was taken over: it no longer commits, deletes or cleans up anything (exit 1)."""

    exit_code = EXIT_FAILED


@dataclass(frozen=True)
class Capabilities:
    """What a backend guarantees; the store picks its steps from these, never from the backend's type."""

    atomic_rename: bool  # a directory of files commits with one no-replace rename (a half-written one is never seen)
    conditional_create: bool  # create-only-if-absent is atomic on the medium (not check-then-write)
    ranged_reads: bool  # reading part of an object fetches only that part
    fsync: bool  # a write is durable when the call returns
    direct_io: bool  # big writes may bypass the page cache (O_DIRECT)
    mmap: bool  # objects can be memory-mapped (tensors backed by the file, nothing copied)
    lease: str  # LEASE_LOCK or LEASE_EXPIRING
    strong_listing: bool  # a listing shows every write that completed before it began
    remote: bool  # bytes travel over a network: errors may be transient and are retried


class Reader(ABC):
    """An object opened for reading ranges of it; ``size`` is its length in bytes."""

    size: int

    @abstractmethod
    def readinto(self, view: memoryview, offset: int) -> int:
        """Fill ``view`` from ``offset`` on; the number of bytes read (fewer only at the end of the object)."""

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer only at the end of the object)."""
        buf = bytearray(max(0, min(length, self.size - offset)))
        n = self.readinto(memoryview(buf), offset) if buf else 0
        return bytes(buf[:n])

    def mmap(self, populate: bool = False) -> mmap.mmap:
        """A private, copy-on-write mapping of the whole object (only where ``caps.mmap``)."""
        raise NotImplementedError("this backend cannot map objects into memory")

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NewObject(ABC):
    """An object being written into a local file (``fd``, written with ``os.pwrite``), invisible until ``commit``."""

    fd: int

    @abstractmethod
    def commit(self, key: str) -> None:
        """Make the bytes durable and visible under ``key`` (an object already there is replaced: same name, same
        content, but possibly a damaged copy the store forgot). Closes ``fd``."""

    @abstractmethod
    def abort(self) -> None:
        """Drop the bytes written so far (nothing becomes visible). Closes ``fd``."""


class Lease(ABC):
    """The single writer's right to change a store.

    ``generation`` grows with every new holder: what a writer creates carries it (pack names, manifests), so what
    a writer that lost its lease might still write can never be mistaken for, or collide with, the new holder's.
    ``check`` raises ``LeaseLostError`` once the lease is lost; a writer calls it before every change it makes.
    """

    generation: int
    info: dict[str, Any]

    @abstractmethod
    def check(self) -> None: ...

    @abstractmethod
    def release(self) -> None: ...


@dataclass
class IOStats:
    """Bytes and requests a backend served since it was made (benchmarks print them)."""

    bytes_read: int = 0
    bytes_written: int = 0
    reads: int = 0
    writes: int = 0
    by_key: dict[str, int] = field(default_factory=dict)  # bytes read per key

    def read(self, key: str, n: int) -> None:
        self.bytes_read += n
        self.reads += 1
        self.by_key[key] = self.by_key.get(key, 0) + n

    def wrote(self, n: int) -> None:
        self.bytes_written += n
        self.writes += 1


class Backend(ABC):
    """Objects under one root, named by ``/``-separated keys."""

    url: str
    caps: Capabilities
    stats: IOStats

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store an immutable object (complete or absent, never partial); an existing one is replaced."""

    @abstractmethod
    def publish(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` only if nothing is there (FileExistsError otherwise)."""

    @abstractmethod
    def replace(self, key: str, data: bytes) -> None:
        """Atomically replace (or create) an object: readers see the old bytes or the new ones."""

    @abstractmethod
    def publish_dir(self, name: str, files: Sequence[tuple[str, bytes]]) -> None:
        """Create the directory ``name`` holding ``files``; the last file is the commit point: before it exists
        the directory is not a checkpoint. FileExistsError when ``name`` is taken (nothing of it is changed)."""

    @abstractmethod
    def open(self, key: str) -> Reader:
        """An object opened for ranged reads (FileNotFoundError when absent; OSError when it is not a plain object)."""

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of an object (a range of it); FileNotFoundError when it is absent."""
        with self.open(key) as r:
            return r.read(offset, r.size - offset if length is None else length)

    @abstractmethod
    def new_object(self, prefix: str) -> NewObject:
        """A local file to write an object into; ``commit(key)`` publishes it under a key below ``prefix``."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """An object's size in bytes, or None when it is absent."""

    @abstractmethod
    def list(self, prefix: str = "") -> dict[str, int]:
        """Every object whose key starts with ``prefix``, with its size (nothing below a symbolic link)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object (absent is fine)."""

    @abstractmethod
    def remove_dir(self, name: str, first: str) -> None:
        """Remove the directory ``name`` so that it stops being a checkpoint at once (``first``, its manifest,
        goes first or the whole directory is renamed away), then everything under it."""

    @abstractmethod
    def sync(self, prefix: str = "") -> None:
        """Make what completed under ``prefix`` durable (a no-op where every write is durable when it returns)."""

    @abstractmethod
    def clean_debris(self) -> list[str]:
        """Remove what interrupted writes left behind that is never a checkpoint (temporary files, staging and
        trash directories, unfinished uploads); only the lease holder calls it. Returns what was removed."""

    @abstractmethod
    def lease(self) -> Lease:
        """Become the single writer (StoreLockedError naming the holder when another writer is live)."""

    @abstractmethod
    def holder(self) -> dict[str, Any] | None:
        """Who holds the writer's lease now (pid, host, since, generation), or None; takes nothing."""

    @abstractmethod
    def check(self) -> None:
        """Fail early, in one sentence, when the storage cannot hold a store (a missing bucket, denied access, a
        root that is a symbolic link)."""

    @abstractmethod
    def free_bytes(self) -> int | None:
        """Bytes a new write may still take under the root, or None when that cannot be known (object stores)."""

    @abstractmethod
    def exists(self) -> bool:
        """Whether the root is there to read (a local directory exists; an object prefix always is)."""

    @abstractmethod
    def create(self) -> None:
        """Make the root ready for writing (a directory and its ``packs/``; nothing on an object store)."""

    def describe(self, key: str = "") -> str:
        """A human-readable location of ``key`` (a path or a URL)."""
        return f"{self.url.rstrip('/')}/{key}" if key else self.url


def check_key(key: str) -> str:
    """``key`` when it names something inside the store (ValueError otherwise)."""
    if key.startswith("/") or ".." in key.split("/") or "\0" in key:
        raise ValueError(f"'{key}' is not a key inside the store")
    return key
