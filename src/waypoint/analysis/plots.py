"""PNG plots for reports (matplotlib, headless). Each function takes plain rows and writes one file."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

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


def metric_curves(rows: Sequence[Mapping[str, Any]], checkpoint_steps: Iterable[int], path: Path, max_panels: int = 6) -> Path:
    """One panel per numeric metric over steps, with vertical lines at checkpoints."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        step = r.get("step")
        if not isinstance(step, int):
            continue
        for k, v in r.items():
            if k not in ("step", "epoch", "time", "wall_time") and isinstance(v, (int, float)) and not isinstance(v, bool):
                series[k].append((step, float(v)))
    names = sorted(series, key=lambda k: (not k.startswith("val"), k))[:max_panels] or ["(no metrics)"]
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 2.2 * len(names)), squeeze=False)
    ckpts = sorted(set(checkpoint_steps))
    for ax, name in zip(axes[:, 0], names):
        pts = series.get(name, [])
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 60 else None, lw=1)
        for s in ckpts:
            ax.axvline(s, color="grey", alpha=0.25, lw=0.8)
        ax.set_ylabel(name, fontsize=8)
    axes[-1, 0].set_xlabel("step (grey lines: checkpoints)")
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


def overlaid(curves: Mapping[str, Sequence[tuple[int, float]]], path: Path, title: str, ylabel: str) -> Path:
    """Several runs' curves of one metric on one axis (a sweep)."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for name, pts in curves.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, lw=1)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if curves:
        ax.legend(fontsize=6)
    return _save(fig, path)
