"""The Run view: metric curves with checkpoints marked, the checkpoint table, storage over time."""

from __future__ import annotations

import math
import time
from typing import Any

from waypoint.analysis.evolution import storage_by_checkpoint
from waypoint.analysis.report import read_metrics
from waypoint.checkpoint import CheckpointError, CheckpointManager

from . import charts
from .catalog import Catalog, inside
from .markup import md

CHECKPOINT_COLUMNS = ["name", "step", "epoch", "tags", "metrics", "size MiB", "created", "valid", "digest", "notes"]


def checkpoint_records(mgr: CheckpointManager) -> list[dict[str, Any]]:
    """Every committed checkpoint, oldest first, exactly as ``waypoint ls --json`` lists them."""
    return [i.to_json() for i in mgr.list()]


def metrics_text(metrics: dict[str, Any], only: list[str] | None = None) -> str:
    keys = only if only is not None else sorted(metrics)
    return " ".join(
        f"{k}={metrics[k]:.4g}" if isinstance(metrics.get(k), float) else f"{k}={metrics.get(k)}" for k in keys if k in metrics
    )


def notes_of(mgr: CheckpointManager, records: list[dict[str, Any]]) -> dict[str, str]:
    """Per valid checkpoint, the notes stored with its tag changes (``waypoint tag --note``), oldest first."""
    out = {}
    for r in records:
        if r["valid"]:
            try:
                out[r["name"]] = "; ".join(str(n.get("note", "")) for n in mgr.manifest(r["name"]).notes if n.get("note"))
            except (CheckpointError, OSError):  # deleted by a live writer since it was listed
                continue
    return out


def checkpoint_rows(records: list[dict[str, Any]], notes: dict[str, str] | None = None) -> list[list[Any]]:
    """The checkpoint table's rows (CHECKPOINT_COLUMNS) from ``checkpoint_records`` (and ``notes_of``)."""
    return [
        [
            r["name"],
            r["step"],
            r["epoch"],
            ",".join(r["tags"]),
            metrics_text(r["metrics"]),
            round(r["logical_bytes"] / 2**20, 3),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"])),
            "yes" if r["valid"] else f"DAMAGED: {r['problem']}",
            (r["digest"] or "")[:12],
            (notes or {}).get(r["name"], ""),
        ]
        for r in records
    ]


def metric_names(rows: list[dict[str, Any]]) -> list[str]:
    """Numeric metrics logged in metrics.jsonl (``val/*`` first), without step/epoch/time."""
    names = {k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    names -= {"step", "epoch", "time"}
    return sorted(names, key=lambda k: (not k.startswith("val/"), k))


def checkpoint_markers(records: list[dict[str, Any]], rows: list[dict[str, Any]], metric: str) -> list[charts.Marker]:
    """One marker per valid checkpoint, on the curve of ``metric``: its own value, else the last logged before it."""
    logged = sorted((r["step"], r[metric]) for r in rows if isinstance(r.get("step"), int) and _num(r.get(metric)))
    markers = []
    for rec in records:
        if not rec["valid"]:
            continue
        y = rec["metrics"].get(metric)
        if not _num(y):
            before = [v for s, v in logged if s <= rec["step"]]
            y = before[-1] if before else (logged[0][1] if logged else None)
        if y is None:
            continue
        tags = ",".join(rec["tags"]) or "-"
        title = f"{rec['name']}  step {rec['step']}  tags [{tags}]\n{metrics_text(rec['metrics'])}"
        markers.append(charts.Marker(rec["step"], y, title))
    return markers


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def run_view(catalog: Catalog, run_id: str, metric: str | None = None) -> dict[str, Any]:
    """Everything the Run view shows: records, table rows, metric choices, metric chart and storage chart (SVG),
    and a one-line summary (Markdown, its values escaped)."""
    ref = catalog.run(run_id)
    rows = read_metrics(ref.path) if inside(ref.path / "metrics.jsonl", ref.root) else []
    names = metric_names(rows)
    records: list[dict[str, Any]] = []
    storage: list[dict[str, Any]] = []
    monitor = None
    physical = logical = 0
    notes: dict[str, str] = {}
    if ref.has_checkpoints:
        with catalog.manager(run_id) as mgr:
            records = checkpoint_records(mgr)
            notes = notes_of(mgr, records)
            monitor = mgr.monitor
            storage = storage_by_checkpoint(mgr)
            physical = mgr.physical_bytes()
            logical = sum(r["logical_bytes"] for r in records if r["valid"])
    if metric not in names:
        metric = monitor if monitor in names else (names[0] if names else None)
    chart = charts.Chart(f"{metric or 'metric'} over steps (circles: checkpoints)", "step", metric or "")
    if metric:
        chart.series = charts.series_from_rows(rows, [metric])
        chart.markers = checkpoint_markers(records, rows, metric)
    storage_chart = charts.Chart("storage over time (cumulative)", "step", "MiB")
    storage_chart.series = {
        "logical (plain saves)": [(s["step"], s["cum_logical"] / 2**20) for s in storage],
        "physical (deduplicated)": [(s["step"], s["cum_physical"] / 2**20) for s in storage],
    }
    storage_chart.markers = [
        charts.Marker(s["step"], s["cum_physical"] / 2**20, f"{s['checkpoint']}: +{s['physical_bytes'] / 2**20:.3f} MiB on disk")
        for s in storage
    ]
    return {
        "run": run_id,
        "monitor": monitor,
        "metric": metric,
        "metrics": names,
        "records": records,
        "rows": checkpoint_rows(records, notes),
        "metric_svg": charts.svg(chart),
        "storage_svg": charts.svg(storage_chart),
        "summary": (
            f"{len(records)} checkpoint(s); monitored metric {md(monitor or '-')}; "
            f"disk: logical {logical / 2**20:.2f} MiB, physical {physical / 2**20:.2f} MiB"
        ),
        "choices": [r["name"] for r in records],
    }
