"""scikit-learn's digits as DINO's embedded data: shapes, a fixed disjoint split, max_items, clear errors."""

from __future__ import annotations

import pytest
import torch

from waypoint.data.images import Digits


@pytest.fixture(scope="module")
def digits() -> Digits:
    return Digits()


def test_all_1797_images_upscaled_to_one_channel_in_unit_range(digits: Digits) -> None:
    assert digits.kind == "images" and digits.channels == 1 and digits.classes == [str(c) for c in range(10)]
    assert digits.train_images.shape[1:] == (1, 32, 32) and digits.val_images.shape[1:] == (1, 32, 32)
    assert len(digits.train_images) + len(digits.val_images) == 1797
    assert len(digits.val_images) == round(1797 * 0.2)
    assert 0.0 <= float(digits.train_images.min()) and float(digits.train_images.max()) <= 1.0
    assert set(digits.val_labels.tolist()) == set(range(10)) and digits.train_labels.dtype == torch.int64


def test_the_split_is_disjoint_and_a_function_of_split_seed(digits: Digits) -> None:
    again, other = Digits(), Digits(split_seed=1)
    assert torch.equal(digits.val_images, again.val_images) and torch.equal(digits.train_labels, again.train_labels)
    assert not torch.equal(digits.val_images, other.val_images)
    train = {t.numpy().tobytes() for t in digits.train_images}  # the 1797 digits are pairwise distinct
    assert not any(v.numpy().tobytes() in train for v in digits.val_images)


def test_max_items_and_image_size() -> None:
    small = Digits(image_size=16, max_items=40, batch_size=8)
    assert small.train_images.shape == (40, 1, 16, 16) and len(small.val_images) == 10 and small.batch_size == 8
    full = Digits()
    assert torch.equal(small.val_labels, full.val_labels[:10])  # max_items takes a prefix of the same split


def test_a_bad_val_fraction_is_one_clear_sentence() -> None:
    with pytest.raises(ValueError, match="data.val_fraction must be between 0 and 1"):
        Digits(val_fraction=1.5)
