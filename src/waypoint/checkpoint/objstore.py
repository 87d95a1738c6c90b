"""The store on a backend without rename (object storage): the manifest's conditional put is the commit.

Keys under the store's URL mirror the local layout, so a plain copy of either is a valid store::

    LEASE                         the single writer's lease: owner (pid, host, token) and expiry
    index.json                    derived registry (rewritten after each change; never trusted)
    packs/<sha256>.safetensors    the same pack files as on disk (``packs.write_pack`` writes them)
    step_000000120/state.json     the JSON state
    step_000000120/manifest.json  published last, only if absent: the checkpoint exists from then on

Commit: write the new pack to a local temporary directory, upload it (an object appears whole or not at
all: S3 completes a multipart upload atomically), upload state.json, then publish the manifest with
``If-None-Match: *``. A writer killed before the publish leaves only objects no manifest names, which the
next writer's open removes under its lease; killed during it, the checkpoint exists or it does not.
Deleting a checkpoint deletes its manifest first (it is gone from that instant), then its state file;
unreferenced packs go with ``gc_packs``. Packs are never rewritten in place (no repack on object stores).
Reading downloads the packs a checkpoint needs into a temporary directory and checks them exactly as the
POSIX store does (``integrity.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from . import manifest as mf
from .backend import LEASE, Backend, BackendError, Lease
from .codec import alias_keys
from .durable import canonical_json
from .errors import CheckpointError, CheckpointWriteError
from .integrity import entry_of, open_pack, verify_tensor
from .packs import IntegrityError, PackInfo, TensorRecord, read_tensor, write_pack
from .store import CKPT_NAME, _versions, check_step

PACKS = "packs/"


class ObjectStore:
    """A checkpoints root on a ``Backend`` (``FsspecBackend`` for ``s3://...``); the API of ``CheckpointStore``."""

    def __init__(self, backend: Backend, *, writable: bool = True) -> None:
        self.backend = backend
        self.root = backend.url
        self.packs_dir = None  # no local directory: packs are objects under packs/
        self.writable = writable
        self.lock: Lease | None = None
        self.pool = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)), thread_name_prefix="waypoint-io")
        self.compression = "none"  # of the tensors new packs store: none | zstd (set by the manager)
        self.known: dict[str, str] = {}
        self.pack_meta: dict[str, dict] = {}
        self.infos: dict[str, mf.CheckpointInfo] = {}
        self.last_ids: dict[str, str] = {}
        self._manifests: dict[str, dict | None] = {}
        self._sizes: dict[str, int] = {}
        try:
            if writable:
                self.lock = backend.lease()
            elif hasattr(backend, "check"):
                backend.check()  # type: ignore[attr-defined]
            self.rescan()
            if writable:
                self._cleanup_stale()
                self.write_index()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ discovery
    def _key(self, name: str, file: str) -> str:
        return f"{name}/{file}"

    def rescan(self) -> None:
        """Re-read every manifest (one listing, one read per checkpoint)."""
        self._sizes = self.backend.list()
        self.infos.clear()
        self.known.clear()
        self.pack_meta.clear()
        self._manifests.clear()
        names = sorted(
            (int(m.group(1)), int(m.group(2) or 0), k.split("/")[0])
            for k in self._sizes
            if k.endswith("/" + mf.MANIFEST) and k.count("/") == 1 and (m := CKPT_NAME.match(k.split("/")[0]))
        )
        for _s, _n, name in names:
            found = self.inspect_name(name)
            if found is None:
                continue
            info, manifest = found
            self.infos[name] = info
            self._manifests[name] = manifest
            if manifest is not None and info.valid:
                for rec in manifest.get("tensors", {}).values():
                    self.known[rec["id"]] = rec["pack"]
                self.pack_meta.update(manifest.get("packs", {}))

    def inspect(self, path: Any) -> tuple[mf.CheckpointInfo, dict | None] | None:
        return self.inspect_name(Path(str(path)).name)

    def inspect_name(self, name: str) -> tuple[mf.CheckpointInfo, dict | None] | None:
        """A checkpoint's info (invalid when its manifest is damaged or a pack is missing or of another size)."""
        try:
            raw = self.backend.read(self._key(name, mf.MANIFEST))
        except FileNotFoundError:
            return None
        path = Path(name)
        try:
            manifest = mf.parse(raw, name)
            info = mf.info_from(manifest, path)
        except (mf.ManifestError, KeyError, TypeError, ValueError) as exc:
            m = CKPT_NAME.match(name)
            bad = mf.CheckpointInfo(
                name=name, step=int(m.group(1)) if m else -1, epoch=None, tags=(), metrics={}, digest="",
                logical_bytes=0, created_at=0.0, path=path, valid=False, problem=str(exc),
            )  # fmt: skip
            try:
                lenient = mf.parse(raw, name, check=False)
            except mf.ManifestError:
                lenient = None
            return bad, lenient
        missing = self._missing_packs(manifest)
        if missing:
            return dataclasses.replace(info, valid=False, problem="; ".join(missing)), manifest
        return info, manifest

    def _missing_packs(self, manifest: Mapping[str, Any]) -> list[str]:
        problems = []
        for name, meta in manifest.get("packs", {}).items():
            size = self._sizes.get(PACKS + name)
            if size is None:
                size = self.backend.size(PACKS + name)
            if size is None:
                problems.append(f"pack {name} is missing")
            elif isinstance(meta, dict) and size != meta.get("bytes"):
                problems.append(f"pack {name} does not match its recorded size")
        return problems

    def manifest(self, name: str, *, check: bool = True) -> dict:
        """A checkpoint's manifest (ManifestError when absent or damaged)."""
        try:
            raw = self.backend.read(self._key(name, mf.MANIFEST))
        except FileNotFoundError:
            raise mf.ManifestError(f"{name} has no {mf.MANIFEST}") from None
        return mf.parse(raw, name, check=check)

    def committed_manifests(self) -> list[tuple[Path, dict]] | None:
        found = []
        for name in self.infos:
            cached = self._manifests.get(name) if self.writable else None  # the lease holder wrote or read each one
            if cached is not None and self.infos[name].valid:
                found.append((Path(name), cached))
                continue
            try:
                found.append((Path(name), self.manifest(name)))
            except mf.ManifestError:
                return None
        return found

    def referenced_packs(self) -> set[str] | None:
        manifests = self.committed_manifests()
        if manifests is None:
            return None
        return {p for _path, m in manifests for p in m.get("packs", {})}

    def _cleanup_stale(self) -> None:
        """Under the lease: remove state files no manifest names (saves cut short), then unreferenced packs."""
        for key in list(self._sizes):
            top = key.split("/")[0]
            if key.count("/") == 1 and CKPT_NAME.match(top) and top not in self.infos:
                self.backend.delete(key)
                self._sizes.pop(key, None)
        self.gc_packs()

    def write_index(self, done: str | None = None) -> bool:
        try:
            self.backend.replace("index.json", mf.index_doc([i for i in self.infos.values() if i.valid]))
            return True
        except (OSError, BackendError) as exc:
            warnings.warn(
                f"{done + ', but ' if done else ''}{self.root}/index.json could not be rewritten ({exc}); "
                "it is derived and rebuilt at the next save",
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
        """Upload the new pack and state, then publish the manifest (the commit point)."""
        if not self.writable:
            raise CheckpointError("this store was opened read-only")
        step = check_step(step)
        keys = list(tensors)
        tmp = Path(tempfile.mkdtemp(prefix="waypoint-upload-"))
        try:
            return self._commit(tmp, tensors, keys, tree, step, epoch, metrics, tags, meta, ids)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _commit(self, tmp, tensors, keys, tree, step, epoch, metrics, tags, meta, ids) -> mf.CheckpointInfo:  # noqa: ANN001
        pack: PackInfo | None = None
        name = ""
        sealed: bytes | None = None
        try:
            records_list, pack = write_pack(
                tmp,
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
            for info in self.infos.values():
                if info.valid and info.step == step and info.digest == digest and not self.verify(info.name):
                    return self.set_tags(info.name, set(info.tags) | set(tags))
            if pack is not None:  # packs first
                self.backend.put_file(PACKS + pack.name, tmp / pack.name)
                self._sizes[PACKS + pack.name] = pack.size
            packs = {
                p: ({"bytes": pack.size, "header_sha256": pack.header_sha256} if pack and p == pack.name else self.pack_meta[p])
                for p in sorted(set(tensor_packs.values()))
            }
            for attempt in range(5):
                name = self._free_name(step)
                manifest = mf.build(
                    name=name, step=step, epoch=epoch, created_at=time.time(), tags=tuple(tags),
                    metrics=mf.clean_metrics(metrics), records=records, tensor_packs=tensor_packs, packs=packs,
                    state_sha256=hashlib.sha256(tree_bytes).hexdigest(), state_bytes=len(tree_bytes), digest=digest,
                    meta=meta, versions=_versions(),
                )  # fmt: skip
                if self.backend.size(self._key(name, mf.MANIFEST)) is not None:
                    self.rescan()  # committed by someone else meanwhile: its state file is not ours to overwrite
                    continue
                self.backend.put(self._key(name, mf.STATE_JSON), tree_bytes)
                sealed = mf.seal(manifest)
                try:
                    self.backend.publish(self._key(name, mf.MANIFEST), sealed)  # the commit point
                    break
                except FileExistsError:
                    sealed = None
                    if attempt == 4:
                        raise CheckpointWriteError(f"{self.root}/{name} keeps appearing; is another writer live?") from None
                    self.rescan()
            else:
                raise CheckpointWriteError(f"{self.root}/{name} keeps appearing; is another writer live?")
        except BaseException as exc:
            if sealed is not None and self._in_place(name, sealed):
                return self._register(name, manifest, records_list, tensor_packs, packs)
            if isinstance(exc, (OSError, BackendError)):
                raise CheckpointWriteError(
                    f"could not save the checkpoint of step {step} in {self.root}: {exc}; "
                    "nothing was committed and earlier checkpoints are intact"
                ) from exc
            raise
        info = self._register(name, manifest, records_list, tensor_packs, packs)
        self.write_index(f"checkpoint {name} is committed")
        return info

    def _in_place(self, name: str, sealed: bytes) -> bool:
        try:
            return self.backend.read(self._key(name, mf.MANIFEST)) == sealed
        except Exception:  # noqa: BLE001 - unknown: treated as not committed (the next open cleans up)
            return False

    def _register(self, name, manifest, records_list, tensor_packs, packs) -> mf.CheckpointInfo:  # noqa: ANN001
        for rec in records_list:
            self.known.setdefault(rec.id, tensor_packs[rec.id])
        self.pack_meta.update(packs)
        info = mf.info_from(manifest, Path(name))
        self.infos[name] = info
        self._manifests[name] = manifest
        return info

    def _free_name(self, step: int) -> str:
        taken = set(self.infos)
        name, n = f"step_{step:09d}", 0
        while name in taken:
            n += 1
            name = f"step_{step:09d}.{n}"
        return name

    # ------------------------------------------------------------------ tags and deletion
    def set_tags(self, name: str, tags: Iterable[str], note: str | None = None) -> mf.CheckpointInfo:
        if not self.writable:
            raise CheckpointError("this store was opened read-only")
        manifest = self.manifest(name)
        manifest["tags"] = sorted(set(tags))
        if note:
            manifest.setdefault("notes", []).append({"at": time.time(), "note": note, "tags": manifest["tags"]})
        self.backend.replace(self._key(name, mf.MANIFEST), mf.seal(manifest))
        self.infos[name] = mf.info_from(manifest, Path(name))
        self._manifests[name] = manifest
        self.write_index(f"the new tags of {name} are saved")
        return self.infos[name]

    def delete(self, name: str) -> None:
        """Delete a checkpoint: its manifest first (the checkpoint is gone from then on), then its state file."""
        self.backend.delete(self._key(name, mf.MANIFEST))
        self.infos.pop(name, None)
        self._manifests.pop(name, None)
        self.backend.delete(self._key(name, mf.STATE_JSON))

    def gc_packs(self) -> list[tuple[str, int]]:
        refs = self.referenced_packs()
        if refs is None:
            return []
        removed = []
        for key, size in sorted(self.backend.list(PACKS).items()):
            pack = key[len(PACKS) :]
            if "/" not in pack and pack.endswith(".safetensors") and pack not in refs:
                self.backend.delete(key)
                removed.append((pack, size))
        if removed:
            self.known = {cid: p for cid, p in self.known.items() if p in refs}
            self.pack_meta = {p: m for p, m in self.pack_meta.items() if p in refs}
        return removed

    def lease_holder(self) -> dict[str, Any] | None:
        """The live writer's lease (pid, host, since, expires), or None when there is none or it expired."""
        try:
            doc = json.loads(self.backend.read(LEASE))
        except (FileNotFoundError, ValueError):
            return None
        if not isinstance(doc, dict) or float(doc.get("expires", 0) or 0) < time.time():
            return None
        return {k: v for k, v in doc.items() if k != "token"}

    def own_bytes(self, name: str) -> int:
        return sum(self.backend.size(self._key(name, f)) or 0 for f in (mf.MANIFEST, mf.STATE_JSON))

    def pack_size(self, pack: str) -> int:
        return self.backend.size(PACKS + pack) or 0

    # ------------------------------------------------------------------ reading
    @contextlib.contextmanager
    def _fetched(self, packs: Iterable[str]) -> Iterator[Path]:
        """A temporary directory holding local copies of ``packs`` (a missing one is simply absent)."""
        tmp = Path(tempfile.mkdtemp(prefix="waypoint-fetch-"))
        try:
            for pack in sorted(set(packs)):
                with contextlib.suppress(FileNotFoundError):
                    self.backend.get_file(PACKS + pack, tmp / pack)
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _state(self, name: str, manifest: Mapping[str, Any]) -> bytes:
        try:
            data = self.backend.read(self._key(name, mf.STATE_JSON))
        except FileNotFoundError:
            raise IntegrityError(f"{name}/{mf.STATE_JSON} is missing") from None
        if hashlib.sha256(data).hexdigest() != manifest["files"][mf.STATE_JSON]["sha256"]:
            raise IntegrityError(f"{name}/{mf.STATE_JSON} does not match its SHA-256")
        return data

    def load(self, name: str, *, verify: bool = True, mmap: bool = False) -> tuple[Any, dict[str, torch.Tensor], dict]:
        if mmap:
            raise CheckpointError(f"a memory-mapped restore needs a local checkpoints root, not {self.root}")
        manifest = self.manifest(name)
        tree = json.loads(self._state(name, manifest))
        aliases = alias_keys(tree)
        by_pack: dict[str, dict[str, TensorRecord]] = {}
        for key, t in manifest["tensors"].items():
            if key not in aliases:
                by_pack.setdefault(t["pack"], {})[key] = TensorRecord(t["id"], t["dtype"], tuple(t["shape"]), t["nbytes"])
        tensors: dict[str, torch.Tensor] = {}
        with self._fetched(by_pack) as local:
            for pack_name, recs in by_pack.items():
                entries, start, fd = open_pack(local, pack_name, manifest)
                try:
                    loaded: dict[str, torch.Tensor] = {}
                    for key, r in recs.items():
                        if r.id in loaded:
                            tensors[key] = loaded[r.id].clone()
                        else:
                            tensors[key] = loaded[r.id] = read_tensor(fd, entry_of(entries, r, pack_name), start, r, verify)
                finally:
                    os.close(fd)
        return tree, tensors, manifest

    def iter_tensors(
        self, name: str, keys: Iterable[str] | None = None, *, verify: bool = True
    ) -> Iterator[tuple[str, torch.Tensor]]:
        manifest = self.manifest(name)
        table = manifest["tensors"]
        wanted = list(table) if keys is None else [k for k in keys if k in table]
        by_pack: dict[str, list[str]] = {}
        for key in wanted:
            by_pack.setdefault(table[key]["pack"], []).append(key)
        with self._fetched(by_pack) as local:
            for pack_name, pack_keys in by_pack.items():
                entries, start, fd = open_pack(local, pack_name, manifest)
                try:
                    for key in pack_keys:
                        t = table[key]
                        rec = TensorRecord(t["id"], t["dtype"], tuple(t["shape"]), t["nbytes"])
                        yield key, read_tensor(fd, entry_of(entries, rec, pack_name), start, rec, verify)
                finally:
                    os.close(fd)

    def read_tree(self, name: str) -> Any:
        return json.loads(self._state(name, self.manifest(name)))

    def verify(self, name: str, verified: set[tuple[str, str]] | None = None) -> list[str]:
        try:
            manifest = self.manifest(name)
            self._state(name, manifest)
        except (mf.ManifestError, IntegrityError, KeyError, TypeError) as exc:
            return [str(exc)]
        problems: list[str] = []
        verified = verified if verified is not None else set()
        by_pack: dict[str, list[TensorRecord]] = {}
        for t in manifest["tensors"].values():
            by_pack.setdefault(t["pack"], []).append(TensorRecord(t["id"], t["dtype"], tuple(t["shape"]), t["nbytes"]))
        todo_packs = {p for p, recs in by_pack.items() if any((p, r.id) not in verified for r in recs)}
        with self._fetched(todo_packs) as local:
            for pack_name in sorted(todo_packs):
                recs = by_pack[pack_name]
                try:
                    entries, start, fd = open_pack(local, pack_name, manifest)
                except IntegrityError as exc:
                    problems.append(str(exc))
                    self._forget((r.id for r in recs), pack_name)
                    continue
                try:
                    for rec in {r.id: r for r in recs}.values():
                        if (pack_name, rec.id) in verified:
                            continue
                        err = verify_tensor(fd, entries, start, rec, pack_name)
                        if err:
                            problems.append(err)
                            self._forget([rec.id], pack_name)
                        else:
                            verified.add((pack_name, rec.id))
                finally:
                    os.close(fd)
        return problems

    def verify_current(self, name: str, verified: set[tuple[str, str]] | None = None) -> list[str] | None:
        if self.backend.size(self._key(name, mf.MANIFEST)) is None:
            return None
        return self.verify(name, verified)

    def _forget(self, ids: Iterable[str], pack_name: str) -> None:
        for cid in ids:
            if self.known.get(cid) == pack_name:
                del self.known[cid]

    # ------------------------------------------------------------------ sizes and shutdown
    def physical_bytes(self) -> int:
        return sum(size for key, size in self.backend.list().items() if key != "LEASE")

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        if self.lock is not None:
            self.lock.release()
            self.lock = None
