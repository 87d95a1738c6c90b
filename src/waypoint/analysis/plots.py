"""PNG plots for reports (matplotlib, headless). Each function takes plain rows and writes one file."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .fmt import num  # noqa: E402

TAG_COLOURS = {
    "latest": "tab:blue",
    "best": "tab:green",
    "milestone": "tab:purple",
    "preempt": "tab:orange",
    "emergency": "tab:red",
    "pinned": "black",
    "end": "tab:cyan",
}


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass
class PanelMarks:
    """What is drawn on metric panels besides the curves."""

    monitor: str | None = None
    baselines: Mapping[str, float] = field(default_factory=dict)  # drawn on the monitor's panel
    checkpoints: Sequence[int] = ()  # grey vertical lines
    collapsed: Sequence[tuple[int, int]] = ()  # red bands on every panel
    phases: Sequence[tuple[int, int]] = ()  # (stacks, first step): a labelled line where each phase starts


def _panel(ax: Any, name: str, pts: Sequence[tuple[int, float]], marks: PanelMarks) -> None:
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 60 else None, lw=1.2, label=name)
    for s in marks.checkpoints:
        ax.axvline(s, color="grey", alpha=0.2, lw=0.7)
    for a, b in marks.collapsed:
        ax.axvspan(a, b, color="tab:red", alpha=0.15, lw=0)
    for k, (value, step) in enumerate(marks.phases):
        if k:
            ax.axvline(step, color="tab:purple", ls=":", lw=1)
            ax.annotate(f"{value} stacks", (step, 1), xycoords=("data", "axes fraction"), fontsize=6, va="top")
    if name == marks.monitor:
        for i, (label, value) in enumerate(marks.baselines.items()):
            ax.axhline(value, ls="--", lw=1, color=f"C{i + 1}", label=f"baseline: {label} {num(value)}")
        ax.legend(fontsize=6, loc="best")
    ax.set_title(name + (" (monitored)" if name == marks.monitor else ""), fontsize=9)
    ax.tick_params(labelsize=7)


def metric_panels(
    all_series: Mapping[str, Sequence[tuple[int, float]]], names: Sequence[str], marks: PanelMarks, path: Path, cols: int = 2
) -> Path:
    """One panel per metric in ``names`` order (row by row), with the baselines, checkpoints and collapse marked."""
    names = list(names) or ["(no metrics)"]
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 2.5 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        _panel(ax, name, all_series.get(name, []), marks)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("step", fontsize=8)
    return _save(fig, path)


def checkpoint_timeline(infos: Sequence[Mapping[str, Any]], monitor: str | None, path: Path) -> Path:
    """Checkpoints over steps, coloured by tag, with the monitored metric."""
    fig, ax = plt.subplots(figsize=(8, 3))
    for info in infos:
        tags = info.get("tags") or []
        colour = next(
            (TAG_COLOURS[t] for t in ("emergency", "preempt", "pinned", "best", "milestone", "latest") if t in tags), "tab:gray"
        )
        y = info.get("metrics", {}).get(monitor) if monitor else None
        ax.scatter(info["step"], y if y is not None else 0, color=colour, s=40, zorder=3)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=t) for t, c in TAG_COLOURS.items()]
    ax.legend(
        handles=handles + [plt.Line2D([], [], marker="o", ls="", color="tab:gray", label="other")], fontsize=7, ncol=4, loc="best"
    )
    ax.set_xlabel("step")
    ax.set_ylabel(monitor or "(no monitored metric)")
    ax.set_title("checkpoint timeline")
    return _save(fig, path)


def storage(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Logical vs physical bytes per checkpoint and cumulative (what deduplication saved)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    steps = [r["step"] for r in rows]
    mib = 1 / 2**20
    pos = list(range(len(steps)))
    a.bar(pos, [r["logical_bytes"] * mib for r in rows], label="logical", alpha=0.5)
    a.bar(pos, [r["physical_bytes"] * mib for r in rows], label="physical (new bytes)", alpha=0.8)
    a.set_title("per checkpoint (MiB)")
    a.set_xticks(pos, [str(s) for s in steps])
    a.tick_params(axis="x", labelrotation=90, labelsize=6)
    a.legend(fontsize=7)
    b.plot(steps, [r["cum_logical"] * mib for r in rows], label="cumulative logical")
    b.plot(steps, [r["cum_physical"] * mib for r in rows], label="cumulative physical")
    b.set_title("cumulative (MiB)")
    b.set_xlabel("step")
    b.legend(fontsize=7)
    return _save(fig, path)


def evolution(module_rows: Sequence[Mapping[str, Any]], groups: Sequence[str], path: Path, title: str) -> Path:
    """Weight norm, relative update and cosine to final over steps for the given groups."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for g in groups:
        rows = sorted((r for r in module_rows if r["group"] == g), key=lambda r: r["step"])
        steps = [r["step"] for r in rows]
        axes[0].plot(steps, [r["norm"] for r in rows], label=g, lw=1)
        upd = [(r["step"], r["rel_update"]) for r in rows if r["rel_update"] is not None]
        axes[1].plot([u[0] for u in upd], [u[1] for u in upd], lw=1)
        cos = [(r["step"], r["cos_to_final"]) for r in rows if r["cos_to_final"] is not None]
        axes[2].plot([c[0] for c in cos], [c[1] for c in cos], lw=1)
    for ax, name in zip(axes, ("weight norm", "relative update vs previous", "cosine to final")):
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
    fig.suptitle(title, fontsize=10)
    if groups:
        fig.legend(*axes[0].get_legend_handles_labels(), fontsize=6, loc="lower center", ncol=3)
        fig.subplots_adjust(bottom=0.3, top=0.82)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def line(xs: Sequence[float], ys: Sequence[float | None], path: Path, title: str, ylabel: str) -> Path:
    """A single curve (e.g. student-vs-teacher distance)."""
    fig, ax = plt.subplots(figsize=(6, 3))
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    return _save(fig, path)


def bars(labels: Sequence[str], values: Sequence[float], path: Path, title: str) -> Path:
    """Horizontal bars (e.g. the layers that moved most between two checkpoints)."""
    fig, ax = plt.subplots(figsize=(8, 0.3 * max(len(labels), 3) + 1))
    ax.barh(range(len(labels)), values)
    ax.set_yticks(range(len(labels)), [lbl[-60:] for lbl in labels], fontsize=7)
    ax.invert_yaxis()
    ax.set_title(title)
    return _save(fig, path)


def group_summary(
    groups: Sequence[tuple[str, Sequence[float]]], baselines: Mapping[str, float], path: Path, metric: str, what: str
) -> Path:
    """Per group: every run's value (dots) and mean ± std (bar), beside the baselines (dashed lines)."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(groups) + 3), 3.6))
    for i, (_, values) in enumerate(groups):
        if not values:
            continue
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
        ax.errorbar([i], [mean], yerr=[std], fmt="s", color="black", capsize=6, ms=7, zorder=3)
        ax.scatter([i + 0.08 * (j - (len(values) - 1) / 2) for j in range(len(values))], values, color="tab:blue", s=18)
    for k, (label, value) in enumerate(baselines.items()):
        ax.axhline(value, ls="--", lw=1, color=f"C{k + 1}", label=f"baseline: {label} {num(value)}")
    ax.set_xticks(range(len(groups)), [_wrap(g) for g, _ in groups], fontsize=7)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel(f"{what} {metric}", fontsize=8)
    ax.set_title(f"{what} {metric} per group: runs (dots), mean ± std (black)", fontsize=9)
    if baselines:
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def _wrap(label: str, width: int = 28) -> str:
    parts, line = [], ""
    for word in label.split(", "):
        if line and len(line) + len(word) > width:
            parts.append(line)
            line = word
        else:
            line = f"{line}, {word}" if line else word
    return "\n".join([*parts, line])


def grouped_curves(
    curves: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
    group_of: Mapping[str, str],
    metrics: Sequence[str],
    marks: PanelMarks,
    path: Path,
) -> Path:
    """One panel per metric; every run's curve overlaid, one colour per group (seeds of a group share it)."""
    colours = {g: f"C{i % 10}" for i, g in enumerate(dict.fromkeys(group_of.values()))}
    metrics = list(metrics) or ["(no metrics)"]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(9, 2.8 * len(metrics)), squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics):
        seen: set[str] = set()
        for run, by_metric in curves.items():
            pts = by_metric.get(metric, [])
            group = group_of[run]
            label = None if group in seen else group
            seen.add(group)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colours[group], lw=1, alpha=0.8, label=label)
        if metric == marks.monitor:
            for k, (name, value) in enumerate(marks.baselines.items()):
                ax.axhline(value, ls="--", lw=1, color="grey", alpha=0.5 + 0.4 * (k % 2), label=f"baseline: {name} {num(value)}")
        ax.set_title(metric, fontsize=9)
        ax.legend(fontsize=6, loc="best")
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("step", fontsize=8)
    return _save(fig, path)
