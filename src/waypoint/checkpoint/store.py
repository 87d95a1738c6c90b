"""The on-disk store: content-addressed tensor packs, atomic durable commit, single-writer lock.

Layout under the checkpoints root::

    LOCK            flock target; holds the writer's pid/host for error messages
    index.json      derived registry (rebuilt from manifests when missing or damaged)
    packs/          <sha256 of header>.safetensors, tensors named by content id
    step_000000120/ manifest.json (written last, self-checksummed) + state.json

Commit protocol: write the new pack (fsync, rename, fsync packs/), stage ``.staging-<name>-<uuid>/``
with state.json then manifest.json (each fsynced), fsync the staging dir, rename it to its final
name without replacing anything, fsync the root. Only then is the checkpoint visible.
Deleting a checkpoint renames it to trash first; packs go once no manifest names them, and packs
that are mostly dead are rewritten by ``repack.py``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch

from . import manifest as mf
from .cleanup import remove_stale
from .codec import alias_keys
from .durable import (canonical_json, fsync_dir, read_nofollow, rename_noreplace, replace_file_durable, rmtree_nofollow,
                      write_file_durable)
from .errors import CheckpointError, CheckpointWriteError, DamagedCheckpointError, StoreLockedError
from .integrity import entry_of, open_pack, read_state, verify_tensor
from .lock import StoreLock
from .packs import IntegrityError, PackInfo, TensorRecord, content_id, read_tensor, write_pack

CKPT_NAME = re.compile(r"^step_(\d{9,})(?:\.(\d+))?$")


def _versions() -> dict[str, str]:
    import safetensors

    from waypoint import __version__
    return {"waypoint": __version__, "torch": torch.__version__, "safetensors": safetensors.__version__,
            "python": platform.python_version()}


class CheckpointStore:
    """Low-level access to one checkpoints root: commit, load, verify, delete, collect packs."""

    def __init__(self, root: str | os.PathLike, *, writable: bool = True) -> None:
        self.root = Path(root)
        self.packs_dir = self.root / "packs"
        self.writable = writable
        self.lock: StoreLock | None = None
        if os.path.islink(self.packs_dir):  # gc would delete, and restore read, files outside the store
            raise CheckpointError(f"{self.packs_dir} is a symbolic link, and the store never follows links; "
                                  "replace it with the directory it points to")
        if writable:
            new_root = not self.root.exists()
            self.packs_dir.mkdir(parents=True, exist_ok=True)
            if new_root:
                fsync_dir(self.root.parent)
            self.lock = StoreLock(self.root / "LOCK")
        elif not self.root.is_dir():
            raise CheckpointError(f"{self.root} is not a checkpoints directory (it does not exist)")
        self.pool = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)), thread_name_prefix="waypoint-io")
        self.known: dict[str, str] = {}  # tensor content id -> pack name, from committed manifests
        self.pack_meta: dict[str, dict] = {}  # pack name -> {"bytes", "header_sha256"}, from manifests
        self.infos: dict[str, mf.CheckpointInfo] = {}
        self.last_ids: dict[str, str] = {}  # tensor key -> content id, of the last commit
        try:
            self.rescan()
            if writable:
                self._cleanup_stale()
                self._sync_index()
        except BaseException:  # a failed open must not keep the lock (this process could never reopen)
            self.close()
            raise

    # ------------------------------------------------------------------ discovery
    def checkpoint_dirs(self) -> list[Path]:
        """Committed checkpoint directories, oldest first."""
        found = []
        for entry in os.scandir(self.root):
            m = CKPT_NAME.match(entry.name)
            if m and entry.is_dir(follow_symlinks=False):
                found.append((int(m.group(1)), int(m.group(2) or 0), Path(entry.path)))
        return [p for _, _, p in sorted(found)]

    def rescan(self) -> None:
        """Re-read every manifest: the in-memory registry and the dedup table."""
        self.infos.clear()
        self.known.clear()
        self.pack_meta.clear()
        self._unparsed = False
        for path in self.checkpoint_dirs():
            try:
                manifest = mf.load(path)
                info = mf.info_from(manifest, path)
            except (mf.ManifestError, KeyError, TypeError, ValueError) as exc:
                m = CKPT_NAME.match(path.name)
                info = mf.CheckpointInfo(name=path.name, step=int(m.group(1)), epoch=None, tags=(), metrics={},
                                         digest="", logical_bytes=0, created_at=path.stat().st_mtime, path=path,
                                         valid=False, problem=str(exc))
                manifest = self._lenient_manifest(path)
            self.infos[path.name] = info
            if manifest is None:
                continue
            if info.valid:
                for rec in manifest.get("tensors", {}).values():
                    self.known[rec["id"]] = rec["pack"]
                self.pack_meta.update(manifest.get("packs", {}))

    def _lenient_manifest(self, path: Path) -> dict | None:
        try:
            return mf.load(path, check=False)
        except mf.ManifestError:
            self._unparsed = True
            return None

    def committed_manifests(self) -> list[tuple[Path, dict]] | None:
        """Every committed checkpoint's verified manifest; None if one is unreadable (then nothing may be collected)."""
        found = []
        for path in self.checkpoint_dirs():
            try:  # a manifest that fails its checksum may name the wrong packs
                found.append((path, mf.load(path)))
            except mf.ManifestError:
                return None
        return found

    def referenced_packs(self) -> set[str] | None:
        """Packs some committed manifest refers to; None if a manifest is unreadable (keep everything)."""
        manifests = self.committed_manifests()
        return None if manifests is None else {p for _path, m in manifests for p in m.get("packs", {})}

    def _cleanup_stale(self) -> None:
        """Remove the debris of interrupted writes, then packs no manifest refers to (the caller holds the lock)."""
        remove_stale(self.root, self.packs_dir, self.checkpoint_dirs())
        self.gc_packs()  # collects nothing while any manifest is damaged: it might name the packs it needs

    def _sync_index(self) -> None:
        """Rewrite index.json unless it is byte-for-byte what the manifests say (they are the source of truth)."""
        path = self.root / "index.json"
        want = mf.index_doc([i for i in self.infos.values() if i.valid])
        try:
            have: bytes | None = read_nofollow(path)
        except FileNotFoundError:
            have = None
        except OSError:  # a symlink, a directory, a FIFO: damaged
            have = b""
        if have == want:
            return
        if have is not None and mf.read_index(path) is None:
            warnings.warn(f"{path} was damaged; rebuilt it from {len(self.infos)} manifests", stacklevel=3)
        self.write_index()

    def write_index(self, done: str | None = None) -> bool:
        """Rewrite index.json from the in-memory registry; False (and a warning) when it cannot be written.

        The index is derived: what ``done`` says happened is already durable in the manifests, so a failure
        here (a full disk) must not turn a successful save or tag into an error. The next writable open
        rebuilds the index from the manifests.
        """
        try:
            replace_file_durable(self.root / "index.json", mf.index_doc([i for i in self.infos.values() if i.valid]))
            return True
        except OSError as exc:
            warnings.warn(f"{done + ', but ' if done else ''}{self.root / 'index.json'} could not be rewritten "
                          f"({exc.strerror or exc}); it will be rebuilt from the manifests", stacklevel=3)
            return False

    # ------------------------------------------------------------------ commit
    def commit(self, tensors: Mapping[str, torch.Tensor], tree: Any, *, step: int, epoch: int | None,
               metrics: Mapping[str, Any] | None, tags: Iterable[str], meta: Mapping[str, Any],
               ids: Mapping[str, Any] | None = None) -> mf.CheckpointInfo:
        """Durably write one checkpoint; returns its info. Raises CheckpointWriteError on failure.

        ``ids`` gives the content id (or a Future of it) of tensors the caller proved unchanged or hashed;
        ``last_ids`` holds every tensor's id afterwards.
        """
        if not self.writable:
            raise CheckpointError("this store was opened read-only")
        keys = list(tensors)
        pack: PackInfo | None = None
        staging: Path | None = None
        try:
            records_list, pack = write_pack(self.packs_dir, [tensors[k] for k in keys], self.known.__contains__, self.pool,
                                            [ids.get(k) for k in keys] if ids else None)
            records = dict(zip(keys, records_list))
            self.last_ids = {k: r.id for k, r in records.items()}
            tensor_packs = {r.id: self.known.get(r.id) or pack.name for r in records_list}  # type: ignore[union-attr]
            tree_bytes = canonical_json(tree)
            digest = mf.state_digest({k: r.id for k, r in records.items()}, tree_bytes)
            existing = self._same_step_same_state(step, digest)
            if existing is not None:
                if pack is not None:
                    self._drop_pack(pack.name)
                return self.set_tags(existing.name, set(existing.tags) | set(tags))
            name = self._free_name(step)
            packs = {p: self._pack_entry(p, pack) for p in sorted(set(tensor_packs.values()))}
            manifest = mf.build(
                name=name, step=step, epoch=epoch, created_at=time.time(), tags=tuple(tags),
                metrics=mf.clean_metrics(metrics), records=records, tensor_packs=tensor_packs, packs=packs,
                state_sha256=hashlib.sha256(tree_bytes).hexdigest(), state_bytes=len(tree_bytes), digest=digest,
                meta=meta, versions=_versions())
            staging = self.root / f".staging-{name}-{uuid.uuid4().hex[:12]}"
            staging.mkdir()
            write_file_durable(staging / mf.STATE_JSON, tree_bytes)
            write_file_durable(staging / mf.MANIFEST, mf.seal(manifest))
            fsync_dir(staging)
            rename_noreplace(staging, self.root / name)
            staging = None
            fsync_dir(self.root)
        except BaseException as exc:
            if staging is not None:
                rmtree_nofollow(staging)
            if pack is not None and pack.name not in self.known.values():
                self._drop_pack(pack.name)
            if isinstance(exc, OSError):
                raise CheckpointWriteError(
                    f"could not save the checkpoint of step {step} in {self.root}: {exc.strerror or exc}; "
                    "nothing was committed and earlier checkpoints are intact") from exc
            raise
        for rec in records_list:
            self.known.setdefault(rec.id, tensor_packs[rec.id])
        self.pack_meta.update(packs)
        info = mf.info_from(manifest, self.root / name)
        self.infos[name] = info
        self.write_index(f"checkpoint {name} is committed")
        return info

    def _pack_entry(self, name: str, new: PackInfo | None) -> dict[str, Any]:
        if new is not None and name == new.name:
            return {"bytes": new.size, "header_sha256": new.header_sha256}
        return self.pack_meta[name]

    def _same_step_same_state(self, step: int, digest: str) -> mf.CheckpointInfo | None:
        """A committed checkpoint of ``step`` holding this very state and still verifying (a damaged one is not reused)."""
        for info in self.infos.values():
            if info.valid and info.step == step and info.digest == digest and not self.verify(info.name):
                return info
        return None

    def _free_name(self, step: int) -> str:
        name, n = f"step_{step:09d}", 0
        while os.path.lexists(self.root / name):
            n += 1
            name = f"step_{step:09d}.{n}"
        return name

    def _drop_pack(self, name: str) -> None:
        try:
            os.unlink(self.packs_dir / name)
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------------ tags and deletion
    def set_tags(self, name: str, tags: Iterable[str], note: str | None = None) -> mf.CheckpointInfo:
        """Atomically rewrite a checkpoint's manifest with a new tag set (and an optional dated note)."""
        if not self.writable:
            raise CheckpointError("this store was opened read-only")
        path = self.root / name
        manifest = mf.load(path)
        manifest["tags"] = sorted(set(tags))
        if note:
            manifest.setdefault("notes", []).append({"at": time.time(), "note": note, "tags": manifest["tags"]})
        replace_file_durable(path / mf.MANIFEST, mf.seal(manifest))
        self.infos[name] = mf.info_from(manifest, path)
        self.write_index(f"the new tags of {name} are saved")
        return self.infos[name]

    def delete(self, name: str) -> None:
        """Remove a committed checkpoint (rename to trash, fsync, then delete). Packs stay until gc_packs."""
        trash = self.root / f".trash-{name}-{uuid.uuid4().hex[:12]}"
        os.rename(self.root / name, trash)
        self.infos.pop(name, None)  # gone from here on, even if removing the trash fails (the next open does)
        fsync_dir(self.root)
        rmtree_nofollow(trash)

    def gc_packs(self) -> list[tuple[str, int]]:
        """Delete packs no committed manifest refers to; returns (name, bytes) removed."""
        refs = self.referenced_packs()
        if refs is None:
            return []
        removed = []
        for entry in os.scandir(self.packs_dir):
            if (entry.name.endswith(".safetensors") and not entry.name.startswith(".") and entry.name not in refs
                    and not entry.is_dir(follow_symlinks=False)):  # a symlink is unlinked, never followed
                size = entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.path)
                removed.append((entry.name, size))
        if removed:
            fsync_dir(self.packs_dir)
            self.known = {cid: p for cid, p in self.known.items() if p in refs}
            self.pack_meta = {p: m for p, m in self.pack_meta.items() if p in refs}
        return removed

    # ------------------------------------------------------------------ reading
    def load(self, name: str, *, verify: bool = True) -> tuple[Any, dict[str, torch.Tensor], dict]:
        """Read a checkpoint: (JSON tree, tensors by key, manifest); IntegrityError/ManifestError if damaged."""
        path = self.root / name
        manifest = mf.load(path)
        tree_bytes = read_state(path, manifest)
        tree = json.loads(tree_bytes)
        aliases = alias_keys(tree)
        by_pack: dict[str, dict[str, TensorRecord]] = {}
        for key, t in manifest["tensors"].items():
            if key in aliases:
                continue
            by_pack.setdefault(t["pack"], {})[key] = TensorRecord(t["id"], t["dtype"], tuple(t["shape"]), t["nbytes"])
        tensors: dict[str, torch.Tensor] = {}
        for pack_name, recs in by_pack.items():
            entries, start, fd = open_pack(self.packs_dir, pack_name, manifest)
            try:
                unique = {r.id: r for r in recs.values()}
                loaded = dict(zip(unique, self.pool.map(
                    lambda r: read_tensor(fd, entry_of(entries, r, pack_name), start, r, verify), unique.values())))
            finally:
                os.close(fd)
            first: set[str] = set()
            for key, r in recs.items():
                tensors[key] = loaded[r.id] if r.id not in first else loaded[r.id].clone()
                first.add(r.id)
        return tree, tensors, manifest

    def iter_tensors(self, name: str, keys: Iterable[str] | None = None, *, verify: bool = True
                     ) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(key, tensor)`` of a checkpoint one at a time (memory: one tensor), in pack order."""
        path = self.root / name
        manifest = mf.load(path)
        table = manifest["tensors"]
        wanted = list(table) if keys is None else [k for k in keys if k in table]
        by_pack: dict[str, list[str]] = {}
        for key in wanted:
            by_pack.setdefault(table[key]["pack"], []).append(key)
        for pack_name, pack_keys in by_pack.items():
            entries, start, fd = open_pack(self.packs_dir, pack_name, manifest)
            try:
                for key in pack_keys:
                    t = table[key]
                    rec = TensorRecord(t["id"], t["dtype"], tuple(t["shape"]), t["nbytes"])
                    yield key, read_tensor(fd, entry_of(entries, rec, pack_name), start, rec, verify)
            finally:
                os.close(fd)

    def read_tree(self, name: str) -> Any:
        """The verified JSON state tree of a checkpoint (tensors appear as markers)."""
        path = self.root / name
        return json.loads(read_state(path, mf.load(path)))

    def verify(self, name: str, verified: set[tuple[str, str]] | None = None) -> list[str]:
        """Re-hash every file and tensor a checkpoint depends on; returns the problems found.

        ``verified`` holds (pack, tensor id) pairs already found intact (shared across calls to verify
        many checkpoints that share packs); a tensor stored again in another pack is checked there too.
        """
        path = self.root / name
        try:
            manifest = mf.load(path)
            read_state(path, manifest)
        except (mf.ManifestError, IntegrityError, KeyError, TypeError) as exc:
            return [str(exc)]
        problems: list[str] = []
        verified = verified if verified is not None else set()
        by_pack: dict[str, list[TensorRecord]] = {}
        for t in manifest["tensors"].values():
            by_pack.setdefault(t["pack"], []).append(TensorRecord(t["id"], t["dtype"], tuple(t["shape"]), t["nbytes"]))
        for pack_name, recs in by_pack.items():
            try:
                entries, start, fd = open_pack(self.packs_dir, pack_name, manifest)
            except IntegrityError as exc:
                problems.append(str(exc))
                self._forget((r.id for r in recs), pack_name)
                continue
            try:
                todo = [r for r in {r.id: r for r in recs}.values() if (pack_name, r.id) not in verified]
                results = self.pool.map(lambda r: verify_tensor(fd, entries, start, r, pack_name), todo)
                for rec, err in zip(todo, results):
                    if err:
                        problems.append(err)
                        self._forget([rec.id], pack_name)
                    else:
                        verified.add((pack_name, rec.id))
            finally:
                os.close(fd)
        return problems

    def _forget(self, ids: Iterable[str], pack_name: str) -> None:
        """Treat tensors damaged in ``pack_name`` as absent, so the next save that holds them writes them again
        (a copy of them already written again into another pack stays known)."""
        for cid in ids:
            if self.known.get(cid) == pack_name:
                del self.known[cid]

    # ------------------------------------------------------------------ sizes and shutdown
    def physical_bytes(self) -> int:
        """Bytes the store occupies on disk (packs, manifests, state files, index)."""
        total = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except FileNotFoundError:
                    pass
        return total

    def close(self) -> None:
        """Release the lock and worker threads."""
        self.pool.shutdown(wait=True)
        if self.lock is not None:
            self.lock.release()
            self.lock = None


__all__ = ["CheckpointStore", "CheckpointError", "StoreLockedError", "CheckpointWriteError",
           "DamagedCheckpointError", "IntegrityError", "content_id"]
