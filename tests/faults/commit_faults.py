"""Fault injection at each step of the commit protocol, by wrapping the system calls the store makes.

A ``Syscalls`` recorder wraps ``os.pwrite``/``os.write`` (pack and file data), ``os.fsync`` (files and
directories), ``os.mkdir`` (the staging directory), the ``renameat2`` rename and ``os.replace`` (the
index). Each call is one *event*, named by what it touches (``fsync packs/.tmp-*``, ``rename staging ->
step_*``...). A first pass records the events of a commit; then each event is replayed with a fault:

- ``error``: the call raises ``OSError(EIO)`` instead of running (a failing disk),
- ``abort``: the call raises ``KeyboardInterrupt`` (Ctrl-C, or an exception out of a signal handler),
- ``kill``: the process SIGKILLs itself right before the call (see ``kill_child``).

The store itself is never patched: only the operating system's answers change.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from waypoint.checkpoint import durable

MODES = ("error", "abort", "kill")


def _where(root: Path, target: str) -> str:
    """A stable label for a path: relative to the store, hashes and uuids replaced by '*'."""
    rel = os.path.relpath(target, root) if target.startswith(str(root)) else target
    parts = []
    for part in rel.split(os.sep):
        if part.startswith(".tmp-"):
            part = ".tmp-*"
        elif part.startswith(".staging-"):
            part = ".staging-*"
        elif part.endswith(".safetensors"):
            part = "<pack>"
        parts.append(part)
    return "/".join(parts)


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


class Syscalls:
    """Wraps the store's system calls; records them, and fails the ``fail_at``-th one as ``mode`` says."""

    def __init__(self, root: Path, fail_at: int | None = None, mode: str = "error") -> None:
        self.root, self.fail_at, self.mode = Path(root), fail_at, mode
        self.events: list[str] = []
        self.fired: str | None = None

    def _event(self, label: str) -> None:
        n = len(self.events)
        self.events.append(label)
        if n == self.fail_at:
            self.fired = label
            if self.mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.mode == "abort":
                raise KeyboardInterrupt(f"injected abort at {label}")
            raise OSError(errno.EIO, "Input/output error (injected)")

    @contextmanager
    def active(self) -> Iterator[Syscalls]:
        real = {
            "pwrite": os.pwrite,
            "write": os.write,
            "fsync": os.fsync,
            "mkdir": os.mkdir,
            "replace": os.replace,
            "renameat2": durable._renameat2,
        }
        root = self.root

        def pwrite(fd, data, offset):
            self._event(f"write {_where(root, _fd_path(fd))}")
            return real["pwrite"](fd, data, offset)

        def write(fd, data):
            path = _fd_path(fd)
            if path.startswith(str(root)):
                self._event(f"write {_where(root, path)}")
            return real["write"](fd, data)

        def fsync(fd):
            self._event(f"fsync {_where(root, _fd_path(fd))}")
            return real["fsync"](fd)

        def mkdir(path, *a, **kw):
            self._event(f"mkdir {_where(root, os.fspath(path))}")
            return real["mkdir"](path, *a, **kw)

        def replace(src, dst, *a, **kw):
            self._event(f"replace {_where(root, os.fspath(dst))}")
            return real["replace"](src, dst, *a, **kw)

        def renameat2(dfd1, src, dfd2, dst, flags):
            self._event(f"rename {_where(root, os.fsdecode(src))} -> {_where(root, os.fsdecode(dst))}")
            return real["renameat2"](dfd1, src, dfd2, dst, flags)

        os.pwrite, os.write, os.fsync, os.mkdir, os.replace = pwrite, write, fsync, mkdir, replace
        durable._renameat2 = renameat2 if real["renameat2"] is not None else None
        try:
            yield self
        finally:
            os.pwrite, os.write, os.fsync, os.mkdir, os.replace = (
                real["pwrite"],
                real["write"],
                real["fsync"],
                real["mkdir"],
                real["replace"],
            )
            durable._renameat2 = real["renameat2"]


def states() -> tuple[dict, dict]:
    """Step 1's state and step 2's: step 2 shares ``frozen`` (deduplicated) and adds new tensors (a new pack)."""
    g = torch.Generator().manual_seed(5)
    frozen = torch.randn(64, 64, generator=g)
    s1 = {"frozen": frozen, "live": torch.randn(32, 32, generator=g), "step": 1}
    s2 = {"frozen": frozen, "live": torch.randn(32, 32, generator=g), "extra": torch.arange(100), "step": 2}
    return s1, s2


def commit_step_2(root: Path, calls: Syscalls) -> object:
    """Open the store (outside the injection), then commit step 2 with the system calls wrapped."""
    from waypoint.checkpoint import CheckpointManager

    mgr = CheckpointManager(root)
    try:
        with calls.active():
            return mgr.save(states()[1], step=2)
    finally:
        try:
            mgr.close()
        except BaseException:  # noqa: BLE001 - the injected failure is what the test looks at
            pass
