"""Build the report of one run: the result beside its baselines, the key metric panels, the family's pictures, every
other metric, the checkpoints, parameter evolution from step 0 to the end, storage, and a checkpoint comparison."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from waypoint.checkpoint import Candidate, CheckpointInfo, CheckpointManager

from . import evolution as ev
from . import headline, plots
from . import series as sr
from .compare import diff_checkpoints
from .render import Section, write_report
from .runinfo import RunInfo, load_run, read_metrics

__all__ = ["build_run_report", "read_metrics", "run_sections"]

#: modules drawn (and listed) in the parameter-evolution section
TOP_MODULES = 8


def _modules(key: str) -> str | None:
    """Coarse module grouping: the key up to its fourth dotted/slashed component (None for a loose tensor)."""
    if ev.top_part(key) is None:
        return None
    parts = key.replace("/", ".").split(".")
    return ".".join(parts[: min(len(parts) - 1, 4)])


def picture_sections(pictures: Sequence[Mapping[str, Any]]) -> list[Section]:
    """The family's pictures (``{"title", "text", "image", "table"}`` each, from ``analyze.py``) as sections."""
    out = []
    for pic in pictures:
        section = Section(str(pic["title"]), [str(t) for t in pic.get("text", ())])
        if pic.get("image"):
            section.images.append(Path(pic["image"]))
        if pic.get("table"):
            header, rows = pic["table"]
            section.tables.append((list(header), [list(r) for r in rows]))
        out.append(section)
    return out


def _evolution_names(mgr: CheckpointManager, infos: Sequence[CheckpointInfo]) -> set[str]:
    candidates = [Candidate(i.name, i.step, i.epoch, i.metrics, frozenset(i.tags), i.valid) for i in infos]
    return mgr.policy.evolution(candidates)


def checkpoint_section(mgr: CheckpointManager, infos: Sequence[CheckpointInfo], out: Path) -> Section:
    """Every checkpoint with its tags and notes, whether retention keeps it as an evolution snapshot, and the metric."""
    snapshots = _evolution_names(mgr, infos)
    monitor = mgr.monitor or ""
    rows = []
    for i in infos:
        notes = "; ".join(str(n.get("note", "")) for n in mgr.manifest(i.name).notes)
        kept = "evolution" if i.name in snapshots else ""
        rows.append([i.name, i.step, i.epoch, ", ".join(i.all_tags), kept, i.metrics.get(monitor), notes])
    text = [f"{len(infos)} checkpoints; {len(snapshots)} are evolution snapshots that retention keeps for this report."]
    timeline = plots.checkpoint_timeline([i.to_json() for i in infos], mgr.monitor, out / "timeline.png")
    header = ["checkpoint", "step", "epoch", "tags", "kept as", monitor or "metric", "notes"]
    return Section("Checkpoints", text, tables=[(header, rows)], images=[timeline])


def storage_section(mgr: CheckpointManager, out: Path, summary: dict) -> Section:
    """Logical vs physical bytes per checkpoint: what deduplication saved."""
    storage = ev.storage_by_checkpoint(mgr)
    logical, physical = storage[-1]["cum_logical"], storage[-1]["cum_physical"]
    summary["storage"] = {"logical_bytes": logical, "physical_bytes": physical}
    text = [
        f"Logical {logical / 2**20:.1f} MiB, physical {physical / 2**20:.1f} MiB: "
        f"deduplication stored {physical / max(logical, 1):.2f}x of what plain saves would write."
    ]
    return Section("Storage", text, images=[plots.storage(storage, out / "storage.png")])


def evolution_sections(
    mgr: CheckpointManager, out: Path, summary: dict, initial: Mapping[str, torch.Tensor] | None = None
) -> list[Section]:
    """Parameter evolution from step 0 (``initial``) to the end: per part, per module, student vs teacher, per stack."""
    infos = ev.checkpoints_in_order(mgr)
    keys = ev.parameter_keys(ev.tensor_tables(mgr, [infos[-1]])[infos[-1].name])
    rows = ev.tensor_evolution(mgr, keys, initial)
    header, table = ev.evolution_table(ev.aggregate(rows, ev.top_part))
    first = "the initial weights (step 0, rebuilt from the run's config and seed)" if initial else f"step {infos[0].step}"
    summary["evolution_steps"] = [r[0] for r in table]
    overview = Section(
        "Parameter evolution",
        [
            f"{len(table)} snapshots from {first} to step {infos[-1].step}: weight norm, relative update "
            "||W_t - W_prev|| / ||W_prev|| since the previous snapshot, and cosine similarity to the final weights."
        ],
        tables=[(header, table)],
    )
    modules = ev.aggregate(rows, _modules)
    ranked = ev.groups_by_change(modules, top=TOP_MODULES)
    per_module = Section(
        "Modules that moved most",
        [f"The {len(ranked)} modules with the largest total relative update over the run, drawn and listed."],
        tables=[(["module", "total relative update"], [[g, v] for g, v in ranked])],
        images=[plots.evolution(modules, [g for g, _ in ranked], out / "evolution.png", "modules that moved most")],
    )
    return [overview, per_module, *_pair_and_stack_sections(mgr, keys, rows, out, summary)]


def _pair_and_stack_sections(mgr: CheckpointManager, keys: list[str], rows: list, out: Path, summary: dict) -> list[Section]:
    sections = []
    pairs = ev.paired_keys(keys, "student", "teacher")
    if pairs:
        dist = ev.pair_distance(mgr, pairs)
        summary["student_teacher"] = dist[-1]["rel_distance"]
        image = plots.line(
            [d["step"] for d in dist],
            [d["rel_distance"] for d in dist],
            out / "student_teacher.png",
            "student vs teacher",
            "relative distance",
        )
        sections.append(
            Section("Student vs teacher", ["||student - teacher|| / ||teacher|| over all paired parameters."], images=[image])
        )
    stacks = ev.aggregate([r for r in rows if r["checkpoint"] != ev.INITIAL], ev.stack_of)
    if stacks:
        names = sorted({r["group"] for r in stacks}, key=lambda g: (int(g.split()[-1]), g))
        text = ["Frozen stacks stay flat: their content ids do not change. LoRA adapters on a frozen stack are drawn apart."]
        sections.append(
            Section("Per-stack change", text, images=[plots.evolution(stacks, names, out / "stacks.png", "per stack")])
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
        labels, values = [r["key"] for r in top], [r["rel_change"] for r in top]
        section.images.append(plots.bars(labels, values, out / "compare.png", "relative change per tensor (largest first)"))
    section.tables.append((["metric", "a", "b", "delta"], [[k, m["a"], m["b"], m["delta"]] for k, m in doc["metrics"].items()]))
    return section


def checkpoint_sections(
    run: RunInfo, out: Path, summary: dict, compare: tuple[str, str] | None, initial: Mapping[str, torch.Tensor] | None
) -> list[Section]:
    """Checkpoints, parameter evolution, storage and the comparison (nothing when the run holds no checkpoint)."""
    if not (run.path / "checkpoints").is_dir():
        return []
    with CheckpointManager(run.path / "checkpoints", read_only=True) as mgr:
        infos = ev.checkpoints_in_order(mgr)
        summary["checkpoints"] = len(infos)
        if not infos:
            return []
        best = mgr.best()
        summary["best_checkpoint"] = {"name": best.name, "step": best.step} if best else None
        sections = [checkpoint_section(mgr, infos, out)]
        sections += evolution_sections(mgr, out, summary, initial)
        sections.append(storage_section(mgr, out, summary))
        if compare:
            sections.append(compare_section(mgr, compare, out, summary))
        return sections


def run_sections(
    run: RunInfo,
    out: Path,
    compare: tuple[str, str] | None = None,
    pictures: Sequence[Mapping[str, Any]] = (),
    initial: Mapping[str, torch.Tensor] | None = None,
) -> tuple[list[Section], dict]:
    """Every section of a run report, in reading order; PNGs are written into ``out``."""
    all_series = sr.series(run.rows)
    steps = []
    if (run.path / "checkpoints").is_dir():
        with CheckpointManager(run.path / "checkpoints", read_only=True) as mgr:
            steps = [i.step for i in ev.checkpoints_in_order(mgr)]
    marks = headline.marks_of(run, all_series, steps)
    result, summary = headline.result_section(run, all_series)
    summary.update(title=run.title, family=run.family.key, mode=run.mode)
    sections = [result, headline.key_metrics_section(run, all_series, marks, out)]
    sections += picture_sections(pictures)
    sections.append(headline.all_metrics_section(run, all_series, marks, out))
    sections += checkpoint_sections(run, out, summary, compare, initial)
    return sections, summary


def build_run_report(
    run_dir: str | Path,
    compare: tuple[str, str] | None = None,
    *,
    pictures: Sequence[Mapping[str, Any]] = (),
    initial: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Write ``<run>/report/`` (report.md, report.html, PNGs) and return a summary; ``pictures`` are the family's
    figures, ``initial`` the weights at step 0 (where parameter evolution starts)."""
    run = load_run(run_dir)
    out = run.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    sections, summary = run_sections(run, out, compare, pictures, initial)
    paths = write_report(out, run.title, sections)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return {"summary": summary, **{k: str(v) for k, v in paths.items()}}
