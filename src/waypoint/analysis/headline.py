"""The metric sections of a run report, in the order a researcher reads them: the result beside its baselines,
the key panels (monitored metric, training loss, learning rate, the family's health signals), the family's
health notes, then every other metric."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import health, plots
from . import series as sr
from .fmt import num
from .render import Section
from .runinfo import RunInfo

#: panels in the key-metrics figure; the rest go to the all-metrics figure
KEY_PANELS = 6


def marks_of(run: RunInfo, all_series: Mapping[str, sr.Points], checkpoint_steps: Sequence[int]) -> plots.PanelMarks:
    """Baselines, checkpoints, collapse bands and Stack-Wise stack phases for a run's panels."""
    return plots.PanelMarks(
        monitor=run.monitor,
        baselines=sr.baselines(all_series, run.monitor),
        checkpoints=list(checkpoint_steps),
        collapsed=sr.collapsed_spans(run.rows),
        phases=sr.phases(all_series.get("train/stacks", [])),
    )


def result_section(run: RunInfo, all_series: Mapping[str, sr.Points]) -> tuple[Section, dict[str, Any]]:
    """The monitored metric's best and final values beside its baselines, and how the training loss moved."""
    monitor = run.monitor
    points = all_series.get(monitor or "", [])
    best, final = sr.best_and_final(points, run.mode)
    base = sr.baselines(all_series, monitor)
    steps = max((p[0] for pts in all_series.values() for p in pts), default=0)
    text = [f"{run.family.label} run in {run.path}: {steps} steps logged; monitored metric {monitor or '-'} ({run.mode})."]
    if points:
        best_step = next((s for s, v in points if v == best and s > 0), points[0][0])
        parts = ", ".join(f"{k} {num(v)}" for k, v in base.items())
        text.append(
            f"{monitor}: final {num(final)} (step {points[-1][0]}), best {num(best)} (step {best_step})"
            + (f"; baselines: {parts}." if parts else "; no baselines logged.")
        )
    loss = all_series.get("train/loss", [])
    if loss:
        text.append(f"train/loss {num(loss[0][1])} at step {loss[0][0]} → {num(loss[-1][1])} at step {loss[-1][0]}.")
    text += health.family_notes(run, all_series)
    rows = [["final", final], ["best", best], *[[f"baseline: {k}", v] for k, v in base.items()]]
    section = Section("Result", text, tables=[([monitor or "metric", "value"], rows)] if points else [])
    return section, {"monitor": monitor, "best": best, "final": final, "baselines": base, "steps": steps}


def key_metrics_section(run: RunInfo, all_series: Mapping[str, sr.Points], marks: plots.PanelMarks, out: Path) -> Section:
    """The first panels: monitored metric with its baselines, training loss, learning rate, the health signals."""
    order = sr.ranked(list(all_series), run.family, run.monitor)
    lead = order[:KEY_PANELS]
    image = plots.metric_panels(all_series, lead, marks, out / "metrics.png")
    text = [
        "Ranked by importance: "
        + ", ".join(lead)
        + ". Dashed lines: baselines; grey lines: checkpoints"
        + ("; red bands: steps where the teacher had collapsed" if marks.collapsed else "")
        + ("; dotted purple lines: a stack appended" if len(marks.phases) > 1 else "")
        + "."
    ]
    return Section("Key metrics", text, images=[image])


def all_metrics_section(run: RunInfo, all_series: Mapping[str, sr.Points], marks: plots.PanelMarks, out: Path) -> Section:
    """Every other metric drawn, and every metric (baselines included) in one table."""
    order = sr.ranked(list(all_series), run.family, run.monitor)
    rest = order[KEY_PANELS:]
    section = Section(
        "All metrics",
        [f"{len(all_series)} metrics logged. Drawn here: the {len(rest)} not drawn above. Every one is in the table."],
    )
    if rest:
        section.images.append(plots.metric_panels(all_series, rest, marks, out / "metrics_all.png", cols=3))
    section.tables.append((["metric", "first", "last", "min", "max", "points"], sr.summary_rows(all_series, order)))
    return section
