"""UniverSeg pictures for the run report: held-out episodes as a grid of query, support set (masks overlaid),
prediction and ground truth, with each prediction's Dice beside the support-only baselines' Dice on the same episode;
and Dice against support-set size (the method's own curve) beside the baselines at each size.

``render(task, snapshots, out)`` as in ``dino.figures``; the last snapshot is the run's final checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from waypoint.tasks.universeg.baselines import mean_mask_dice, threshold_dice
from waypoint.tasks.universeg.support_curve import dice_by_support_size
from waypoint.tasks.universeg.task import hard_dice

#: held-out episodes drawn (one validation batch's worth at most)
EPISODES = 4


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@torch.no_grad()
def predict(task: Any, count: int = EPISODES) -> dict[str, torch.Tensor]:
    """The first ``count`` held-out episodes, the network's logits and per-episode Dice of it and of the baselines."""
    data = task.val_dataset()
    batch = task.collate([data[i] for i in range(min(count, len(data)))])
    net = task.net
    net.eval()
    logits = net(*(batch[k].to(task.device) for k in ("image", "support_images", "support_masks"))).float().cpu()
    return {
        **batch,
        "logits": logits,
        "dice": hard_dice(logits, batch["mask"]),
        "mean_mask": mean_mask_dice(batch["support_masks"], batch["mask"]),
        "threshold": threshold_dice(batch["image"], batch["support_images"], batch["support_masks"], batch["mask"]),
    }


def _show(ax: Any, image: torch.Tensor, title: str, mask: torch.Tensor | None = None) -> None:
    ax.imshow(image[0] if image.shape[0] == 1 else image.permute(1, 2, 0), cmap="gray", vmin=0, vmax=1)
    if mask is not None:
        overlay = torch.zeros(*mask.shape[-2:], 4)
        overlay[..., 0], overlay[..., 3] = 1.0, 0.45 * (mask[0] > 0.5).float()
        ax.imshow(overlay)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def episode_grid(found: Mapping[str, torch.Tensor], label: str, path: Path) -> Path:
    """One row per episode: query, support images with their masks (red), prediction, ground truth."""
    plt = _plt()
    n, support = found["image"].shape[0], found["support_images"].shape[1]
    cols = support + 3
    fig, axes = plt.subplots(n, cols, figsize=(1.45 * cols, 1.6 * n), squeeze=False)
    for i in range(n):
        _show(axes[i, 0], found["image"][i], "query")
        for s in range(support):
            _show(axes[i, 1 + s], found["support_images"][i, s], f"support {s + 1}", found["support_masks"][i, s])
        prediction = (found["logits"][i] >= 0).float()
        _show(axes[i, support + 1], prediction, f"prediction\nDice {float(found['dice'][i]):.2f}")
        _show(axes[i, support + 2], found["mask"][i], "ground truth")
    fig.suptitle(f"held-out episodes at {label}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


#: the curve's lines: key of a curve row, legend, matplotlib style
CURVE_LINES = (
    ("dice", "UniverSeg (trained)", "o-"),
    ("threshold_dice", "baseline: intensity threshold fitted on the support set", "s--"),
    ("mean_mask_dice", "baseline: mean support mask", "^:"),
)


def draw_support_curve(curve: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
    """Dice against support-set size as a PNG: one line per ``CURVE_LINES`` key, each value a number or a spread
    over seeds (``{"mean", "std"}``, drawn as a band)."""
    plt = _plt()
    sizes = [r["support_size"] for r in curve]
    fig, ax = plt.subplots(figsize=(5.5, 4.6), dpi=120)
    for key, label, style in CURVE_LINES:
        values = [r[key] if isinstance(r[key], Mapping) else {"mean": r[key], "std": 0.0} for r in curve]
        mean, std = [v["mean"] for v in values], [v["std"] for v in values]
        ax.plot(sizes, mean, style, label=label)
        if any(std):
            ax.fill_between(sizes, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("support-set size (labelled examples of the held-out task)")
    ax.set_ylabel("Dice on held-out queries")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def support_curve_picture(task: Any, label: str, out: Path) -> dict[str, Any]:
    """The report's section of Dice against support-set size at ``label`` (the task holds that state)."""
    curve = dice_by_support_size(task)
    image = draw_support_curve(curve, out / "universeg_support_size.png", f"Dice against support-set size at {label}")
    rows = [[r["support_size"], r["episodes"], r["dice"], r["threshold_dice"], r["mean_mask_dice"]] for r in curve]
    text = [
        f"Every held-out episode scored with 1 to {rows[-1][0]} labelled examples in its support set (nested sets, the "
        "same query at every size): what each extra example is worth to the network and to the support-only baselines."
    ]
    header = ["support size", "episodes", "Dice", "baseline threshold Dice", "baseline mean_mask Dice"]
    return {"title": "UniverSeg: Dice against support-set size", "text": text, "image": image, "table": (header, rows)}


def render(task: Any, snapshots: Sequence[tuple[str, int, Mapping]], out: Path) -> list[dict[str, Any]]:
    """The episode grid of the final snapshot, with each episode's Dice beside the baselines', and its Dice against
    support-set size."""
    label, _, state = snapshots[-1]
    task.load_state_dict(state)
    found = predict(task)
    image = episode_grid(found, label, out / "universeg_episodes.png")
    rows = [
        [i, int(found["task"][i]), float(found["dice"][i]), float(found["mean_mask"][i]), float(found["threshold"][i])]
        for i in range(found["image"].shape[0])
    ]
    text = [
        f"The first {len(rows)} held-out episodes (labelling rules never trained on) at {label}: the query, its support "
        "set with masks in red, the network's prediction (logit >= 0) and the ground truth."
    ]
    header = ["episode", "task", "Dice", "baseline mean_mask Dice", "baseline threshold Dice"]
    episodes = {"title": "UniverSeg: held-out episodes", "text": text, "image": image, "table": (header, rows)}
    return [episodes, support_curve_picture(task, label, out)]
