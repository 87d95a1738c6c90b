"""The checkpoint store: content-addressed tensor packs and atomic commits, on any storage backend.

Layout under the checkpoints root (a directory, or a prefix of an object store: the same keys)::

    LOCK / leases/   the single writer's lease (a record lock on a local disk; lease objects elsewhere)
    FENCE            the newest lease holder's generation and the checkpoints it found (``catalog``)
    index.json       derived registry (rebuilt from manifests; never trusted)
    packs/           <sha256 of header>-g<generation>.safetensors, tensors named by content id
    step_000000120/  manifest.json (written last, self-checksummed) + state.json

Commit protocol. Under the lease, (1) the tensors the store lacks go into one new pack, written into a new
object and committed under its final name (local: fsync, no-replace rename, fsync of ``packs/``; object store:
an upload that appears whole). (2) The checkpoint's directory is published with state.json and manifest.json,
the manifest last: where the backend renames atomically, both are staged in ``.staging-<name>-<uuid>/`` (each
fsynced), the staging directory fsynced and renamed to its name without replacing anything, the root fsynced;
elsewhere state.json is uploaded and the manifest created only if absent, which is the commit point. Only then
is the checkpoint listed, the index rewritten and retention run. A failure before the commit point leaves
nothing listed (a new pack that nothing names is dropped, or collected later); at or after it the checkpoint
is committed.

Fencing. The writer checks its lease before every change (commit, tag, delete, gc, cleanup), acts only on what
it listed while its lease was valid, and names what it creates with its lease generation: a writer that lost
its lease (``LeaseLostError``) stops, and whatever it was still writing can neither replace nor remove the new
holder's objects nor be taken for a checkpoint (the new holder's fence voids it). Deleting a checkpoint removes
its directory (manifest first, or one rename); packs go once no manifest names them (``gc_packs``), and packs
that are mostly dead are rewritten by ``repack.py``.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import platform
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from ..units import human_bytes
from . import manifest as mf
from .catalog import CKPT_NAME, Catalog, write_fence
from .codec import alias_keys
from .durable import canonical_json
from .errors import CheckpointError, CheckpointNotDurableError, CheckpointWriteError, StoreLockedError
from .integrity import read_state
from .packs import IntegrityError, PackInfo, TensorRecord, content_id, write_pack
from .parity import SUFFIX as PARITY
from .parity import Parity
from .parity import key_of as parity_key
from .reading import iter_pack, read_pack, verify_pack
from .storage import Backend, BackendError, Lease, LeaseLostError, backend_for

log = logging.getLogger(__name__)
MANIFEST, STATE = mf.MANIFEST, mf.STATE_JSON


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


@dataclass(frozen=True)
class SaveRequest:
    """What a save records beside its tensors: step, epoch, metrics, tags and free-form meta."""

    step: int
    epoch: int | None = None
    metrics: Mapping[str, Any] | None = None
    tags: tuple[str, ...] = ()
    meta: Mapping[str, Any] | None = None


class CheckpointStore:
    """One checkpoints root on one backend: commit, load, verify, tag, delete, collect packs."""

    def __init__(self, root: str | os.PathLike | Backend, *, writable: bool = True) -> None:
        self.backend = backend_for(root)
        self.root = self.backend.url
        self.writable = writable
        self.lease: Lease | None = None
        self.generation: int | None = None  # the lease generation of this writer (None: read-only)
        self.catalog = Catalog(self.backend)
        self.last_records: dict[str, TensorRecord] = {}  # tensor key -> its record (with its XXH3-128), of the last commit
        self.compression = "none"  # of the tensors new packs store: none | zstd (compress.py)
        self.parity = False  # whether new packs get a parity object (parity.py)
        self.pool = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)), thread_name_prefix="waypoint-io")
        try:
            self.backend.check()
            if not writable and not self.backend.exists():
                raise CheckpointError(f"{self.root} is not a checkpoints directory (it does not exist)")
            if writable:
                self.backend.create()
                from .catalog import read_fence

                self.lease = self.backend.lease(read_fence(self.backend).generation + 1)
                self.generation = self.lease.generation
            self.catalog.scan()
            if writable:
                self._take_over()
        except BaseException:  # a failed open must not keep the lease (this process could never reopen)
            self.close()
            raise

    # ------------------------------------------------------------------ what the catalog knows
    @property
    def infos(self) -> dict[str, mf.CheckpointInfo]:
        return self.catalog.infos

    @property
    def known(self) -> dict[str, str]:
        return self.catalog.known

    @property
    def pack_meta(self) -> dict[str, dict]:
        return self.catalog.pack_meta

    def rescan(self) -> None:
        """Read every manifest again (safe without the lease while a writer works)."""
        self.catalog.scan()

    def inspect(self, name: str) -> tuple[mf.CheckpointInfo, dict | None] | None:
        return self.catalog.inspect(name)

    def manifest(self, name: str, *, check: bool = True) -> dict:
        """A committed checkpoint's manifest (ManifestError when absent or damaged)."""
        return self.catalog.read_manifest(name, check=check)

    def committed_manifests(self) -> list[tuple[str, dict]] | None:
        """Every listed checkpoint's verified manifest; None if one is unreadable (then nothing may be collected)."""
        return self.catalog.sound_manifests(fresh=not self.writable)

    def referenced_packs(self) -> set[str] | None:
        return self.catalog.referenced_packs(fresh=not self.writable)

    # ------------------------------------------------------------------ the lease
    def check_lease(self) -> None:
        """Before any change: refuse on a read-only store; LeaseLostError once this writer's lease is lost."""
        if not self.writable or self.lease is None:
            raise CheckpointError("this store was opened read-only")
        self.lease.check()

    def lease_ok(self) -> bool:
        """Whether this writer may still change the store (for clean-up after a failure, which must not raise)."""
        try:
            self.check_lease()
            return True
        except (CheckpointError, BackendError, OSError):
            return False

    def _take_over(self) -> None:
        """The new lease holder's first steps: write the fence, remove what a writer that lost its lease published
        after it, the debris of interrupted writes and packs nothing names, and make the index match the manifests."""
        self.check_lease()
        assert self.generation is not None
        write_fence(self.backend, self.generation, list(self.catalog.infos))
        for name in self.catalog.voided:
            log.warning(
                "removing %s: it was published by a writer after that writer had lost its lease (a newer writer held the "
                "store), so it is not a checkpoint of this run",
                self.backend.describe(name),
            )
            self.check_lease()
            self.backend.remove_dir(name, MANIFEST)
        for name in self.catalog.orphans:  # files of a save cut short before its manifest (the commit point)
            self.check_lease()
            self.backend.remove_dir(name, STATE)
        self.check_lease()
        self.backend.clean_debris()
        self.catalog.sizes = self.backend.list()  # what is left
        self.backend.sync("packs/")  # a commit whose last syncs failed (or were cut off) becomes durable here
        self.backend.sync("")
        self.gc_packs()  # collects nothing while a manifest is damaged: it might name the packs it needs
        self._sync_index()

    def _sync_index(self) -> None:
        """Rewrite index.json unless it is byte-for-byte what the manifests say (they are the source of truth)."""
        want = self.catalog.index()
        try:
            have: bytes | None = self.backend.read("index.json")
        except FileNotFoundError:
            have = None
        except OSError:  # a symlink, a directory, a FIFO: damaged
            have = b""
        if have == want:
            return
        if have is not None and mf.parse_index(have) is None:
            where, n = self.backend.describe("index.json"), len(self.infos)
            warnings.warn(f"{where} was damaged; rebuilt it from {n} manifests", stacklevel=3)
        self.write_index()

    def write_index(self, done: str | None = None) -> bool:
        """Rewrite index.json; False (and a warning) when it cannot be written. The index is derived: what ``done``
        says happened is already committed, so a failure here must not turn a successful save into an error."""
        try:
            self.check_lease()
            self.backend.replace("index.json", self.catalog.index())
            return True
        except LeaseLostError:
            raise
        except (OSError, BackendError) as exc:
            warnings.warn(
                f"{done + ', but ' if done else ''}{self.backend.describe('index.json')} could not be rewritten "
                f"({getattr(exc, 'strerror', None) or exc}); it will be rebuilt from the manifests",
                stacklevel=3,
            )
            return False

    # ------------------------------------------------------------------ commit
    def commit(
        self,
        tensors: Mapping[str, torch.Tensor],
        tree: Any,
        request: SaveRequest,
        ids: Mapping[str, str | TensorRecord] | None = None,
        priors: Mapping[str, TensorRecord] | None = None,
    ) -> mf.CheckpointInfo:
        """Durably write one checkpoint (CheckpointWriteError on failure); ``ids`` and ``priors`` as in
        ``packs.write_pack``. ``last_records`` holds every tensor's record afterwards."""
        step = check_step(request.step)
        self.check_lease()
        keys = list(tensors)
        free = self.backend.free_bytes()
        need = sum(tensors[k].nbytes + 4096 for k in keys if not (ids and ids.get(k) in self.known)) + (1 << 20)
        if free is not None and need > free:  # an upper bound (headers, padding, manifest); the JSON state is not counted
            raise CheckpointWriteError(
                f"could not save the checkpoint of step {step} in {self.root}: it may need {human_bytes(need)} and the disk "
                f"has {human_bytes(free)} free, so nothing was written and earlier checkpoints are intact"
            )
        pack: PackInfo | None = None
        try:
            records_list, pack = write_pack(
                self.backend,
                [tensors[k] for k in keys],
                self.known.__contains__,
                self.pool,
                [ids.get(k) for k in keys] if ids else None,
                compression=self.compression,
                generation=self.generation,
                parity=self.parity,
                priors=[priors.get(k) for k in keys] if priors else None,
            )
            self.last_records = dict(zip(keys, records_list))
            where = {r.id: self.known.get(r.id) or pack.name for r in records_list}  # type: ignore[union-attr]
            records = {k: r.placed(where[r.id]) for k, r in zip(keys, records_list)}
            packs = {p: self._pack_entry(p, pack) for p in sorted(set(where.values()))}
            c = self._commit_record(request, step, records, packs, tree)
            existing = self._same_step_same_state(step, c.digest)
        except BaseException as exc:
            self._drop_unused(pack)
            if isinstance(exc, (OSError, BackendError)) and not isinstance(exc, LeaseLostError):
                raise self._not_saved(step, exc) from exc
            raise
        if existing is not None:
            self._drop_unused(pack)
            return self.set_tags(existing.name, set(existing.tags) | set(c.tags))
        return self._publish(c, pack)

    def commit_prewritten(
        self, records: Mapping[str, TensorRecord], packs: Mapping[str, dict], tree: Any, request: SaveRequest
    ) -> mf.CheckpointInfo:
        """Commit a checkpoint whose tensors other writers already put into packs (a sharded save: each rank wrote its
        own; ``records`` name their packs); the same publish as ``commit``. Nothing is written on failure."""
        step = check_step(request.step)
        self.check_lease()
        missing = sorted(p for p in packs if self.backend.size(f"packs/{p}") is None)
        if missing:
            raise CheckpointWriteError(f"pack {missing[0]} of the sharded save of step {step} is missing; nothing was committed")
        return self._publish(self._commit_record(request, step, dict(records), dict(packs), tree), None)

    @staticmethod
    def _commit_record(
        request: SaveRequest, step: int, records: dict[str, TensorRecord], packs: dict[str, dict], tree: Any
    ) -> mf.Commit:
        return mf.Commit(
            step=step,
            epoch=request.epoch,
            metrics=mf.clean_metrics(request.metrics),
            tags=tuple(request.tags),
            meta=dict(request.meta or {}),
            records=records,
            packs=packs,
            tree_bytes=canonical_json(tree),
        )

    def _not_saved(self, step: int, exc: BaseException) -> CheckpointWriteError:
        return CheckpointWriteError(
            f"could not save the checkpoint of step {step} in {self.root}: {getattr(exc, 'strerror', None) or exc}; "
            "nothing was committed and earlier checkpoints are intact"
        )

    def _publish(self, c: mf.Commit, new_pack: PackInfo | None) -> mf.CheckpointInfo:
        """Publish the checkpoint's directory, manifest last (the commit point); see the module doc."""
        name, sealed, manifest, taken = "", b"", {}, set()
        try:
            for attempt in range(5):
                self.check_lease()
                name = self._free_name(c.step, taken)
                manifest = mf.build(c, name=name, created_at=time.time(), versions=_versions(), generation=self.generation)
                sealed = mf.seal(manifest)
                try:
                    self.backend.publish_dir(name, _files(c.tree_bytes, sealed))
                    break
                except FileExistsError:  # taken meanwhile (a listing that lagged): choose the next free name
                    if attempt == 4:
                        where = self.backend.describe(name)
                        raise CheckpointWriteError(f"{where} keeps appearing; is another writer live?") from None
                    taken.add(name)
                    self.catalog.sizes = self.backend.list()
        except BaseException as exc:
            if sealed and self._in_place(name, sealed):  # committed: nothing it references may be deleted now
                info = self._register(name, manifest)
                if not isinstance(exc, OSError):
                    raise  # an abort: the checkpoint stays; the next writable open makes it durable
                return self._make_durable(info, exc)
            self._drop_unused(new_pack)
            if isinstance(exc, (OSError, BackendError)) and not isinstance(exc, LeaseLostError):
                raise self._not_saved(c.step, exc) from exc
            raise
        info = self._register(name, manifest)
        self.check_lease()  # published by a writer that lost its lease meanwhile: void, and this writer stops
        self.write_index(f"checkpoint {name} is committed")
        return info

    def _in_place(self, name: str, sealed: bytes) -> bool:
        """Whether ``name`` holds this very manifest: the commit happened (even if it reported an error)."""
        try:
            return self.backend.read(f"{name}/{MANIFEST}") == sealed
        except Exception:  # noqa: BLE001 - unknown: treated as not committed (the next open cleans up)
            return False

    def _register(self, name: str, manifest: dict) -> mf.CheckpointInfo:
        """Record a committed checkpoint in memory: listed, and its tensors known for deduplication."""
        info = mf.info_from(manifest, self.backend.describe(name))
        self.catalog.add(info, manifest)
        for p, meta in manifest["packs"].items():
            self.catalog.sizes[f"packs/{p}"] = meta["bytes"]
        return info

    def _make_durable(self, info: mf.CheckpointInfo, first: OSError) -> mf.CheckpointInfo:
        """A checkpoint in place whose final sync failed: try again; report what is known. It is committed (listed,
        intact), so an error now must not say otherwise nor delete anything."""
        try:
            self.backend.sync("")
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
        return new.entry() if new is not None and name == new.name else self.pack_meta[name]

    def _same_step_same_state(self, step: int, digest: str) -> mf.CheckpointInfo | None:
        """A committed checkpoint of ``step`` holding this very state and still verifying (a damaged one is not reused)."""
        for info in self.infos.values():
            if info.valid and info.step == step and info.digest == digest and not self.verify(info.name):
                return info
        return None

    def _free_name(self, step: int, tried: set[str]) -> str:
        taken = self.catalog.names() | set(self.infos) | tried
        name, n = f"step_{step:09d}", 0
        while name in taken or (self.backend.caps.atomic_rename and self.backend.list(name + "/")):
            n += 1
            name = f"step_{step:09d}.{n}"
        return name

    def _drop_unused(self, pack: PackInfo | None) -> None:
        """Delete a pack this save wrote when nothing committed uses it (and the lease still allows it)."""
        if pack is not None and pack.name not in self.known.values() and self.lease_ok():
            try:
                self.backend.delete(f"packs/{pack.name}")
            except (OSError, BackendError):
                pass  # an orphan: the next collection removes it

    def adopt(self, name: str, manifest: Mapping[str, Any], state: bytes) -> str:
        """Publish a checkpoint copied from another store, under its name (its packs must be here already), as this
        writer's own; "copied", "retagged" (held here with other tags: the copy's tags and notes are taken) or
        "unchanged". A damaged copy here is replaced; one holding another state is refused (one sentence)."""
        self.check_lease()
        doc = {k: v for k, v in manifest.items() if k not in ("manifest_sha256", "generation")}
        if self.generation is not None:
            doc["generation"] = self.generation
        there = self.infos.get(name)
        if there is not None and not there.valid:
            self.delete(name)
            there = None
        if there is None:
            self.backend.publish_dir(name, _files(state, mf.seal(doc)))
            self._register(name, doc)
            self.write_index(f"checkpoint {name} is copied")
            return "copied"
        if there.digest != manifest["digest"]:
            raise CheckpointError(
                f"{self.backend.describe(name)} holds another state than the checkpoint of that name being copied; "
                "copy to another destination"
            )
        current = self.manifest(name)
        if (current.get("tags"), current.get("notes")) == (doc.get("tags"), doc.get("notes")):
            return "unchanged"
        current.update({k: doc[k] for k in ("tags", "notes") if k in doc})
        self.write_manifest(name, mf.seal(current))
        self.catalog.add(mf.info_from(current, self.backend.describe(name)), current)
        self.write_index(f"the tags of {name} are copied")
        return "retagged"

    # ------------------------------------------------------------------ tags and deletion
    def set_tags(self, name: str, tags: Iterable[str], note: str | None = None) -> mf.CheckpointInfo:
        """Atomically rewrite a checkpoint's manifest with a new tag set (and an optional dated note)."""
        self.check_lease()
        manifest = self.manifest(name)
        manifest["tags"] = sorted(set(tags))
        if note:
            manifest.setdefault("notes", []).append({"at": time.time(), "note": note, "tags": manifest["tags"]})
        self.write_manifest(name, mf.seal(manifest))
        info = mf.info_from(manifest, self.backend.describe(name))
        self.catalog.add(info, manifest)
        self.write_index(f"the new tags of {name} are saved")
        return info

    def write_manifest(self, name: str, sealed: bytes) -> None:
        """Atomically replace a committed checkpoint's manifest (and its spare copy first)."""
        self.check_lease()
        self.backend.replace(f"{name}/{mf.MANIFEST_COPY}", sealed)
        self.backend.replace(f"{name}/{MANIFEST}", sealed)

    def delete(self, name: str) -> None:
        """Remove a committed checkpoint (it disappears at once). Packs stay until ``gc_packs``."""
        self.check_lease()
        self.backend.remove_dir(name, MANIFEST)
        self.catalog.forget(name)

    def gc_packs(self) -> list[tuple[str, int]]:
        """Delete packs no committed manifest refers to; returns (name, bytes) removed. Only packs listed while the
        lease was valid are deleted, and the lease is checked before each deletion."""
        refs = self.referenced_packs()
        if refs is None:
            return []
        listed = self.backend.list("packs/")
        self.check_lease()
        removed = []
        for key, size in sorted(listed.items()):
            name = key[len("packs/") :]
            pack = name.removesuffix(PARITY)  # a parity object goes with its pack
            if "/" not in name and pack.endswith(".safetensors") and not name.startswith(".") and pack not in refs:
                self.check_lease()
                self.backend.delete(key)
                if name == pack:
                    removed.append((pack, size))
                self.catalog.sizes.pop(key, None)
        if removed:
            self.catalog.known = {cid: p for cid, p in self.known.items() if p in refs}
            self.catalog.pack_meta = {p: m for p, m in self.pack_meta.items() if p in refs}
        return removed

    # ------------------------------------------------------------------ reading
    def load(self, name: str, *, verify: bool = True, mmap: bool = False) -> tuple[Any, dict[str, torch.Tensor], dict]:
        """Read a checkpoint: (JSON tree, tensors by key, manifest); IntegrityError/ManifestError if damaged.
        ``mmap`` as in ``CheckpointManager.restore``."""
        if mmap and not self.backend.caps.mmap:
            raise CheckpointError(f"a memory-mapped restore needs a local checkpoints root, not {self.root}")
        manifest = self.manifest(name)
        tree = json.loads(read_state(self.backend, name, manifest))
        aliases = alias_keys(tree)
        by_pack: dict[str, dict[str, TensorRecord]] = {}
        for key, t in manifest["tensors"].items():
            if key not in aliases:
                by_pack.setdefault(t["pack"], {})[key] = TensorRecord.from_json(t)
        tensors: dict[str, torch.Tensor] = {}
        for pack, recs in by_pack.items():
            unique = {r.id: r for r in recs.values()}
            loaded = read_pack(self.backend, manifest, pack, unique, verify=verify, mmap=mmap, pool=self.pool)
            first: set[str] = set()
            for key, r in recs.items():
                tensors[key] = loaded[r.id] if r.id not in first else loaded[r.id].clone()
                first.add(r.id)
        return tree, tensors, manifest

    def iter_tensors(
        self, name: str, keys: Iterable[str] | None = None, *, verify: bool = True
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(key, tensor)`` of a checkpoint one at a time (memory: one tensor), in pack order."""
        manifest = self.manifest(name)
        table = manifest["tensors"]
        wanted = list(table) if keys is None else [k for k in keys if k in table]
        by_pack: dict[str, list[tuple[str, TensorRecord]]] = {}
        for key in wanted:
            by_pack.setdefault(table[key]["pack"], []).append((key, TensorRecord.from_json(table[key])))
        for pack, keyed in by_pack.items():
            yield from iter_pack(self.backend, manifest, pack, keyed, verify)

    def read_tree(self, name: str) -> Any:
        """The verified JSON state tree of a checkpoint (tensors appear as markers)."""
        return json.loads(read_state(self.backend, name, self.manifest(name)))

    def verify(self, name: str, verified: set[tuple[str, str]] | None = None, parity: bool = True) -> list[str]:
        """Re-hash every file and tensor a checkpoint depends on (with ``parity``, its packs' parity too); the problems
        found. ``verified``: (pack, tensor id) pairs already found intact, shared across calls over shared packs."""
        try:
            manifest = self.manifest(name)
            read_state(self.backend, name, manifest)
        except (mf.ManifestError, IntegrityError, KeyError, TypeError) as exc:
            return [str(exc)]
        problems: list[str] = []
        verified = verified if verified is not None else set()
        by_pack: dict[str, dict[str, TensorRecord]] = {}
        for t in manifest["tensors"].values():
            by_pack.setdefault(t["pack"], {})[t["id"]] = TensorRecord.from_json(t)
        for pack, recs in by_pack.items():
            todo = [r for cid, r in recs.items() if (pack, cid) not in verified]
            if not todo:
                continue
            found, bad = verify_pack(self.backend, manifest, pack, todo, self.pool)
            problems += found
            self._forget(bad, pack)
            verified.update((pack, r.id) for r in todo if r.id not in bad)
            if parity and manifest["packs"][pack].get("parity") and (pack, "parity") not in verified:
                problems += self._parity_problem(pack, manifest["packs"][pack])
                verified.add((pack, "parity"))
        return problems

    def _parity_problem(self, pack: str, entry: Mapping[str, Any]) -> list[str]:
        """What is wrong with a pack's parity object (missing, another size, damaged), or nothing."""
        try:
            raw = self.backend.read(parity_key(pack))
        except FileNotFoundError:
            return [f"the parity of pack {pack} is missing (waypoint verify --repair writes it again)"]
        if len(raw) != entry["parity"]:
            return [f"the parity of pack {pack} does not match its recorded size"]
        try:
            Parity.parse(raw, pack)
        except IntegrityError as exc:
            return [str(exc)]
        return []

    def verify_current(self, name: str, verified: set[tuple[str, str]] | None = None, parity: bool = True) -> list[str] | None:
        """``verify`` that tolerates a live writer (readers take no lock): None when the checkpoint was deleted
        meanwhile; problems only when they persist with the very manifest they were found with (a pack deleted after
        repack pointed the manifest elsewhere is looked at again, not reported)."""
        problems: list[str] = []
        for _ in range(5):
            before = self.catalog.manifest_bytes(name)
            if before is None:
                return None
            problems = self.verify(name, verified, parity)
            if not problems:
                return []
            after = self.catalog.manifest_bytes(name)
            if after is None:
                return None
            if after == before:
                return problems
        return problems

    def _forget(self, ids: Iterable[str], pack: str) -> None:
        """Treat tensors damaged in ``pack`` as absent, so the next save that holds them writes them again (a copy of
        them already written again into another pack stays known)."""
        for cid in ids:
            if self.known.get(cid) == pack:
                del self.known[cid]

    # ------------------------------------------------------------------ sizes and shutdown
    def physical_bytes(self) -> int:
        """Bytes the store occupies (packs, manifests, state files, index, lease and fence)."""
        return sum(self.backend.list().values())

    def own_bytes(self, name: str) -> int:
        """Bytes of a checkpoint's own files (manifest and JSON state, and their spare copies)."""
        return sum(self.backend.size(f"{name}/{f}") or 0 for f in (MANIFEST, STATE, mf.MANIFEST_COPY, mf.STATE_COPY))

    def pack_size(self, pack: str) -> int:
        """Bytes a pack occupies (0 when it is gone)."""
        return self.backend.size(f"packs/{pack}") or 0

    def holder(self) -> dict[str, Any] | None:
        """Who holds the writer's lease now, or None (takes nothing)."""
        return self.backend.holder()

    def close(self) -> None:
        """Release the lease and worker threads."""
        self.pool.shutdown(wait=True)
        if self.lease is not None:
            self.lease.release()
            self.lease = None

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _files(state: bytes, sealed: bytes) -> list[tuple[str, bytes]]:
    """A checkpoint directory's files in publishing order: the manifest, the commit point, last."""
    return [(STATE, state), (mf.STATE_COPY, state), (mf.MANIFEST_COPY, sealed), (MANIFEST, sealed)]


__all__ = [
    "CKPT_NAME",
    "CheckpointError",
    "CheckpointStore",
    "CheckpointWriteError",
    "IntegrityError",
    "SaveRequest",
    "StoreLockedError",
    "check_step",
    "content_id",
]
