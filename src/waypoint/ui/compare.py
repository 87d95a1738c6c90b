"""The Compare view: two or more checkpoints (of one run or several) side by side.

Metrics in columns; for each checkpoint after the first, the ``waypoint diff`` data against the first
(per-tensor relative change and cosine, rolled up per module) and the differences of the saved config.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from waypoint.analysis.compare import diff_checkpoints, json_differences

from .catalog import Catalog
from .errors import UIError
from .markup import md


def module_of(key: str, depth: int = 3) -> str:
    """A tensor key's module: its dotted/slashed path without the last component, cut to ``depth`` parts."""
    parts = key.replace("/", ".").split(".")
    return ".".join(parts[: max(1, min(len(parts) - 1, depth))])


def module_rollup(
    changed: list[dict[str, Any]], unchanged_keys: dict[str, int] | None = None, depth: int = 3
) -> list[dict[str, Any]]:
    """Per module, over its changed tensors: ``||b - a|| / ||a||`` and cosine of the concatenated weights.

    Unchanged tensors (same content id) are counted, not read, so the figures describe the tensors that moved; a
    module whose tensors all kept their id (frozen) has change 0 and cosine 1.
    """
    acc: dict[str, dict[str, float]] = defaultdict(lambda: {"a2": 0.0, "b2": 0.0, "d2": 0.0, "dot": 0.0, "n": 0})
    for row in changed:
        m = acc[module_of(row["key"], depth)]
        a, b, d, cos = row["a_norm"], row["b_norm"], row["diff_norm"], row["cosine"]
        m["a2"] += a * a
        m["b2"] += b * b
        m["d2"] += d * d
        m["dot"] += (cos * a * b) if math.isfinite(cos) else 0.0
        m["n"] += 1
    for mod, n in (unchanged_keys or {}).items():
        if mod not in acc and n:
            acc[mod]["n"] = 0  # only unchanged tensors: relative change 0, cosine 1
    out = []
    for mod, m in acc.items():
        a, b = math.sqrt(m["a2"]), math.sqrt(m["b2"])
        out.append(
            {
                "module": mod,
                "changed": int(m["n"]),
                "unchanged": (unchanged_keys or {}).get(mod, 0),
                "rel_change": math.sqrt(m["d2"]) / a if a > 0 else (0.0 if m["d2"] == 0 else math.inf),
                "cosine": m["dot"] / (a * b) if a > 0 and b > 0 else (1.0 if m["n"] == 0 else float("nan")),
            }
        )
    return sorted(out, key=lambda r: -r["rel_change"] if math.isfinite(r["rel_change"]) else -math.inf)


def flat_config_differences(a: dict[str, Any], b: dict[str, Any]) -> list[list[Any]]:
    """[path, a, b] wherever two saved configs differ."""
    return [[d["path"].replace("/", "."), _show(d["a"]), _show(d["b"])] for d in json_differences(a, b)]


def _show(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def compare(catalog: Catalog, refs: list[str], *, top: int = 30) -> dict[str, Any]:
    """Metrics side by side, per-module change and cosine, and config differences of ``refs`` (``run@selector``)."""
    refs = [r for r in (refs or []) if r]
    if len(refs) < 2:
        raise UIError("pick at least two checkpoints to compare")
    parsed = [catalog.split_ref(r) for r in refs]
    first_run, first_sel = parsed[0]
    labels, infos, configs = [], [], []
    for run_id, sel in parsed:
        with catalog.manager(run_id) as mgr:
            info = mgr.one(sel)
            infos.append(info)
            configs.append(mgr.manifest(info.name).config)
            labels.append(f"{run_id}@{info.name}")
    metric_keys = sorted({k for i in infos for k in i.metrics})
    metrics_rows = [[k, *[i.metrics.get(k) for i in infos]] for k in metric_keys]
    pairs = []
    with catalog.manager(first_run) as mgr_a:
        for (run_id, sel), label, cfg in zip(parsed[1:], labels[1:], configs[1:]):
            with catalog.manager(run_id) as mgr_b:
                doc = diff_checkpoints(mgr_a, infos[0].name, mgr_b, mgr_b.one(sel).name)
            unchanged_by_module: dict[str, int] = defaultdict(int)
            changed_keys = {r["key"] for r in doc["changed"]}
            for key in _unchanged_keys(mgr_a, infos[0].name, changed_keys, doc):
                unchanged_by_module[module_of(key)] += 1
            modules = module_rollup(doc["changed"], unchanged_by_module)
            pairs.append(
                {
                    "a": labels[0],
                    "b": label,
                    "same_state": doc["same_state"],
                    "summary": (
                        f"{md(labels[0])} -> {md(label)}: {len(doc['changed'])} tensors changed, {doc['unchanged']} unchanged, "
                        f"{len(doc['added'])} added, {len(doc['removed'])} removed"
                        + ("; identical state" if doc["same_state"] else "")
                    ),
                    "modules": [[m["module"], m["changed"], m["unchanged"], m["rel_change"], m["cosine"]] for m in modules],
                    "tensors": [[r["key"], r["rel_change"], r["cosine"], r["max_abs_diff"]] for r in doc["changed"][:top]],
                    "config": flat_config_differences(configs[0], cfg),
                    "diff": doc,
                }
            )
    return {"labels": labels, "metrics": metrics_rows, "pairs": pairs}


def _unchanged_keys(mgr, name: str, changed: set[str], doc: dict[str, Any]) -> list[str]:
    """Keys of the first checkpoint that the diff found unchanged (same content id in both)."""
    skip = changed | set(doc["removed"]) | {r["key"] for r in doc["dtype_or_shape_changed"]}
    return [k for k in mgr.manifest(name).tensors if k not in skip]
