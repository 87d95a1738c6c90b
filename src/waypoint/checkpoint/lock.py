"""The single-writer lock of a checkpoints root: ``flock`` on ``LOCK``, which names its holder."""
from __future__ import annotations

import fcntl
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from .errors import StoreLockedError


class StoreLock:
    """An exclusive ``flock`` on ``LOCK``, released automatically when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder()
            os.close(self.fd)
            who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}" if holder else "another process"
            raise StoreLockedError(
                f"checkpoint store {path.parent} is already being written by {who}; "
                "wait for that run to finish or stop it, then try again") from None
        info = {"pid": os.getpid(), "host": platform.node(), "since": time.time(), "argv": sys.argv[:8]}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(info).encode(), 0)

    def holder(self) -> dict[str, Any]:
        """Who holds the lock, as written by the holder (may be empty)."""
        try:
            return json.loads(os.pread(self.fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        """Drop the lock."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
