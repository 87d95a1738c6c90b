"""POSIX durability primitives: exclusive file creation, fsync of files and directories,
no-replace rename, atomic replace, and an rmtree that never follows symlinks."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import stat
import uuid
from pathlib import Path
from typing import Any

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def write_all(fd: int, data: memoryview | bytes) -> None:
    """Write every byte of ``data`` to ``fd``, looping over short writes."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def create_exclusive(path: Path, readable: bool = False) -> int:
    """Open a new file for writing (``readable``: and reading); fails if anything (a symlink included) is there."""
    mode = os.O_RDWR if readable else os.O_WRONLY
    return os.open(path, mode | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def write_file_durable(path: Path, data: bytes) -> None:
    """Create ``path`` exclusively, write ``data``, fsync and close (errors propagate)."""
    fd = create_exclusive(path)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """fsync a directory so that entries created or renamed in it survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, failing with FileExistsError if ``dst`` exists (renameat2)."""
    if _renameat2 is not None:
        rc = _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "destination exists", str(dst))
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), str(dst))
    # Filesystem without RENAME_NOREPLACE: the caller holds the store lock, so check-then-rename is safe.
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "destination exists", str(dst))
    os.rename(src, dst)


def replace_file_durable(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data`` (temp file, fsync, rename, fsync dir)."""
    tmp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:12]}")
    try:
        write_file_durable(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no whitespace) for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def rmtree_nofollow(path: Path) -> None:
    """Remove a directory tree without following symlinks; a symlink itself is unlinked."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    shutil.rmtree(path)  # uses the fd-based, symlink-attack-resistant implementation on Linux


def free_bytes(path: Path) -> int:
    """Bytes available to an unprivileged writer on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def open_regular(path: Path) -> int:
    """Open a regular file for reading without following a symlink (``OSError(ELOOP)``) or blocking on a FIFO;
    anything else that is not a regular file raises ``OSError(EINVAL)`` and is never opened for reading."""
    for _ in range(5):
        st = os.lstat(path)  # FileNotFoundError propagates
        if stat.S_ISLNK(st.st_mode):
            raise OSError(errno.ELOOP, "a symbolic link", str(path))
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        after = os.fstat(fd)
        if stat.S_ISREG(after.st_mode) and (after.st_dev, after.st_ino) == (st.st_dev, st.st_ino):
            return fd
        os.close(fd)
        if not stat.S_ISREG(after.st_mode):
            break
        # another regular file took the name in between (a writer's atomic replace): look again
    raise OSError(errno.EINVAL, "not a regular file", str(path))
