"""Repairing a damaged checkpoint in place: from the redundancy the store keeps, else from a backup.

What can be rebuilt, in this order, each checked before it replaces anything (atomically, like a commit):

- ``manifest.json`` or ``state.json`` from its spare copy (``*.copy``, same commit) when the copy passes the checks
  the original fails; a missing or different spare copy of a sound file is written again;
- a pack from its parity object (``parity.py``), the rebuilt pack checked like any pack before it replaces the
  damaged one; a sound pack's missing or damaged parity is computed again (``add_parity``: also where it never had any);
- whatever is still damaged, from a backup store that holds the checkpoint (``replicate.mirror``).

A repair interrupted at any point loses nothing: every replacement is a new object committed over the old one.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from . import manifest as mf
from . import parity
from .errors import IntegrityError
from .integrity import check_pack
from .packs import FdReader
from .reading import verify_pack
from .replicate import mirror
from .storage import BackendError
from .store import CheckpointStore

log = logging.getLogger(__name__)
_CHUNK = 8 << 20


@dataclass
class Outcome:
    """What a repair did to one checkpoint: ``ok``, ``repaired`` or ``damaged``, and how."""

    status: str = "ok"
    done: list[str] = field(default_factory=list)  # what was rebuilt, in words
    problems: list[str] = field(default_factory=list)  # what is still damaged

    def to_json(self) -> dict:
        return {"status": self.status, "repaired": self.done, "damaged": self.problems}


def _spare(store: CheckpointStore, name: str, fname: str, spare: str, good: Callable[[bytes], bool]) -> str | None:
    """Put a sound copy back in place of a damaged ``fname`` (or write a missing/different spare copy again);
    returns what was done, or None."""
    try:
        main = store.backend.read(f"{name}/{fname}")
    except (FileNotFoundError, OSError):
        main = None
    try:
        copy = store.backend.read(f"{name}/{spare}")
    except (FileNotFoundError, OSError):
        copy = None
    if main is not None and good(main):
        if copy != main:
            store.check_lease()
            store.backend.replace(f"{name}/{spare}", main)
            return f"{spare} written again"
        return None
    if copy is not None and good(copy):
        store.check_lease()
        store.backend.replace(f"{name}/{fname}", copy)
        return f"{fname} rebuilt from its spare copy"
    return None


def _own_files(store: CheckpointStore, name: str) -> list[str]:
    done = []

    def manifest_ok(raw: bytes) -> bool:
        try:
            return mf.parse(raw, name)["name"] == name
        except (mf.ManifestError, KeyError, TypeError):
            return False

    done += [d for d in [_spare(store, name, mf.MANIFEST, mf.MANIFEST_COPY, manifest_ok)] if d]
    try:
        manifest = store.manifest(name)
    except mf.ManifestError:
        return done
    want = manifest["files"][mf.STATE_JSON]["sha256"]
    done += [d for d in [_spare(store, name, mf.STATE_JSON, mf.STATE_COPY, lambda b: hashlib.sha256(b).hexdigest() == want)] if d]
    return done


def rebuild_pack(store: CheckpointStore, pack: str, entry: dict) -> str:
    """Rebuild a damaged pack from its parity and put it in place; what was done (IntegrityError when it cannot)."""
    try:
        par = parity.Parity.parse(store.backend.read(parity.key_of(pack)), pack)
    except FileNotFoundError:
        raise IntegrityError(f"pack {pack} is damaged and has no parity to rebuild it from") from None
    try:
        reader = store.backend.open(f"packs/{pack}")
    except FileNotFoundError:
        raise IntegrityError(f"pack {pack} is missing, and parity rebuilds damaged parts of a pack, not all of it") from None
    with reader:
        fixed = parity.rebuild(reader, par, pack)
        obj = store.backend.new_object("packs/")
        try:
            for pos in range(0, par.layout.size, _CHUNK):
                end = min(par.layout.size, pos + _CHUNK)
                os.pwrite(obj.fd, parity.repaired_bytes(reader, par, fixed, pos, end), pos)
            problem = check_pack(FdReader(obj.fd, par.layout.size), pack, entry)
            if problem:
                raise IntegrityError(f"pack {pack} could not be rebuilt from its parity ({problem})")
            store.check_lease()
            obj.commit(f"packs/{pack}")
        except BaseException:
            obj.abort()
            raise
    return f"pack {pack} rebuilt from its parity ({len(fixed)} of {parity.K * par.layout.rows} chunks)"


def protect(store: CheckpointStore, pack: str) -> str:
    """Compute a sound pack's parity again and store it; what was done."""
    with store.backend.open(f"packs/{pack}") as reader:
        data = parity.encode(reader)
    store.check_lease()
    store.backend.put(parity.key_of(pack), data)
    return f"parity of pack {pack} written again"


def _packs(store: CheckpointStore, name: str, add_parity: bool) -> tuple[list[str], list[str]]:
    """Repair the packs one checkpoint names: (done, problems left)."""
    manifest = store.manifest(name)
    done, problems = [], []
    by_pack: dict[str, list] = {}
    for t in manifest["tensors"].values():
        by_pack.setdefault(t["pack"], []).append(mf.TensorRecord.from_json(t))
    for pack, recs in sorted(by_pack.items()):
        entry = manifest["packs"][pack]
        found, _bad = verify_pack(store.backend, manifest, pack, recs, store.pool)
        try:
            if found:
                done.append(rebuild_pack(store, pack, entry))
            elif (entry.get("parity") or add_parity) and not _parity_sound(store, pack):
                done.append(protect(store, pack))
            if add_parity and not entry.get("parity"):
                _record_parity(store, pack)
        except (IntegrityError, BackendError, OSError) as exc:
            problems.append(str(exc))
    return done, problems


def _record_parity(store: CheckpointStore, pack: str) -> None:
    """Record a pack's new parity object in every manifest that names the pack (and in the dedup table)."""
    size = store.backend.size(parity.key_of(pack))
    for name in list(store.infos):
        try:
            manifest = store.manifest(name)
        except mf.ManifestError:
            continue
        if pack in manifest["packs"] and manifest["packs"][pack].get("parity") != size:
            manifest["packs"][pack]["parity"] = size
            store.write_manifest(name, mf.seal(manifest))
    if pack in store.pack_meta:
        store.pack_meta[pack] = {**store.pack_meta[pack], "parity": size}


def _parity_sound(store: CheckpointStore, pack: str) -> bool:
    try:
        par = parity.Parity.parse(store.backend.read(parity.key_of(pack)), pack)
    except (FileNotFoundError, IntegrityError, OSError):
        return False
    return par.layout.size == (store.backend.size(f"packs/{pack}") or -1)


def repair(store: CheckpointStore, name: str, *, backup: CheckpointStore | None = None, add_parity: bool = False) -> Outcome:
    """Repair checkpoint ``name`` of a writable store as far as its redundancy (then ``backup``) allows."""
    out, left = Outcome(), []
    out.done += _own_files(store, name)  # a sound checkpoint may still lack a spare copy
    if store.catalog.manifest_bytes(name):
        done, left = _packs(store, name, add_parity)  # rebuilds damaged packs, writes missing parity again
        out.done += done
    out.problems = store.verify(name) if store.catalog.manifest_bytes(name) else [f"{name} has no manifest"]
    if out.problems and backup is not None:
        out.done += _from_backup(store, backup, name)
        out.problems = store.verify(name)
    if out.problems:  # why it could not be rebuilt first, then what else is still wrong
        out.problems = left + [p for p in out.problems if not any(p in why for why in left)]
    found = store.inspect(name)
    if found is not None:
        store.catalog.add(*found)
    out.status = "damaged" if out.problems else ("repaired" if out.done else "ok")
    return out


def _from_backup(store: CheckpointStore, backup: CheckpointStore, name: str) -> list[str]:
    if name not in backup.infos:
        return []
    report = mirror(backup, store, check=True, names=[name])
    return [f"{rel} copied from the backup {backup.root}" for rel in report.copied]
