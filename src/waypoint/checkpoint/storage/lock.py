"""The single-writer lock of a local checkpoints root: a POSIX record lock on ``LOCK``, which names its holder
and counts the holders (``generation``: the previous holder's plus one).

A POSIX record lock (``fcntl.lockf``, F_SETLK) belongs to the process, not to the open file: a child
forked while the lock is held (a DataLoader worker) inherits the descriptor but not the lock, so the
lock dies with the process that took it, even when a worker outlives a SIGKILLed parent by seconds.
(``flock`` locks belong to the open file description, which forked children share: they kept a dead
writer's lock alive.)

The price of record locks: closing *any* descriptor of the file drops the process's lock, and a
second lock request by the same process succeeds. So a process never opens ``LOCK`` while it holds
it: holders are registered by the file's identity and a second open in the same process is refused
before the file is opened.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import stat
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, StoreLockedError

_held: dict[tuple[int, int], StoreLock] = {}  # (st_dev, st_ino) of LOCK files this process holds
_held_guard = threading.Lock()


def _refuse(path: Path, holder: dict[str, Any]) -> StoreLockedError:
    who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}" if holder else "another process"
    return StoreLockedError(
        f"checkpoint store {path.parent} is already being written by {who}; "
        "wait for that run to finish or stop it, then try again"
    )


class StoreLock:
    """An exclusive POSIX record lock on ``LOCK``, released automatically when the process dies."""

    def __init__(self, path: Path, floor: int = 1) -> None:
        self.path = path
        self.fd = -1
        with _held_guard:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) in _held:  # opening it again would drop our own lock
                raise _refuse(path, _held[(st.st_dev, st.st_ino)].info)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                what = "is a symbolic link" if exc.errno == errno.ELOOP else f"cannot be opened ({exc.strerror or exc})"
                raise CheckpointError(
                    f"{path} {what}, so the store cannot be locked for writing; replace it with a regular file (or remove it)"
                ) from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise CheckpointError(f"{path} is not a regular file, so the store cannot be locked for writing; remove it")
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    os.close(fd)
                    raise CheckpointError(f"{path} cannot be locked ({exc.strerror or exc})") from None
                holder = self._read(fd)
                os.close(fd)  # we hold no lock on this file, so closing drops nothing
                raise _refuse(path, holder) from None
            self.fd = fd
            st = os.fstat(fd)
            self.key = (st.st_dev, st.st_ino)
            previous = self._read(fd).get("generation")
            generation = max(floor, previous + 1 if isinstance(previous, int) and not isinstance(previous, bool) else 1)
            self.info = {
                "pid": os.getpid(),
                "host": platform.node(),
                "since": time.time(),
                "argv": sys.argv[:8],
                "generation": generation,
            }
            _held[self.key] = self
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(self.info).encode(), 0)

    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        try:
            doc = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return doc if isinstance(doc, dict) else {}
        except (OSError, ValueError):
            return {}

    def holder(self) -> dict[str, Any]:
        """Who holds the lock, as written by the holder (may be empty)."""
        return self._read(self.fd) if self.fd >= 0 else {}

    def release(self) -> None:
        if self.fd >= 0:
            with _held_guard:
                if _held.get(self.key) is self:
                    del _held[self.key]
                os.close(self.fd)
                self.fd = -1


_FLOCK = "hhqqi"  # Linux struct flock: l_type, l_whence, l_start, l_len, l_pid (64-bit off_t)


def holder_of(path: Path) -> dict[str, Any] | None:
    """Who holds the writer lock on ``path`` now (as the holder wrote it, plus its pid), or None; takes no lock.

    F_GETLK neither takes nor waits for the lock, so a starting writer is never refused because of the question; a
    lock this process holds is answered from the registry (closing a descriptor of the file would drop it).
    """
    with _held_guard:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if (st.st_dev, st.st_ino) in _held:
            return dict(_held[(st.st_dev, st.st_ino)].info)
        if not stat.S_ISREG(st.st_mode) or not sys.platform.startswith("linux"):  # struct flock is Linux's layout
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            size = struct.calcsize(_FLOCK)
            request = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0) + bytes(32 - size)
            answer = fcntl.fcntl(fd, fcntl.F_GETLK, request)
            l_type, *_, l_pid = struct.unpack(_FLOCK, answer[:size])
            if l_type == fcntl.F_UNLCK:
                return None
            return {**StoreLock._read(fd), "pid": l_pid} if l_pid > 0 else StoreLock._read(fd)
        finally:
            os.close(fd)  # this process holds no lock on the file (checked above), so closing drops nothing
