"""A checkpoints root on any fsspec file system, made for object stores (S3 and its kin), which have no rename.

There the manifest, published with a conditional create (S3 ``If-None-Match: *``) after every object it names,
is a checkpoint's commit point; an object appears whole or not at all (S3 completes a multipart upload
atomically). Reads fetch byte ranges (``Range`` requests), never whole packs. Credentials come from the
environment (AWS_* variables, fsspec configuration), never from a config file or a manifest.

The lease is one object per holder, ``leases/<generation>.json`` = {pid, host, token, since, expires}, created
only if absent: two writers that contend for one generation cannot both create it. The holder of the highest
generation holds the store while its object has not expired; it renews its own object every ``ttl/3`` (no other
writer ever writes that key, so a late renewal cannot overwrite a newer holder). A writer considers its lease
lost once ``ttl - margin`` passed on its own monotonic clock since its last renewal, or a higher generation
appeared: it then never renews it again, and ``check`` raises ``LeaseLostError``. A new writer takes over only
after the holder's expiry by its own clock, so with clocks that agree within ``margin`` a writer that still
believes it holds the lease always does.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import platform
import random
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..errors import StoreLockedError
from .base import (
    LEASE_EXPIRING,
    Backend,
    BackendError,
    Capabilities,
    IOStats,
    Lease,
    LeaseLostError,
    NewObject,
    Reader,
    check_key,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
LEASES = "leases/"
_LEASE_KEY = re.compile(r"^leases/(\d{12})\.json$")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _transient(exc: BaseException) -> bool:
    """Whether an error means "try again" (timeouts, refused or reset connections, 5xx/throttling)."""
    if isinstance(exc, (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if type(exc).__name__ in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"):
        return True
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    text = str(exc)
    keys = ("Could not connect", "Connection", "timed out", "SlowDown", "ServiceUnavailable", "InternalError")
    return isinstance(exc, OSError) and any(s in text for s in keys)


def _denied(exc: BaseException) -> bool:
    keys = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden")
    return isinstance(exc, PermissionError) or any(s in str(exc) for s in keys)


def _no_bucket(exc: BaseException) -> bool:
    return "NoSuchBucket" in str(exc) or "bucket does not exist" in str(exc)


def _missing_extra(protocol: str) -> BackendError:
    if protocol in ("s3", "s3a"):
        return BackendError(f"checkpoints on {protocol}:// need the 's3' extra, which is not installed: pip install -e '.[s3]'")
    return BackendError(f"checkpoints on {protocol}:// need the fsspec implementation of '{protocol}://', which is not installed")


class RemoteReader(Reader):
    """Ranged reads of one object; every request counted in the backend's ``stats``."""

    def __init__(self, backend: FsspecBackend, key: str) -> None:
        self.backend, self.key = backend, key
        size = backend.size(key)
        if size is None:
            raise FileNotFoundError(errno.ENOENT, "no such object", backend.describe(key))
        self.size = size

    def readinto(self, view: memoryview, offset: int) -> int:
        data = self.read(offset, len(view))
        view[: len(data)] = data
        return len(data)

    def read(self, offset: int, length: int) -> bytes:
        """One ranged request (the bytes as they arrive, not copied again)."""
        end = min(self.size, offset + length)
        return self.backend.fetch(self.key, offset, end) if end > offset else b""

    def close(self) -> None:
        pass


class RemoteNewObject(NewObject):
    """A local temporary file, uploaded under its key by ``commit`` (a multipart upload for big ones)."""

    def __init__(self, backend: FsspecBackend) -> None:
        self.backend = backend
        self.fd, name = tempfile.mkstemp(prefix="waypoint-upload-", suffix=".safetensors")
        self.path = Path(name)

    def commit(self, key: str) -> None:
        try:
            os.close(self.fd)
            self.fd = -1
            self.backend.put_file(key, self.path)
        finally:
            self.path.unlink(missing_ok=True)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.path.unlink(missing_ok=True)


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (TypeError, ValueError, PermissionError):  # unknown, or another user's: assume alive
        return True
    return True


def _who(holder: dict[str, Any]) -> str:
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"


def lease_key(generation: int) -> str:
    return f"{LEASES}{generation:012d}.json"


class ObjectLease(Lease):
    """The lease object of one generation, renewed by a thread every ``ttl/3`` seconds (see the module doc)."""

    def __init__(self, backend: FsspecBackend, ttl: float, floor: int) -> None:
        self.backend, self.ttl, self.margin = backend, ttl, ttl / 3
        self.token = uuid.uuid4().hex
        self.info: dict[str, Any] = {"pid": os.getpid(), "host": platform.node(), "token": self.token, "ttl_s": ttl}
        self.lost: str | None = None
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._acquire(floor)
        self._thread = threading.Thread(target=self._renew_loop, name="waypoint-lease", daemon=True)
        self._thread.start()

    def _doc(self, expires: float) -> bytes:
        return json.dumps({**self.info, "expires": expires}).encode()

    def _acquire(self, floor: int) -> None:
        for _ in range(8):
            generation, holder = latest_lease(self.backend)
            if holder is not None and self._wait_or_refuse(holder):
                continue
            self.generation = max(generation + 1, floor)
            self.info.update(since=time.time(), generation=self.generation)
            started = time.monotonic()
            try:
                self.backend.publish(lease_key(self.generation), self._doc(time.time() + self.ttl))
            except FileExistsError:
                continue  # another writer took this generation first: look again
            self._renewed = started
            if holder is not None and not holder.get("released"):
                why = holder.get("_why", "it expired")
                log.warning(
                    "took over the lease of %s from %s (generation %d): %s", self.backend.url, _who(holder), generation, why
                )
            self._forget_older()
            return
        raise StoreLockedError(f"checkpoint store {self.backend.url} keeps being taken by another writer; try again")

    def _wait_or_refuse(self, holder: dict[str, Any]) -> bool:
        """True to look again (a holder that missed a renewal was waited out); StoreLockedError for a live holder;
        False when the holder's lease is over (released, expired, or its process is gone on this host)."""
        if holder.get("released"):
            return False
        now, expires = time.time(), float(holder.get("expires", 0) or 0)
        same_host_dead = holder.get("host") == platform.node() and not _pid_alive(holder.get("pid"))
        if same_host_dead or expires <= now:
            holder["_why"] = "its process is gone" if same_host_dead else f"it expired {now - expires:.0f}s ago"
            return False
        ttl = float(holder.get("ttl_s", self.ttl) or self.ttl)
        if expires <= now + ttl / 2 and holder.get("host") != platform.node():
            # a live holder renews every ttl/3, so it never has less than 2/3 of ttl left: this one missed a
            # renewal. Wait for its expiry (a late renewal still wins) instead of refusing.
            wait = expires - now
            log.warning(
                "the lease of %s (%s) was not renewed; waiting %.0fs for it to expire", self.backend.url, _who(holder), wait
            )
            time.sleep(expires - now + 0.5)
            return True
        raise StoreLockedError(
            f"checkpoint store {self.backend.url} is already being written by {_who(holder)} "
            f"(its lease expires in {expires - now:.0f}s unless renewed); "
            "wait for that run to finish or stop it, then try again"
        )

    def _forget_older(self) -> None:
        """Delete the lease objects of earlier generations (only the holder changes the store)."""
        for key in self.backend.list(LEASES):
            m = _LEASE_KEY.match(key)
            if m and int(m.group(1)) < self.generation:
                with contextlib.suppress(BackendError, OSError):
                    self.backend.delete(key)

    def _lose(self, why: str) -> None:
        if self.lost is None:
            self.lost = why
            log.info("%s", why)  # said once, by the LeaseLostError of the next change this writer tries

    def renew(self) -> None:
        """Extend the lease, unless it is already lost (then ``lost`` says why)."""
        with self._guard:
            if self.lost is not None:
                return
            started = time.monotonic()
            if started - self._renewed > self.ttl - self.margin:
                self._lose(
                    f"the lease of {self.backend.url} expired while this process was not running "
                    f"({started - self._renewed:.0f}s since it was renewed, lease {self.ttl:.0f}s)"
                )
                return
            generation, holder = latest_lease(self.backend)
            if generation != self.generation:
                self._lose(f"the lease of {self.backend.url} was taken over by {_who(holder) if holder else 'another writer'}")
                return
            self.backend.replace(lease_key(self.generation), self._doc(time.time() + self.ttl))
            self._renewed = started

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - renewal retries at the next tick, until the lease expires
                log.warning("could not renew the lease of %s (%s); retrying", self.backend.url, exc)
            if self.lost is not None:
                return

    def check(self) -> None:
        if self.lost is None and time.monotonic() - self._renewed > self.ttl / 3:
            self.renew()  # the renewal thread fell behind (a paused process): renew, or learn it is lost
        if self.lost is not None:
            raise LeaseLostError(f"{self.lost}; this writer stops changing the store, and what the new holder saved is intact")

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        if self.lost is not None:
            return
        try:
            doc = json.loads(self._doc(0.0))
            self.backend.replace(lease_key(self.generation), json.dumps({**doc, "released": True}).encode())
        except Exception as exc:  # noqa: BLE001 - it expires on its own
            log.warning("could not release the lease of %s (%s); it expires in %.0fs", self.backend.url, exc, self.ttl)


def latest_lease(backend: Backend) -> tuple[int, dict[str, Any] | None]:
    """The highest lease generation under ``backend`` and its document (None when there is none, or unreadable)."""
    generations = sorted(int(m.group(1)) for k in backend.list(LEASES) if (m := _LEASE_KEY.match(k)))
    if not generations:
        return 0, None
    try:
        doc = json.loads(backend.read(lease_key(generations[-1])))
    except FileNotFoundError:
        return generations[-1], None
    except ValueError:
        return generations[-1], {}
    return generations[-1], doc if isinstance(doc, dict) else {}


class FsspecBackend(Backend):
    """Objects on any fsspec file system. Every call is retried ``retries`` times with exponential backoff (plus
    jitter) on transient errors and then reported as a ``BackendError`` naming the URL; a missing bucket or denied
    access is a ``BackendError`` at once."""

    def __init__(self, url: str, *, retries: int | None = None, backoff_s: float = 0.2, lease_ttl_s: float | None = None) -> None:
        import fsspec

        self.url = url.rstrip("/")
        protocol = url.split("://", 1)[0]
        self.protocol = protocol
        self.retries = retries if retries is not None else int(os.environ.get("WAYPOINT_STORAGE_RETRIES", "4"))
        self.backoff_s = backoff_s
        self.lease_ttl_s = lease_ttl_s if lease_ttl_s is not None else float(os.environ.get("WAYPOINT_LEASE_TTL_S", "30"))
        self.stats = IOStats()
        try:
            self.fs, base = fsspec.core.url_to_fs(self.url, **self._options())
        except ImportError:
            raise _missing_extra(protocol) from None
        except ValueError as exc:
            if "not known" in str(exc):
                raise BackendError(f"{url} names an unknown storage protocol '{protocol}://'") from None
            raise
        self.base = base.rstrip("/")
        if hasattr(self.fs, "retries"):
            self.fs.retries = 1  # s3fs's own retry loop: this class retries, with a bound and a message
        s3 = protocol in ("s3", "s3a")  # s3fs sends If-None-Match: * for mode="create"
        self.caps = Capabilities(
            atomic_rename=False,
            conditional_create=s3,
            ranged_reads=True,
            fsync=False,
            direct_io=False,
            mmap=False,
            lease=LEASE_EXPIRING,
            strong_listing=True,
            remote=True,
        )

    def _options(self) -> dict[str, Any]:
        if self.protocol not in ("s3", "s3a"):
            return {}
        opts: dict[str, Any] = {"config_kwargs": {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 1}}}
        endpoint = os.environ.get("WAYPOINT_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
        if endpoint:
            opts["endpoint_url"] = endpoint
        return opts

    def _full(self, key: str) -> str:
        return f"{self.base}/{check_key(key)}" if key else self.base

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except (FileNotFoundError, FileExistsError):
                raise
            except Exception as exc:  # noqa: BLE001 - classified below
                if _denied(exc):
                    raise BackendError(
                        f"access to {self.url} was denied ({what}); check the credentials in the environment"
                    ) from None
                if _no_bucket(exc):
                    raise BackendError(f"the bucket of {self.url} does not exist; create it or fix checkpoint.root") from None
                if not _transient(exc):
                    raise
                if attempt == self.retries:
                    tries = self.retries + 1
                    raise BackendError(f"could not {what} at {self.url} after {tries} attempts: {_short(exc)}") from exc
                log.warning("%s at %s failed (%s); retrying in %.1fs", what, self.url, _short(exc), delay)
                time.sleep(delay * (1 + random.random() * 0.25))
                delay *= 2
        raise AssertionError("unreachable")

    def check(self) -> None:
        if self.protocol not in ("s3", "s3a"):
            return
        bucket = self.base.split("/", 1)[0]

        def probe() -> None:
            self.fs.invalidate_cache()
            try:
                self.fs.ls(bucket, detail=False)
            except FileNotFoundError:
                raise BackendError(f"the bucket of {self.url} does not exist; create it or fix checkpoint.root") from None

        self._call("reach the bucket", probe)

    def free_bytes(self) -> int | None:
        return None  # an object store does not say

    def exists(self) -> bool:
        return True

    def create(self) -> None:
        pass

    def put(self, key: str, data: bytes) -> None:
        self._call("write " + key, lambda: self.fs.pipe_file(self._full(key), data))
        self.stats.wrote(len(data))

    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file; on S3 one above 2 x 16 MiB goes up as a multipart upload (completed atomically), 8
        parts at a time (at most 128 MiB held in memory)."""
        extra = {"chunksize": 16 << 20, "max_concurrency": 8} if self.protocol in ("s3", "s3a") else {}
        self._call("upload " + key, lambda: self.fs.put_file(str(path), self._full(key), **extra))
        self.stats.wrote(os.path.getsize(path))

    def publish(self, key: str, data: bytes) -> None:
        full = self._full(key)
        if self.caps.conditional_create:
            self._call("publish " + key, lambda: self.fs.pipe_file(full, data, mode="create"))
        else:  # a medium without conditional writes: check-then-write, safe only under the lease
            if self.size(key) is not None:
                raise FileExistsError(errno.EEXIST, "already exists", full)
            self._call("publish " + key, lambda: self.fs.pipe_file(full, data))
        self.fs.invalidate_cache(full)
        self.stats.wrote(len(data))

    def replace(self, key: str, data: bytes) -> None:
        self.put(key, data)  # an object PUT replaces atomically

    def publish_dir(self, name: str, files: Sequence[tuple[str, bytes]]) -> None:
        """Every file but the last, then the last published only if absent (the commit point)."""
        *rest, (last, data) = files
        if self.size(f"{name}/{last}") is not None:  # committed by someone else: its files are not ours to overwrite
            raise FileExistsError(errno.EEXIST, "already exists", self.describe(name))
        for fname, body in rest:
            self.put(f"{name}/{fname}", body)
        self.publish(f"{name}/{last}", data)

    def open(self, key: str) -> Reader:
        return RemoteReader(self, key)

    def fetch(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of an object, in one ranged request."""
        full = self._full(key)
        data = self._call("read " + key, lambda: self.fs.cat_file(full, start=start, end=end))
        self.stats.read(key, len(data))
        return data

    def new_object(self, prefix: str) -> NewObject:
        return RemoteNewObject(self)

    def get_file(self, key: str, path: Path) -> None:
        """Download an object into a new local file."""
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "exists", str(path))
        self._call("download " + key, lambda: self.fs.get_file(self._full(key), str(path)))
        self.stats.read(key, os.path.getsize(path))

    def size(self, key: str) -> int | None:
        full = self._full(key)

        def info() -> int | None:
            try:
                got = self.fs.info(full)
            except FileNotFoundError:
                return None
            return int(got["size"]) if got.get("type") != "directory" else None

        self.fs.invalidate_cache(full)
        return self._call("look up " + key, info)

    def list(self, prefix: str = "") -> dict[str, int]:
        self.fs.invalidate_cache()

        def walk() -> dict[str, int]:
            try:
                found = self.fs.find(self.base, detail=True)
            except FileNotFoundError:
                return {}
            out = {}
            for path, meta in found.items():
                path = path.split("://", 1)[-1] if "://" in path else path
                rel = path[len(self.base) + 1 :] if path.startswith(self.base + "/") else None
                if rel and rel.startswith(prefix) and meta.get("type") != "directory":
                    out[rel] = int(meta.get("size") or 0)
            return out

        return self._call("list", walk)

    def delete(self, key: str) -> None:
        full = self._full(key)

        def rm() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(full)

        self._call("delete " + key, rm)
        self.fs.invalidate_cache(full)

    def remove_dir(self, name: str, first: str) -> None:
        """Delete ``first`` (the manifest: the checkpoint is gone from then on), then the rest of ``name/``."""
        self.delete(f"{name}/{first}")
        for key in self.list(name + "/"):
            self.delete(key)

    def sync(self, prefix: str = "") -> None:
        """Every completed write is durable on an object store."""

    def clean_debris(self) -> list[str]:
        """The single ``LEASE`` object of stores written before lease generations; nothing else is debris here
        (a pack or state file no manifest names is removed by the store, which knows the manifests)."""
        if self.size("LEASE") is None:
            return []
        self.delete("LEASE")
        return ["LEASE"]

    def lease(self, floor: int = 1) -> Lease:
        self.check()
        return ObjectLease(self, self.lease_ttl_s, floor)

    def holder(self) -> dict[str, Any] | None:
        generation, doc = latest_lease(self)
        if not doc or doc.get("released") or float(doc.get("expires", 0) or 0) < time.time():
            return None
        return {k: v for k, v in doc.items() if k != "token"} | {"generation": generation}
