"""Backups: a run's store copied into another store (a directory or an fsspec URL), incrementally and verified.

The copy is made checkpoint by checkpoint, packs first, under the destination's lease (``replicate.mirror``). The
destination is a store with a run's layout (``<dest>/checkpoints``): ``waypoint ls/verify/gc <dest>`` and
``resume=<dest>@latest`` work there.

``backup`` (``waypoint backup``) also repairs damaged copies there, carries ``train.log``, ``metrics.jsonl`` and
``.hydra/`` along and can keep only the newest checkpoints (``keep_last``; pinned ones stay). ``BackgroundMirror``
mirrors after every commit (``checkpoint.backup_to``); a failure is logged and retried, never raised into training.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..manager import CheckpointManager
from ..refs import backup_root, checkpoints_root
from ..replicate import MirrorReport, mirror
from ..storage import backend_for, is_url, local_path
from ..store import CheckpointStore

log = logging.getLogger(__name__)
RUN_FILES = ("metrics.jsonl", "train.log")


class BackupRefusedError(CheckpointError):
    """A backup that cannot be made as asked (e.g. the destination lies inside the source)."""


def destination(dest: str | os.PathLike) -> str:
    """The checkpoints root of a backup destination (a run-like layout: ``<dest>/checkpoints``)."""
    return str(backup_root(dest))


def _inside(dest: Path, source: Path) -> bool:
    dest, source = dest.resolve(), source.resolve()
    return dest == source or source in dest.parents


def _refuse_inside(dest: str, source: Path | str) -> None:
    if isinstance(source, Path) and not is_url(dest):
        run = source.parent if source.name == "checkpoints" else source
        if _inside(Path(local_path(dest)), run):
            raise BackupRefusedError(
                f"the destination {dest} lies inside the run being backed up ({run}); choose a destination outside it"
            )


def _run_files(run: Path, dest: str) -> list[str]:
    """Copy the run's small files (``train.log``, ``metrics.jsonl``, ``.hydra/*.yaml``) where they differ."""
    there = backend_for(str(dest))
    copied = []
    files = [(run / n, n) for n in RUN_FILES] + [(p, f".hydra/{p.name}") for p in sorted((run / ".hydra").glob("*.yaml"))]
    for path, rel in files:
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        try:
            same = hashlib.sha256(there.read(rel)).digest() == hashlib.sha256(data).digest()
        except (FileNotFoundError, OSError):
            same = False
        if not same:
            there.put(rel, data)
            copied.append(rel)
    return copied


def backup(source: str | os.PathLike, dest: str, *, keep_last: int | None = None) -> dict[str, Any]:
    """Back up a run (or a checkpoints root, local or a URL) to ``dest``: what is missing or damaged there is copied,
    every checkpoint there verified; ``keep_last`` keeps only the newest N there (pinned ones too)."""
    root = checkpoints_root(source)
    _refuse_inside(dest, root)
    with (
        CheckpointManager(root, read_only=True) as src,
        CheckpointManager(destination(dest), src.policy, monitor=src.monitor, mode=src.mode) as dst,  # the run's best, pools
    ):
        report = mirror(src.store, dst.store, check=True)
        pruned = dst.gc(keep_last=keep_last)["deleted"] if keep_last is not None else []
        for name, problems in dst.verify().items():
            if problems:
                report.damaged.setdefault(f"checkpoints/{name}/manifest.json", "; ".join(problems))
    if isinstance(root, Path) and root.name == "checkpoints":
        report.copied += _run_files(root.parent, dest)
    return {
        "dest": dest,
        "copied": report.copied,
        "repaired": report.repaired,
        "copied_bytes": report.copied_bytes,
        "packs_copied": report.packs_copied,
        "unchanged": report.unchanged,
        "damaged": report.damaged,
        "changed_during_backup": report.changed,
        "deleted": pruned,
    }


class BackgroundMirror:
    """Mirror a manager's store to ``dest`` after every commit, on one background thread."""

    def __init__(self, manager: CheckpointManager, dest: str) -> None:
        self.manager, self.dest = manager, dest
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = False
        self._pending = False
        self._lock = threading.Lock()
        self.failures = 0
        self.last: MirrorReport | None = None
        self._thread = threading.Thread(target=self._loop, name="waypoint-mirror", daemon=True)
        self._thread.start()
        manager.on_commit(lambda _report: self.kick())

    def kick(self) -> None:
        """Ask for a pass (after a commit); returns at once."""
        with self._lock:
            self._pending = True
            self._idle.clear()
        self._wake.set()

    def _take(self) -> bool:
        """Whether a pass is due (False: stop the thread)."""
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                if self._pending:
                    self._pending = False
                    return True
                self._idle.set()
                if self._stop:
                    return False

    def _loop(self) -> None:
        while self._take():
            started = time.monotonic()
            try:
                with CheckpointStore(destination(self.dest)) as dst:
                    self.last = mirror(self.manager.store, dst)
                self._log(self.last, time.monotonic() - started)
            except Exception as exc:  # noqa: BLE001 - a backup never fails training
                self.failures += 1
                log.warning("backup to %s failed (%s); it is retried after the next save", self.dest, exc)
            with self._lock:
                if not self._pending:
                    self._idle.set()

    def _log(self, report: MirrorReport, seconds: float) -> None:
        if report.checkpoints:
            copied = f"{report.packs_copied} packs, {report.copied_bytes / 2**20:.1f} MiB"
            log.info("backup: mirrored %s to %s (%s) in %.1fs", ", ".join(report.checkpoints), self.dest, copied, seconds)
        for rel, problem in report.damaged.items():
            log.warning("backup: %s not mirrored to %s: %s", rel, self.dest, problem)

    def finish(self, timeout: float | None = None) -> bool:
        """Run a last pass and wait for it (the end of the run); True when the backup is up to date."""
        self.kick()
        done = self._idle.wait(timeout)
        with self._lock:
            self._stop = True
        self._wake.set()
        self._thread.join(timeout=5)
        return done and self.last is not None and not self.last.damaged
