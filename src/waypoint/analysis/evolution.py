"""How parameters evolved over a run's checkpoints, computed by streaming.

One key at a time across checkpoints, so at most three tensors (final, previous, current) are in memory; a
tensor whose content id did not change (a frozen stack) is not read at all: its update is exactly zero.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from waypoint.checkpoint import CheckpointInfo, CheckpointManager
from waypoint.checkpoint.manifest import TensorEntry

_FLOAT = {"F64", "F32", "F16", "BF16"}
_SKIP = re.compile(r"(^|/)(optim|optimizer|optimizers|rng|scaler|trainer)(/|$)")
#: normalisation statistics: buffers a forward pass overwrites, not weights that learn
_STATS = re.compile(r"(^|[./])running_(mean|var)$")


def checkpoints_in_order(mgr: CheckpointManager) -> list[CheckpointInfo]:
    """Valid checkpoints, oldest first."""
    return sorted(mgr.list(include_invalid=False), key=lambda i: (i.step, i.name))


def tensor_tables(mgr: CheckpointManager, infos: Iterable[CheckpointInfo]) -> dict[str, Mapping[str, TensorEntry]]:
    """Each checkpoint's tensor table (key -> id, dtype, shape), from the manifests only."""
    return {i.name: mgr.manifest(i.name).tensors for i in infos}


def parameter_keys(table: Mapping[str, Any]) -> list[str]:
    """Floating-point tensors that are model weights (not optimizer moments, RNG, trainer counters or BatchNorm statistics)."""
    return [
        k
        for k, r in table.items()
        if r.dtype in _FLOAT and not _SKIP.search(k) and not _STATS.search(k) and math.prod(r.shape) > 1
    ]


def _read(mgr: CheckpointManager, name: str, key: str) -> torch.Tensor:
    return mgr.tensor(name, key).double()


#: the name evolution rows give the initial weights (step 0), rebuilt from the run's config and seed
INITIAL = "initial"


def _snapshots(
    mgr: CheckpointManager, infos: list[CheckpointInfo], tables: Mapping[str, Mapping[str, TensorEntry]], initial: Any
) -> list[tuple[str, int, Callable[[str], Any]]]:
    """``(name, step, entry of key)`` of the initial weights (when given) and every checkpoint, oldest first."""
    out: list[tuple[str, int, Callable[[str], Any]]] = []
    if initial is not None:
        out.append((INITIAL, 0, lambda key: initial.get(key)))
    out += [(i.name, i.step, tables[i.name].get) for i in infos]
    return out


def _load(mgr: CheckpointManager, name: str, key: str, initial: Any) -> torch.Tensor:
    return initial[key].detach().double().cpu() if name == INITIAL else _read(mgr, name, key)


def tensor_evolution(
    mgr: CheckpointManager, keys: Iterable[str] | None = None, initial: Mapping[str, torch.Tensor] | None = None
) -> list[dict[str, Any]]:
    """One row per (snapshot, key): norm, diff_norm vs previous, dot with and norm of the final tensor; ``initial``
    (the weights at step 0) is the first snapshot when given."""
    infos = checkpoints_in_order(mgr)
    if not infos:
        return []
    tables = tensor_tables(mgr, infos)
    final = infos[-1]
    keys = list(keys) if keys is not None else parameter_keys(tables[final.name])
    snapshots = _snapshots(mgr, infos, tables, initial)
    rows: list[dict[str, Any]] = []
    for key in keys:
        if key not in tables[final.name]:
            continue
        final_t = _read(mgr, final.name, key)
        final_norm = final_t.norm().item()
        prev_t, prev_id, prev_row = None, None, None
        for name, step, entry_of in snapshots:
            rec = entry_of(key)
            if rec is None or list(rec.shape) != list(final_t.shape):
                prev_t, prev_id, prev_row = None, None, None
                continue
            rec_id = getattr(rec, "id", None)  # the initial weights are tensors, not table entries: always read
            if rec_id is not None and rec_id == prev_id and prev_row is not None:
                row = {**prev_row, "checkpoint": name, "step": step, "diff_norm": 0.0, "prev_norm": prev_row["norm"]}
            else:
                t = _load(mgr, name, key, initial)
                row = {
                    "checkpoint": name,
                    "step": step,
                    "key": key,
                    "norm": t.norm().item(),
                    "diff_norm": (t - prev_t).norm().item() if prev_t is not None else None,
                    "prev_norm": prev_t.norm().item() if prev_t is not None else None,
                    "dot_final": torch.dot(t.flatten(), final_t.flatten()).item(),
                    "final_norm": final_norm,
                }
                prev_t = t
            rows.append(row)
            prev_id, prev_row = rec_id, row
    return rows


def module_of(key: str) -> str:
    """The module a tensor key belongs to: the key without its last dotted component."""
    head, _, _ = key.rpartition(".")
    return head or key


def aggregate(rows: Iterable[Mapping[str, Any]], group: Callable[[str], str | None] = module_of) -> list[dict[str, Any]]:
    """Combine tensor rows into group rows (exact: norms add in squares, dots add)."""
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        g = group(r["key"])
        if g is None:
            continue
        a = acc.setdefault(
            (g, r["checkpoint"]),
            {
                "group": g,
                "checkpoint": r["checkpoint"],
                "step": r["step"],
                "norm2": 0.0,
                "diff2": 0.0,
                "prev2": 0.0,
                "dot": 0.0,
                "final2": 0.0,
                "has_prev": True,
            },
        )
        a["norm2"] += r["norm"] ** 2
        a["dot"] += r["dot_final"]
        a["final2"] += r["final_norm"] ** 2
        if r["diff_norm"] is None:
            a["has_prev"] = False
        else:
            a["diff2"] += r["diff_norm"] ** 2
            a["prev2"] += r["prev_norm"] ** 2
    out = []
    for a in acc.values():
        norm, final = math.sqrt(a["norm2"]), math.sqrt(a["final2"])
        out.append(
            {
                "group": a["group"],
                "checkpoint": a["checkpoint"],
                "step": a["step"],
                "norm": norm,
                "rel_update": math.sqrt(a["diff2"]) / math.sqrt(a["prev2"]) if a["has_prev"] and a["prev2"] > 0 else None,
                "cos_to_final": a["dot"] / (norm * final) if norm > 0 and final > 0 else None,
            }
        )
    return sorted(out, key=lambda r: (r["group"], r["step"], r["checkpoint"]))


def paired_keys(keys: Iterable[str], left: str, right: str) -> list[tuple[str, str]]:
    """Pairs of keys that differ only in one path component (e.g. ``student`` vs ``teacher``)."""
    keys = set(keys)
    pairs = []
    for k in sorted(keys):
        parts = k.split("/")
        if left in parts:
            other = "/".join(right if p == left else p for p in parts)
            if other in keys:
                pairs.append((k, other))
    return pairs


def pair_distance(mgr: CheckpointManager, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Per checkpoint: ``||a - b|| / ||b||`` summed over key pairs (e.g. student vs teacher)."""
    out = []
    for info in checkpoints_in_order(mgr):
        table = mgr.manifest(info.name).tensors
        d2 = b2 = 0.0
        for ka, kb in pairs:
            if ka in table and kb in table:
                if table[ka].id == table[kb].id:
                    b2 += _read(mgr, info.name, kb).norm().item() ** 2
                    continue
                a, b = _read(mgr, info.name, ka), _read(mgr, info.name, kb)
                d2 += (a - b).norm().item() ** 2
                b2 += b.norm().item() ** 2
        out.append(
            {"checkpoint": info.name, "step": info.step, "rel_distance": math.sqrt(d2) / math.sqrt(b2) if b2 > 0 else None}
        )
    return out


_LORA = re.compile(r"(?:^|[/.])lora(?:[/.]|$)")


def stack_of(key: str) -> str | None:
    """The Stack-Wise stack a key belongs to (``stack 2`` for ``.../stacks/2/...``), else None.

    LoRA adapters are a group of their own (``LoRA on stack 2``): folded in, they would make a frozen stack move.
    """
    m = re.search(r"(?:^|/|\.)stacks[/.](\d+)(?:/|\.)", key)
    if not m:
        return None
    return f"LoRA on stack {m.group(1)}" if _LORA.search(key[m.end() :]) else f"stack {m.group(1)}"


def storage_by_checkpoint(mgr: CheckpointManager) -> list[dict[str, Any]]:
    """Per checkpoint: logical bytes, and physical bytes it added (packs first referenced by it)."""
    seen: set[str] = set()
    rows = []
    cum_logical = cum_physical = 0
    for info in checkpoints_in_order(mgr):
        sizes = mgr.sizes(info.name)
        new = {p: n for p, n in sizes.packs.items() if p not in seen}
        seen |= set(new)
        physical = sum(new.values()) + sizes.own
        cum_logical += info.logical_bytes
        cum_physical += physical
        rows.append(
            {
                "checkpoint": info.name,
                "step": info.step,
                "logical_bytes": info.logical_bytes,
                "physical_bytes": physical,
                "cum_logical": cum_logical,
                "cum_physical": cum_physical,
            }
        )
    return rows


def groups_by_change(module_rows: Iterable[Mapping[str, Any]], top: int = 10) -> list[tuple[str, float]]:
    """Groups ranked by their total relative update over the run."""
    total: dict[str, float] = defaultdict(float)
    for r in module_rows:
        if r["rel_update"] is not None:
            total[r["group"]] += r["rel_update"]
    return sorted(total.items(), key=lambda kv: -kv[1])[:top]


def top_part(key: str) -> str | None:
    """The part of the training state a model tensor belongs to (``student``, ``teacher``, ``model``, ``rack``)."""
    parts = key.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == "task" else None


def evolution_table(part_rows: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """One row per snapshot, step 0 first: for each part, weight norm, relative update since the previous snapshot
    and cosine similarity to the final weights."""
    part_rows = list(part_rows)
    parts = sorted({r["group"] for r in part_rows})
    by_snapshot: dict[tuple[int, str], dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for r in part_rows:
        by_snapshot[(r["step"], r["checkpoint"])][r["group"]] = r
    header = ["step", "snapshot"]
    for p in parts:
        header += [f"{p} norm", f"{p} update vs previous", f"{p} cosine to final"]
    rows = []
    for (step, name), groups in sorted(by_snapshot.items()):
        row: list[Any] = [step, name]
        for p in parts:
            g = groups.get(p)
            row += [g["norm"], g["rel_update"], g["cos_to_final"]] if g else [None, None, None]
        rows.append(row)
    return header, rows
