"""Compare two checkpoints tensor by tensor, streaming: at most one pair of tensors in memory."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from waypoint.checkpoint import CheckpointManager


def tensor_change(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Norms and relative change ``||b - a|| / ||a||`` of two same-shaped tensors (in float64)."""
    a64, b64 = a.double(), b.double()
    diff = b64 - a64
    a_norm, b_norm, d_norm = a64.norm().item(), b64.norm().item(), diff.norm().item()
    rel = d_norm / a_norm if a_norm > 0 else (0.0 if d_norm == 0 else math.inf)
    cos = (a64.flatten() @ b64.flatten()).item() / (a_norm * b_norm) if a_norm > 0 and b_norm > 0 else float("nan")
    return {
        "a_norm": a_norm,
        "b_norm": b_norm,
        "diff_norm": d_norm,
        "rel_change": rel,
        "cosine": cos,
        "max_abs_diff": diff.abs().max().item() if diff.numel() else 0.0,
    }


def json_differences(a: Any, b: Any, path: str = "") -> Iterator[dict[str, Any]]:
    """Paths where two JSON state trees differ (tensor markers compare by key only)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            sub = f"{path}/{k}" if path else str(k)
            if k not in a or k not in b:
                yield {"path": sub, "a": a.get(k, "<absent>"), "b": b.get(k, "<absent>")}
            else:
                yield from json_differences(a[k], b[k], sub)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from json_differences(x, y, f"{path}/{i}" if path else str(i))
    elif a != b:
        yield {"path": path or "/", "a": a, "b": b}


def diff_checkpoints(
    mgr_a: CheckpointManager, sel_a: str, mgr_b: CheckpointManager, sel_b: str, *, max_json: int = 200
) -> dict[str, Any]:
    """Per-tensor changes, added/removed keys, JSON-state and metric differences between two checkpoints."""
    ia, ib = mgr_a.one(sel_a), mgr_b.one(sel_b)
    ta, tb = mgr_a.manifest(ia.name).tensors, mgr_b.manifest(ib.name).tensors
    common = [k for k in ta if k in tb]
    changed, reshaped, unchanged = [], [], 0
    for key in common:
        ra, rb = ta[key], tb[key]
        if ra.id == rb.id:
            unchanged += 1
            continue
        if ra.shape != rb.shape or ra.dtype != rb.dtype:
            reshaped.append({"key": key, "a": [ra.dtype, list(ra.shape)], "b": [rb.dtype, list(rb.shape)]})
            continue
        a, b = mgr_a.tensor(ia.name, key), mgr_b.tensor(ib.name, key)
        if a.dtype == torch.bool or not (a.is_floating_point() or a.is_complex()):
            a, b = a.to(torch.float64), b.to(torch.float64)
        changed.append({"key": key, **tensor_change(a, b)})
    changed.sort(key=lambda r: -r["rel_change"] if math.isfinite(r["rel_change"]) else -math.inf)
    json_diff = list(json_differences(mgr_a.tree(ia.name), mgr_b.tree(ib.name)))
    metrics = {
        k: {
            "a": ia.metrics.get(k),
            "b": ib.metrics.get(k),
            "delta": (ib.metrics[k] - ia.metrics[k]) if ia.metrics.get(k) is not None and ib.metrics.get(k) is not None else None,
        }
        for k in sorted(set(ia.metrics) | set(ib.metrics))
    }
    return {
        "a": ia.name,
        "b": ib.name,
        "a_step": ia.step,
        "b_step": ib.step,
        "same_state": ia.digest == ib.digest,
        "added": sorted(k for k in tb if k not in ta),
        "removed": sorted(k for k in ta if k not in tb),
        "changed": changed,
        "dtype_or_shape_changed": reshaped,
        "unchanged": unchanged,
        "json_changes": json_diff[:max_json],
        "json_changes_total": len(json_diff),
        "metrics": metrics,
    }
