"""Training-health notes for a run report, read from metrics.jsonl: collapse, the final value against each baseline,
and each family's own signals (DINO teacher entropy, UniverSeg Dice against its baselines, Stack-Wise bpb per stack)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import series as sr
from .fmt import num

if TYPE_CHECKING:
    from .runinfo import RunInfo

COLLAPSED = sr.COLLAPSED


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


def verdicts(final: float, base: Mapping[str, float], mode: str) -> str:
    """``beats raw_pixels (0.87) by 0.08, trails untrained (0.96) by 0.01`` for the final value against each baseline."""
    out = []
    for label, value in base.items():
        gain = final - value if mode == "max" else value - final
        out.append(f"{'beats' if gain > 0 else 'trails'} {label} ({num(value)}) by {num(abs(gain), 2)}")
    return ", ".join(out)


def _dino(run: RunInfo, all_series: Mapping[str, sr.Points]) -> list[str]:
    notes = [collapse_note(run.rows) or ""]
    flags = all_series.get(COLLAPSED, [])
    if flags and not notes[0]:
        notes[0] = f"No collapse: train/collapsed stayed 0 over {len(flags)} logged steps."
    entropy = all_series.get("train/teacher_entropy", [])
    if entropy:
        low = min(v for _, v in entropy)
        notes.append(f"Teacher entropy {num(entropy[0][1])} → {num(entropy[-1][1])} (lowest {num(low)}).")
    return [n for n in notes if n]


def _stackwise(run: RunInfo, all_series: Mapping[str, sr.Points]) -> list[str]:
    per_stack = sr.last_per_phase(run.rows, "val/bpb", "val/stacks")
    if not per_stack:
        return []
    parts = ", ".join(f"{k} stack{'s' if k > 1 else ''} {num(v)}" for k, v in sorted(per_stack.items()))
    base = sr.baselines(all_series, run.monitor)
    tail = f" (baselines: {', '.join(f'{k} {num(v)}' for k, v in base.items())})" if base else ""
    return [f"val/bpb at the end of each stack's phase: {parts}{tail}."]


def family_notes(run: RunInfo, all_series: Mapping[str, sr.Points]) -> list[str]:
    """The family's health in sentences, and the final monitored value against each baseline."""
    notes: list[str] = []
    points = all_series.get(run.monitor or "", [])
    base = sr.baselines(all_series, run.monitor)
    if points and base:
        notes.append(f"Final {run.monitor} {num(points[-1][1])} {verdicts(points[-1][1], base, run.mode)}.")
    if run.family.key == "dino":
        notes += _dino(run, all_series)
    elif run.family.key == "stackwise":
        notes += _stackwise(run, all_series)
    elif run.family.key == "universeg" and "train/dice" in all_series:
        notes.append(f"Training Dice (hard, on training episodes) ended at {num(all_series['train/dice'][-1][1])}.")
    return notes
