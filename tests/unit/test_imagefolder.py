"""A user's folder of images (root/<class>/*.png|jpg) for DINO: classes, channels, split, one clear sentence per mistake."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from waypoint.data.images import ImageFolder


def make_folder(root: Path, classes: tuple[str, ...] = ("cats", "dogs"), n: int = 5) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = np.full((12, 10, 3), 20 * i + 100 * c, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_classes_come_from_subfolders_and_images_are_resized(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data")
    (root / "notes.txt").write_text("not an image")
    (root / "cats" / "readme.md").write_text("not an image")
    data = ImageFolder(str(root), image_size=16)
    assert data.kind == "images" and data.classes == ["cats", "dogs"] and data.channels == 3
    assert data.train_images.shape == (8, 3, 16, 16) and data.val_images.shape == (2, 3, 16, 16)
    assert set(data.train_labels.tolist()) | set(data.val_labels.tolist()) == {0, 1}
    assert 0.0 <= float(data.train_images.min()) and float(data.train_images.max()) <= 1.0


def test_grayscale_gives_one_channel_and_the_split_is_fixed(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data")
    a, b = ImageFolder(str(root), grayscale=True), ImageFolder(str(root), grayscale=True)
    assert a.channels == 1 and a.train_images.shape[1:] == (1, 32, 32)
    assert torch.equal(a.val_images, b.val_images) and torch.equal(a.train_labels, b.train_labels)


def test_a_missing_root_is_one_clear_sentence(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data.root '.*missing' is not a folder"):
        ImageFolder(str(tmp_path / "missing"))
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(ValueError, match="is not a folder"):
        ImageFolder(str(tmp_path / "file.png"))


def test_a_folder_without_class_images_is_one_clear_sentence(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "empty" / "loose.png")  # not in a class folder
    with pytest.raises(ValueError, match="holds no images in class folders"):
        ImageFolder(str(tmp_path / "empty"))


def test_an_unreadable_image_is_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data")
    (root / "dogs" / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        ImageFolder(str(root))
