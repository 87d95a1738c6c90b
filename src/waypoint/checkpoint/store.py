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

import dataclasses
import hashlib
import json
import operator
import os
import platform
import re
import stat
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from . import manifest as mf
from .backend import LocalBackend
from .cleanup import remove_stale
from .codec import alias_keys
from .durable import (
    canonical_json,
    fsync_dir,
    read_nofollow,
    rename_noreplace,
    replace_file_durable,
    rmtree_nofollow,
    write_file_durable,
)
from .errors import CheckpointError, CheckpointNotDurableError, CheckpointWriteError, StoreLockedError
from .integrity import entry_of, open_pack, read_state, verify_tensor
from .lock import StoreLock
from .packs import IntegrityError, PackInfo, TensorRecord, content_id, map_pack, mapped_tensor, read_tensor, write_pack

CKPT_NAME = re.compile(r"^step_(\d{9,})(?:\.(\d+))?$")
CKPT_LIKE = "step_"  # any directory named like this may hold a manifest naming packs, listed or not


def check_step(step: Any) -> int:
    """``step`` as a non-negative int; a negative or non-integer step is refused (ValueError, one sentence)."""
    try:
        if isinstance(step, bool):
            raise TypeError
        step = operator.index(step)
    except TypeError:
        raise ValueError(f"a checkpoint step must be an integer, not {step!r}") from None
    if step < 0:
        raise ValueError(f"a checkpoint step cannot be negative (got {step})")
    return step


def _versions() -> dict[str, str]:
    import safetensors

    from waypoint import __version__

    return {
        "waypoint": __version__,
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def manifest_since(path: Path, before: bytes) -> str:
    """How a checkpoint's manifest compares with ``before`` (bytes read earlier without the lock): ``"same"``,
    ``"changed"`` (a live writer rewrote it, e.g. repack) or ``"gone"`` (the checkpoint was deleted)."""
    try:
        if read_nofollow(path / mf.MANIFEST) != before:
            return "changed"
    except FileNotFoundError:
        pass
    except OSError:
        return "same"  # unreadable now: what was found with ``before`` stands
    return "same" if os.path.lexists(path / mf.MANIFEST) else "gone"


class CheckpointStore:
    """Low-level access to one checkpoints root: commit, load, verify, delete, collect packs."""

    def __init__(self, root: str | os.PathLike, *, writable: bool = True) -> None:
        self.root = Path(root)
        self.packs_dir = self.root / "packs"
        self.writable = writable
        self.backend = LocalBackend(self.root)  # this store commits by renaming (backend.caps.atomic_rename)
        self.lock: StoreLock | None = None
        if os.path.islink(self.packs_dir):  # gc would delete, and restore read, files outside the store
            raise CheckpointError(
                f"{self.packs_dir} is a symbolic link, and the store never follows links; "
                "replace it with the directory it points to"
            )
        for path in (self.root, self.packs_dir):
            if os.path.lexists(path) and not os.path.isdir(path):
                raise CheckpointError(f"{path} is not a directory, so it cannot hold checkpoints; move it away")
        if writable:
            new_root = not self.root.exists()
            self.packs_dir.mkdir(parents=True, exist_ok=True)
            if new_root:
                fsync_dir(self.root.parent)
            self.lease = self.backend.lease()  # the POSIX record lock on LOCK (lock.StoreLock)
            self.lock = self.lease.lock  # type: ignore[attr-defined]
        elif not self.root.is_dir():
            raise CheckpointError(f"{self.root} is not a checkpoints directory (it does not exist)")
        self.pool = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)), thread_name_prefix="waypoint-io")
        self.known: dict[str, str] = {}  # tensor content id -> pack name, from committed manifests
        self.pack_meta: dict[str, dict] = {}  # pack name -> {"bytes", "header_sha256"}, from manifests
        self.infos: dict[str, mf.CheckpointInfo] = {}
        self.last_ids: dict[str, str] = {}  # tensor key -> content id, of the last commit
        self.compression = "none"  # of the tensors new packs store: none | zstd (compress.py)
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
        """Re-read every manifest: the in-memory registry and the dedup table.

        Safe without the lock while a writer works: a checkpoint deleted meanwhile is left out, one whose
        manifest was rewritten (by repack) is read again, and one whose packs are gone is listed invalid.
        """
        self.infos.clear()
        self.known.clear()
        self.pack_meta.clear()
        self._unparsed = False
        for path in self.checkpoint_dirs():
            found = self.inspect(path)
            if found is None:
                continue  # deleted while we looked: not damage
            info, manifest = found
            self.infos[path.name] = info
            if manifest is None:
                continue
            if info.valid:
                for rec in manifest.get("tensors", {}).values():
                    self.known[rec["id"]] = rec["pack"]
                self.pack_meta.update(manifest.get("packs", {}))

    def inspect(self, path: Path, attempts: int = 5) -> tuple[mf.CheckpointInfo, dict | None] | None:
        """A committed checkpoint's info (invalid when its manifest is damaged or a pack it names is missing)
        and its manifest; None when the directory vanished meanwhile (a concurrent deletion)."""
        for attempt in range(attempts):
            try:
                before = read_nofollow(path / mf.MANIFEST)  # read first: the manifest loaded below is at least this new
                manifest = mf.load(path)
                info = mf.info_from(manifest, path)
                if read_nofollow(path / mf.MANIFEST) != before:
                    continue  # rewritten while it was loaded: look again
            except (mf.ManifestError, KeyError, TypeError, ValueError, OSError) as exc:
                if not os.path.lexists(path):
                    return None
                if attempt + 1 < attempts:
                    continue  # replaced while it was read (a tag change, repack) fails once: look again
                try:
                    created = path.stat().st_mtime
                except FileNotFoundError:
                    return None
                m = CKPT_NAME.match(path.name)
                info = mf.CheckpointInfo(
                    name=path.name,
                    step=int(m.group(1)) if m else -1,
                    epoch=None,
                    tags=(),
                    metrics={},
                    digest="",
                    logical_bytes=0,
                    created_at=created,
                    path=path,
                    valid=False,
                    problem=str(exc)
                    if not isinstance(exc, OSError)
                    else f"{path.name}/{mf.MANIFEST} cannot be read ({exc.strerror or exc})",
                )
                return info, self._lenient_manifest(path)
            missing = self._missing_packs(manifest)
            if not missing:
                return info, manifest
            now = manifest_since(path, before)
            if now == "changed":
                continue  # rewritten meanwhile (repack points it at other packs): look again
            if now == "gone":
                return None
            return dataclasses.replace(info, valid=False, problem="; ".join(missing)), manifest
        return dataclasses.replace(info, valid=False, problem="its manifest kept changing while it was read"), manifest

    def _missing_packs(self, manifest: Mapping[str, Any]) -> list[str]:
        """Packs a manifest names that are absent, not regular files, or of another size (a cheap check)."""
        problems = []
        for name, meta in manifest.get("packs", {}).items():
            try:
                st = os.lstat(self.packs_dir / name)
            except FileNotFoundError:
                problems.append(f"pack {name} is missing")
                continue
            if stat.S_ISLNK(st.st_mode):
                problems.append(f"pack {name} is a symbolic link")
            elif not stat.S_ISREG(st.st_mode):
                problems.append(f"pack {name} is not a regular file")
            elif isinstance(meta, dict) and st.st_size != meta.get("bytes"):
                problems.append(f"pack {name} does not match its recorded size")
        return problems

    def manifest(self, name: str, *, check: bool = True) -> dict:
        """A committed checkpoint's manifest (ManifestError when absent or damaged)."""
        return mf.load(self.root / name, check=check)

    def own_bytes(self, name: str) -> int:
        """Bytes of a checkpoint's own files (manifest and JSON state)."""
        own = 0
        for f in (mf.MANIFEST, mf.STATE_JSON):
            try:
                own += os.lstat(self.root / name / f).st_size
            except FileNotFoundError:
                pass
        return own

    def pack_size(self, pack: str) -> int:
        """Bytes a pack occupies (0 when it is gone)."""
        try:
            return (self.packs_dir / pack).lstat().st_size
        except FileNotFoundError:
            return 0

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
        """Packs some committed manifest refers to; None if a manifest is unreadable (keep everything).

        A ``step_*`` directory that is not listed (its name does not parse, e.g. left by an older version)
        still protects every pack its manifest names: collection never deletes data a directory on disk
        names. When such a manifest cannot be read, nothing is collected.
        """
        manifests = self.committed_manifests()
        if manifests is None:
            return None
        refs = {p for _path, m in manifests for p in m.get("packs", {})}
        listed = {path.name for path, _m in manifests}
        for entry in os.scandir(self.root):
            if entry.name.startswith(CKPT_LIKE) and entry.name not in listed and entry.is_dir(follow_symlinks=False):
                try:
                    packs = mf.load(Path(entry.path), check=False).get("packs", {})
                except mf.ManifestError:
                    if any(os.scandir(entry.path)):
                        return None
                    continue
                if not isinstance(packs, dict):
                    return None
                refs.update(packs)
        return refs

    def _cleanup_stale(self) -> None:
        """Remove the debris of interrupted writes, then packs no manifest refers to (the caller holds the lock)."""
        remove_stale(self.root, self.packs_dir, self.checkpoint_dirs())
        fsync_dir(self.packs_dir)  # a commit whose final syncs failed (or were cut off) becomes durable here
        fsync_dir(self.root)
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
            warnings.warn(
                f"{done + ', but ' if done else ''}{self.root / 'index.json'} could not be rewritten "
                f"({exc.strerror or exc}); it will be rebuilt from the manifests",
                stacklevel=3,
            )
            return False

    # ------------------------------------------------------------------ commit
    def commit(
        self,
        tensors: Mapping[str, torch.Tensor],
        tree: Any,
        *,
        step: int,
        epoch: int | None,
        metrics: Mapping[str, Any] | None,
        tags: Iterable[str],
        meta: Mapping[str, Any],
        ids: Mapping[str, Any] | None = None,
    ) -> mf.CheckpointInfo:
        """Durably write one checkpoint; returns its info. Raises CheckpointWriteError on failure.

        ``ids`` gives the content id (or a Future of it) of tensors the caller proved unchanged or hashed;
        ``last_ids`` holds every tensor's id afterwards.
        """
        if not self.writable:
            raise CheckpointError("this store was opened read-only")
        step = check_step(step)
        keys = list(tensors)
        pack: PackInfo | None = None
        try:
            records_list, pack = write_pack(
                self.packs_dir,
                [tensors[k] for k in keys],
                self.known.__contains__,
                self.pool,
                [ids.get(k) for k in keys] if ids else None,
                compression=self.compression,
            )
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
            packs = {p: self._pack_entry(p, pack) for p in sorted(set(tensor_packs.values()))}
        except BaseException as exc:
            if pack is not None and pack.name not in self.known.values():
                self._drop_pack(pack.name)
            if isinstance(exc, OSError):
                raise self._not_saved(step, exc) from exc
            raise
        return self._publish(records, tensor_packs, packs, tree_bytes, digest, pack, step, epoch, metrics, tags, meta)

    def commit_prewritten(
        self,
        records: Mapping[str, TensorRecord],
        tensor_packs: Mapping[str, str],
        packs: Mapping[str, dict],
        tree: Any,
        *,
        step: int,
        epoch: int | None,
        metrics: Mapping[str, Any] | None,
        tags: Iterable[str],
        meta: Mapping[str, Any],
    ) -> mf.CheckpointInfo:
        """Commit a checkpoint whose tensors other writers already put into packs (a sharded save: each rank
        wrote its own pack); the same staging, manifest and rename as ``commit``. Nothing is written on failure."""
        if not self.writable:
            raise CheckpointError("this store was opened read-only")
        step = check_step(step)
        missing = sorted(p for p in set(tensor_packs.values()) if not (self.packs_dir / p).is_file())
        if missing:
            raise CheckpointWriteError(f"pack {missing[0]} of the sharded save of step {step} is missing; nothing was committed")
        tree_bytes = canonical_json(tree)
        digest = mf.state_digest({k: r.id for k, r in records.items()}, tree_bytes)
        self.last_ids = {k: r.id for k, r in records.items()}
        return self._publish(
            dict(records), dict(tensor_packs), dict(packs), tree_bytes, digest, None, step, epoch, metrics, tags, meta
        )

    def _not_saved(self, step: int, exc: OSError) -> CheckpointWriteError:
        return CheckpointWriteError(
            f"could not save the checkpoint of step {step} in {self.root}: {exc.strerror or exc}; "
            "nothing was committed and earlier checkpoints are intact"
        )

    def _publish(
        self,
        records: dict[str, TensorRecord],
        tensor_packs: dict[str, str],
        packs: dict[str, dict],
        tree_bytes: bytes,
        digest: str,
        new_pack: PackInfo | None,
        step: int,
        epoch: int | None,
        metrics: Mapping[str, Any] | None,
        tags: Iterable[str],
        meta: Mapping[str, Any],
    ) -> mf.CheckpointInfo:
        """The commit protocol once the tensors are in packs: stage the JSON state and the manifest,
        fsync, rename without replacing, fsync the root. On failure before the rename nothing stays (``new_pack``,
        the pack this save wrote, is dropped unless something committed uses it)."""
        records_list = list(records.values())
        name = self._free_name(step)
        manifest = mf.build(
            name=name,
            step=step,
            epoch=epoch,
            created_at=time.time(),
            tags=tuple(tags),
            metrics=mf.clean_metrics(metrics),
            records=records,
            tensor_packs=tensor_packs,
            packs=packs,
            state_sha256=hashlib.sha256(tree_bytes).hexdigest(),
            state_bytes=len(tree_bytes),
            digest=digest,
            meta=meta,
            versions=_versions(),
        )
        staging: Path | None = None
        sealed: bytes | None = None
        try:
            staging = self.root / f".staging-{name}-{uuid.uuid4().hex[:12]}"
            staging.mkdir()
            write_file_durable(staging / mf.STATE_JSON, tree_bytes)
            sealed = mf.seal(manifest)
            write_file_durable(staging / mf.MANIFEST, sealed)
            fsync_dir(staging)
            rename_noreplace(staging, self.root / name)
            staging = None
            fsync_dir(self.root)
        except BaseException as exc:
            if sealed is not None and self._in_place(name, sealed):
                # Committed: the new manifest is in place, so nothing it references may be deleted.
                info = self._register(name, manifest, records_list, tensor_packs, packs)
                if not isinstance(exc, OSError):
                    raise  # an abort: the checkpoint stays; the next writable open makes it durable
                return self._make_durable(info, exc)
            if staging is not None:
                rmtree_nofollow(staging)
            if new_pack is not None and new_pack.name not in self.known.values():
                self._drop_pack(new_pack.name)
            if isinstance(exc, OSError):
                raise self._not_saved(step, exc) from exc
            raise
        info = self._register(name, manifest, records_list, tensor_packs, packs)
        self.write_index(f"checkpoint {name} is committed")
        return info

    def _in_place(self, name: str, sealed: bytes) -> bool:
        """Whether ``name`` holds this very manifest: the commit rename happened (even if it reported an error)."""
        try:
            return read_nofollow(self.root / name / mf.MANIFEST) == sealed
        except OSError:
            return False

    def _register(
        self, name: str, manifest: dict, records_list: list[TensorRecord], tensor_packs: dict[str, str], packs: dict[str, dict]
    ) -> mf.CheckpointInfo:
        """Record a committed checkpoint in memory: listed, and its tensors known for deduplication."""
        for rec in records_list:
            self.known.setdefault(rec.id, tensor_packs[rec.id])
        self.pack_meta.update(packs)
        info = mf.info_from(manifest, self.root / name)
        self.infos[name] = info
        return info

    def _make_durable(self, info: mf.CheckpointInfo, first: OSError) -> mf.CheckpointInfo:
        """A checkpoint renamed into place whose root fsync failed: try again; report what is known.

        It is committed (listed, intact), so an error now must not say otherwise nor delete anything.
        """
        try:
            fsync_dir(self.root)
        except OSError as exc:
            raise CheckpointNotDurableError(
                f"checkpoint {info.name} is committed and intact but not yet durable: syncing {self.root} failed "
                f"twice ({exc.strerror or exc}); it may be lost on a power failure until the store is next opened "
                "for writing, which syncs it again"
            ) from exc
        warnings.warn(
            f"checkpoint {info.name} is committed; syncing {self.root} failed once "
            f"({first.strerror or first}) and succeeded on retry, so it is durable",
            stacklevel=3,
        )
        self.write_index(f"checkpoint {info.name} is committed")
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
            if (
                entry.name.endswith(".safetensors")
                and not entry.name.startswith(".")
                and entry.name not in refs
                and not entry.is_dir(follow_symlinks=False)
            ):  # a symlink is unlinked, never followed
                size = entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.path)
                removed.append((entry.name, size))
        if removed:
            fsync_dir(self.packs_dir)
            self.known = {cid: p for cid, p in self.known.items() if p in refs}
            self.pack_meta = {p: m for p, m in self.pack_meta.items() if p in refs}
        return removed

    # ------------------------------------------------------------------ reading
    def load(self, name: str, *, verify: bool = True, mmap: bool = False) -> tuple[Any, dict[str, torch.Tensor], dict]:
        """Read a checkpoint: (JSON tree, tensors by key, manifest); IntegrityError/ManifestError if damaged.

        ``mmap``: tensors backed by private mappings of the packs instead of fresh memory (see
        ``CheckpointManager.restore``); with ``verify`` their mapped bytes are hashed before returning.
        """
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
                if mmap:
                    mm = map_pack(fd, populate=verify)
                    read = lambda r: mapped_tensor(mm, entry_of(entries, r, pack_name), start, r, verify)  # noqa: B023, E731
                else:
                    read = lambda r: read_tensor(fd, entry_of(entries, r, pack_name), start, r, verify)  # noqa: B023, E731
                runner = self.pool.map if verify or not mmap else map  # an unverified mapping reads nothing
                loaded = dict(zip(unique, runner(read, unique.values())))
            finally:
                os.close(fd)
            first: set[str] = set()
            for key, r in recs.items():
                tensors[key] = loaded[r.id] if r.id not in first else loaded[r.id].clone()
                first.add(r.id)
        return tree, tensors, manifest

    def iter_tensors(
        self, name: str, keys: Iterable[str] | None = None, *, verify: bool = True
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
                results = self.pool.map(lambda r: verify_tensor(fd, entries, start, r, pack_name), todo)  # noqa: B023
                for rec, err in zip(todo, results):
                    if err:
                        problems.append(err)
                        self._forget([rec.id], pack_name)
                    else:
                        verified.add((pack_name, rec.id))
            finally:
                os.close(fd)
        return problems

    def verify_current(self, name: str, verified: set[tuple[str, str]] | None = None) -> list[str] | None:
        """``verify`` that tolerates a live writer (readers take no lock): None when the checkpoint was deleted
        meanwhile; problems only when they persist with the very manifest they were found with (a pack deleted
        after repack pointed the manifest elsewhere is looked at again, not reported)."""
        path = self.root / name
        problems: list[str] = []
        for _ in range(5):
            before = self._manifest_bytes(path)
            if before is None:
                return None
            problems = self.verify(name, verified)
            if not problems:
                return []
            after = self._manifest_bytes(path)
            if after is None:
                return None
            if after == before:
                return problems
        return problems

    def _manifest_bytes(self, path: Path) -> bytes | None:
        """A manifest's bytes; None when its checkpoint is gone; b"" when unreadable (damage, not absence)."""
        try:
            return read_nofollow(path / mf.MANIFEST)
        except FileNotFoundError:
            return None if not os.path.lexists(path) else b""
        except OSError:
            return b""

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


__all__ = ["CheckpointStore", "CheckpointError", "StoreLockedError", "CheckpointWriteError", "IntegrityError", "content_id"]
