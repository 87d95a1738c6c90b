"""Dice against support-set size: how much a trained UniverSeg gains from each extra labelled example.

Held-out episodes are scored at each size beside the support-only baselines; each keeps its query at every size
and its support sets are nested (the first ``k`` examples of the larger set), so the sizes differ in the support
set alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from waypoint.tasks.universeg.baselines import mean_mask_dice, threshold_dice
from waypoint.tasks.universeg.task import UniverSegTask, hard_dice

#: the support-set sizes of the curve by default
SUPPORT_SIZES = (1, 2, 4, 8, 16)


@torch.no_grad()
def dice_at_support_size(task: UniverSegTask, support_size: int, batch_size: int = 8) -> dict[str, float]:
    """Mean hard Dice of the task's network and of both baselines over the held-out episodes with ``support_size``
    support pairs each: ``{"support_size", "dice", "mean_mask_dice", "threshold_dice", "episodes"}``."""
    if support_size < 1:
        raise ValueError(f"a support set holds at least one example, got support size {support_size}")
    if task.net is None:
        raise RuntimeError("UniverSegTask.setup() (and a restored state) must come before the support-size curve")
    net, was_training = task.net, task.net.training
    net.eval()
    dataset = task.data.val_dataset(task.image_size, int(support_size))
    scores: dict[str, list[torch.Tensor]] = {"dice": [], "mean_mask_dice": [], "threshold_dice": []}
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=task.collate):
            image, mask = batch["image"], batch["mask"]
            sup_images, sup_masks = batch["support_images"], batch["support_masks"]
            logits = net(image.to(task.device), sup_images.to(task.device), sup_masks.to(task.device))
            scores["dice"].append(hard_dice(logits, mask.to(task.device)).cpu())
            scores["mean_mask_dice"].append(mean_mask_dice(sup_masks, mask))
            scores["threshold_dice"].append(threshold_dice(image, sup_images, sup_masks, mask))
    finally:
        net.train(was_training)
    out: dict[str, Any] = {k: float(torch.cat(v).mean()) for k, v in scores.items()}
    return {"support_size": int(support_size), **out, "episodes": len(dataset)}


def dice_by_support_size(
    task: UniverSegTask, sizes: Sequence[int] = SUPPORT_SIZES, batch_size: int = 8
) -> list[dict[str, float]]:
    """``dice_at_support_size`` for every size of ``sizes``, in order."""
    return [dice_at_support_size(task, int(k), batch_size) for k in sizes]
