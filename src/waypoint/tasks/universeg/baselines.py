"""Baselines for in-context segmentation that need no training, scored like the model (hard Dice).

Both see only the support set, as the model does, so a model that beats them uses the query image itself:
``mean_mask`` thresholds the pixel-wise mean of the support masks at 0.5 (where this task's objects usually are);
``threshold`` applies to the query the intensity threshold and polarity with the best mean Dice on the support.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

#: candidate thresholds for ``threshold_dice`` (intensities are in [0, 1])
THRESHOLDS = torch.linspace(0.0, 1.0, 65)


def _dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice over the last two dims of binary maps; 1.0 when both are empty."""
    pred, target = pred.float().flatten(-2), (target > 0.5).float().flatten(-2)
    inter, total = (pred * target).sum(-1), pred.sum(-1) + target.sum(-1)
    return torch.where(total > 0, 2.0 * inter / total.clamp_min(1.0), torch.ones_like(total))


def mean_mask_dice(support_masks: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-episode Dice of the thresholded mean support mask; ``support_masks`` (B,S,1,H,W), ``mask`` (B,1,H,W)."""
    pred = support_masks.float().mean(dim=1) >= 0.5
    return _dice(pred, mask).flatten(1).mean(1)


def threshold_dice(
    image: torch.Tensor, support_images: torch.Tensor, support_masks: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Per-episode Dice on the query of the best (threshold, polarity) fitted on the support pairs."""
    best_score = torch.full((image.shape[0],), -1.0, device=image.device)
    best_pred = torch.zeros_like(image, dtype=torch.bool)
    query, support = image.float(), support_images.float()
    for t in THRESHOLDS.tolist():  # one threshold at a time: memory stays at one support set
        above = support >= t
        for pred_support, pred_query in ((above, query >= t), (~above, query < t)):
            score = _dice(pred_support, support_masks).flatten(1).mean(1)  # mean over the support set
            better = score > best_score  # strict: ties keep the lower threshold / the first polarity
            best_score = torch.where(better, score, best_score)
            best_pred = torch.where(better.view(-1, 1, 1, 1), pred_query, best_pred)
    return _dice(best_pred, mask).flatten(1).mean(1)


def baseline_scores(batches: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, float]:
    """Mean Dice of both baselines over held-out episodes (``val/baseline_mean_mask_dice``, ``val/baseline_threshold_dice``)."""
    mean_mask, threshold = [], []
    for batch in batches:
        mean_mask.append(mean_mask_dice(batch["support_masks"], batch["mask"]))
        threshold.append(threshold_dice(batch["image"], batch["support_images"], batch["support_masks"], batch["mask"]))
    if not mean_mask:
        return {}
    return {
        "val/baseline_mean_mask_dice": float(torch.cat(mean_mask).mean()),
        "val/baseline_threshold_dice": float(torch.cat(threshold).mean()),
    }
