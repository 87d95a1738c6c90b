"""Training-health notes for a run report, read from metrics.jsonl: collapse flags and baselines beside the metric."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: a task that detects collapse logs this key (1.0 while collapsed); DINO does
COLLAPSED = "train/collapsed"
#: metric-name suffixes that mark a baseline of the monitored metric (e.g. val/knn_top1_raw_pixels)
BASELINE_MARKERS = ("_raw_pixels", "_untrained", "_baseline")
#: metric names a task gives its baselines (e.g. val/baseline_threshold_dice beside val/dice)
BASELINE_PREFIX = "val/baseline_"


def collapse_note(rows: Sequence[dict[str, Any]]) -> str | None:
    """One sentence when any logged step was collapsed: the first and last such step, and whether it recovered."""
    steps = [r.get("step") for r in rows if r.get(COLLAPSED) == 1.0]
    if not steps:
        return None
    last_logged = next((r for r in reversed(rows) if COLLAPSED in r), {})
    state = "and was still collapsed at the end" if last_logged.get(COLLAPSED) == 1.0 else "then recovered"
    return (
        f"COLLAPSE: the teacher's output was collapsed (entropy pinned at uniform or one prototype) at logged steps "
        f"{steps[0]}..{steps[-1]} {state}; see the warning in train.log."
    )


def baseline_lines(rows: Sequence[dict[str, Any]], monitor: str | None) -> list[str]:
    """The monitored metric's final value beside every baseline logged for it (first logged value of each)."""
    if not monitor:
        return []
    final = next((r[monitor] for r in reversed(rows) if monitor in r), None)
    baselines: dict[str, Any] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith(monitor + "_") and key.endswith(BASELINE_MARKERS):
                baselines.setdefault(key[len(monitor) + 1 :], value)
            elif key.startswith(BASELINE_PREFIX):  # a task's baseline of its own metric (UniverSeg, Stack-Wise)
                baselines.setdefault(key[len(BASELINE_PREFIX) :], value)
    if final is None or not baselines:
        return []
    parts = ", ".join(f"{k} {v:.4g}" for k, v in baselines.items())
    return [f"Final {monitor} {final:.4g}; baselines: {parts}."]
