"""Where a store's bytes live: one small interface, two implementations.

The shape follows restic's backend and ``torch.distributed.checkpoint``'s ``FileSystemBase``: keys are
``/``-separated names relative to the store's root, and a backend can

- ``put`` an immutable object (a pack, a state file): written completely or not at all;
- ``publish`` an object only if absent (the commit point of a checkpoint: its manifest);
- ``replace`` an object atomically (a rewritten manifest, the derived index);
- ``read`` a range, ``size`` an object, ``list`` a prefix, ``delete`` an object;
- hand out the single writer's ``lease``.

``caps`` says what the medium guarantees. ``LocalBackend`` (a directory) has atomic no-replace renames,
fsync and O_DIRECT, and its lease is the POSIX record lock of ``lock.py``: the POSIX store
(``store.CheckpointStore``) commits by renaming a staging directory, exactly as before. ``FsspecBackend``
(any fsspec URL, e.g. ``s3://bucket/prefix``) has no rename: there the manifest published with a
conditional put (S3 ``If-None-Match: *``) after its packs is the commit point (``objstore.ObjectStore``),
and the lease is an object naming its owner and an expiry. Credentials come from the environment
(AWS_* variables, fsspec configuration), never from a config file or a manifest.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import platform
import random
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .durable import create_exclusive, fsync_dir, open_regular, rename_noreplace, replace_file_durable, write_all
from .errors import CheckpointError, StoreLockedError

log = logging.getLogger(__name__)
T = TypeVar("T")
LEASE = "LEASE"


class BackendError(CheckpointError):
    """The storage cannot be reached or refuses access (one sentence; the CLI and train.py exit 2)."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend guarantees."""

    atomic_rename: bool  # rename with no-replace: a staging directory can be committed by renaming it
    conditional_put: bool  # publish-if-absent is atomic on the medium (not check-then-write)
    fsync: bool  # writes can be made durable before the call returns
    direct_io: bool  # big writes may bypass the page cache (O_DIRECT)
    remote: bool  # bytes travel over a network: reads fetch ranges, errors may be transient


class Lease(ABC):
    """The single writer's right to change a store; ``release`` gives it back."""

    info: dict[str, Any]

    @abstractmethod
    def release(self) -> None: ...


class Backend(ABC):
    """Objects under one root, named by ``/``-separated keys."""

    url: str
    caps: Capabilities

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store an immutable object (complete or absent, never partial); an existing one is replaced."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """``put`` the bytes of a local file (streamed: a pack can be larger than memory allows twice)."""

    @abstractmethod
    def publish(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` only if nothing is there (FileExistsError otherwise)."""

    @abstractmethod
    def replace(self, key: str, data: bytes) -> None:
        """Atomically replace (or create) an object: readers see the old bytes or the new ones."""

    @abstractmethod
    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of an object (a range of it); FileNotFoundError when it is absent."""

    @abstractmethod
    def get_file(self, key: str, path: Path) -> None:
        """Copy an object into a new local file."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """An object's size in bytes, or None when it is absent."""

    @abstractmethod
    def list(self, prefix: str = "") -> dict[str, int]:
        """Every object whose key starts with ``prefix``, with its size."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object (absent is fine)."""

    @abstractmethod
    def lease(self) -> Lease:
        """Become the single writer (StoreLockedError naming the holder when another writer is live)."""

    def describe(self, key: str = "") -> str:
        return f"{self.url.rstrip('/')}/{key}" if key else self.url


# ---------------------------------------------------------------------------------------------- local


class _LocalLease(Lease):
    def __init__(self, root: Path) -> None:
        from .lock import StoreLock

        self.lock = StoreLock(root / "LOCK")
        self.info = self.lock.info

    def release(self) -> None:
        self.lock.release()


def _copy_fd(src: int, dst: int) -> None:
    """Copy the rest of ``src`` to ``dst`` in 8 MiB chunks."""
    while chunk := os.read(src, 8 << 20):
        write_all(dst, chunk)


class LocalBackend(Backend):
    """A directory on a POSIX file system: every write fsynced, renames that never replace, ``lockf``."""

    caps = Capabilities(atomic_rename=True, conditional_put=True, fsync=True, direct_io=True, remote=False)

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"'{key}' is not a key inside the store")
        return self.root / key

    def _write_then(self, key: str, write: Callable[[int], None], finish: Callable[[Path, Path], None]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:12]}")
        fd = create_exclusive(tmp)
        try:
            try:
                write(fd)
                os.fsync(fd)
            finally:
                os.close(fd)
            finish(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)

    def put(self, key: str, data: bytes) -> None:
        self._write_then(key, lambda fd: write_all(fd, data), os.replace)

    def put_file(self, key: str, path: Path) -> None:
        def copy(fd: int) -> None:
            src = open_regular(path)
            try:
                _copy_fd(src, fd)
            finally:
                os.close(src)

        self._write_then(key, copy, os.replace)

    def publish(self, key: str, data: bytes) -> None:
        self._write_then(key, lambda fd: write_all(fd, data), rename_noreplace)

    def replace(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file_durable(path, data)

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        fd = open_regular(self._path(key))
        try:
            if length is None:
                length = os.fstat(fd).st_size - offset
            out = bytearray()
            while len(out) < length:
                chunk = os.pread(fd, length - len(out), offset + len(out))
                if not chunk:
                    break
                out += chunk
            return bytes(out)
        finally:
            os.close(fd)

    def get_file(self, key: str, path: Path) -> None:
        src = open_regular(self._path(key))
        try:
            dst = create_exclusive(path)
            try:
                _copy_fd(src, dst)
            finally:
                os.close(dst)
        finally:
            os.close(src)

    def size(self, key: str) -> int | None:
        try:
            st = os.lstat(self._path(key))
        except FileNotFoundError:
            return None
        return st.st_size

    def list(self, prefix: str = "") -> dict[str, int]:
        out: dict[str, int] = {}
        if not self.root.is_dir():
            return out
        for dirpath, dirs, files in os.walk(self.root):  # never follows symlinked directories
            rel = os.path.relpath(dirpath, self.root)
            base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            dirs[:] = [d for d in dirs if (base + d + "/").startswith(prefix) or prefix.startswith(base + d + "/")]
            for f in files:
                key = base + f
                if key.startswith(prefix):
                    try:
                        out[key] = os.lstat(os.path.join(dirpath, f)).st_size
                    except FileNotFoundError:
                        pass
        return out

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        fsync_dir(path.parent)

    def lease(self) -> Lease:
        self.root.mkdir(parents=True, exist_ok=True)
        return _LocalLease(self.root)


# ---------------------------------------------------------------------------------------------- fsspec


def is_url(root: str | os.PathLike) -> bool:
    """Whether a checkpoints root names an fsspec URL of another file system (``s3://...``, ``memory://...``)."""
    text = str(root)
    if "://" not in text:
        return False
    return text.split("://", 1)[0] not in ("file", "local")


def local_path(root: str | os.PathLike) -> str:
    """A ``file://`` URL as a plain path; anything else unchanged."""
    text = str(root)
    for scheme in ("file://", "local://"):
        if text.startswith(scheme):
            return text[len(scheme) :]
    return text


#: error types that mean "try again" (timeouts, refused or reset connections, 5xx/throttling surfaced as OSError)
def _transient(exc: BaseException) -> bool:
    if isinstance(exc, (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    name = type(exc).__name__
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"):
        return True
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    text = str(exc)
    return isinstance(exc, OSError) and any(
        s in text for s in ("Could not connect", "Connection", "timed out", "SlowDown", "ServiceUnavailable", "InternalError")
    )


def _missing_extra(protocol: str, exc: ImportError) -> BackendError:
    if protocol in ("s3", "s3a"):
        return BackendError(f"checkpoints on {protocol}:// need the 's3' extra, which is not installed: pip install -e '.[s3]'")
    return BackendError(f"checkpoints on {protocol}:// need the fsspec implementation of '{protocol}://', which is not installed")


class _ObjectLease(Lease):
    """A ``LEASE`` object: {owner, host, pid, token, expires}. Renewed by a thread every ``ttl/3`` seconds."""

    def __init__(self, backend: FsspecBackend, ttl: float) -> None:
        self.backend, self.ttl = backend, ttl
        self.token = uuid.uuid4().hex
        self.info = {
            "pid": os.getpid(),
            "host": platform.node(),
            "token": self.token,
            "since": time.time(),
            "ttl_s": ttl,
        }
        self._stop = threading.Event()
        self._acquire()
        self._thread = threading.Thread(target=self._renew_loop, name="waypoint-lease", daemon=True)
        self._thread.start()

    def _doc(self) -> bytes:
        return json.dumps({**self.info, "expires": time.time() + self.ttl}).encode()

    def _holder(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.backend.read(LEASE))
            return doc if isinstance(doc, dict) else {}
        except FileNotFoundError:
            return None
        except ValueError:
            return {}

    def _acquire(self) -> None:
        for _ in range(4):
            try:
                self.backend.publish(LEASE, self._doc())
                return
            except FileExistsError:
                pass
            holder = self._holder()
            if holder is None:
                continue  # released meanwhile: try again
            expires = float(holder.get("expires", 0) or 0)
            now = time.time()
            same_host_dead = holder.get("host") == platform.node() and not _pid_alive(holder.get("pid"))
            ttl = float(holder.get("ttl_s", self.ttl) or self.ttl)
            if not same_host_dead and now < expires <= now + ttl / 2 and holder.get("host") != platform.node():
                # a live holder renews every ttl/3, so it never has less than 2/3 of ttl left: this one missed a
                # renewal. Wait for its expiry (looking again then: a late renewal still wins) instead of refusing.
                log.warning(
                    "the lease of %s (pid %s on host %s) was not renewed; waiting %.0fs for it to expire",
                    self.backend.url,
                    holder.get("pid", "?"),
                    holder.get("host", "?"),
                    expires - now,
                )
                time.sleep(expires - now + 0.5)
                continue
            if expires > now and not same_host_dead:
                raise StoreLockedError(
                    f"checkpoint store {self.backend.url} is already being written by pid {holder.get('pid', '?')} on host "
                    f"{holder.get('host', '?')} (its lease expires in {expires - now:.0f}s unless renewed); "
                    "wait for that run to finish or stop it, then try again"
                )
            why = "its process is gone" if same_host_dead else f"it expired {now - expires:.0f}s ago"
            log.warning(
                "taking over the lease of %s held by pid %s on host %s: %s",
                self.backend.url,
                holder.get("pid", "?"),
                holder.get("host", "?"),
                why,
            )
            self.backend.delete(LEASE)
        raise StoreLockedError(f"checkpoint store {self.backend.url} keeps being taken by another writer; try again")

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                holder = self._holder()
                if holder is None or holder.get("token") != self.token:
                    log.error("the lease of %s was taken by another writer; saves from here on may conflict", self.backend.url)
                    return
                self.backend.replace(LEASE, self._doc())
            except Exception as exc:  # noqa: BLE001 - renewal retries at the next tick
                log.warning("could not renew the lease of %s (%s); retrying", self.backend.url, exc)

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            holder = self._holder()
            if holder is not None and holder.get("token") == self.token:
                self.backend.delete(LEASE)
        except Exception as exc:  # noqa: BLE001 - it expires on its own
            log.warning("could not release the lease of %s (%s); it expires in %.0fs", self.backend.url, exc, self.ttl)


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError):
        return True  # unknown: assume alive
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FsspecBackend(Backend):
    """Objects on any fsspec file system; made for object stores (S3 and its kin), which have no rename.

    Every call is retried ``retries`` times with exponential backoff (plus jitter) on transient errors
    (connection refused or reset, timeouts, throttling) and then reported as a ``BackendError`` naming the URL.
    A missing bucket or denied access is a ``BackendError`` at once.
    """

    caps = Capabilities(atomic_rename=False, conditional_put=True, fsync=False, direct_io=False, remote=True)

    def __init__(self, url: str, *, retries: int | None = None, backoff_s: float = 0.2, lease_ttl_s: float | None = None) -> None:
        try:
            import fsspec
        except ImportError as exc:  # pragma: no cover - fsspec is a core dependency
            raise _missing_extra("s3", exc) from None
        self.url = url.rstrip("/")
        protocol = url.split("://", 1)[0]
        self.retries = retries if retries is not None else int(os.environ.get("WAYPOINT_STORAGE_RETRIES", "4"))
        self.backoff_s = backoff_s
        self.lease_ttl_s = lease_ttl_s if lease_ttl_s is not None else float(os.environ.get("WAYPOINT_LEASE_TTL_S", "30"))
        try:
            opts: dict[str, Any] = {}
            endpoint = os.environ.get("WAYPOINT_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
            if protocol in ("s3", "s3a"):
                opts["config_kwargs"] = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 1}}
                if endpoint:
                    opts["endpoint_url"] = endpoint
            self.fs, self.base = fsspec.core.url_to_fs(self.url, **opts)
        except ImportError as exc:
            raise _missing_extra(protocol, exc) from None
        except ValueError as exc:
            if "Protocol not known" in str(exc) or "not known" in str(exc):
                raise BackendError(f"{url} names an unknown storage protocol '{protocol}://'") from None
            raise
        self.base = self.base.rstrip("/")
        if hasattr(self.fs, "retries"):
            self.fs.retries = 1  # s3fs's own retry loop: this class retries, with a bound and a message
        self.protocol = protocol
        self.conditional = protocol in ("s3", "s3a")  # s3fs sends If-None-Match: * for mode="create"

    def _full(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"'{key}' is not a key inside the store")
        return f"{self.base}/{key}" if key else self.base

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except (FileNotFoundError, FileExistsError):
                raise
            except PermissionError:
                raise BackendError(
                    f"access to {self.url} was denied ({what}); check the credentials in the environment"
                ) from None
            except Exception as exc:  # noqa: BLE001 - classified below
                if _denied(exc):
                    raise BackendError(
                        f"access to {self.url} was denied ({what}); check the credentials in the environment"
                    ) from None
                if _no_bucket(exc):
                    raise BackendError(f"the bucket of {self.url} does not exist; create it or fix checkpoint.root") from None
                if not _transient(exc) or attempt == self.retries:
                    if _transient(exc):
                        raise BackendError(
                            f"could not {what} at {self.url} after {self.retries + 1} attempts: {_short(exc)}"
                        ) from exc
                    raise
                log.warning("%s at %s failed (%s); retrying in %.1fs", what, self.url, _short(exc), delay)
                time.sleep(delay * (1 + random.random() * 0.25))
                delay *= 2
        raise AssertionError("unreachable")

    def check(self) -> None:
        """Fail early, in one sentence, when the bucket is missing or access is denied."""
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

    def put(self, key: str, data: bytes) -> None:
        self._call("write " + key, lambda: self.fs.pipe_file(self._full(key), data))

    def put_file(self, key: str, path: Path) -> None:
        # S3: a pack above 2 x 8 MiB goes up as a multipart upload, which the server completes atomically (an
        # upload cut short is never visible) and whose parts can travel in parallel
        extra = {"chunksize": 8 << 20} if self.protocol in ("s3", "s3a") else {}
        self._call("upload " + key, lambda: self.fs.put_file(str(path), self._full(key), **extra))

    def publish(self, key: str, data: bytes) -> None:
        full = self._full(key)
        if self.conditional:
            self._call("publish " + key, lambda: self.fs.pipe_file(full, data, mode="create"))
        else:  # a medium without conditional writes: check-then-write, safe only under the lease
            if self._call("look up " + key, lambda: self.fs.exists(full)):
                raise FileExistsError(errno.EEXIST, "already exists", full)
            self._call("publish " + key, lambda: self.fs.pipe_file(full, data))
        self.fs.invalidate_cache(full)

    def replace(self, key: str, data: bytes) -> None:
        self.put(key, data)  # an object PUT replaces atomically

    def read(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        full = self._full(key)
        end = None if length is None else offset + length
        if offset == 0 and end is None:
            return self._call("read " + key, lambda: self.fs.cat_file(full))
        return self._call("read " + key, lambda: self.fs.cat_file(full, start=offset, end=end))

    def get_file(self, key: str, path: Path) -> None:
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "exists", str(path))
        self._call("download " + key, lambda: self.fs.get_file(self._full(key), str(path)))

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
            try:
                self.fs.rm_file(full)
            except FileNotFoundError:
                pass

        self._call("delete " + key, rm)
        self.fs.invalidate_cache(full)

    def lease(self) -> Lease:
        self.check()
        return _ObjectLease(self, self.lease_ttl_s)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _denied(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, PermissionError) or any(
        s in text for s in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden")
    )


def _no_bucket(exc: BaseException) -> bool:
    return "NoSuchBucket" in str(exc) or "bucket does not exist" in str(exc)


def backend_for(root: str | os.PathLike) -> Backend:
    """The backend a checkpoints root names: an fsspec URL, or a local directory."""
    if is_url(root):
        return FsspecBackend(str(root))
    return LocalBackend(local_path(root))
