"""DINO's networks: a timm VisionTransformer backbone, the projection head, the loss with centering, kNN."""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm


def build_backbone(
    arch: str, img_size: int, in_chans: int, patch_size: int, embed_dim: int, depth: int, num_heads: int, drop_path_rate: float
) -> nn.Module:
    """``timm.create_model(arch, pretrained=False, ...)``: CLS-token features, positions interpolated for local crops."""
    return timm.create_model(
        arch,
        pretrained=False,
        num_classes=0,
        img_size=img_size,
        in_chans=in_chans,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        drop_path_rate=drop_path_rate,
        dynamic_img_size=True,
    )


def sincos_pos_embed(dim: int, grid: int, prefix_tokens: int = 1) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes (1, prefix + grid*grid, dim), zeros for the prefix (CLS) tokens.

    Smooth, so interpolating to a local crop's grid keeps their meaning; patch-token scale, so the untrained network
    already sees where each patch is.
    """
    if dim % 4:
        raise ValueError(f"sine-cosine position codes need model.embed_dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij")
    parts = [f(c.reshape(-1, 1) * omega) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    codes = torch.cat(parts, dim=1).float()
    return torch.cat([torch.zeros(prefix_tokens, dim), codes]).unsqueeze(0)


class DINOHead(nn.Module):
    """MLP (GELU) -> bottleneck -> L2 normalisation -> weight-normalised linear layer with its norm fixed to 1."""

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dim: int, bottleneck_dim: int, nlayers: int = 3, use_bn: bool = False
    ) -> None:
        super().__init__()

        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Linear(i, o), *([nn.BatchNorm1d(o)] if use_bn else []), nn.GELU()]

        layers: list[nn.Module] = block(in_dim, hidden_dim)
        for _ in range(nlayers - 2):
            layers += block(hidden_dim, hidden_dim)
        layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):  # upstream's std 0.02 suits widths ~1000; 1/sqrt(fan_in) keeps narrow heads' signal
                nn.init.trunc_normal_(m.weight, std=max(0.02, m.in_features**-0.5))
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        g = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            g.fill_(1.0)
        g.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projections of backbone features."""
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


class StudentTeacherNet(nn.Module):
    """Backbone + head; forward takes a list of crop batches of different resolutions."""

    def __init__(self, backbone: nn.Module, head: DINOHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        """Head outputs of every crop batch, concatenated in order."""
        feats = torch.cat([self.backbone(c) for c in crops if len(c)])
        return self.head(feats)


def dino_loss(
    student_out: torch.Tensor,
    teacher_out: torch.Tensor,
    center: torch.Tensor,
    n_crops: int,
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    """Cross-entropy between centred, sharpened teacher global crops and every other student crop."""
    student = (student_out / student_temp).chunk(n_crops)
    teacher = F.softmax((teacher_out - center) / teacher_temp, dim=-1).detach().chunk(2)
    total, terms = student_out.new_zeros(()), 0
    for iq, q in enumerate(teacher):
        for v in range(n_crops):
            if v == iq:
                continue
            total = total + torch.sum(-q * F.log_softmax(student[v], dim=-1), dim=-1).mean()
            terms += 1
    return total / terms


@torch.no_grad()
def knn_top1(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    n_classes: int | None = None,
) -> float:
    """Weighted kNN accuracy (as in DINO's eval_knn): cosine similarity, weights exp(sim / T), top-1 vote."""
    bank, queries = F.normalize(bank, dim=1), F.normalize(queries, dim=1)
    n_classes = n_classes or int(max(bank_labels.max(), labels.max())) + 1
    sim, idx = (queries @ bank.T).topk(min(k, len(bank)), dim=1)
    votes = torch.zeros(len(queries), n_classes).scatter_add_(1, bank_labels[idx], (sim / temperature).exp())
    return float((votes.argmax(1) == labels).float().mean())


def param_groups(module: nn.Module) -> list[dict[str, Any]]:
    """Weight decay on weights only: biases and norm parameters (1-d) get none, as upstream."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith(".bias") or p.ndim == 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


#: L2 penalties the linear probe chooses from (on a held-out part of the bank, never on the queries)
PROBE_WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1)
#: folds of the bank for that choice (cross-validation)
PROBE_FOLDS = 5


def fit_linear(x: torch.Tensor, y: torch.Tensor, n_classes: int, iters: int, weight_decay: float) -> torch.nn.Linear:
    """Multinomial logistic regression of ``y`` on ``x`` with the penalty ``weight_decay / 2 * |W|^2``: full-batch
    L-BFGS for at most ``iters`` iterations from zero weights, so the fit is a function of its inputs alone."""
    linear = torch.nn.utils.skip_init(torch.nn.Linear, x.shape[1], n_classes)  # draws nothing from the global RNG
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(linear(x), y) + 0.5 * weight_decay * linear.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(objective)
    return linear


@torch.no_grad()
def linear_probe_top1(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    iters: int = 100,
    seed: int = 0,
) -> float:
    """Top-1 on ``queries`` of a linear classifier (``fit_linear``) on standardised bank features.

    The penalty among ``PROBE_WEIGHT_DECAYS`` is chosen by ``PROBE_FOLDS``-fold cross-validation on the bank (folds
    drawn from ``seed``), then the classifier is refitted on the whole bank: each feature set gets its own
    regularisation, the queries decide nothing.
    """
    mean, std = bank.mean(0), bank.std(0).clamp_min(1e-6)
    x, q = ((bank - mean) / std).float(), ((queries - mean) / std).float()
    folds = torch.randperm(len(x), generator=torch.Generator().manual_seed(int(seed))).chunk(PROBE_FOLDS)

    def held_out_top1(wd: float) -> float:
        right = 0
        for i, held in enumerate(folds):
            fit = torch.cat([f for j, f in enumerate(folds) if j != i])
            linear = fit_linear(x[fit], bank_labels[fit], n_classes, iters, wd)
            right += int((linear(x[held]).argmax(1) == bank_labels[held]).sum())
        return right / len(x)

    best = max(PROBE_WEIGHT_DECAYS, key=held_out_top1)  # ties go to the smallest penalty
    linear = fit_linear(x, bank_labels, n_classes, iters, best)
    return float((linear(q).argmax(1) == labels).float().mean())
