"""UniverSeg's Dice against support-set size: same queries at every size, nested support sets, baselines beside."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from waypoint.data.segshapes import SegShapes
from waypoint.tasks.base import StepContext
from waypoint.tasks.universeg import UniverSegTask
from waypoint.tasks.universeg.support_curve import dice_at_support_size, dice_by_support_size


@pytest.fixture(scope="module")
def task() -> UniverSegTask:
    task = UniverSegTask(SegShapes(val_items=8, batch_size=4), seed=0, scale="smoke")
    task.setup(total_steps=1, steps_per_epoch=1, device=torch.device("cpu"))
    return task


def test_held_out_episodes_keep_their_query_and_grow_their_support_set_by_prefix(task: UniverSegTask) -> None:
    small, large = task.data.val_dataset(task.image_size, 2)[3], task.data.val_dataset(task.image_size, 8)[3]
    assert torch.equal(small["image"], large["image"]) and torch.equal(small["mask"], large["mask"])
    assert torch.equal(small["support_images"], large["support_images"][:2])
    assert torch.equal(small["support_masks"], large["support_masks"][:2])


def test_the_curve_has_one_row_per_size_with_the_model_and_both_baselines(task: UniverSegTask) -> None:
    rows = dice_by_support_size(task, (1, 2, 4))
    assert [r["support_size"] for r in rows] == [1, 2, 4]
    for row in rows:
        assert row["episodes"] == 8
        assert all(0.0 <= row[k] <= 1.0 for k in ("dice", "mean_mask_dice", "threshold_dice"))


def test_at_the_training_support_size_the_curve_matches_validation(task: UniverSegTask) -> None:
    loader = DataLoader(task.val_dataset(), batch_size=4, collate_fn=task.collate)
    figures = task.validate(loader, StepContext(0, 0, 1, 1, torch.device("cpu")))
    row = dice_at_support_size(task, task.support_size, batch_size=4)
    assert row["dice"] == pytest.approx(figures["val/dice"], abs=1e-6)
    assert row["threshold_dice"] == pytest.approx(figures["val/baseline_threshold_dice"], abs=1e-6)
    assert row["mean_mask_dice"] == pytest.approx(figures["val/baseline_mean_mask_dice"], abs=1e-6)


def test_an_empty_support_set_is_refused_in_one_sentence(task: UniverSegTask) -> None:
    with pytest.raises(ValueError, match="at least one example"):
        dice_at_support_size(task, 0)
