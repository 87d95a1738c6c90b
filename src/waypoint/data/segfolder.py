"""A user's segmentation tasks on disk: ``root/<task>/images/*`` paired by file name with ``root/<task>/masks/*``.

Grayscale images in [0, 1] and binarised masks, resized as upstream does. Held out: ``val_tasks`` (default every
fifth task, or the last of fewer than five); a single task holds out its last ``val_fraction`` of images. A bad
folder fails when the source is built, in one sentence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from waypoint.seeding import sample_generator

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class SegFolderError(ValueError):
    """A segmentation folder that cannot be used, with what to do about it."""


@dataclass
class SegFolderConfig:
    """Hydra schema of ``data=segfolder``."""

    _target_: str = "waypoint.data.segfolder.SegFolder"
    root: str = "???"
    val_tasks: Optional[list[str]] = None
    val_fraction: float = 0.2
    train_items: int = 2048
    val_items: int = 128
    task_seed: int = 0
    batch_size: int = 8
    max_items: Optional[int] = None
    num_workers: int = 0  # DataLoader worker processes; read by the trainer, not passed to the data class


@dataclass(frozen=True)
class FolderTask:
    """One task's paired files: ``pairs[i] = (image_path, mask_path)``, sorted by name."""

    name: str
    pairs: tuple[tuple[str, str], ...]


def _listing(folder: Path) -> dict[str, str]:
    files = [f for f in sorted(os.listdir(folder)) if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    by_stem: dict[str, str] = {}
    for name in files:
        stem = os.path.splitext(name)[0]
        if stem in by_stem:
            raise SegFolderError(f"'{folder}' holds two files named '{stem}' ({by_stem[stem]}, {name}); keep one per name.")
        by_stem[stem] = name
    return by_stem


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def scan_root(root: str) -> list[FolderTask]:
    """Find and pair every task under ``root``; raise SegFolderError on anything missing or mismatched."""
    if root in ("", "???") or root is None:
        raise SegFolderError("data.root is not set; pass data.root=<folder holding <task>/images/* and <task>/masks/*>.")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise SegFolderError(
            f"data.root '{base}' is not a folder; point it at a folder holding <task>/images/* and <task>/masks/*."
        )
    tasks = []
    for name in sorted(d for d in os.listdir(base) if (base / d).is_dir() and not d.startswith(".")):
        img_dir, mask_dir = base / name / "images", base / name / "masks"
        for sub in (img_dir, mask_dir):
            if not sub.is_dir():
                raise SegFolderError(
                    f"task '{name}' in '{base}' has no {sub.name}/ folder; "
                    "every task needs images/ and masks/ with files of the same names."
                )
        images, masks = _listing(img_dir), _listing(mask_dir)
        no_mask = sorted(set(images) - set(masks))
        no_image = sorted(set(masks) - set(images))
        if no_mask or no_image:
            parts = ([f"{len(no_mask)} image(s) have no mask ({_few([images[s] for s in no_mask])})"] if no_mask else []) + (
                [f"{len(no_image)} mask(s) have no image ({_few([masks[s] for s in no_image])})"] if no_image else []
            )
            raise SegFolderError(f"task '{name}' in '{base}': {' and '.join(parts)}; images and masks are paired by file name.")
        if len(images) < 2:
            raise SegFolderError(
                f"task '{name}' in '{base}' has {len(images)} image(s); a task needs at least 2 (a query and a support example)."
            )
        pairs = tuple((str(img_dir / images[s]), str(mask_dir / masks[s])) for s in sorted(images))
        tasks.append(FolderTask(name, pairs))
    if not tasks:
        raise SegFolderError(
            f"data.root '{base}' holds no task folders; expected <root>/<task>/images/*.png and <root>/<task>/masks/*.png."
        )
    return tasks


def _open(path: str) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except Exception as exc:  # PIL raises many types for a bad file
        raise SegFolderError(f"cannot read '{path}' as an image ({exc}); replace or remove the file.") from None


def load_pair(image_path: str, mask_path: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one (image, mask) pair as (1, size, size) float32 tensors in [0, 1] (mask in {0, 1})."""
    from PIL import Image

    image, mask = _open(image_path), _open(mask_path)
    if image.size != mask.size:
        raise SegFolderError(
            f"'{image_path}' is {image.size[0]}x{image.size[1]} but its mask '{mask_path}' is "
            f"{mask.size[0]}x{mask.size[1]}; a mask must have its image's size."
        )
    image = image.convert("L").resize((size, size), Image.BILINEAR)
    mask = mask.convert("L").resize((size, size), Image.NEAREST)
    img_t = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)
    mask_t = torch.from_numpy((np.asarray(mask) > 0).astype(np.float32)).unsqueeze(0)
    return img_t, mask_t


class _EpisodeReader:
    """Loads and memoises pairs at one size (per process: each data worker keeps its own copy)."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size
        self._memo: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def pair(self, paths: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
        if paths not in self._memo:
            self._memo[paths] = load_pair(paths[0], paths[1], self.image_size)
        return self._memo[paths]

    def episode(self, query: tuple[str, str], support: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
        image, mask = self.pair(query)
        sup = [self.pair(p) for p in support]
        return {
            "image": image,
            "mask": mask,
            "support_images": torch.stack([s[0] for s in sup]),
            "support_masks": torch.stack([s[1] for s in sup]),
        }


def _pick_support(gen: torch.Generator, pool: list[int], exclude: int, k: int) -> list[int]:
    """``k`` indices from ``pool`` without ``exclude``; without replacement when the pool is large enough."""
    candidates = [i for i in pool if i != exclude] or list(pool)
    if len(candidates) >= k:
        order = torch.randperm(len(candidates), generator=gen)[:k].tolist()
    else:
        order = torch.randint(0, len(candidates), (k,), generator=gen).tolist()
    return [candidates[i] for i in order]


class SegFolderTrain(Dataset):
    """Training episodes from the training tasks; a function of (seed, epoch, index)."""

    def __init__(self, source: SegFolder, seed: int, image_size: int, support_size: int) -> None:
        self.source, self.seed, self.support_size = source, seed, support_size
        self.reader = _EpisodeReader(image_size)

    def __len__(self) -> int:
        return self.source.limit(self.source.train_items)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        gen = sample_generator(self.seed, "segfolder-train", int(epoch), int(index))
        t = int(torch.randint(0, len(self.source.train_pools), (), generator=gen))
        task, pool = self.source.train_pools[t]
        query = pool[int(torch.randint(0, len(pool), (), generator=gen))]
        support = _pick_support(gen, pool, query, self.support_size)
        episode = self.reader.episode(task.pairs[query], [task.pairs[i] for i in support])
        episode["task"] = torch.tensor(t)
        return episode


class SegFolderVal(Dataset):
    """Held-out episodes: query ``index`` of the held-out pool, support drawn with a fixed seed."""

    def __init__(self, source: SegFolder, image_size: int, support_size: int) -> None:
        self.source, self.support_size = source, support_size
        self.reader = _EpisodeReader(image_size)
        self.queries = [(v, q) for v, (_, queries, _) in enumerate(source.val_pools) for q in queries]

    def __len__(self) -> int:
        return self.source.limit(min(self.source.val_items, len(self.queries)))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        v, query = self.queries[int(index) * len(self.queries) // len(self)]
        task, _, support_pool = self.source.val_pools[v]
        gen = sample_generator(self.source.task_seed, "segfolder-val", int(index))
        support = _pick_support(gen, support_pool, query, self.support_size)
        episode = self.reader.episode(task.pairs[query], [task.pairs[i] for i in support])
        episode["task"] = torch.tensor(v)
        return episode


class SegFolder:
    """Data source of a user's segmentation tasks on disk (``data=segfolder data.root=...``)."""

    kind = "segmentation"

    def __init__(
        self,
        root: str = "???",
        val_tasks: Optional[list[str]] = None,
        val_fraction: float = 0.2,
        train_items: int = 2048,
        val_items: int = 128,
        task_seed: int = 0,
        batch_size: int = 8,
        max_items: Optional[int] = None,
    ) -> None:
        self.tasks = scan_root(str(root))
        self.train_items, self.val_items, self.task_seed = int(train_items), int(val_items), int(task_seed)
        self.batch_size, self.max_items = int(batch_size), max_items
        names = [t.name for t in self.tasks]
        if val_tasks is None:
            held = names[4::5] if len(names) >= 5 else names[-1:] if len(names) >= 2 else []
        else:
            held = list(val_tasks)
            unknown = [n for n in held if n not in names]
            if unknown:
                raise SegFolderError(f"data.val_tasks names {unknown} not found under '{root}'; available tasks: {names}.")
            if len(held) == len(names):
                raise SegFolderError("data.val_tasks holds out every task; leave at least one task for training.")
        self.train_pools: list[tuple[FolderTask, list[int]]] = []
        self.val_pools: list[tuple[FolderTask, list[int], list[int]]] = []
        for task in self.tasks:
            every = list(range(len(task.pairs)))
            if task.name in held:
                self.val_pools.append((task, every, every))
            elif not held:  # a single task: split its images into training and held-out queries
                n_val = min(len(every) - 1, max(1, round(len(every) * float(val_fraction))))
                self.train_pools.append((task, every[:-n_val]))
                self.val_pools.append((task, every[-n_val:], every[:-n_val]))
            else:
                self.train_pools.append((task, every))

    def limit(self, n: int) -> int:
        """Apply ``max_items`` to a dataset length."""
        return n if self.max_items is None else max(1, min(n, int(self.max_items)))

    def train_dataset(self, seed: int, image_size: int, support_size: int) -> Dataset:
        """Training episodes indexed by ``(epoch, index)``."""
        return SegFolderTrain(self, seed, image_size, support_size)

    def val_dataset(self, image_size: int, support_size: int) -> Dataset:
        """Held-out episodes indexed by a plain int."""
        return SegFolderVal(self, image_size, support_size)
