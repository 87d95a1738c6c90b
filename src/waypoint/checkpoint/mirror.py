"""Incremental mirror of a store to another place (a directory or an fsspec URL), store to store.

The destination holds a run's layout (``<dest>/checkpoints/...``), so ``waypoint ls/verify/gc <dest>`` and
``resume=<dest>@latest`` work there. For each committed checkpoint the destination lacks (or holds with other
tags), the packs it names are copied first (each checked against the size its manifest records; one already
there with that size is skipped: packs are named by content), then its state file, then its manifest, last:
a backup never names a pack it does not hold. The mirror holds the destination's writer lease while it copies,
so ``waypoint gc <dest>`` never collects a pack whose manifest is still on its way. It only adds: checkpoints
the source's retention deleted stay in the backup until ``waypoint gc <dest>`` removes them.

``BackgroundMirror`` runs a mirror after every commit on one thread (``checkpoint.backup_to``): a failure is
logged and retried after the next save, never raised into training; ``finish`` waits for the last pass.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from . import manifest as mf
from .backend import Backend, LocalBackend, backend_for, is_url, local_path

log = logging.getLogger(__name__)
PACKS = "packs/"


def destination(dest: str | os.PathLike) -> Backend:
    """The backend of a backup destination's ``checkpoints/`` (a run-like layout)."""
    text = str(dest).rstrip("/")
    if not text.endswith("/checkpoints") and not text.endswith(os.sep + "checkpoints"):
        text = f"{text}/checkpoints" if is_url(text) else str(Path(local_path(text)) / "checkpoints")
    return backend_for(text)


def _copy(src: Backend, dst: Backend, key: str) -> int:
    """Copy one object; returns its size."""
    if isinstance(src, LocalBackend):
        path = src.root / key
        dst.put_file(key, path)
        return os.lstat(path).st_size
    tmp = Path(tempfile.mkdtemp(prefix="waypoint-mirror-"))
    try:
        src.get_file(key, tmp / "obj")
        dst.put_file(key, tmp / "obj")
        return os.lstat(tmp / "obj").st_size
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def mirror_store(store: Any, dst: Backend, names: list[str] | None = None) -> dict[str, Any]:
    """Copy the committed, valid checkpoints of ``store`` (or ``names``) that ``dst`` lacks; packs first, manifest last."""
    src: Backend = store.backend
    there = dst.list()
    copied: list[str] = []
    packs_copied = 0
    nbytes = 0
    skipped: dict[str, str] = {}
    lease = dst.lease()
    try:
        wanted = [i for i in list(store.infos.values()) if i.valid and (names is None or i.name in names)]
        for info in sorted(wanted, key=lambda i: (i.step, i.name)):
            key = f"{info.name}/{mf.MANIFEST}"
            try:
                raw = src.read(key)
                if there.get(key) == len(raw) and dst.read(key) == raw:
                    continue
                manifest = mf.parse(raw, info.name)
                problem = None
                for pack, meta in sorted(manifest.get("packs", {}).items()):
                    size = src.size(PACKS + pack)
                    if size is None or (isinstance(meta, dict) and size != meta.get("bytes")):
                        problem = f"pack {pack} is missing or of the wrong size at the source"
                        break
                    if there.get(PACKS + pack) != size:
                        nbytes += _copy(src, dst, PACKS + pack)
                        there[PACKS + pack] = size
                        packs_copied += 1
                if problem:
                    skipped[info.name] = problem
                    continue
                nbytes += _copy(src, dst, f"{info.name}/{mf.STATE_JSON}")
            except FileNotFoundError:
                continue  # deleted (or repacked) by the source's writer meanwhile: the next pass sees the new state
            dst.replace(key, raw)  # last: from here on the backup holds this checkpoint
            there[key] = len(raw)
            nbytes += len(raw)
            copied.append(info.name)
        if copied:
            _write_index(dst, there)
    finally:
        lease.release()
    return {"copied": copied, "packs_copied": packs_copied, "copied_bytes": nbytes, "skipped": skipped}


def _write_index(dst: Backend, there: dict[str, int]) -> None:
    """Rebuild the destination's derived index.json from the manifests it holds (best effort)."""
    infos = []
    for key in sorted(k for k in there if k.endswith("/" + mf.MANIFEST) and k.count("/") == 1):
        try:
            infos.append(mf.info_from(mf.parse(dst.read(key), key.split("/")[0]), Path(key.split("/")[0])))
        except (mf.ManifestError, FileNotFoundError, KeyError, ValueError):
            continue
    try:
        dst.replace("index.json", mf.index_doc(sorted(infos, key=lambda i: (i.step, i.name))))
    except OSError as exc:
        log.warning("the backup's index.json could not be rewritten (%s); it is derived and rebuilt later", exc)


class BackgroundMirror:
    """Mirror a manager's store to ``dest`` after every commit, on one background thread."""

    def __init__(self, manager: Any, dest: str) -> None:
        self.manager, self.dest = manager, dest
        self._dst: Backend | None = None
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = False
        self._pending = False
        self._lock = threading.Lock()
        self.failures = 0
        self.last: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._loop, name="waypoint-mirror", daemon=True)
        self._thread.start()
        manager.on_commit(lambda _report: self.kick())

    def kick(self) -> None:
        """Ask for a pass (after a commit); returns at once."""
        with self._lock:
            self._pending = True
            self._idle.clear()
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                if not self._pending:
                    if self._stop:
                        return
                    self._idle.set()
                    continue
                self._pending = False
            started = time.monotonic()
            try:
                if self._dst is None:
                    self._dst = destination(self.dest)
                self.last = mirror_store(self.manager.store, self._dst)
                if self.last["copied"]:
                    log.info(
                        "backup: mirrored %s to %s (%d packs, %.1f MiB) in %.1fs",
                        ", ".join(self.last["copied"]),
                        self.dest,
                        self.last["packs_copied"],
                        self.last["copied_bytes"] / 2**20,
                        time.monotonic() - started,
                    )
                for name, problem in self.last["skipped"].items():
                    log.warning("backup: %s not mirrored to %s: %s", name, self.dest, problem)
            except Exception as exc:  # noqa: BLE001 - a backup never fails training
                self.failures += 1
                log.warning("backup to %s failed (%s); it is retried after the next save", self.dest, exc)
            with self._lock:
                if not self._pending:
                    self._idle.set()
                    if self._stop:
                        return

    def finish(self, timeout: float | None = None) -> bool:
        """Run a last pass and wait for it (the end of the run); True when the backup is up to date."""
        self.kick()
        done = self._idle.wait(timeout)
        with self._lock:
            self._stop = True
        self._wake.set()
        self._thread.join(timeout=5)
        return done and (self.last is not None and not self.last["skipped"])
