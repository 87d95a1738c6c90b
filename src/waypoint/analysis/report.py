"""Build the report of one run: metrics, checkpoint timeline, storage, parameter evolution, comparison."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from waypoint.checkpoint import CheckpointManager

from . import health, plots
from .compare import diff_checkpoints
from .evolution import (
    aggregate,
    groups_by_change,
    pair_distance,
    paired_keys,
    parameter_keys,
    stack_of,
    storage_by_checkpoint,
    tensor_evolution,
    tensor_tables,
)
from .render import Section, write_report


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl`` (damaged lines, e.g. a torn last line after a crash, are skipped)."""
    path = run_dir / "metrics.jsonl"
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _top_level_groups(key: str) -> str:
    """Coarse module grouping: the key up to its third dotted/slashed component."""
    parts = key.replace("/", ".").split(".")
    return ".".join(parts[: min(len(parts) - 1, 4)]) or key


def run_sections(run_dir: Path, out: Path, compare: tuple[str, str] | None = None) -> tuple[list[Section], dict]:
    """Compute every section of a run report; PNGs are written into ``out``."""
    mgr = CheckpointManager(run_dir / "checkpoints", read_only=True)
    try:
        infos = [i.to_json() for i in mgr.list() if i.valid]
        rows = read_metrics(run_dir)
        sections = []
        summary: dict[str, Any] = {"checkpoints": len(infos), "monitor": mgr.monitor, "mode": mgr.mode}
        best = mgr.best()
        latest = mgr.latest()
        text = [f"Run directory: {run_dir}", f"{len(infos)} checkpoints; monitored metric: {mgr.monitor or '-'} ({mgr.mode})."]
        if best:
            text.append(f"Best checkpoint: {best.name} (step {best.step}, {mgr.monitor} = {best.metrics.get(mgr.monitor)}).")
            summary["best"] = {"name": best.name, "step": best.step, "value": best.metrics.get(mgr.monitor)}
        if latest:
            summary["final"] = {"name": latest.name, "step": latest.step, "value": latest.metrics.get(mgr.monitor or "")}
        text += health.baseline_lines(rows, mgr.monitor)
        note = health.collapse_note(rows)
        if note:
            text.append(note)
            summary["collapse"] = note
        overview = Section("Overview", text)
        overview.tables.append(
            (
                ["checkpoint", "step", "epoch", "tags", mgr.monitor or "metric"],
                [[i["name"], i["step"], i["epoch"], ",".join(i["tags"]), i["metrics"].get(mgr.monitor or "")] for i in infos],
            )
        )
        sections.append(overview)
        sections.append(Section("Metrics", images=[plots.metric_curves(rows, [i["step"] for i in infos], out / "metrics.png")]))
        sections.append(
            Section("Checkpoint timeline", images=[plots.checkpoint_timeline(infos, mgr.monitor, out / "timeline.png")])
        )
        if not infos:
            return sections, summary
        storage = storage_by_checkpoint(mgr)
        logical, physical = storage[-1]["cum_logical"], storage[-1]["cum_physical"]
        summary["storage"] = {"logical_bytes": logical, "physical_bytes": physical}
        sections.append(
            Section(
                "Storage",
                [
                    f"Logical {logical / 2**20:.1f} MiB, physical {physical / 2**20:.1f} MiB: "
                    f"deduplication stored {physical / max(logical, 1):.2f}x of what plain saves would write."
                ],
                images=[plots.storage(storage, out / "storage.png")],
            )
        )
        sections += evolution_sections(mgr, out, summary)
        if compare:
            sections.append(compare_section(mgr, compare, out, summary))
        return sections, summary
    finally:
        mgr.close()


def evolution_sections(mgr: CheckpointManager, out: Path, summary: dict) -> list[Section]:
    """Parameter evolution per module, student-vs-teacher distance, per-stack change."""
    infos = sorted(mgr.list(include_invalid=False), key=lambda i: i.step)
    final_table = tensor_tables(mgr, [infos[-1]])[infos[-1].name]
    keys = parameter_keys(final_table)
    rows = tensor_evolution(mgr, keys)
    modules = aggregate(rows, _top_level_groups)
    top = [g for g, _ in groups_by_change(modules, top=8)]
    section = Section(
        "Parameter evolution",
        [
            "Per module: weight norm, relative update ||W_t - W_prev|| / ||W_prev|| between consecutive checkpoints, and "
            "cosine similarity to the final weights. Modules shown: the 8 that moved most."
        ],
        images=[plots.evolution(modules, top, out / "evolution.png", "modules that moved most")],
    )
    section.tables.append((["module", "total relative update"], [[g, v] for g, v in groups_by_change(modules, top=15)]))
    sections = [section]
    pairs = paired_keys(keys, "student", "teacher")
    if pairs:
        dist = pair_distance(mgr, pairs)
        summary["student_teacher"] = dist[-1]["rel_distance"]
        sections.append(
            Section(
                "Student vs teacher",
                ["||student - teacher|| / ||teacher|| over all paired parameters."],
                images=[
                    plots.line(
                        [d["step"] for d in dist],
                        [d["rel_distance"] for d in dist],
                        out / "student_teacher.png",
                        "student vs teacher",
                        "relative distance",
                    )
                ],
            )
        )
    stacks = aggregate(rows, stack_of)
    if stacks:
        names = sorted({r["group"] for r in stacks}, key=lambda g: (int(g.split()[-1]), g))
        sections.append(
            Section(
                "Per-stack change",
                [
                    "Frozen stacks stay flat: their content ids do not change. "
                    "LoRA adapters on a frozen stack are drawn as their own line."
                ],
                images=[plots.evolution(stacks, names, out / "stacks.png", "per stack")],
            )
        )
    return sections


def compare_section(mgr: CheckpointManager, compare: tuple[str, str], out: Path, summary: dict) -> Section:
    """Two checkpoints side by side: layers that moved most, added/removed keys, metric differences."""
    doc = diff_checkpoints(mgr, compare[0], mgr, compare[1])
    summary["compare"] = {k: doc[k] for k in ("a", "b", "same_state", "unchanged")}
    top = doc["changed"][:20]
    section = Section(
        f"Comparison {doc['a']} -> {doc['b']}",
        [
            f"{len(doc['changed'])} tensors changed, {doc['unchanged']} unchanged, {len(doc['added'])} added, "
            f"{len(doc['removed'])} removed."
        ],
    )
    if top:
        section.images.append(
            plots.bars(
                [r["key"] for r in top],
                [r["rel_change"] for r in top],
                out / "compare.png",
                "relative change per tensor (largest first)",
            )
        )
    section.tables.append((["metric", "a", "b", "delta"], [[k, m["a"], m["b"], m["delta"]] for k, m in doc["metrics"].items()]))
    return section


def build_run_report(run_dir: str | Path, compare: tuple[str, str] | None = None) -> dict[str, Any]:
    """Write ``<run>/report/`` (report.md, report.html, PNGs) and return a summary."""
    run_dir = Path(run_dir)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    sections, summary = run_sections(run_dir, out, compare)
    paths = write_report(out, f"Waypoint report: {run_dir.name}", sections)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return {"summary": summary, **{k: str(v) for k, v in paths.items()}}
