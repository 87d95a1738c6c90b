"""Repacking: give back the bytes of deleted checkpoints that still sit in packs other checkpoints use.

A save writes the tensors the store lacks into one pack. When retention later deletes that checkpoint,
the pack stays as long as any surviving checkpoint uses one of its tensors (a Stack-Wise stack frozen
at that save, a buffer that never changed), so deleting checkpoints alone can leave a store larger
than its live checkpoints. As restic's ``prune`` does, packs whose data is mostly dead are rewritten:

1. read the live tensors of the sparse packs, each checked against its content id (a pack that fails
   is left alone for ``verify`` to report);
2. write them into a new pack (durable, like any save);
3. atomically rewrite each manifest that refers to the moved tensors to point at the new pack;
4. the old packs, now unreferenced, go with the next ``gc_packs``.

A crash at any point leaves every committed checkpoint readable: before step 3 the new pack is an
orphan that the next collection removes, during step 3 both packs exist, and old packs go only when
no manifest names them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

from . import manifest as mf
from .integrity import entry_of, open_pack
from .packs import IntegrityError, TensorRecord, read_tensor, write_pack

if TYPE_CHECKING:
    from .store import CheckpointStore

MAX_UNUSED = 0.5  # rewrite a pack once more than this fraction of its tensor bytes is dead
GROUP_BYTES = 256 << 20  # live bytes gathered into one new pack (bounds the memory a repack holds)


def live_records(manifests: list[tuple[str, dict]]) -> dict[str, dict[str, TensorRecord]]:
    """Per pack, the tensors the given committed manifests still use."""
    live: dict[str, dict[str, TensorRecord]] = {}
    for _name, manifest in manifests:
        for t in manifest["tensors"].values():
            live.setdefault(t["pack"], {})[t["id"]] = TensorRecord.from_json(t)
    return live


def sparse_packs(store: CheckpointStore, live: dict[str, dict[str, TensorRecord]], max_unused: float = MAX_UNUSED) -> list[str]:
    """Packs whose dead tensor bytes exceed ``max_unused`` of their tensor bytes (headers do not count)."""
    found = []
    for pack, recs in sorted(live.items()):
        if pack not in store.pack_meta:
            continue
        try:
            entries, _start, reader = open_pack(store.backend, pack, {"packs": store.pack_meta})
        except IntegrityError:
            continue
        reader.close()
        total = sum(e["data_offsets"][1] - e["data_offsets"][0] for e in entries.values())
        dead = sum(e["data_offsets"][1] - e["data_offsets"][0] for cid, e in entries.items() if cid not in recs)
        if total and dead > max_unused * total:
            found.append(pack)
    return found


def _read_live(store: CheckpointStore, pack: str, recs: Iterable[TensorRecord]) -> dict[str, torch.Tensor] | None:
    """The live tensors of one pack, each verified; None when any fails (the pack is then left alone)."""
    try:
        entries, start, reader = open_pack(store.backend, pack, {"packs": store.pack_meta})
    except IntegrityError:
        return None
    try:
        return {r.id: read_tensor(reader, entry_of(entries, r, pack), start, r, True) for r in recs}
    except (IntegrityError, OSError):
        return None
    finally:
        reader.close()


def _point_manifests(store: CheckpointStore, manifests: list[tuple[str, dict]], redirect: dict[tuple[str, str], str]) -> None:
    """Atomically rewrite every manifest that uses a redirected tensor ``(old pack, id) -> new pack`` (in memory too)."""
    for name, manifest in manifests:
        table = manifest["tensors"]
        hits = [t for t in table.values() if (t["pack"], t["id"]) in redirect]
        if not hits:
            continue
        for t in hits:
            t["pack"] = redirect[(t["pack"], t["id"])]
        metas = {**store.pack_meta, **manifest["packs"]}
        manifest["packs"] = {p: metas[p] for p in sorted({t["pack"] for t in table.values()})}
        store.write_manifest(name, mf.seal(manifest))


def _groups(live: dict[str, dict[str, TensorRecord]], sparse: list[str]) -> list[list[str]]:
    """Sparse packs batched so that one batch's live bytes stay near ``GROUP_BYTES``."""
    groups: list[list[str]] = [[]]
    size = 0
    for pack in sparse:
        used = sum(r.nbytes for r in live[pack].values())
        if groups[-1] and size + used > GROUP_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(pack)
        size += used
    return [g for g in groups if g]


def repack_sparse(store: CheckpointStore, max_unused: float = MAX_UNUSED) -> list[str]:
    """Move the live tensors out of sparse packs; returns the packs given up (``gc_packs`` then deletes them). A
    tensor a kept pack also holds (an interrupted repack's copy) is pointed at that copy, not written again."""
    manifests = store.committed_manifests()
    if manifests is None:  # one may name tensors we cannot see: move nothing
        return []
    live = live_records(manifests)
    sparse = sparse_packs(store, live, max_unused)
    kept = {cid: p for p, recs in live.items() if p not in sparse and p in store.pack_meta for cid in recs}
    given_up: list[str] = []
    for group in _groups(live, sparse):
        tensors: dict[str, torch.Tensor] = {}
        redirect: dict[tuple[str, str], str] = {}
        copied: list[tuple[str, str]] = []
        for pack in group:
            got = _read_live(store, pack, [r for r in live[pack].values() if r.id not in kept])
            if got is None:
                warnings.warn(f"pack {pack} did not verify, so it was not repacked; run `waypoint verify`", stacklevel=2)
                continue
            for cid in live[pack]:
                if cid in kept:
                    redirect[(pack, cid)] = store.known[cid] = kept[cid]
            copied += [(pack, cid) for cid in got]
            for cid, t in got.items():
                tensors.setdefault(cid, t)
            given_up.append(pack)
        if tensors:
            ids = list(tensors)
            store.check_lease()
            _records, info = write_pack(
                store.backend,
                [tensors[c] for c in ids],
                lambda _cid: False,
                store.pool,
                ids,
                store.compression,
                store.generation,
                store.parity,
            )  # just verified against these ids: not hashed again, algorithm kept
            assert info is not None
            store.pack_meta[info.name] = info.entry()
            redirect.update({key: info.name for key in copied})
            for cid in ids:
                store.known[cid] = info.name
        _point_manifests(store, manifests, redirect)
    return given_up


def bytes_freed_by_deleting(store: CheckpointStore, names: Iterable[str]) -> int:
    """Bytes that deleting ``names`` frees at least (their directories and the packs only they use)."""
    doomed = set(names)
    manifests = store.committed_manifests() if doomed else None
    if manifests is None:  # nothing doomed, or a manifest is unreadable and collection keeps every pack
        return 0
    sole: set[str] = set()
    others: set[str] = set()
    freed = 0
    for name, manifest in manifests:
        packs = set(manifest["packs"])
        if name in doomed:
            sole |= packs
            freed += store.own_bytes(name)
        else:
            others |= packs
    for pack in sole - others:
        freed += store.pack_size(pack)
    return freed
