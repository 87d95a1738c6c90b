"""UniverSeg network (Butoi et al., ICCV 2023), re-implemented from the published architecture.

Shapes: a query ``target`` (B, 1, C, H, W) and a support set (B, S, C, H, W). ``CrossConv2d`` concatenates
the query with every support map and applies one shared convolution, giving (B, Sx, Sy, Cout, H, W).
A ``CrossBlock`` averages the interactions over the support set for the new query map and keeps the
per-member interactions (each through its own conv) for the new support maps. As in the released model,
the CrossConv itself has no activation; the convs after it use LeakyReLU(0.01).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def vmap(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply ``module`` to (B, S, ...) by folding the set dim into the batch dim."""
    b, s = x.shape[:2]
    y = module(x.reshape(b * s, *x.shape[2:]))
    return y.reshape(b, s, *y.shape[1:])


class CrossConv2d(nn.Conv2d):
    """Shared conv over every (x_i, y_j) pair: (B,Sx,Cx,H,W) x (B,Sy,Cy,H,W) -> (B,Sx,Sy,Cout,H,W)."""

    def __init__(self, in_channels: tuple[int, int], out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(in_channels[0] + in_channels[1], out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, sx, cx, h, w = x.shape
        sy, cy = y.shape[1], y.shape[2]
        pairs = torch.cat([x.unsqueeze(2).expand(b, sx, sy, cx, h, w), y.unsqueeze(1).expand(b, sx, sy, cy, h, w)], dim=3)
        out = super().forward(pairs.reshape(b * sx * sy, cx + cy, h, w))
        return out.reshape(b, sx, sy, *out.shape[1:])


class ConvOp(nn.Sequential):
    """Conv2d (same padding) followed by LeakyReLU, or no activation when ``act`` is False."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, act: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2)]
        if act:
            layers.append(nn.LeakyReLU())
        super().__init__(*layers)


class CrossBlock(nn.Module):
    """CrossConv interaction, then separate convs for the query stream and the support stream."""

    def __init__(self, in_channels: tuple[int, int], cross_features: int, conv_features: Optional[int] = None) -> None:
        super().__init__()
        conv_features = conv_features or cross_features
        self.cross = CrossConv2d(in_channels, cross_features)
        self.target = ConvOp(cross_features, conv_features)
        self.support = ConvOp(cross_features, conv_features)

    def forward(self, target: torch.Tensor, support: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        interaction = self.cross(target, support).squeeze(1)  # (B, S, C, H, W): one query per item
        new_target = interaction.mean(dim=1, keepdim=True)
        return vmap(self.target, new_target), vmap(self.support, interaction)


def _pair(spec: int | Sequence[int]) -> tuple[int, int]:
    return (int(spec), int(spec)) if isinstance(spec, int) else (int(spec[0]), int(spec[1]))


class UniverSegNet(nn.Module):
    """Encoder/decoder of CrossBlocks with skips; returns query logits (B, 1, H, W)."""

    def __init__(
        self, encoder_blocks: Sequence[int | Sequence[int]], decoder_blocks: Optional[Sequence] = None, in_channels: int = 1
    ) -> None:
        super().__init__()
        enc = [_pair(b) for b in encoder_blocks]
        dec = [_pair(b) for b in (decoder_blocks if decoder_blocks is not None else list(encoder_blocks)[-2::-1])]
        if len(dec) != len(enc) - 1:
            raise ValueError(f"UniverSeg needs one decoder block fewer than encoder blocks, got {len(enc)} and {len(dec)}")
        self.enc = nn.ModuleList()
        self.dec = nn.ModuleList()
        cin = (in_channels, in_channels + 1)  # the support stream carries image || label
        skips = []
        for cross, conv in enc:
            self.enc.append(CrossBlock(cin, cross, conv))
            cin = (conv, conv)
            skips.append(conv)
        for (cross, conv), skip in zip(dec, reversed(skips[:-1])):
            self.dec.append(CrossBlock((cin[0] + skip, cin[1] + skip), cross, conv))
            cin = (conv, conv)
        self.out = ConvOp(cin[0], 1, kernel_size=1, act=False)
        self.levels = len(enc)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Kaiming-normal conv weights (leaky_relu gain; linear for convs without activation), zero biases."""
        for block in [*self.enc, *self.dec]:
            nn.init.kaiming_normal_(block.cross.weight, nonlinearity="linear", generator=generator)
            nn.init.zeros_(block.cross.bias)
            for op in (block.target, block.support):
                nn.init.kaiming_normal_(op[0].weight, nonlinearity="leaky_relu", generator=generator)
                nn.init.zeros_(op[0].bias)
        nn.init.kaiming_normal_(self.out[0].weight, nonlinearity="linear", generator=generator)
        nn.init.zeros_(self.out[0].bias)

    def forward(self, image: torch.Tensor, support_images: torch.Tensor, support_masks: torch.Tensor) -> torch.Tensor:
        """Logits for ``image`` (B,C,H,W) given ``support_images`` (B,S,C,H,W) and ``support_masks`` (B,S,1,H,W)."""
        side = 2 ** (self.levels - 1)
        if image.shape[-1] % side or image.shape[-2] % side:
            raise ValueError(f"image size {tuple(image.shape[-2:])} must be divisible by {side} for {self.levels} levels")
        target = image.unsqueeze(1)
        support = torch.cat([support_images, support_masks], dim=2)
        skips = []
        for i, block in enumerate(self.enc):
            target, support = block(target, support)
            if i < self.levels - 1:
                skips.append((target, support))
                target, support = _pool(target), _pool(support)
        for block in self.dec:
            skip_t, skip_s = skips.pop()
            target = torch.cat([_up(target), skip_t], dim=2)
            support = torch.cat([_up(support), skip_s], dim=2)
            target, support = block(target, support)
        return vmap(self.out, target).squeeze(1)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return vmap(lambda t: F.max_pool2d(t, 2), x)


def _up(x: torch.Tensor) -> torch.Tensor:
    return vmap(lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=True), x)
