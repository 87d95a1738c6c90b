"""What the model families share: schedules as pure functions of the step, batch collation, seeded
generators and size presets. No family imports another family's module; they all import this one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch

from waypoint.seeding import sample_generator

__all__ = ["cosine", "warmup_cosine", "stack_dicts", "sample_generator", "preset_sizes", "check_options"]


def cosine(start: float, end: float, step: int, total: int) -> float:
    """Cosine interpolation from ``start`` (step 0) to ``end`` (step ``total``)."""
    progress = min(1.0, max(0.0, step / max(1, total)))
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(step: int, total_steps: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate factor: linear warmup over ``warmup`` steps, then cosine down to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def stack_dicts(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Collate a list of dicts of tensors into a dict of stacked tensors, key by key."""
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


def check_options(schema: type, config: Mapping[str, Any], model: str) -> None:
    """Refuse options ``model``'s schema does not declare, naming the ones it does."""
    known = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown} for model={model}; known: {sorted(known - {'_target_'})}")


def preset_sizes(presets: Mapping[str, Mapping[str, Any]], scale: str, explicit: Mapping[str, Any]) -> dict[str, Any]:
    """The sizes of ``presets[scale]``, each replaced by the value set explicitly in ``explicit`` (None = unset)."""
    if scale not in presets:
        raise ValueError(f"model.scale must be one of {sorted(presets)}, got '{scale}'")
    return {k: explicit.get(k) if explicit.get(k) is not None else v for k, v in presets[scale].items()}
