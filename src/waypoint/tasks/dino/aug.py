"""DINO multi-crop augmentation: random draws per sample, applied to a whole batch at once.

Draws come from a generator seeded by ``(seed, epoch, index)`` and collation applies them with batched tensor
operations, so an item's crops never depend on its batch or the number of workers. Per crop, as upstream: random
resized crop, rotation (``rotate_deg``; 0 upstream, handwriting varies by small rotations), flip (``flip_p``),
colour jitter (p=0.8), blur (global 1: always; global 2: 0.1; locals: 0.5) and solarization of global 2
(``solarize_p``; flip and solarization are 0 for digits: a mirrored digit is another shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from waypoint.tasks.common import sample_generator, stack_dicts

#: rejection-sampling tries for a crop box that fits (as torchvision's RandomResizedCrop), then the whole image
CROP_TRIES = 10
#: the random numbers one crop consumes: (area, log-ratio) per try, then top, left, angle, flip, jitter (apply,
#: contrast, brightness), blur (apply, sigma), solarize
DRAWS_PER_CROP = 2 * CROP_TRIES + 10
#: where each draw of a crop sits in its row of DRAWS_PER_CROP
TOP, LEFT, ANGLE, FLIP, JITTER, CONTRAST, BRIGHT, BLUR, SIGMA, SOLAR = range(2 * CROP_TRIES, DRAWS_PER_CROP)


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
    rotate_deg: float = 0.0  # each crop turns by an angle uniform in [-rotate_deg, rotate_deg] (0: no rotation)


def crop_boxes(draws: torch.Tensor, scale: tuple[float, float], height: int, width: int) -> torch.Tensor:
    """``(N, 4)`` boxes ``(top, left, h, w)`` in pixels (fractional) from ``(N, DRAWS_PER_CROP)`` uniform draws.

    As RandomResizedCrop: area fraction uniform in ``scale``, log aspect ratio uniform in [ln 3/4, ln 4/3], the
    first of ``CROP_TRIES`` candidates that fits the image, else the whole image; position uniform where it fits.
    """
    tries = draws[:, : 2 * CROP_TRIES].view(-1, CROP_TRIES, 2).double()
    area = height * width * (scale[0] + (scale[1] - scale[0]) * tries[..., 0])
    ratio = torch.exp(math.log(3 / 4) + math.log(16 / 9) * tries[..., 1])
    w, h = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
    fits = (w <= width) & (h <= height)
    first = torch.where(fits.any(1), fits.int().argmax(1), -1)
    pick = first.clamp(min=0).unsqueeze(1)
    w = torch.where(first >= 0, w.gather(1, pick)[:, 0], float(width))
    h = torch.where(first >= 0, h.gather(1, pick)[:, 0], float(height))
    top = draws[:, TOP].double() * (height - h)
    left = draws[:, LEFT].double() * (width - w)
    return torch.stack([top, left, h, w], dim=1)


def resized_crops(
    images: torch.Tensor, draws: torch.Tensor, size: int, scale: tuple[float, float], rotate_deg: float, flip_p: float
) -> torch.Tensor:
    """Crop, rotate and flip each image of ``images`` (N, C, H, W) by its draws, resized to ``size`` x ``size``
    (bilinear at twice the resolution, then 2x2 averaging, so a downscaled crop is antialiased)."""
    n, _, height, width = images.shape
    top, left, h, w = crop_boxes(draws, scale, height, width).unbind(1)
    cx, cy = (left + w / 2) / width * 2 - 1, (top + h / 2) / height * 2 - 1
    sx, sy = w / width, h / height
    sx = torch.where(draws[:, FLIP] < flip_p, -sx, sx)
    angle = torch.deg2rad((2 * draws[:, ANGLE].double() - 1) * rotate_deg)
    cos, sin = torch.cos(angle), torch.sin(angle)
    aspect = height / width  # rotate in pixel space, not in the normalised [-1, 1] square
    theta = torch.stack(
        [torch.stack([cos * sx, -sin * sy * aspect, cx], 1), torch.stack([sin * sx / aspect, cos * sy, cy], 1)], 1
    ).to(images.dtype)
    grid = F.affine_grid(theta, [n, images.shape[1], 2 * size, 2 * size], align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.avg_pool2d(out, 2)


def blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A 5x5 Gaussian blur of each image (N, C, H, W) with its own ``sigma`` (N,) (reflect padding)."""
    n, c, height, width = images.shape
    x = torch.arange(5, dtype=images.dtype) - 2
    k = torch.exp(-(x**2) / (2 * sigma.to(images.dtype).view(-1, 1) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C, 5)
    out = F.pad(images.reshape(1, n * c, height, width), (2, 2, 2, 2), mode="reflect")
    out = F.conv2d(out, k.view(n * c, 1, 1, 5), groups=n * c)
    return F.conv2d(out, k.view(n * c, 1, 5, 1), groups=n * c).view(n, c, height, width)


def photometric(images: torch.Tensor, draws: torch.Tensor, p_blur: float, p_solarize: float) -> torch.Tensor:
    """Brightness/contrast jitter (p=0.8), blur (``p_blur``, sigma uniform in [0.1, 1]) and solarization."""

    def per_image(v: torch.Tensor) -> torch.Tensor:
        return v.to(images.dtype).view(-1, 1, 1, 1)

    jitter = per_image(draws[:, JITTER] < 0.8)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    contrast, bright = per_image(0.6 + 0.8 * draws[:, CONTRAST]), per_image(0.6 + 0.8 * draws[:, BRIGHT])
    jittered = ((images - mean) * contrast + mean) * bright
    images = jitter * jittered + (1 - jitter) * images
    if p_blur > 0:
        blurred = blur(images, 0.1 + 0.9 * draws[:, SIGMA])
        images = torch.where(per_image(draws[:, BLUR] < p_blur) > 0, blurred, images)
    if p_solarize > 0:
        solar = torch.where(images >= 0.5, 1.0 - images, images)
        images = torch.where(per_image(draws[:, SOLAR] < p_solarize) > 0, solar, images)
    return images.clamp(0.0, 1.0)


def multi_crop(images: torch.Tensor, draws: torch.Tensor, spec: CropSpec) -> dict[str, torch.Tensor]:
    """``{"global": (B, 2, C, G, G), "local": (B, n_local, C, L, L)}`` of ``images`` (B, C, H, W), normalised by
    ``normalise``; ``draws`` (B, 2 + n_local, DRAWS_PER_CROP) holds each sample's uniform draws, crop by crop."""
    b, c = images.shape[:2]
    out: dict[str, torch.Tensor] = {}
    for key, first, count, size, scale in (
        ("global", 0, 2, spec.global_size, spec.global_scale),
        ("local", 2, spec.n_local, spec.local_size, spec.local_scale),
    ):
        if not count:
            out[key] = images.new_zeros(b, 0, c, size, size)
            continue
        d = draws[:, first : first + count].reshape(b * count, DRAWS_PER_CROP)
        src = images.repeat_interleave(count, dim=0)
        crops = resized_crops(src, d, size, scale, spec.rotate_deg, spec.flip_p)
        if key == "global":  # global 1: blur always; global 2: blur p=0.1 and solarization
            slot = torch.arange(b * count) % count
            crops = torch.where(
                (slot == 0).view(-1, 1, 1, 1),
                photometric(crops, d, 1.0, 0.0),
                photometric(crops, d, 0.1, spec.solarize_p),
            )
        else:
            crops = photometric(crops, d, 0.5, 0.0)
        out[key] = normalise(crops).view(b, count, c, size, size)
    return out


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Scale [0, 1] pixels to unit-ish range with black at 0 (digits are mostly black background)."""
    return images / 0.3


class MultiCropImages(Dataset):
    """Training items: image ``index`` with its random draws, a function of ``(seed, epoch, index)`` only."""

    def __init__(self, images: torch.Tensor, seed: int, spec: CropSpec) -> None:
        self.images, self.seed, self.spec = images, int(seed), spec

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        gen = sample_generator(self.seed, "dino", int(epoch), int(index))
        return {"image": self.images[index], "draws": torch.rand(2 + self.spec.n_local, DRAWS_PER_CROP, generator=gen)}


@dataclass(frozen=True)
class MultiCropCollate:
    """Collation of DINO's loaders: training items (image and draws) become ``multi_crop``'s crops; other items
    (validation images with labels) are stacked key by key."""

    spec: CropSpec

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        batch = stack_dicts(items)
        if "draws" not in batch:
            return batch
        return multi_crop(batch["image"], batch["draws"], self.spec)


class EvalImages(Dataset):
    """Validation items: ``{"image", "label"}`` without augmentation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = normalise(images), labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: Any) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "label": self.labels[index]}
