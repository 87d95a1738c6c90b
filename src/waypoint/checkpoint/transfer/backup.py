"""Backups: a store copied into another store (a directory or an fsspec URL), incrementally and verified.

``mirror`` copies, for each sound checkpoint of the source the destination lacks (or holds with other tags), every
pack it names that the destination lacks, each checked at the source first (a damaged one is reported and never
copied, and its checkpoints stay out of the copy), then publishes the checkpoint there as the destination's own
commit protocol publishes any checkpoint: a copy never names a pack it does not hold, at any moment. The
destination is a store with a run's layout (``<dest>/checkpoints``): ``waypoint ls/verify/gc <dest>`` and
``resume=<dest>@latest`` work there; the copy is made under the destination's lease.

``backup`` (the ``waypoint backup`` command) also re-verifies what the destination already holds and repairs a
damaged copy from the source, carries the run's ``train.log``, ``metrics.jsonl`` and ``.hydra/`` along, and can
keep only the newest checkpoints there (``keep_last``; pinned ones always stay). ``BackgroundMirror`` runs a mirror
after every commit of a run (``checkpoint.backup_to``): a failure is logged and retried after the next save,
never raised into training. A source written by a live writer is fine: a checkpoint deleted or repacked while it
is copied is left for the next pass.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import manifest as mf
from ..errors import CheckpointError
from ..integrity import read_state
from ..manager import CheckpointManager
from ..packs import IntegrityError, TensorRecord
from ..reading import verify_pack
from ..refs import checkpoints_root
from ..storage import Backend, backend_for, is_url, local_path
from ..store import CheckpointStore

log = logging.getLogger(__name__)
RUN_FILES = ("metrics.jsonl", "train.log")
_CHUNK = 8 << 20


class BackupRefusedError(CheckpointError):
    """A backup that cannot be made as asked (e.g. the destination lies inside the source)."""


@dataclass
class MirrorReport:
    copied: list[str] = field(default_factory=list)  # files copied, relative to the run ('checkpoints/packs/...')
    checkpoints: list[str] = field(default_factory=list)  # checkpoints published at the destination
    repaired: list[str] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)  # source file -> its problem (never copied)
    changed: list[str] = field(default_factory=list)  # deleted or rewritten by a live writer meanwhile
    unchanged: int = 0
    copied_bytes: int = 0

    @property
    def packs_copied(self) -> int:
        return sum(1 for rel in self.copied if rel.startswith("checkpoints/packs/"))


def destination(dest: str | os.PathLike) -> str:
    """The checkpoints root of a backup destination (a run-like layout: ``<dest>/checkpoints``)."""
    text = str(dest).rstrip("/")
    if text.endswith("/checkpoints") or text.endswith(os.sep + "checkpoints"):
        return text
    return f"{text}/checkpoints" if is_url(text) else str(Path(local_path(text)) / "checkpoints")


def copy_object(src: Backend, dst: Backend, key: str) -> int:
    """Stream one object from ``src`` to ``dst`` (it appears there whole, or not at all); returns its size."""
    with src.open(key) as reader:
        obj = dst.new_object(key.rsplit("/", 1)[0] + "/")
        try:
            pos = 0
            while pos < reader.size:
                data = reader.read(pos, min(_CHUNK, reader.size - pos))
                if not data:
                    raise FileNotFoundError(f"{src.describe(key)} shrank while it was copied")
                os.pwrite(obj.fd, data, pos)
                pos += len(data)
            obj.commit(key)
        except BaseException:
            obj.abort()
            raise
    return reader.size


class _Mirror:
    """One pass copying ``src`` into ``dst`` (see the module doc)."""

    def __init__(self, src: CheckpointStore, dst: CheckpointStore, check: bool) -> None:
        self.src, self.dst, self.check = src, dst, check
        self.report = MirrorReport()
        self.source_problems: dict[str, str | None] = {}  # pack -> its problem at the source (None: sound)

    def run(self) -> MirrorReport:
        for name in sorted(self.src.infos, key=lambda n: (self.src.infos[n].step, n)):
            if self.src.infos[name].valid:
                try:
                    self._one(name)
                except FileNotFoundError:
                    self.report.changed.append(f"checkpoints/{name}")  # deleted or repacked meanwhile: next pass
        return self.report

    def _one(self, name: str) -> None:
        raw = self.src.catalog.manifest_bytes(name)
        if raw is None:
            return  # deleted by the source's writer since it was listed
        try:
            manifest = mf.parse(raw, name)
            state = read_state(self.src.backend, name, manifest)
        except (mf.ManifestError, IntegrityError) as exc:
            self.report.damaged[f"checkpoints/{name}/manifest.json"] = str(exc)
            return
        there = self.dst.infos.get(name)
        same = there is not None and there.digest == manifest["digest"]
        if same and not self.check and set(there.tags) == set(manifest.get("tags", ())):
            self.report.unchanged += 1
            return
        bad = self._packs(name, manifest)
        if bad and self.src.catalog.manifest_bytes(name) != raw:
            for pack in manifest["packs"]:  # deleted or repacked by the source's writer meanwhile: not damage
                self.source_problems.pop(pack, None)
                self.report.damaged.pop(f"checkpoints/packs/{pack}", None)
            raise FileNotFoundError(name)
        if bad:
            self.report.damaged[f"checkpoints/{name}/manifest.json"] = f"it names a damaged pack ({bad})"
            return
        outcome = self.dst.adopt(name, manifest, state)
        if outcome == "unchanged":
            self.report.unchanged += 1
        else:
            self.report.checkpoints.append(name)
            self.report.copied.append(f"checkpoints/{name}/manifest.json")

    def _packs(self, name: str, manifest: dict) -> str | None:
        """Copy the packs of one checkpoint the destination lacks (or, checking, holds damaged); the first problem
        found at the source, or None."""
        by_pack: dict[str, list[TensorRecord]] = {}
        for t in manifest["tensors"].values():
            by_pack.setdefault(t["pack"], []).append(TensorRecord.from_json(t))
        for pack, recs in sorted(by_pack.items()):
            key = f"packs/{pack}"
            if pack not in self.source_problems:
                problems, _bad = verify_pack(self.src.backend, manifest, pack, recs, self.src.pool)
                self.source_problems[pack] = problems[0] if problems else None
            if self.source_problems[pack]:
                self.report.damaged[f"checkpoints/{key}"] = self.source_problems[pack]  # type: ignore[assignment]
                return self.source_problems[pack]
            size = self.dst.backend.size(key)
            if size != manifest["packs"][pack]["bytes"] or (self.check and self._damaged_there(manifest, pack, recs)):
                self.dst.check_lease()
                self.report.copied_bytes += copy_object(self.src.backend, self.dst.backend, key)
                self.report.copied.append(f"checkpoints/{key}")
                if size is not None:
                    self.report.repaired.append(f"checkpoints/{key}")
        return None

    def _damaged_there(self, manifest: dict, pack: str, recs: list[TensorRecord]) -> bool:
        return bool(verify_pack(self.dst.backend, manifest, pack, recs, self.dst.pool)[0])


def mirror(src: CheckpointStore, dst: CheckpointStore, *, check: bool = False) -> MirrorReport:
    """Copy what ``dst`` lacks of ``src`` (``check``: and re-verify, repairing, what it holds); see the module doc."""
    return _Mirror(src, dst, check).run()


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
            log.info(
                "backup: mirrored %s to %s (%d packs, %.1f MiB) in %.1fs",
                ", ".join(report.checkpoints),
                self.dest,
                report.packs_copied,
                report.copied_bytes / 2**20,
                seconds,
            )
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
