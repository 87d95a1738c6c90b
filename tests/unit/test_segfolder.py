"""A user's segmentation folder: pairing, resizing, and one clear sentence for every mistake."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from waypoint.data.segfolder import SegFolder, SegFolderError


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def make_task(root: Path, name: str, n: int = 4, size: int = 20) -> None:
    rng = np.random.default_rng(len(name))
    for i in range(n):
        png(root / name / "images" / f"case{i}.png", rng.integers(0, 255, (size, size)))
        mask = np.zeros((size, size))
        mask[2:10, 3:12] = 255
        png(root / name / "masks" / f"case{i}.png", mask)


def test_reads_pairs_resized_and_binarised(tmp_path):
    for name in ("a", "b", "c"):
        make_task(tmp_path, name)
    src = SegFolder(root=str(tmp_path))
    item = src.train_dataset(seed=0, image_size=16, support_size=3)[(0, 0)]
    assert item["image"].shape == (1, 16, 16) and item["support_masks"].shape == (3, 1, 16, 16)
    assert set(torch.unique(item["mask"]).tolist()) == {0.0, 1.0}
    assert [t.name for t, _, _ in src.val_pools] == ["c"] and [t.name for t, _ in src.train_pools] == ["a", "b"]


def test_train_items_are_a_function_of_seed_epoch_and_index(tmp_path):
    for name in ("a", "b"):
        make_task(tmp_path, name, n=6)
    ds = SegFolder(root=str(tmp_path)).train_dataset(seed=4, image_size=16, support_size=2)
    again = SegFolder(root=str(tmp_path)).train_dataset(seed=4, image_size=16, support_size=2)
    assert all(torch.equal(ds[(1, 3)][k], again[(1, 3)][k]) for k in ds[(1, 3)])


def test_single_task_holds_out_its_last_images(tmp_path):
    make_task(tmp_path, "only", n=10)
    src = SegFolder(root=str(tmp_path), val_fraction=0.2)
    ((_, train_pool),) = src.train_pools
    ((_, queries, support_pool),) = src.val_pools
    assert queries == [8, 9] and support_pool == train_pool == list(range(8))
    assert len(src.val_dataset(16, 3)) == 2


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(SegFolderError, match="is not a folder"):
        SegFolder(root=str(tmp_path / "nope"))


def test_root_without_tasks_is_a_clear_error(tmp_path):
    with pytest.raises(SegFolderError, match="holds no task folders"):
        SegFolder(root=str(tmp_path))


def test_task_without_masks_folder_is_a_clear_error(tmp_path):
    png(tmp_path / "t" / "images" / "x.png", np.zeros((4, 4)))
    with pytest.raises(SegFolderError, match="has no masks/ folder"):
        SegFolder(root=str(tmp_path))


def test_unpaired_files_are_named(tmp_path):
    make_task(tmp_path, "t")
    png(tmp_path / "t" / "images" / "lonely.png", np.zeros((20, 20)))
    png(tmp_path / "t" / "masks" / "orphan.png", np.zeros((20, 20)))
    with pytest.raises(
        SegFolderError, match=r"1 image\(s\) have no mask \(lonely.png\) and 1 mask\(s\) have no image \(orphan.png\)"
    ):
        SegFolder(root=str(tmp_path))


def test_mask_of_another_size_is_a_clear_error(tmp_path):
    make_task(tmp_path, "t", n=2)
    png(tmp_path / "t" / "masks" / "case0.png", np.zeros((7, 7)))
    ds = SegFolder(root=str(tmp_path)).train_dataset(seed=0, image_size=8, support_size=1)
    with pytest.raises(SegFolderError, match="a mask must have its image's size"):
        for i in range(8):
            ds[(0, i)]


def test_unreadable_image_is_a_clear_error(tmp_path):
    make_task(tmp_path, "t", n=2)
    (tmp_path / "t" / "images" / "case0.png").write_bytes(b"not a png")
    ds = SegFolder(root=str(tmp_path)).train_dataset(seed=0, image_size=8, support_size=1)
    with pytest.raises(SegFolderError, match="cannot read"):
        for i in range(8):
            ds[(0, i)]


def test_unknown_val_task_is_a_clear_error(tmp_path):
    make_task(tmp_path, "a")
    make_task(tmp_path, "b")
    with pytest.raises(SegFolderError, match=r"names \['zzz'\] not found"):
        SegFolder(root=str(tmp_path), val_tasks=["zzz"])
