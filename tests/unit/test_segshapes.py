"""Synthetic segmentation tasks: determinism per (seed, epoch, index), held-out tasks, workers."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from waypoint.data.segshapes import FAMILIES, SegShapes, render_episode, task_spec
from waypoint.seeding import sample_generator
from waypoint.tasks.common import stack_dicts as collate_episodes


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_episode_is_a_function_of_seed_epoch_and_index():
    ds = SegShapes().train_dataset(seed=7, image_size=32, support_size=3)
    assert same(ds[(2, 5)], SegShapes().train_dataset(seed=7, image_size=32, support_size=3)[(2, 5)])
    assert not same(ds[(2, 5)], ds[(3, 5)])
    assert not same(ds[(2, 5)], ds[(2, 6)])
    assert not same(ds[(2, 5)], SegShapes().train_dataset(seed=8, image_size=32, support_size=3)[(2, 5)])


def test_episode_shapes_and_value_ranges():
    item = SegShapes().train_dataset(seed=0, image_size=32, support_size=4)[(0, 0)]
    assert item["image"].shape == (1, 32, 32) and item["mask"].shape == (1, 32, 32)
    assert item["support_images"].shape == (4, 1, 32, 32) and item["support_masks"].shape == (4, 1, 32, 32)
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert set(torch.unique(item["support_masks"]).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_labels_something(family):
    spec = task_spec(0, 0, (family,))
    episode = render_episode(spec, sample_generator(0, family), 48, 6)
    assert float(episode["support_masks"].sum()) > 0 and spec["family"] == family


def test_validation_uses_held_out_tasks_and_is_epoch_free():
    src = SegShapes(train_tasks=16, val_tasks=4, val_items=8)
    val = src.val_dataset(image_size=32, support_size=2)
    train = src.train_dataset(seed=0, image_size=32, support_size=2)
    val_tasks = {int(val[i]["task"]) for i in range(len(val))}
    train_tasks = {int(train[(0, i)]["task"]) for i in range(32)}
    assert len(val_tasks) == 4 and not val_tasks & train_tasks
    assert same(val[3], src.val_dataset(image_size=32, support_size=2)[3])


def test_same_batches_with_zero_or_two_workers():
    ds = SegShapes(train_items=8).train_dataset(seed=1, image_size=16, support_size=2)
    keys = [(1, i) for i in range(8)]

    def batches(workers: int) -> list[dict]:
        return list(DataLoader(ds, batch_size=4, sampler=keys, collate_fn=collate_episodes, num_workers=workers))

    assert all(same(a, b) for a, b in zip(batches(0), batches(2)))


def test_max_items_caps_both_splits():
    src = SegShapes(train_items=100, val_items=50, max_items=10)
    assert len(src.train_dataset(0, 16, 2)) == 10 and len(src.val_dataset(16, 2)) == 10


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="must be a non-empty subset"):
        SegShapes(families=["stars"])
