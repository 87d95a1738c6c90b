"""Synthetic in-context segmentation tasks: the embedded default data for UniverSeg.

A *task* is a labelling rule over a family of images (the triangles; what is brighter than the background; ...)
drawn from ``(task_seed, task_id)``; held-out tasks use disjoint ids, so validation measures rules never trained
on. An item is an episode (a query and ``support_size`` pairs of one task), a function of ``(seed, epoch, index)``
for training and of ``(task_seed, index)`` for validation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Optional

import torch
from torch.utils.data import Dataset

from waypoint.seeding import sample_generator

FAMILIES = ("shape", "polarity", "size", "texture")
SHAPE_KINDS = ("ellipse", "rectangle", "triangle")
_VAL_TASK_OFFSET = 1_000_000  # validation task ids start here: never used for training


@dataclass
class SegShapesConfig:
    """Hydra schema of ``data=segshapes``."""

    _target_: str = "waypoint.data.segshapes.SegShapes"
    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    train_tasks: int = 1024
    val_tasks: int = 32
    train_items: int = 2048
    val_items: int = 128
    task_seed: int = 0
    batch_size: int = 8
    max_items: Optional[int] = None
    num_workers: int = 0  # DataLoader worker processes; read by the trainer, not passed to the data class


def _u(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _ri(gen: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (), generator=gen))


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    return xx, yy


def shape_mask(kind: str, cx: float, cy: float, a: float, b: float, theta: float, size: int) -> torch.Tensor:
    """Boolean (size, size) mask of a rotated ellipse, rectangle or triangle in unit coordinates."""
    xx, yy = _grid(size)
    dx, dy = xx - cx, yy - cy
    c, s = math.cos(theta), math.sin(theta)
    u, v = dx * c + dy * s, -dx * s + dy * c
    if kind == "ellipse":
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if kind == "rectangle":
        return (u.abs() <= a) & (v.abs() <= b)
    if kind == "triangle":
        return (v >= -b) & (v <= b) & (u.abs() <= a * (v + b) / (2 * b))
    raise ValueError(f"unknown shape kind '{kind}'; expected one of {SHAPE_KINDS}")


def task_spec(task_seed: int, task_id: int, families: tuple[str, ...]) -> dict[str, Any]:
    """The labelling rule and style of one task, a function of ``(task_seed, task_id)``."""
    gen = sample_generator(task_seed, "task", task_id)
    family = families[task_id % len(families)]
    spec: dict[str, Any] = {
        "family": family,
        "noise": _u(gen, 0.01, 0.08),
        "invert": bool(torch.rand((), generator=gen) < 0.5),
        "bg": _u(gen, 0.05, 0.45),
    }
    if family == "shape":
        spec["target"] = SHAPE_KINDS[_ri(gen, 0, len(SHAPE_KINDS) - 1)]
    elif family == "polarity":
        spec["target"] = "bright" if torch.rand((), generator=gen) < 0.5 else "dark"
        spec["bg"] = _u(gen, 0.35, 0.65)
    elif family == "size":
        spec["target"] = "large" if torch.rand((), generator=gen) < 0.5 else "small"
    elif family == "texture":
        spec["angle"] = _u(gen, 0.0, math.pi)
        spec["other_angle"] = spec["angle"] + math.pi / 2 + _u(gen, -math.pi / 6, math.pi / 6)
        spec["freq"] = _u(gen, 5.0, 10.0)
        spec["amp"] = _u(gen, 0.25, 0.45)
    else:
        raise ValueError(f"unknown segshapes family '{family}'; choose from {list(FAMILIES)}")
    return spec


def _composite(objects: list[tuple[torch.Tensor, float, bool]], size: int, bg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Paint objects in order (later ones occlude earlier ones); return image and target mask."""
    image = torch.full((size, size), bg)
    mask = torch.zeros(size, size)
    for region, intensity, is_target in objects:
        image = torch.where(region, torch.tensor(intensity), image)
        mask = torch.where(region, torch.tensor(1.0 if is_target else 0.0), mask)
    return image, mask


def _random_object(gen: torch.Generator, size: int, kind: str, a_lo: float, a_hi: float) -> torch.Tensor:
    a = _u(gen, a_lo, a_hi)
    b = a * _u(gen, 0.6, 1.0)
    return shape_mask(kind, _u(gen, 0.15, 0.85), _u(gen, 0.15, 0.85), a, b, _u(gen, 0.0, math.pi), size)


def _render_shape(spec: dict, gen: torch.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    others = [k for k in SHAPE_KINDS if k != spec["target"]]
    labels = [True] * _ri(gen, 1, 2) + [False] * _ri(gen, 1, 3)
    order = torch.randperm(len(labels), generator=gen).tolist()
    objects = []
    for i in order:
        kind = spec["target"] if labels[i] else others[_ri(gen, 0, len(others) - 1)]
        fg = min(1.0, spec["bg"] + _u(gen, 0.3, 0.55))
        objects.append((_random_object(gen, size, kind, 0.08, 0.16), fg, labels[i]))
    return _composite(objects, size, spec["bg"])


def _render_polarity(spec: dict, gen: torch.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = [True] * _ri(gen, 1, 3) + [False] * _ri(gen, 1, 3)
    order = torch.randperm(len(labels), generator=gen).tolist()
    objects = []
    for i in order:
        bright = labels[i] == (spec["target"] == "bright")
        delta = _u(gen, 0.15, 0.35)
        kind = SHAPE_KINDS[_ri(gen, 0, len(SHAPE_KINDS) - 1)]
        objects.append((_random_object(gen, size, kind, 0.06, 0.14), spec["bg"] + (delta if bright else -delta), labels[i]))
    return _composite(objects, size, spec["bg"])


def _render_size(spec: dict, gen: torch.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    kind = SHAPE_KINDS[_ri(gen, 0, len(SHAPE_KINDS) - 1)]
    labels = [True] * _ri(gen, 1, 2) + [False] * _ri(gen, 1, 3)
    order = torch.randperm(len(labels), generator=gen).tolist()
    objects = []
    for i in order:
        large = labels[i] == (spec["target"] == "large")
        lo, hi = (0.13, 0.2) if large else (0.035, 0.065)
        fg = min(1.0, spec["bg"] + _u(gen, 0.3, 0.55))
        objects.append((_random_object(gen, size, kind, lo, hi), fg, labels[i]))
    return _composite(objects, size, spec["bg"])


def _render_texture(spec: dict, gen: torch.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    xx, yy = _grid(size)
    region = torch.zeros(size, size, dtype=torch.bool)
    for _ in range(_ri(gen, 1, 3)):
        region |= _random_object(gen, size, "ellipse", 0.14, 0.26)
    phase = _u(gen, 0.0, 2 * math.pi)

    def stripes(angle: float) -> torch.Tensor:
        along = xx * math.cos(angle) + yy * math.sin(angle)
        return 0.5 + spec["amp"] * torch.sin(2 * math.pi * spec["freq"] * along + phase)

    image = torch.where(region, stripes(spec["angle"]), stripes(spec["other_angle"]))
    return image, region.float()


_RENDERERS: dict[str, Callable[[dict, torch.Generator, int], tuple[torch.Tensor, torch.Tensor]]] = {
    "shape": _render_shape,
    "polarity": _render_polarity,
    "size": _render_size,
    "texture": _render_texture,
}


def render_example(spec: dict, gen: torch.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One (image, mask) pair of a task, each (1, size, size) float32 in [0, 1]."""
    image, mask = _RENDERERS[spec["family"]](spec, gen, size)
    image = image + spec["noise"] * torch.randn(size, size, generator=gen)
    image = image.clamp(0.0, 1.0)
    if spec["invert"]:
        image = 1.0 - image
    return image.unsqueeze(0), mask.unsqueeze(0)


def render_episode(spec: dict, gen: torch.Generator, size: int, support_size: int) -> dict[str, torch.Tensor]:
    """A query and ``support_size`` support pairs of one task, as a dict of tensors."""
    pairs = [render_example(spec, gen, size) for _ in range(support_size + 1)]
    images = torch.stack([p[0] for p in pairs])
    masks = torch.stack([p[1] for p in pairs])
    return {"image": images[0], "mask": masks[0], "support_images": images[1:], "support_masks": masks[1:]}


class SegShapesTrain(Dataset):
    """Training episodes; ``__getitem__((epoch, index))`` is a pure function of (seed, epoch, index)."""

    def __init__(self, source: SegShapes, seed: int, image_size: int, support_size: int) -> None:
        self.source, self.seed, self.image_size, self.support_size = source, seed, image_size, support_size

    def __len__(self) -> int:
        return self.source.limit(self.source.train_items)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        gen = sample_generator(self.seed, "segshapes-train", int(epoch), int(index))
        task_id = _ri(gen, 0, self.source.train_tasks - 1)
        episode = render_episode(self.source.spec(task_id), gen, self.image_size, self.support_size)
        episode["task"] = torch.tensor(task_id)
        return episode


class SegShapesVal(Dataset):
    """Held-out episodes: task ``index % val_tasks``, images a function of (task_seed, index)."""

    def __init__(self, source: SegShapes, image_size: int, support_size: int) -> None:
        self.source, self.image_size, self.support_size = source, image_size, support_size

    def __len__(self) -> int:
        return self.source.limit(self.source.val_items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        task_id = _VAL_TASK_OFFSET + int(index) % self.source.val_tasks
        gen = sample_generator(self.source.task_seed, "segshapes-val", int(index))
        episode = render_episode(self.source.spec(task_id), gen, self.image_size, self.support_size)
        episode["task"] = torch.tensor(task_id)
        return episode


class SegShapes:
    """Data source of synthetic segmentation tasks (``data=segshapes``)."""

    kind = "segmentation"

    def __init__(
        self,
        families: Sequence[str] = FAMILIES,
        train_tasks: int = 1024,
        val_tasks: int = 32,
        train_items: int = 2048,
        val_items: int = 128,
        task_seed: int = 0,
        batch_size: int = 8,
        max_items: Optional[int] = None,
    ) -> None:
        self.families = tuple(families)
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            raise ValueError(f"data.families {list(families)} must be a non-empty subset of {list(FAMILIES)}")
        if min(train_tasks, val_tasks, train_items, val_items, batch_size) < 1:
            raise ValueError("data.train_tasks, val_tasks, train_items, val_items and batch_size must all be >= 1")
        self.train_tasks, self.val_tasks = int(train_tasks), int(val_tasks)
        self.train_items, self.val_items = int(train_items), int(val_items)
        self.task_seed, self.batch_size, self.max_items = int(task_seed), int(batch_size), max_items

    def limit(self, n: int) -> int:
        """Apply ``max_items`` to a dataset length."""
        return n if self.max_items is None else max(1, min(n, int(self.max_items)))

    def spec(self, task_id: int) -> dict[str, Any]:
        """The parameters of task ``task_id``."""
        return task_spec(self.task_seed, task_id, self.families)

    def train_dataset(self, seed: int, image_size: int, support_size: int) -> Dataset:
        """Training episodes indexed by ``(epoch, index)``."""
        return SegShapesTrain(self, seed, image_size, support_size)

    def val_dataset(self, image_size: int, support_size: int) -> Dataset:
        """Held-out episodes indexed by a plain int."""
        return SegShapesVal(self, image_size, support_size)
