"""Sharded checkpoints: ``torch.distributed.checkpoint`` (DCP) writing into and reading from the store.

Used only through the ``CheckpointManager`` (``save_sharded``/``restore_sharded``): this module opens no store.
``save_sharded`` runs ``dcp.save`` with a ``StoreWriter``: every rank writes the chunks it owns into one new pack
of its own, in parallel and without the lease (packs are named by header hash and lease generation, so ranks never
collide; tensors the store holds are not written again). The coordinator's ``finish`` commits the one manifest
through its manager, like any other save. If any rank fails, DCP raises on every rank and nothing is committed
(orphan packs go with the next ``gc``).

The manifest of a sharded checkpoint is an ordinary one: its tensor table holds one entry per stored chunk
(``<key>`` when the chunk is the whole tensor, ``<key>@<offsets>`` for a shard), and its JSON state is::

    {"__sharded__": {"tree": <the state's JSON tree, tensors as markers>, "dcp": <DCP metadata as JSON>}}

The DCP metadata is converted to JSON here (and back on load); DCP's own pickled ``.metadata`` file is never
written, and nothing is ever unpickled from a store. Non-tensor values of the state are never given to DCP
(it would pickle them): they live in the JSON tree, taken from the coordinator's state.

``load_sharded`` runs ``dcp.load`` into the caller's live tensors at any world size (DCP maps the saved chunks
onto the new sharding); ``consolidate`` assembles full tensors, so a sharded checkpoint restores in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch

from . import codec
from .errors import CheckpointError, CheckpointWriteError
from .packs import DTYPES, PackInfo, TensorRecord, dtype_name, write_pack
from .store import SaveRequest

log = logging.getLogger(__name__)

SHARDED = "__sharded__"
_MARK = (1, 1, 1, 1, 1, 1, 1, 1, 1)  # the shape of split()'s stand-ins, which no state tensor has


# --------------------------------------------------------------------------- state <-> (tensors, JSON tree)
def split(state: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """``{key: tensor}`` (DTensors kept as they are, keyed as ``codec.encode`` keys them) and the JSON tree."""
    originals: list[torch.Tensor] = []

    def placeholders(value: Any) -> Any:
        if isinstance(value, torch.Tensor):  # a one-element stand-in holding the original's position
            originals.append(value.detach())
            return torch.tensor(len(originals) - 1).reshape(_MARK)
        if isinstance(value, dict):
            return {k: placeholders(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            seq = [placeholders(v) for v in value]
            return tuple(seq) if isinstance(value, tuple) else seq
        return value

    stand_ins, tree = codec.encode(placeholders(state))
    return {  # numpy arrays (e.g. RNG streams) were turned into tensors by the codec itself
        key: originals[int(t.reshape(-1)[0])] if tuple(t.shape) == _MARK and t.dtype == torch.int64 else t
        for key, t in stand_ins.items()
    }, tree


def is_sharded(tree: Any) -> bool:
    """Whether a checkpoint's JSON state is that of a sharded (DCP) save."""
    return isinstance(tree, dict) and set(tree) == {SHARDED}


# --------------------------------------------------------------------------- DCP metadata <-> JSON
def _size(values: Any) -> list[int]:
    return [int(v) for v in values]


def chunk_key(fqn: str, offsets: Any, size: Any, chunk_sizes: Any) -> str:
    """The tensor-table key of one stored chunk: the tensor's key when the chunk is all of it."""
    if all(int(o) == 0 for o in offsets) and _size(size) == _size(chunk_sizes):
        return fqn
    return f"{fqn}@{','.join(str(int(o)) for o in offsets)}"


def metadata_to_json(md: Any) -> dict[str, Any]:
    """DCP ``Metadata`` as plain JSON (tensors only; a byte item means something would have been pickled)."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    tensors: dict[str, Any] = {}
    for fqn, item in md.state_dict_metadata.items():
        if not isinstance(item, TensorStorageMetadata):
            raise CheckpointError(f"sharded state value '{fqn}' is not a tensor; it belongs in the JSON state")
        props = item.properties
        tensors[fqn] = {
            "dtype": dtype_name(props.dtype),
            "requires_grad": bool(props.requires_grad),
            "size": _size(item.size),
            "chunks": [{"offsets": _size(c.offsets), "sizes": _size(c.sizes)} for c in item.chunks],
        }
    planner = md.planner_data
    planner_json = {k: list(v) for k, v in planner.items()} if isinstance(planner, dict) else None
    return {"tensors": tensors, "planner_data": planner_json, "version": md.version}


def metadata_from_json(doc: Mapping[str, Any], keys: Mapping[str, str]) -> Any:
    """Rebuild DCP ``Metadata``; ``storage_data`` maps each chunk to its tensor-table key."""
    from torch.distributed.checkpoint.metadata import (
        ChunkStorageMetadata,
        Metadata,
        MetadataIndex,
        TensorProperties,
        TensorStorageMetadata,
    )

    state: dict[str, Any] = {}
    storage: dict[Any, str] = {}
    for fqn, t in doc["tensors"].items():
        chunks = [ChunkStorageMetadata(torch.Size(c["offsets"]), torch.Size(c["sizes"])) for c in t["chunks"]]
        state[fqn] = TensorStorageMetadata(
            TensorProperties(dtype=DTYPES[t["dtype"]], requires_grad=bool(t["requires_grad"])), torch.Size(t["size"]), chunks
        )
        for c in t["chunks"]:
            key = chunk_key(fqn, c["offsets"], t["size"], c["sizes"])
            if key not in keys:
                raise CheckpointError(f"the sharded checkpoint lacks the chunk '{key}' its DCP metadata lists")
            storage[MetadataIndex(fqn, torch.Size(c["offsets"]))] = key
    planner = doc.get("planner_data")
    kwargs: dict[str, Any] = {}
    if doc.get("version") is not None:
        kwargs["version"] = doc["version"]
    return Metadata(
        state_dict_metadata=state,
        planner_data={k: tuple(v) for k, v in planner.items()} if planner else None,
        storage_data=storage,
        **kwargs,
    )


# --------------------------------------------------------------------------- writer
def _storage_writer_base() -> type:
    from torch.distributed.checkpoint import StorageWriter

    return StorageWriter


class _Written:
    """What one rank wrote for one chunk (travels to the coordinator inside DCP's WriteResult)."""

    __slots__ = ("key", "record", "new_pack")

    def __init__(self, key: str, record: TensorRecord, new_pack: PackInfo | None) -> None:
        self.key, self.record, self.new_pack = key, record, new_pack


def make_writer(store: Any, generation: int | None, finish: Callable[[Any, list[_Written]], None] | None) -> Any:
    """A DCP ``StorageWriter`` writing this rank's chunks into one new pack of ``store``; ``finish`` runs on the
    coordinator. ``generation``: the lease generation of the run's writer, which names the packs."""
    base = _storage_writer_base()

    class StoreWriter(base):  # type: ignore[misc, valid-type]
        def reset(self, checkpoint_id: Any = None) -> None:
            pass

        def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
            self.is_coordinator = is_coordinator

        def prepare_local_plan(self, plan: Any) -> Any:
            return plan

        def prepare_global_plan(self, plans: list[Any]) -> list[Any]:
            return plans

        def write_data(self, plan: Any, planner: Any) -> Any:
            from torch.distributed.checkpoint.storage import WriteResult

            items = list(plan.items)
            _refuse_byte_items(items)
            tensors = [planner.resolve_data(item).detach() for item in items]
            known = store.known
            records, pack = write_pack(
                store.backend, tensors, known.__contains__, store.pool, generation=generation, parity=store.parity
            )
            results = []
            for item, rec in zip(items, records):
                td = item.tensor_data
                key = chunk_key(item.index.fqn, td.chunk.offsets, td.size, td.chunk.sizes)
                where = known.get(rec.id) or (pack.name if pack is not None else None)
                results.append(WriteResult(item.index, rec.nbytes, _Written(key, rec.placed(where), pack)))
            done: Any = torch.futures.Future()
            done.set_result(results)
            return done

        def finish(self, metadata: Any, results: list[list[Any]]) -> None:
            if finish is not None:
                finish(metadata, [r.storage_data for rank in results for r in rank])

        @classmethod
        def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
            return False

        def storage_meta(self) -> Any:
            return None

    return StoreWriter()


def _refuse_byte_items(items: list[Any]) -> None:
    from torch.distributed.checkpoint.planner import WriteItemType

    for item in items:
        if item.type == WriteItemType.BYTE_IO:
            fqn = item.index.fqn
            raise CheckpointError(f"sharded state value '{fqn}' is not a tensor; DCP would pickle it, the store refuses")


def committed_parts(
    metadata: Any, written: list[_Written], pack_meta: Mapping[str, dict]
) -> tuple[dict[str, TensorRecord], dict[str, dict], dict[str, Any]]:
    """(records by key, pack entries, DCP metadata JSON) for the coordinator's commit."""
    records: dict[str, TensorRecord] = {}
    for w in written:
        if w.record.pack is None:
            raise CheckpointError(f"chunk '{w.key}' was neither written nor found in the store")
        records[w.key] = w.record
    new = {w.new_pack.name: w.new_pack for w in written if w.new_pack is not None}
    packs: dict[str, dict] = {}
    for name in sorted({r.pack for r in records.values() if r.pack is not None}):
        if name in new:
            packs[name] = new[name].entry()
        elif name in pack_meta:
            packs[name] = dict(pack_meta[name])
        else:
            raise CheckpointError(f"pack {name} is referenced by a sharded save but unknown to the store")
    return records, packs, metadata_to_json(metadata)


# --------------------------------------------------------------------------- reader
def make_reader(store: Any, name: str) -> Any:
    """A DCP ``StorageReader`` over one committed sharded checkpoint (verified reads, no pickle)."""
    from torch.distributed.checkpoint import StorageReader

    tree = store.read_tree(name)
    if not is_sharded(tree):
        raise CheckpointError(f"{name} is not a sharded checkpoint")
    table_keys = {k: k for k in store.manifest(name)["tensors"]}
    metadata = metadata_from_json(tree[SHARDED]["dcp"], table_keys)

    class StoreReader(StorageReader):
        def reset(self, checkpoint_id: Any = None) -> None:
            pass

        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            return metadata

        def set_up_storage_reader(self, md: Any, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
            pass

        def prepare_local_plan(self, plan: Any) -> Any:
            return plan

        def prepare_global_plan(self, plans: list[Any]) -> list[Any]:
            return plans

        def read_data(self, plan: Any, planner: Any) -> Any:
            from torch.distributed.checkpoint.planner import LoadItemType

            wanted = sorted({metadata.storage_data[item.storage_index] for item in plan.items})
            chunks = dict(store.iter_tensors(name, wanted))
            for item in plan.items:
                if item.type == LoadItemType.BYTE_IO:
                    raise CheckpointError(f"sharded checkpoint {name} lists a byte item; it is never unpickled")
                src = chunks[metadata.storage_data[item.storage_index]]
                for dim, (off, length) in enumerate(zip(item.storage_offsets, item.lengths)):
                    src = src.narrow(dim, int(off), int(length))
                target = planner.resolve_tensor(item).detach()
                target.copy_(src)
                planner.commit_tensor(item, target)
            done: Any = torch.futures.Future()
            done.set_result(None)
            return done

        @classmethod
        def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
            return False

    return StoreReader()


# --------------------------------------------------------------------------- single-process view
def consolidate(tree: Any, chunks: Mapping[str, torch.Tensor]) -> tuple[Any, dict[str, torch.Tensor]]:
    """(the state's JSON tree, full tensors by key) assembled from a sharded checkpoint's chunks."""
    doc = tree[SHARDED]
    full: dict[str, torch.Tensor] = {}
    for fqn, t in doc["dcp"]["tensors"].items():
        out = torch.empty(t["size"], dtype=DTYPES[t["dtype"]])
        for c in t["chunks"]:
            piece = chunks[chunk_key(fqn, c["offsets"], t["size"], c["sizes"])]
            view = out
            for dim, (off, length) in enumerate(zip(c["offsets"], c["sizes"])):
                view = view.narrow(dim, off, length)
            view.copy_(piece.reshape(c["sizes"]))
        full[fqn] = out
    return doc["tree"], full


# --------------------------------------------------------------------------- the two calls training makes
def _collective(what: str, fn: Callable[[], Any], error: type[CheckpointError]) -> Any:
    """Run a DCP collective; its ``CheckpointException`` (a BaseException naming every failed rank) becomes one
    ``CheckpointError`` sentence, raised on every rank alike."""
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        return fn()
    except CheckpointException as exc:
        failures = getattr(exc, "failures", {}) or {}
        parts = []
        for rank, wrapped in sorted(failures.items()):
            cause = wrapped[0] if isinstance(wrapped, tuple) else wrapped
            if isinstance(cause, OSError) and cause.strerror:
                text = cause.strerror
            else:
                text = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
            parts.append(f"rank {rank}: {text}")
        raise error(
            f"{what} failed ({'; '.join(parts) or exc}); nothing was committed and earlier checkpoints are intact"
        ) from None


def save_sharded(manager: Any, state: Any, request: SaveRequest, process_group: Any = None) -> Any:
    """Collective: save ``state`` (tensors may be DTensors) as one checkpoint; its info on the coordinator, whose
    writable manager commits (None elsewhere: read-only managers writing their own packs). Only the coordinator's
    non-tensor values are kept."""
    import torch.distributed.checkpoint as dcp

    tensors, tree = split(state)
    committed: dict[str, Any] = {}
    store = manager.store
    finish = None
    if store.writable:
        manager.wait()

        def finish(metadata: Any, written: list[_Written]) -> None:
            records, packs, md = committed_parts(metadata, written, store.pack_meta)
            sharded = {SHARDED: {"tree": tree, "dcp": md}}
            committed["info"] = manager.commit_prewritten(records, packs, sharded, request)
    else:
        store.rescan()  # what the coordinator committed since: deduplicated against, never written again
    generation = store.generation if store.writable else store.catalog.fence.generation
    writer = make_writer(store, generation, finish)
    _collective(
        f"the sharded save of step {request.step}",
        lambda: dcp.save(tensors, storage_writer=writer, process_group=process_group),
        CheckpointWriteError,
    )
    return committed.get("info")


def load_sharded(manager: Any, template: Any, name: str, process_group: Any = None) -> Any:
    """Collective: fill ``template``'s tensors (DTensors at this world size) from checkpoint ``name`` of ``manager``'s
    store; returns the saved state (JSON values from the checkpoint, tensors the template's, holding the saved data)."""
    import torch.distributed.checkpoint as dcp

    store = manager.store
    reader = make_reader(store, name)
    saved_tree = store.read_tree(name)[SHARDED]["tree"]
    tensors, _ = split(template)
    wanted = set(codec.tensor_keys(saved_tree))
    missing = sorted(wanted - set(tensors))
    if missing:
        raise CheckpointError(
            f"{name} holds tensors this run has no place for (e.g. {missing[0]}); the model or optimizer differs"
        )
    _collective(
        f"restoring {name}",
        lambda: dcp.load({k: tensors[k] for k in wanted}, storage_reader=reader, process_group=process_group),
        CheckpointError,
    )
    return codec.decode(saved_tree, tensors)
