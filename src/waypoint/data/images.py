"""Labelled image sets held in memory: scikit-learn's digits (embedded) and a user's folder of images.

Both give ``train_images``/``val_images`` as float tensors ``(N, C, S, S)`` in [0, 1] with integer labels;
the held-out split is a deterministic function of ``split_seed``. DINO trains on the images without their
labels; the labels only serve the kNN evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class DigitsConfig:
    """Hydra schema of ``data=digits``."""

    _target_: str = "waypoint.data.images.Digits"
    image_size: int = 32
    val_fraction: float = 0.2
    split_seed: int = 0
    batch_size: int = 64
    max_items: Optional[int] = None
    num_workers: int = 0  # DataLoader worker processes; read by the trainer, not passed to the data class


@dataclass
class ImageFolderConfig:
    """Hydra schema of ``data=imagefolder``."""

    _target_: str = "waypoint.data.images.ImageFolder"
    root: str = "???"
    image_size: int = 32
    grayscale: bool = False
    val_fraction: float = 0.2
    split_seed: int = 0
    batch_size: int = 64
    max_items: Optional[int] = None
    num_workers: int = 0


class LabelledImages:
    """Images and labels split into train and held-out parts."""

    kind = "images"

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: list[str],
        val_fraction: float,
        split_seed: int,
        batch_size: int,
        max_items: Optional[int],
    ) -> None:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be between 0 and 1, got {val_fraction}")
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(int(split_seed)))
        n_val = max(1, int(round(len(images) * val_fraction)))
        val, train = order[:n_val], order[n_val:]
        if max_items is not None:
            train, val = train[: int(max_items)], val[: max(1, int(max_items) // 4)]
        self.train_images, self.train_labels = images[train].contiguous(), labels[train].contiguous()
        self.val_images, self.val_labels = images[val].contiguous(), labels[val].contiguous()
        self.classes, self.batch_size, self.channels = classes, int(batch_size), int(images.shape[1])


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


class Digits(LabelledImages):
    """scikit-learn's 1797 handwritten digits (8x8, shipped with scikit-learn), upscaled to ``image_size``."""

    def __init__(
        self,
        image_size: int = 32,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        batch_size: int = 64,
        max_items: Optional[int] = None,
    ) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.tensor(digits.target, dtype=torch.int64)
        super().__init__(
            _resize(images, image_size), labels, [str(c) for c in range(10)], val_fraction, split_seed, batch_size, max_items
        )


class ImageFolder(LabelledImages):
    """``root/<class>/<image>``: every image resized to ``image_size``; class names from the folder names."""

    def __init__(
        self,
        root: str,
        image_size: int = 32,
        grayscale: bool = False,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        batch_size: int = 64,
        max_items: Optional[int] = None,
    ) -> None:
        from PIL import Image

        base = Path(root).expanduser()
        if not base.is_dir():
            raise ValueError(f"data.root '{root}' is not a folder; point it at a folder holding <class>/<image> files")
        classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        files = [
            (f, i) for i, c in enumerate(classes) for f in sorted((base / c).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not files:
            raise ValueError(f"data.root '{root}' holds no images in class folders (expected <class>/*.png or *.jpg)")
        mode = "L" if grayscale else "RGB"
        arrays = []
        for path, _ in files:
            try:
                with Image.open(path) as img:
                    arrays.append(
                        np.asarray(img.convert(mode).resize((image_size, image_size), Image.BILINEAR), dtype=np.float32)
                    )
            except OSError as exc:
                raise ValueError(f"cannot read image {path}: {exc}") from None
        stacked = torch.from_numpy(np.stack(arrays)) / 255.0
        images = stacked.unsqueeze(1) if grayscale else stacked.permute(0, 3, 1, 2)
        labels = torch.tensor([i for _, i in files], dtype=torch.int64)
        super().__init__(images.contiguous(), labels, classes, val_fraction, split_seed, batch_size, max_items)
