"""What a report knows about each model family: its name, monitored metric and health signals, by metric name only.

The analysis never imports a family's code: it reads what the run logged. A family is recognised from the
``_target_`` of the run's ``model`` config (``waypoint.tasks.<family>.<Task>``) or from the task class name its
checkpoints record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    """A model family as reports show it."""

    key: str  # dino | universeg | stackwise, or a custom task's name
    label: str  # how titles name it
    monitor: str | None  # the family's own monitored metric
    mode: str  # max | min
    signals: tuple[str, ...] = ()  # health signals, most telling first (drawn after metric, loss and lr)
    task: str = ""  # the task class name checkpoints record


FAMILIES: dict[str, Family] = {
    "dino": Family(
        "dino",
        "DINO",
        "val/knn_top1",
        "max",
        ("train/teacher_entropy", "train/kl_teacher_student", "train/grad_norm", "train/teacher_temp"),
        "DinoTask",
    ),
    "universeg": Family(
        "universeg", "UniverSeg", "val/dice", "max", ("train/dice", "val/loss", "train/grad_norm"), "UniverSegTask"
    ),
    "stackwise": Family(
        "stackwise", "Stack-Wise", "val/bpb", "min", ("train/bpb", "train/stacks", "train/grad_norm"), "StackWiseTask"
    ),
}
#: a family the analysis does not know: metric, loss and lr still lead
UNKNOWN = Family("unknown", "run", None, "max")


def family_of(config: Mapping[str, Any] | None, task: str | None = None) -> Family:
    """The family of a run from its config's ``model._target_`` (or the task class its checkpoints name)."""
    target = str(((config or {}).get("model") or {}).get("_target_") or "")
    parts = target.split(".")
    if "tasks" in parts[:-1]:
        key = parts[parts.index("tasks") + 1]
        if key in FAMILIES:
            return FAMILIES[key]
        return Family(key, key, None, "max", task=parts[-1])
    for family in FAMILIES.values():
        if task and task == family.task:
            return family
    if target:
        return Family(parts[-1], parts[-1], None, "max", task=parts[-1])
    return UNKNOWN
