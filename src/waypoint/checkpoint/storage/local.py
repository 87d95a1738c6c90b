"""A checkpoints root in a local directory: durable writes, renames that never replace, a POSIX record lock.

Every file is written under a temporary name, fsynced, renamed into place and its directory fsynced. A checkpoint
directory is staged as ``.staging-<name>-<uuid>/`` and committed by one no-replace rename (``renameat2``), so it
appears whole or not at all; it is removed by renaming it to ``.trash-<name>-<uuid>/`` first. Files are opened
without following symbolic links and only when regular (a FIFO or a device is never read). The lease is the
record lock of ``lock.py``: held until the process ends, so it cannot be lost.

Debris of interrupted writes, removed by the lock holder (``clean_debris``): ``.staging-*``, ``.trash-*`` and
``.tmp-*`` in the root, ``.tmp-*`` in ``packs/`` and inside committed checkpoints. Removal never follows a link.
"""

from __future__ import annotations

import mmap
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..durable import (
    create_exclusive,
    free_bytes,
    fsync_dir,
    open_regular,
    rename_noreplace,
    replace_file_durable,
    rmtree_nofollow,
    write_file_durable,
)
from ..errors import CheckpointError
from .base import LEASE_LOCK, Backend, Capabilities, IOStats, Lease, NewObject, Reader, check_key
from .lock import StoreLock, holder_of

ROOT_DEBRIS = (".staging-", ".trash-", ".tmp-")
TEMP = ".tmp-"
LOCK = "LOCK"


class LocalReader(Reader):
    """A regular file opened without following links; reads with ``preadv`` into the caller's memory."""

    def __init__(self, path: Path, stats: IOStats, key: str) -> None:
        self.fd = open_regular(path)
        self.size = os.fstat(self.fd).st_size
        self.stats, self.key = stats, key

    def readinto(self, view: memoryview, offset: int) -> int:
        got = 0
        while got < len(view):  # short reads
            n = os.preadv(self.fd, [view[got:]], offset + got)
            if n == 0:
                break
            got += n
        self.stats.read(self.key, got)
        return got

    def mmap(self, populate: bool = False) -> mmap.mmap:
        flags = mmap.MAP_PRIVATE | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
        return mmap.mmap(self.fd, 0, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class LocalNewObject(NewObject):
    """A temporary file next to the object's final place; ``commit`` fsyncs it and renames it there."""

    def __init__(self, directory: Path, stats: IOStats) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.tmp = directory / f"{TEMP}{uuid.uuid4().hex}.safetensors"
        self.fd = create_exclusive(self.tmp, readable=True)  # read back for its parity
        self.stats = stats

    def commit(self, key: str) -> None:
        final = self.tmp.parent / Path(key).name
        try:
            self.stats.wrote(os.fstat(self.fd).st_size)
            os.fsync(self.fd)
        finally:
            os.close(self.fd)
            self.fd = -1
        try:
            try:
                rename_noreplace(self.tmp, final)
            except FileExistsError:  # the same content under the same name, maybe a damaged copy: the new one wins
                os.replace(self.tmp, final)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        fsync_dir(final.parent)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.tmp.unlink(missing_ok=True)


class LocalLease(Lease):
    def __init__(self, root: Path, floor: int) -> None:
        self.lock = StoreLock(root / LOCK, floor)
        self.info = self.lock.info
        self.generation = int(self.info["generation"])

    def check(self) -> None:
        """A record lock cannot be lost while its process lives: nothing to check."""

    def release(self) -> None:
        self.lock.release()


class LocalBackend(Backend):
    """A directory on a POSIX file system."""

    caps = Capabilities(
        atomic_rename=True,
        conditional_create=True,
        ranged_reads=True,
        fsync=True,
        direct_io=True,
        mmap=True,
        lease=LEASE_LOCK,
        strong_listing=True,
        remote=False,
    )

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.url = str(self.root)
        self.stats = IOStats()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key) if key else self.root

    def check(self) -> None:
        """Refuse a root, or a ``packs/``, that is a symbolic link or not a directory (one sentence)."""
        for path in (self.root, self.root / "packs"):
            if os.path.islink(path):  # gc would delete, and restore read, files outside the store
                raise CheckpointError(
                    f"{path} is a symbolic link, and the store never follows links; replace it with the directory it points to"
                )
            if os.path.lexists(path) and not os.path.isdir(path):
                raise CheckpointError(f"{path} is not a directory, so it cannot hold checkpoints; move it away")

    def free_bytes(self) -> int | None:
        """Bytes available to an unprivileged writer on the root's file system (statvfs)."""
        return free_bytes(self.root)

    def exists(self) -> bool:
        return self.root.is_dir()

    def create(self) -> None:
        """Make the root (and ``packs/``), durably."""
        new_root = not self.root.exists()
        (self.root / "packs").mkdir(parents=True, exist_ok=True)
        if new_root:
            fsync_dir(self.root.parent)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file_durable(path, data)
        self.stats.wrote(len(data))

    def publish(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{TEMP}{path.name}-{uuid.uuid4().hex[:12]}")
        try:
            write_file_durable(tmp, data)
            rename_noreplace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)
        self.stats.wrote(len(data))

    def replace(self, key: str, data: bytes) -> None:
        self.put(key, data)

    def publish_dir(self, name: str, files: Sequence[tuple[str, bytes]]) -> None:
        """Stage the files in ``.staging-<name>-<uuid>/`` (each fsynced), fsync it, rename it to ``name`` without
        replacing anything, fsync the root. An error after the rename propagates: the caller looks whether the
        directory is in place (then it is committed, only perhaps not yet durable: ``sync`` again)."""
        staging: Path | None = self.root / f".staging-{check_key(name)}-{uuid.uuid4().hex[:12]}"
        try:
            staging.mkdir()
            for fname, data in files:
                write_file_durable(staging / fname, data)
                self.stats.wrote(len(data))
            fsync_dir(staging)
            rename_noreplace(staging, self.root / name)
            staging = None
            fsync_dir(self.root)
        finally:
            if staging is not None:
                rmtree_nofollow(staging)

    def open(self, key: str) -> Reader:
        return LocalReader(self._path(key), self.stats, key)

    def new_object(self, prefix: str) -> NewObject:
        return LocalNewObject(self._path(prefix.rstrip("/")), self.stats)

    def size(self, key: str) -> int | None:
        try:
            return os.lstat(self._path(key)).st_size
        except FileNotFoundError:
            return None

    def list(self, prefix: str = "") -> dict[str, int]:
        """Every file below the root (what interrupted writes left, ``.tmp-*`` and the like, is not an object)."""
        out: dict[str, int] = {}
        if not self.root.is_dir():
            return out
        for dirpath, dirs, files in os.walk(self.root):  # never descends into a symlinked directory
            rel = os.path.relpath(dirpath, self.root)
            base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            dirs[:] = [
                d
                for d in dirs
                if not d.startswith(ROOT_DEBRIS) and ((base + d + "/").startswith(prefix) or prefix.startswith(base + d + "/"))
            ]
            for f in files:
                key = base + f
                if key.startswith(prefix) and not f.startswith(ROOT_DEBRIS):
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

    def remove_dir(self, name: str, first: str) -> None:
        """Rename the directory to ``.trash-<name>-<uuid>`` (it is gone from that instant), fsync, then delete it."""
        trash = self.root / f".trash-{check_key(name)}-{uuid.uuid4().hex[:12]}"
        os.rename(self.root / name, trash)
        fsync_dir(self.root)
        rmtree_nofollow(trash)

    def sync(self, prefix: str = "") -> None:
        fsync_dir(self._path(prefix.rstrip("/")))

    def clean_debris(self) -> list[str]:
        removed: list[str] = []
        places = [(self.root, ROOT_DEBRIS), (self.root / "packs", (TEMP,))]
        places += [(Path(e.path), (TEMP,)) for e in os.scandir(self.root) if e.name.startswith("step_") and not e.is_symlink()]
        for directory, prefixes in places:
            if not directory.is_dir():
                continue
            here = [Path(e.path) for e in os.scandir(directory) if e.name.startswith(prefixes)]
            for path in here:
                rmtree_nofollow(path)  # a file, a directory or a symlink (unlinked, never followed)
                removed.append(os.path.relpath(path, self.root))
            if here:
                fsync_dir(directory)
        return removed

    def lease(self, floor: int = 1) -> Lease:
        self.create()
        return LocalLease(self.root, floor)

    def holder(self) -> dict[str, Any] | None:
        return holder_of(self.root / LOCK)
