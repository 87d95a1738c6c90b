"""CheckpointManager: save / restore / list / verify / tag / gc over one checkpoints root."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import codec, dcp, packs
from . import manifest as mf
from .compress import check_choice as check_compression
from .manifest import CheckpointInfo
from .packs import IntegrityError
from .parity import SUFFIX as PARITY
from .policy import Candidate, KeepBest, KeepLast, RetentionPolicy, policy_from_json, policy_to_json
from .repack import bytes_freed_by_deleting, repack_sparse
from .repair import repair
from .storage import BackendError, LeaseLostError
from .store import CheckpointError, CheckpointStore, SaveRequest, check_step
from .writer import BackgroundWriter, Staging

DERIVED_TAGS = frozenset({"latest", "best"})
#: checkpoints ``latest`` (and so ``resume=auto``) never takes unless named: saved by a failing run, or foreign
NOT_LATEST = frozenset({"emergency", "imported"})
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SaveReport:
    """What one committed save did; ``CheckpointManager.on_commit`` receives one per commit, async ones included."""

    info: CheckpointInfo
    blocking: bool
    seconds: float  # from the call to save() until the commit (and retention) finished
    bytes_written: int  # new pack bytes plus the checkpoint's own files; deduplicated tensors cost nothing
    deleted: tuple[str, ...] = ()  # checkpoints retention deleted after this commit


@dataclass(frozen=True)
class CheckpointSizes:
    """Bytes of one checkpoint: ``logical`` (its state, as a plain save would write it), ``own`` (its manifest and
    JSON state files) and ``packs`` (each pack it names -> size; packs are shared with other checkpoints)."""

    name: str
    logical: int
    own: int
    packs: dict[str, int]


class NoCheckpointError(CheckpointError):
    """Nothing matches the selector (or nothing that verifies)."""


class ProtectedCheckpointError(CheckpointError):
    """A checkpoint that is pinned, best, latest or being resumed from, deleted without ``force``."""


class CheckpointManager:
    """Save and restore nested training state in a crash-safe, deduplicating store.

    ``monitor``/``mode`` name the metric that defines ``best``; ``policy`` is applied after every commit (None keeps
    everything). A tensor whose XXH3-128 fingerprint matches its key's at the last save keeps its content id and is
    neither BLAKE3-hashed nor written; an async save copies only what changed into reused host buffers.
    ``compression``, ``parity`` and ``backup`` are ``checkpoint.compression``/``parity``/``backup_to``: how new
    packs are written, and where ``repair`` copies from what parity cannot rebuild.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        policy: RetentionPolicy | None = None,
        *,
        monitor: str | None = None,
        mode: str = "max",
        read_only: bool = False,
        compression: str = "none",
        parity: bool = False,
        backup: str | None = None,
    ) -> None:
        check_compression(compression)
        self.store = CheckpointStore(root, writable=not read_only)
        self.store.compression, self.store.parity = compression, parity
        self.backup = backup  # where a damaged checkpoint is repaired from when its own redundancy is not enough
        self.root = self.store.root
        self.policy = policy
        self.monitor, self.mode = monitor, mode
        if monitor is None or policy is None:
            self._settings_from_manifests(monitor is None, policy is None)
        self.policy = self.policy or RetentionPolicy()
        self.protected: set[str] = set()
        self.writer = BackgroundWriter()
        self.staging = Staging()  # the last save's fingerprints, and the buffers of async saves
        self._listeners: list[Callable[[SaveReport], None]] = []  # on_commit: after every commit, async ones too

    def _settings_from_manifests(self, monitor: bool, policy: bool) -> None:
        """Take the monitored metric and retention policy the newest checkpoint recorded."""
        for info in reversed(list(self.store.infos.values())):
            if info.valid:
                try:
                    meta = self.store.manifest(info.name, check=False).get("meta", {})
                except mf.ManifestError:  # deleted or rewritten by a live writer since it was listed
                    continue
                if monitor and meta.get("monitor"):
                    self.monitor, self.mode = meta["monitor"], meta.get("mode", "max")
                if policy and isinstance(meta.get("retention"), list):
                    self.policy = policy_from_json(meta["retention"])
                return

    # ------------------------------------------------------------------ saving
    def save(
        self,
        state: Any,
        step: int,
        epoch: int | None = None,
        metrics: Mapping[str, Any] | None = None,
        tags: Iterable[str] = (),
        *,
        blocking: bool = True,
        meta: Mapping[str, Any] | None = None,
    ) -> CheckpointInfo | None:
        """Commit ``state`` as the checkpoint of ``step``; with ``blocking=False`` persist it in the background."""
        started = time.monotonic()
        self.writer.wait()
        step = check_step(step)
        tags, meta = self._tags_and_meta(tags, meta)
        tensors, tree = codec.encode(state)
        mf.clean_metrics(metrics)
        if blocking:
            return self._commit(tensors, tree, step, epoch, metrics, tags, meta, None, started, True)
        # Copies what changed into the previous saves' buffers; safe because the wait above finished the previous
        # background save, the only other reader of the buffers.
        staged, proven = self.staging.stage(tensors, self.store.pool, self.store.known)
        self.writer.submit(
            lambda: self._commit(staged, tree, step, epoch, metrics, tags, meta, proven, started, False), f"step {step}"
        )
        return None

    def _commit(
        self,
        tensors: Mapping[str, torch.Tensor],
        tree: Any,
        step: int,
        epoch: int | None,
        metrics: Mapping[str, Any] | None,
        tags: tuple[str, ...],
        meta: Mapping[str, Any],
        proven: Mapping[str, packs.TensorRecord] | None = None,
        started: float | None = None,
        blocking: bool = True,
    ) -> CheckpointInfo:
        packs_before = set(self.store.pack_meta) if self._listeners else set()
        request = SaveRequest(step, epoch, metrics, tags, meta)
        info = self.store.commit(tensors, tree, request, proven, self.staging.priors(tensors))
        self.staging.learn(self.store.last_records)
        return self._after_commit(info, packs_before, started, blocking)

    def commit_prewritten(
        self, records: Mapping[str, Any], packs: Mapping[str, dict], tree: Any, request: SaveRequest
    ) -> CheckpointInfo:
        """Commit a checkpoint whose tensors are already in packs (a sharded save: every rank wrote its own), then
        apply retention and tell the listeners, as ``save`` does."""
        started = time.monotonic()
        tags, meta = self._tags_and_meta(request.tags, request.meta)
        packs_before = set(self.store.pack_meta) if self._listeners else set()
        info = self.store.commit_prewritten(records, packs, tree, dataclasses.replace(request, tags=tags, meta=meta))
        return self._after_commit(info, packs_before, started, True)

    def save_sharded(
        self,
        state: Any,
        step: int,
        epoch: int | None = None,
        metrics: Mapping[str, Any] | None = None,
        tags: Iterable[str] = (),
        *,
        meta: Mapping[str, Any] | None = None,
        process_group: Any = None,
    ) -> CheckpointInfo | None:
        """Collective: commit ``state`` (tensors may be DTensor shards) as one checkpoint; its info on rank 0, which
        calls it on its writable manager and commits as ``save`` does; other ranks use a read-only one (their shards only)."""
        from . import dcp

        request = SaveRequest(check_step(step), epoch, metrics, tuple(tags), meta)
        return dcp.save_sharded(self, state, request, process_group)

    def restore_sharded(
        self, template: Any, selector: str = "latest", *, process_group: Any = None
    ) -> tuple[Any, CheckpointInfo]:
        """Collective: fill ``template``'s (possibly sharded) tensors from the checkpoint ``selector`` names, at any
        world size; returns (the saved state, which checkpoint). Every rank names the same checkpoint."""
        from . import dcp

        info = self.one(selector)
        return dcp.load_sharded(self, template, info.name, process_group), info

    def _tags_and_meta(self, tags: Iterable[str], meta: Mapping[str, Any] | None) -> tuple[tuple[str, ...], dict[str, Any]]:
        """Checked tags, and the meta every manifest records: the monitored metric and the retention policy."""
        tags = tuple(tags)
        for t in tags:
            self._check_tag(t)
        meta = dict(meta or {})
        if self.monitor:
            meta.setdefault("monitor", self.monitor)
            meta.setdefault("mode", self.mode)
        meta.setdefault("retention", policy_to_json(self.policy))
        return tags, meta

    def _after_commit(
        self, info: CheckpointInfo, packs_before: set[str], started: float | None, blocking: bool
    ) -> CheckpointInfo:
        written = self._bytes_written(info, packs_before) if self._listeners else 0
        deleted: tuple[str, ...] = ()
        try:
            deleted = tuple(self._apply_retention(self.policy)[0])
        except LeaseLostError:
            raise
        except (OSError, BackendError) as exc:  # the save itself succeeded: what retention left is collected later
            warnings.warn(
                f"checkpoint {info.name} is committed, but retention could not finish "
                f"({getattr(exc, 'strerror', None) or exc}); it runs again after the next save, and leftovers are "
                "removed when the store is next opened for writing",
                stacklevel=2,
            )
        if self._listeners:
            seconds = time.monotonic() - started if started is not None else 0.0
            self._notify(SaveReport(info, blocking, seconds, written, deleted))
        return info

    def on_commit(self, listener: Callable[[SaveReport], None]) -> None:
        """Call ``listener(SaveReport)`` after every committed save (background ones on the writer thread); a
        listener's failure is logged and never fails the save."""
        self._listeners.append(listener)

    def _notify(self, report: SaveReport) -> None:
        for listener in self._listeners:
            try:
                listener(report)
            except Exception:  # noqa: BLE001 - an observer (a log, a tracker) must never fail a committed save
                log.exception("checkpoint %s is committed; a commit listener failed", report.info.name)

    def _bytes_written(self, info: CheckpointInfo, packs_before: set[str]) -> int:
        """Bytes a commit wrote: the packs it added plus its own files (0 when they cannot be measured)."""
        try:
            new_packs = sum(int(e.get("bytes", 0)) for p, e in self.store.pack_meta.items() if p not in packs_before)
            return new_packs + self.store.own_bytes(info.name)
        except (OSError, BackendError):
            return 0

    def checkpoint_files(self, name: str) -> list[Path]:
        """The local files holding checkpoint ``name`` now: its own files, then its (shared) packs; empty on a remote
        store. Safe to call from a commit listener (it does not wait for the writer)."""
        info = self.store.infos.get(name)
        if info is None:
            raise NoCheckpointError(f"no checkpoint named '{name}' in {self.root}")
        if self.store.backend.caps.remote:
            return []
        where = self.store.backend.describe
        own = [p for p in sorted(Path(where(f"{name}/{f}")) for f in (mf.STATE_JSON, mf.MANIFEST)) if p.is_file()]
        packs = sorted(self.store.manifest(name, check=False).get("packs", {}))
        return [p for p in own if not p.is_symlink()] + [Path(where(f"packs/{p}")) for p in packs]

    def wait(self) -> None:
        """Block until a background save finished; raise if it failed."""
        self.writer.wait()

    # ------------------------------------------------------------------ listing
    def _candidates(self) -> list[Candidate]:
        return [
            Candidate(i.name, i.step, i.epoch, i.metrics, frozenset(i.tags), i.valid)
            for i in self.store.infos.values()
            if i.valid
        ]

    def latest(self) -> CheckpointInfo | None:
        """The newest committed checkpoint with a sound manifest, not tagged ``emergency`` or ``imported``."""
        infos = [i for i in self.store.infos.values() if i.valid and not NOT_LATEST & set(i.tags)]
        return max(infos, key=lambda i: (i.step, i.name), default=None)

    def best(self) -> CheckpointInfo | None:
        """The best checkpoint by the monitored metric (None without a monitor), ranked as ``KeepBest.ranked``."""
        if not self.monitor:
            return None
        ranked = KeepBest(1, self.monitor, self.mode).ranked(self._candidates())
        return self.store.infos[ranked[0].name] if ranked else None

    def list(self, include_invalid: bool = True) -> list[CheckpointInfo]:
        """Every committed checkpoint, oldest first, with derived ``latest``/``best`` tags (damaged ones with
        ``valid=False`` and a ``problem`` unless ``include_invalid`` is False)."""
        latest, best = self.latest(), self.best()
        out = []
        for info in self.store.infos.values():
            if not include_invalid and not info.valid:
                continue
            derived = tuple(t for t, i in (("latest", latest), ("best", best)) if i is not None and i.name == info.name)
            out.append(CheckpointInfo(**{**info.__dict__, "derived_tags": derived}))
        return out

    def resolve(self, selector: str) -> list[CheckpointInfo]:
        """Checkpoints a selector names, in the order restore tries them."""
        self.writer.wait()
        infos = [i for i in self.store.infos.values()]
        newest_first = sorted(infos, key=lambda i: (i.step, i.name), reverse=True)
        if selector == "latest":
            return [i for i in newest_first if i.valid and not NOT_LATEST & set(i.tags)]
        if selector == "best":
            if not self.monitor:
                raise NoCheckpointError("'best' needs a monitored metric, and none is recorded in this store")
            return [self.store.infos[c.name] for c in KeepBest(len(infos), self.monitor, self.mode).ranked(self._candidates())]
        if selector.startswith("step:"):
            try:
                step = int(selector[5:])
            except ValueError:
                raise NoCheckpointError(f"'{selector}' is not a valid selector; use step:N with an integer N") from None
            return [i for i in newest_first if i.step == step]
        if selector.startswith("tag:"):
            tag = selector[4:]
            if tag in DERIVED_TAGS:
                return self.resolve(tag)[:1]
            return [i for i in newest_first if tag in i.tags]
        name = Path(selector).name if str(Path(selector).parent) == str(self.root) or "/" not in selector else None
        if name and name in self.store.infos:
            return [self.store.infos[name]]
        raise NoCheckpointError(
            f"no checkpoint matches '{selector}'; use latest, best, step:N, tag:NAME or a checkpoint name in {self.root}"
        )

    # ------------------------------------------------------------------ typed readers (no lock taken)
    def manifest(self, selector: str) -> mf.Manifest:
        """The manifest of the checkpoint ``selector`` names, checked against its own checksum."""
        return mf.Manifest.from_json(self.store.manifest(self.one(selector).name))

    def tensors(
        self, selector: str, keys: Iterable[str] | None = None, *, verify: bool = True
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(key, tensor)`` of one checkpoint (all keys, or those of ``keys`` it holds), one tensor at a time."""
        yield from self.store.iter_tensors(self.one(selector).name, keys, verify=verify)

    def tensor(self, selector: str, key: str) -> torch.Tensor:
        """One verified tensor of a checkpoint (KeyError naming the key when it holds none by that name)."""
        found = list(self.tensors(selector, [key]))
        if not found:
            raise KeyError(f"{self.one(selector).name} holds no tensor '{key}'")
        return found[0][1]

    def tree(self, selector: str) -> Any:
        """The verified JSON state of a checkpoint, with tensors shown as markers (nothing decoded, no tensor read)."""
        return self.store.read_tree(self.one(selector).name)

    def state_tree(self, selector: str) -> Any:
        """The JSON state of a checkpoint as its run saved it (tensors as markers), sharded saves included."""
        from . import dcp

        tree = self.tree(selector)
        return tree[dcp.SHARDED]["tree"] if dcp.is_sharded(tree) else tree

    def verify_one(self, selector: str, parity: bool = True) -> list[str]:
        """Re-hash everything one checkpoint depends on (``parity=False``: but not its packs' parity, which a restore
        does not need); its problems (empty when it verifies)."""
        self.writer.wait()
        info = self.one(selector)
        if not info.valid and self.store.catalog.manifests.get(info.name) is None:
            return [info.problem or "damaged"]
        return self.store.verify_current(info.name, parity=parity) or []

    def sizes(self, selector: str) -> CheckpointSizes:
        """What one checkpoint occupies: logical bytes, its own files (manifest, JSON state), the packs it names."""
        info = self.one(selector)
        manifest = mf.Manifest.from_json(self.store.manifest(info.name))
        own = self.store.own_bytes(info.name)
        return CheckpointSizes(info.name, manifest.logical_bytes, own, manifest.packs)

    def parity_bytes(self) -> int:
        """Bytes of the packs' parity objects (part of ``physical_bytes``)."""
        return sum(n for key, n in self.store.backend.list("packs/").items() if key.endswith(PARITY))

    def physical_bytes(self) -> int:
        """Bytes the checkpoints root occupies on disk: packs (each stored once), manifests, state files, index."""
        return self.store.physical_bytes()

    @property
    def writable(self) -> bool:
        """Whether this manager holds the run's writer lock."""
        return self.store.writable

    # ------------------------------------------------------------------ restoring
    def restore(self, selector: str = "latest", *, verify: bool = True, mmap: bool = False) -> Any:
        """The state saved in the checkpoint ``selector`` names (for latest/best, the first in that order that verifies).

        Every tensor is checked as it arrives, against the XXH3-128 its pack header records (the header is covered
        by the manifest's SHA-256), else by re-hashing with its content id. ``verify=False`` skips that: damage is
        restored as if saved, and ``latest``/``best`` cannot fall back past a damaged checkpoint.

        ``mmap=True`` returns tensors on private copy-on-write mappings of the packs: nothing is copied (or, with
        ``verify=False``, read) until touched. Its risks: damage found late (or never, without verify); a pack
        truncated while mapped kills the process with SIGBUS on touch; the tensors keep the pack files (and their
        disk space) open until freed. Use it for inference, evaluation or copying into a model, never to resume.
        """
        return self.restore_with_info(selector, verify=verify, mmap=mmap)[0]

    def restore_with_info(
        self, selector: str = "latest", *, verify: bool = True, mmap: bool = False
    ) -> tuple[Any, CheckpointInfo]:
        """Like ``restore`` and also return which checkpoint was loaded."""
        if selector.startswith("tag:") and selector[4:] in DERIVED_TAGS:
            selector = selector[4:]  # tag:latest falls back like latest (resolve gives it only the first)
        fallback = selector in DERIVED_TAGS
        candidates = self.resolve(selector)
        newest_first = sorted(self.store.infos.values(), key=lambda i: (i.step, i.name), reverse=True)
        damaged = [i for i in newest_first if not i.valid] if fallback else []
        if selector == "latest":  # a checkpoint whose manifest is damaged is skipped where it would be tried
            order = sorted(candidates + damaged, key=lambda i: (i.step, i.name), reverse=True)
        else:  # 'best': a damaged manifest's metrics are unknown, it might have been the best one
            for bad in damaged:
                warnings.warn(f"skipping damaged checkpoint {bad.name}: {bad.problem}", stacklevel=2)
            order = candidates if fallback else candidates[:1]
        if not order:
            raise NoCheckpointError(f"no checkpoint matches '{selector}' in {self.root}")
        for info in order:
            if not info.valid and self.store.writable:  # a damaged resume source is repaired before falling back
                info = self._repaired(info)
            if fallback and not info.valid:
                warnings.warn(f"skipping damaged checkpoint {info.name}: {info.problem}", stacklevel=2)
                continue
            try:
                tree, tensors = self._load(info, verify, mmap)
            except (IntegrityError, mf.ManifestError, KeyError, ValueError, OSError) as exc:
                if not fallback:
                    raise CheckpointError(f"checkpoint {info.name} is damaged ({exc}); choose another one") from exc
                warnings.warn(f"skipping damaged checkpoint {info.name}: {exc}", stacklevel=2)
                self.store.verify(info.name)  # damaged tensors are forgotten, so later saves rewrite them
                continue
            if self.store.writable:
                self.protected.add(info.name)
            return codec.decode(tree, tensors), info
        raise NoCheckpointError(f"no checkpoint in {self.root} verifies (tried {len(order)})")

    def _load(self, info: CheckpointInfo, verify: bool, mmap: bool) -> tuple[Any, dict[str, torch.Tensor]]:
        """A checkpoint's JSON tree and tensors; a damaged one is repaired first when this manager may write."""
        try:
            tree, tensors, _ = self.store.load(info.name, verify=verify, mmap=mmap)
        except (IntegrityError, mf.ManifestError, OSError):
            if not self.store.writable or not self._repaired(info).valid:
                raise
            tree, tensors, _ = self.store.load(info.name, verify=verify, mmap=mmap)
        if dcp.is_sharded(tree):  # saved by several ranks: assembled into full tensors here
            tree, tensors = dcp.consolidate(tree, tensors)
        return tree, tensors

    def _repaired(self, info: CheckpointInfo) -> CheckpointInfo:
        """Repair one checkpoint (its info afterwards); what was done is logged."""
        outcome = self.repair(info.name)[info.name]
        for what in outcome.done:
            log.info("repaired %s: %s", info.name, what)
        return self.store.infos.get(info.name, info)

    # ------------------------------------------------------------------ integrity, tags, retention
    def repair(self, selector: str | None = None, *, add_parity: bool = False) -> dict[str, Any]:
        """Rebuild what the store's redundancy (spare copies of manifests and state, parity of packs), then the backup
        (``backup``), can rebuild, for one checkpoint or all; per checkpoint an ``Outcome`` (``ok``, ``repaired`` or
        ``damaged``, with what was done and what is left). ``add_parity``: also give parity to packs without it."""
        self.writer.wait()
        names = [self.one(selector).name] if selector is not None else list(self.store.infos)
        mirror = None
        if self.backup:
            try:
                mirror = CheckpointManager(self.backup, read_only=True)
            except CheckpointError as exc:  # no backup made yet, or unreachable: repair from redundancy alone
                log.warning("the backup %s cannot be read (%s); repairing from parity and spare copies only", self.backup, exc)
        try:
            return {n: repair(self.store, n, backup=mirror.store if mirror else None, add_parity=add_parity) for n in names}
        finally:
            if mirror is not None:
                mirror.close()

    def verify(self) -> dict[str, list[str]]:
        """Re-hash everything; map each checkpoint name to its problems (empty when it verifies)."""
        self.writer.wait()
        seen: set[tuple[str, str]] = set()
        report: dict[str, list[str]] = {}
        for info in list(self.store.infos.values()):
            manifest: Any = True
            if not info.valid:  # look again: a reader may have seen a writer's deletion or repack half done
                found = self.store.inspect(info.name)
                if found is None:
                    continue
                info, manifest = found
            sound = info.valid or manifest is not None  # a sound manifest naming missing packs: say exactly what is wrong
            problems = self.store.verify_current(info.name, seen) if sound else [info.problem or "damaged"]
            if problems is not None:  # None: deleted by a live writer meanwhile, which is not damage
                report[info.name] = problems
        return report

    @staticmethod
    def _check_tag(tag: str) -> None:
        if tag in DERIVED_TAGS:
            raise ValueError(f"'{tag}' is derived from the checkpoints and cannot be set by hand")
        if not _TAG.match(tag):
            raise ValueError(f"'{tag}' is not a valid tag: use letters, digits, '.', '_' or '-' (at most 64)")

    def one(self, selector: str) -> CheckpointInfo:
        """The single checkpoint a selector names first (NoCheckpointError when none)."""
        found = self.resolve(selector)
        if not found:
            skipped = sorted({t for i in self.store.infos.values() for t in NOT_LATEST & set(i.tags)})
            hint = ""
            if selector == "latest" and skipped:
                hint = f"; latest skips {' and '.join(skipped)} checkpoints: name one with "
                hint += f"{' or '.join('tag:' + t for t in skipped)} or step:N"
            raise NoCheckpointError(f"no checkpoint matches '{selector}' in {self.root}{hint}")
        return found[0]

    def tag(self, selector: str, tag: str, note: str | None = None) -> CheckpointInfo:
        """Add ``tag`` (with an optional note) to the checkpoint ``selector`` names."""
        self._check_tag(tag)
        info = self.one(selector)
        return self.store.set_tags(info.name, set(info.tags) | {tag}, note)

    def untag(self, selector: str, tag: str, note: str | None = None) -> CheckpointInfo:
        """Remove ``tag`` from the checkpoint ``selector`` names."""
        info = self.one(selector)
        if tag not in info.tags:
            raise NoCheckpointError(f"{info.name} has no tag '{tag}'")
        return self.store.set_tags(info.name, set(info.tags) - {tag}, note)

    def delete(self, selector: str, *, force: bool = False, dry_run: bool = False) -> dict[str, Any]:
        """Delete the checkpoint ``selector`` names and the packs only it used; what was (or would be) freed.
        Without ``force``, a pinned, best, latest or resumed-from one raises ``ProtectedCheckpointError``."""
        self.writer.wait()
        info = self.one(selector)
        latest, best = self.latest(), self.best()
        why = [
            reason
            for reason, hit in (
                ("pinned", "pinned" in info.tags),
                ("best", best is not None and best.name == info.name),
                ("latest", latest is not None and latest.name == info.name),
                ("being resumed from", info.name in self.protected),
            )
            if hit
        ]
        if why and not force:
            raise ProtectedCheckpointError(
                f"{info.name} is {' and '.join(why)}; delete it anyway with force=True (waypoint rm --force)"
            )
        doc: dict[str, Any] = {"deleted": info.name, "step": info.step, "was": why, "dry_run": dry_run}
        if dry_run:
            return {**doc, "packs_removed": [], "freed_bytes": bytes_freed_by_deleting(self.store, [info.name])}
        before = self.store.physical_bytes()
        self.store.delete(info.name)
        self.protected.discard(info.name)
        packs = self._collect()
        self.store.write_index(f"deleted {info.name}")
        return {**doc, "packs_removed": packs, "freed_bytes": before - self.store.physical_bytes()}

    def protect(self, name: str) -> None:
        """Never let retention delete ``name`` in this session (e.g. the checkpoint a run resumed from)."""
        self.protected.add(name)

    def _apply_retention(self, policy: RetentionPolicy, dry_run: bool = False) -> tuple[list[str], list[str]]:
        """Delete what ``policy`` does not keep (never best/latest/pinned/protected); return (deleted, packs removed)."""
        doomed = policy.to_delete(self._candidates(), frozenset(self.protected))
        best = self.best()
        doomed = [n for n in doomed if best is None or n != best.name]
        if dry_run or not doomed:
            return doomed, []
        for name in doomed:
            self.store.delete(name)
        packs = self._collect()
        self.store.write_index(f"retention deleted {', '.join(doomed)}")
        return doomed, packs

    def _collect(self) -> list[str]:
        """Repack mostly-dead packs, then delete every pack no manifest names; returns the packs deleted."""
        repack_sparse(self.store)
        return [p for p, _ in self.store.gc_packs()]

    def gc(self, keep_last: int | None = None, dry_run: bool = False, drop: Iterable[str] = ()) -> dict[str, Any]:
        """Apply the run's retention, or keep the ``keep_last`` newest beside its milestones, evolution snapshots,
        pinned, best and latest checkpoints; ``drop`` (``milestones``, ``evolution``) gives those pools up. Then
        repack and delete unreferenced packs."""
        self.writer.wait()
        own = self.policy.without(drop)
        policy = own if keep_last is None else RetentionPolicy((KeepLast(keep_last), *own.permanent()))
        before = self.store.physical_bytes()
        doomed, packs = self._apply_retention(policy, dry_run=dry_run)
        if dry_run:
            return {
                "deleted": doomed,
                "packs_removed": [],
                "dry_run": True,
                "freed_bytes": bytes_freed_by_deleting(self.store, doomed),
            }
        if not doomed:  # retention deleted nothing, so it collected nothing: leftovers may still be there
            packs = self._collect()
        return {"deleted": doomed, "packs_removed": packs, "dry_run": False, "freed_bytes": before - self.store.physical_bytes()}

    def lock_holder(self) -> dict[str, Any] | None:
        """Who holds this store's writer lease now (pid, host, since), or None; asks without taking it."""
        return self.store.holder()

    def close(self) -> None:
        """Wait for a background save (raising if it failed) and release the lock."""
        try:
            self.writer.wait()
        finally:
            self.store.close()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
