"""The support-only baselines that UniverSeg's Dice is reported against."""

from __future__ import annotations

import torch

from waypoint.tasks.universeg.baselines import baseline_scores, mean_mask_dice, threshold_dice


def _episode(polarity: int, seed: int = 0, size: int = 16, support: int = 4) -> dict[str, torch.Tensor]:
    """Bright (polarity 0) or dark (polarity 1) squares on a mid-grey noisy background; mask = the squares."""
    gen = torch.Generator().manual_seed(seed)
    images, masks = [], []
    for _ in range(support + 1):
        mask = torch.zeros(1, size, size)
        r, c = (int(v) for v in torch.randint(0, size - 6, (2,), generator=gen))
        mask[:, r : r + 6, c : c + 6] = 1
        base = 0.5 + 0.05 * torch.randn(1, size, size, generator=gen)
        image = torch.where(mask > 0, torch.tensor(0.1 if polarity else 0.9), base)
        images.append(image)
        masks.append(mask)
    return {
        "image": images[0][None],
        "mask": masks[0][None],
        "support_images": torch.stack(images[1:])[None],
        "support_masks": torch.stack(masks[1:])[None],
    }


def test_mean_mask_is_perfect_when_every_support_mask_equals_the_query_mask():
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:5, 2:5] = 1
    support = mask.unsqueeze(1).expand(2, 3, 1, 8, 8)
    assert torch.allclose(mean_mask_dice(support, mask), torch.ones(2))


def test_mean_mask_scores_zero_when_the_query_object_lies_elsewhere():
    support = torch.zeros(1, 3, 1, 8, 8)
    support[..., :3, :3] = 1
    query = torch.zeros(1, 1, 8, 8)
    query[..., 5:, 5:] = 1
    assert float(mean_mask_dice(support, query)) == 0.0


def test_threshold_segments_bright_objects_exactly():
    ep = _episode(polarity=0)
    assert float(threshold_dice(ep["image"], ep["support_images"], ep["support_masks"], ep["mask"])) == 1.0


def test_threshold_picks_the_inverted_polarity_for_dark_objects():
    ep = _episode(polarity=1)
    assert float(threshold_dice(ep["image"], ep["support_images"], ep["support_masks"], ep["mask"])) == 1.0


def test_baseline_scores_average_over_batches_under_their_metric_names():
    batches = [_episode(0, seed=1), _episode(1, seed=2)]
    scores = baseline_scores(batches)
    assert set(scores) == {"val/baseline_mean_mask_dice", "val/baseline_threshold_dice"}
    assert scores["val/baseline_threshold_dice"] == 1.0
    assert 0.0 <= scores["val/baseline_mean_mask_dice"] < 1.0
