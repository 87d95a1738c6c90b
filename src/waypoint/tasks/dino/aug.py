"""DINO multi-crop augmentation on tensors, with all randomness drawn from a per-sample generator.

Two global crops (large scale range, full resolution) and several local crops (small scale range, low
resolution), each with brightness/contrast jitter; blur and solarization as in the original recipe
(global 1: blur always; global 2: blur p=0.1, solarize ``solarize_p``; locals: blur p=0.5) and a
horizontal flip with probability ``flip_p`` (upstream 0.5 for both; 0 for digits, where a mirrored
digit is another shape and an inverted stroke is not a stroke).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from waypoint.tasks.common import sample_generator


@dataclass(frozen=True)
class CropSpec:
    """Sizes and scale ranges of the crops."""

    global_size: int = 32
    local_size: int = 16
    n_local: int = 4
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    flip_p: float = 0.0  # horizontal flip probability (0 for digits: a mirrored 2 is not a 2)
    solarize_p: float = 0.0  # solarization probability of the second global crop (upstream 0.2)


def _u(gen: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def resized_crop(img: torch.Tensor, gen: torch.Generator, size: int, scale: tuple[float, float]) -> torch.Tensor:
    """A random area/aspect crop of ``img`` (C, H, W) resized to ``size``x``size`` (as RandomResizedCrop)."""
    _, h, w = img.shape
    area = h * w
    for _ in range(10):
        target = area * _u(gen, *scale)
        ratio = math.exp(_u(gen, math.log(3 / 4), math.log(4 / 3)))
        cw, ch = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(_u(gen) * (h - ch + 1)), int(_u(gen) * (w - cw + 1))
            break
    else:
        ch, cw, top, left = h, w, 0, 0
    crop = img[:, top : top + ch, left : left + cw].unsqueeze(0)
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """A 5x5 Gaussian blur (reflect padding)."""
    x = torch.arange(5, dtype=img.dtype) - 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    c = img.shape[0]
    out = F.pad(img.unsqueeze(0), (2, 2, 2, 2), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, 5).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(out, k.view(1, 1, 5, 1).repeat(c, 1, 1, 1), groups=c)[0]


def photometric(img: torch.Tensor, gen: torch.Generator, p_blur: float, p_solarize: float, p_flip: float = 0.5) -> torch.Tensor:
    """Flip, brightness/contrast jitter (p=0.8), blur and solarization."""
    if _u(gen) < p_flip:
        img = img.flip(-1)
    if _u(gen) < 0.8:
        mean = img.mean()
        img = ((img - mean) * _u(gen, 0.6, 1.4) + mean) * _u(gen, 0.6, 1.4)
    if _u(gen) < p_blur:
        img = blur(img, _u(gen, 0.1, 1.0))
    if _u(gen) < p_solarize:
        img = torch.where(img >= 0.5, 1.0 - img, img)
    return img.clamp(0.0, 1.0)


def multi_crop(img: torch.Tensor, gen: torch.Generator, spec: CropSpec) -> dict[str, torch.Tensor]:
    """``{"global": (2, C, G, G), "local": (n_local, C, L, L)}``, normalised by ``normalise``."""
    g1 = photometric(resized_crop(img, gen, spec.global_size, spec.global_scale), gen, 1.0, 0.0, spec.flip_p)
    g2 = photometric(resized_crop(img, gen, spec.global_size, spec.global_scale), gen, 0.1, spec.solarize_p, spec.flip_p)
    locs = [
        photometric(resized_crop(img, gen, spec.local_size, spec.local_scale), gen, 0.5, 0.0, spec.flip_p)
        for _ in range(spec.n_local)
    ]
    out = {"global": normalise(torch.stack([g1, g2]))}
    c = img.shape[0]
    out["local"] = normalise(torch.stack(locs)) if locs else torch.zeros(0, c, spec.local_size, spec.local_size)
    return out


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Scale [0, 1] pixels to unit-ish range with black at 0 (digits are mostly black background)."""
    return images / 0.3


class MultiCropImages(Dataset):
    """Training items: multi-crops of image ``index``, random from ``(seed, epoch, index)`` only."""

    def __init__(self, images: torch.Tensor, seed: int, spec: CropSpec) -> None:
        self.images, self.seed, self.spec = images, int(seed), spec

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        return multi_crop(self.images[index], sample_generator(self.seed, "dino", int(epoch), int(index)), self.spec)


class EvalImages(Dataset):
    """Validation items: ``{"image", "label"}`` without augmentation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = normalise(images), labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: Any) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "label": self.labels[index]}
