"""Metric series from ``metrics.jsonl`` rows: per-metric points, the order a researcher reads them in, baselines.

The order: the monitored metric, the training loss, the learning rate, the family's health signals, then the
rest by name. Baselines (``val/knn_top1_raw_pixels``, ...) are drawn on the monitored metric's panel.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from .family import Family

#: row keys that are coordinates, not metrics
COORDS = ("step", "epoch", "time", "wall_time")
#: metric-name suffixes that mark a baseline of the monitored metric (e.g. val/knn_top1_raw_pixels)
BASELINE_MARKERS = ("_raw_pixels", "_untrained", "_baseline")
#: metric names a task gives its baselines (e.g. val/baseline_threshold_dice beside val/dice)
BASELINE_PREFIX = "val/baseline_"
#: a task that detects collapse logs this key (1.0 while collapsed); DINO does
COLLAPSED = "train/collapsed"

Points = list[tuple[int, float]]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def series(rows: Sequence[Mapping[str, Any]]) -> dict[str, Points]:
    """Every numeric metric as ``(step, value)`` points in logged order."""
    out: dict[str, Points] = defaultdict(list)
    for row in rows:
        step = row.get("step")
        if not isinstance(step, int):
            continue
        for key, value in row.items():
            if key not in COORDS and _number(value):
                out[key].append((step, float(value)))
    return dict(out)


def is_baseline(name: str, monitor: str | None) -> bool:
    """Whether ``name`` is a baseline logged for ``monitor``."""
    if name.startswith(BASELINE_PREFIX):
        return True
    return bool(monitor) and name.startswith(f"{monitor}_") and name.endswith(BASELINE_MARKERS)


def baseline_label(name: str, monitor: str | None) -> str:
    """``raw_pixels`` for ``val/knn_top1_raw_pixels``, ``threshold_dice`` for ``val/baseline_threshold_dice``."""
    if name.startswith(BASELINE_PREFIX):
        return name[len(BASELINE_PREFIX) :]
    return name[len(monitor or "") + 1 :]


def baselines(all_series: Mapping[str, Points], monitor: str | None) -> dict[str, float]:
    """Each baseline's first logged value, by its short label (they are computed once, at the first validation)."""
    return {baseline_label(k, monitor): pts[0][1] for k, pts in sorted(all_series.items()) if is_baseline(k, monitor) and pts}


def ranked(names: Sequence[str], family: Family, monitor: str | None) -> list[str]:
    """Metric names in reading order; baselines and the collapse flag are left out (drawn on other panels)."""
    lead = [monitor, "train/loss", "train/lr", *family.signals]
    present = [n for n in names if not is_baseline(n, monitor) and n != COLLAPSED]
    first = [n for n in dict.fromkeys(lead) if n in present]
    rest = sorted((n for n in present if n not in first), key=lambda n: (not n.startswith("val/"), n))
    return first + rest


def best_and_final(points: Points, mode: str) -> tuple[float | None, float | None]:
    """Best value over validations after step 0 (what a checkpoint can hold) and the last value."""
    if not points:
        return None, None
    later = [v for s, v in points if s > 0] or [v for _, v in points]
    return (max(later) if mode == "max" else min(later)), points[-1][1]


def summary_rows(all_series: Mapping[str, Points], order: Sequence[str]) -> list[list[Any]]:
    """One row per metric (every one, baselines included): first, last, min, max and how many points."""
    names = list(order) + sorted(n for n in all_series if n not in order)
    rows = []
    for name in names:
        values = [v for _, v in all_series[name]]
        rows.append([name, values[0], values[-1], min(values), max(values), len(values)])
    return rows


def collapsed_spans(rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """Step ranges during which the collapse flag was set."""
    spans: list[tuple[int, int]] = []
    start = prev = None
    for row in rows:
        if COLLAPSED not in row or not isinstance(row.get("step"), int):
            continue
        if row[COLLAPSED] == 1.0:
            start = row["step"] if start is None else start
            prev = row["step"]
        elif start is not None:
            spans.append((start, prev))
            start = None
    if start is not None:
        spans.append((start, prev))
    return spans


def phases(points: Points) -> list[tuple[int, int]]:
    """``(value, first step)`` each time a piecewise-constant series (e.g. ``train/stacks``) takes a new value."""
    out: list[tuple[int, int]] = []
    for step, value in points:
        if not out or int(value) != out[-1][0]:
            out.append((int(value), step))
    return out


def last_per_phase(rows: Sequence[Mapping[str, Any]], value: str, phase: str) -> dict[int, float]:
    """The last ``value`` logged in a row whose ``phase`` (e.g. ``val/stacks``) had each value: val/bpb per stack count."""
    out: dict[int, float] = {}
    for row in rows:
        if _number(row.get(value)) and _number(row.get(phase)):
            out[int(row[phase])] = float(row[value])
    return out
