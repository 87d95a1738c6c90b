"""DINO pictures for the run report: the teacher's embedding of the held-out images (PCA, coloured by class) at the
start and at the end, and the teacher's last-layer CLS attention over the patches.

``render(task, snapshots, out)`` loads each ``(label, step, task state)`` snapshot into a set-up task, writes PNGs
into ``out`` and returns ``{"title", "text", "image", "table"}`` report sections. Nothing here reads files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from waypoint.tasks.dino.aug import normalise
from waypoint.tasks.dino.model import knn_top1

#: held-out images whose attention maps are drawn
ATTENTION_IMAGES = 6


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def pca_2d(features: torch.Tensor) -> torch.Tensor:
    """The first two principal components of ``features`` (N, D) -> (N, 2)."""
    centred = features.double() - features.double().mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ v[:2].T).float()


def embedding_figure(task: Any, snapshots: Sequence[tuple[str, int, Mapping]], out: Path) -> dict[str, Any]:
    """PCA of the teacher's features of the held-out images at each snapshot, coloured by class, with kNN top-1."""
    plt = _plt()
    data = task.data
    queries, labels = normalise(data.val_images), data.val_labels
    bank = normalise(data.train_images)
    fig, axes = plt.subplots(1, len(snapshots), figsize=(4.6 * len(snapshots), 4.2), squeeze=False)
    rows = []
    for ax, (label, step, state) in zip(axes[0], snapshots):
        task.load_state_dict(state)
        feats = task.features(queries)
        knn = knn_top1(
            task.features(bank), data.train_labels, feats, labels, task.cfg.knn_k, task.cfg.knn_temperature, len(data.classes)
        )
        xy = pca_2d(feats)
        scatter = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=10, vmin=-0.5, vmax=9.5)
        ax.set_title(f"{label}: kNN top-1 {knn:.3f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        rows.append([label, step, knn])
    cbar = fig.colorbar(scatter, ax=axes[0].tolist(), ticks=range(len(data.classes)), fraction=0.03)
    cbar.ax.set_yticklabels(data.classes, fontsize=7)
    fig.suptitle("teacher features of the held-out images (PCA), coloured by class", fontsize=10)
    fig.subplots_adjust(right=0.9)
    path = out / "dino_embedding.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    text = [
        f"{len(queries)} held-out images embedded by the teacher ({task.cfg.knn_feature} feature), projected on their first "
        "two principal components. kNN top-1 recomputed here with the run's k and temperature."
    ]
    return {
        "title": "DINO: embedding of the held-out images",
        "text": text,
        "image": path,
        "table": (["snapshot", "step", "kNN top-1"], rows),
    }


@torch.no_grad()
def cls_attention(task: Any, images: torch.Tensor) -> torch.Tensor:
    """The teacher's last-block attention from the CLS token to every patch: (N, heads, grid, grid)."""
    backbone = task.teacher.backbone
    attn = backbone.blocks[-1].attn
    captured: list[torch.Tensor] = []
    fused = getattr(attn, "fused_attn", False)
    attn.fused_attn = False  # compute the weights explicitly, so the dropout (identity in eval) sees them
    hook = attn.attn_drop.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    try:
        backbone.eval()
        backbone.forward_features(images.to(task.device))
    finally:
        hook.remove()
        attn.fused_attn = fused
    prefix = getattr(backbone, "num_prefix_tokens", 1)
    weights = captured[-1][:, :, 0, prefix:].float().cpu()
    grid = int(round(weights.shape[-1] ** 0.5))
    return weights.reshape(*weights.shape[:2], grid, grid)


def attention_figure(task: Any, label: str, out: Path) -> dict[str, Any]:
    """Held-out images beside the teacher's CLS attention of each head (last block), for the loaded state."""
    plt = _plt()
    images = task.data.val_images[:ATTENTION_IMAGES]
    maps = cls_attention(task, normalise(images))
    heads = maps.shape[1]
    fig, axes = plt.subplots(len(images), heads + 1, figsize=(1.6 * (heads + 1), 1.6 * len(images)), squeeze=False)
    for i, image in enumerate(images):
        axes[i, 0].imshow(image[0] if image.shape[0] == 1 else image.permute(1, 2, 0), cmap="gray")
        axes[i, 0].set_title(f"class {task.data.classes[int(task.data.val_labels[i])]}", fontsize=7)
        for h in range(heads):
            axes[i, h + 1].imshow(maps[i, h], cmap="inferno")
            axes[i, h + 1].set_title(f"head {h}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    path = _save(fig, out / "dino_attention.png")
    text = [f"Teacher attention from the CLS token to the {maps.shape[-1]}x{maps.shape[-1]} patches, last block, at {label}."]
    return {"title": "DINO: teacher attention maps", "text": text, "image": path}


def render(task: Any, snapshots: Sequence[tuple[str, int, Mapping]], out: Path) -> list[dict[str, Any]]:
    """The embedding at the first and last snapshot, and the attention maps of the last."""
    chosen = [snapshots[0], snapshots[-1]] if len(snapshots) > 1 else list(snapshots)
    pictures = [embedding_figure(task, chosen, out)]
    task.load_state_dict(chosen[-1][2])
    pictures.append(attention_figure(task, chosen[-1][0], out))
    return pictures
