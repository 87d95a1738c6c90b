"""UniverSeg: in-context segmentation of a query image given a support set of (image, mask) pairs.

Loss: soft Dice + BCE on the query logits; validation: mean hard Dice of the held-out queries (``val/dice``). The
LR is a pure function of the step, so the state is ``model/<module key>`` and ``optimizer/...`` (Adam's) alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

from waypoint.data.segfolder import SegFolderConfig
from waypoint.data.segshapes import SegShapesConfig
from waypoint.tasks.base import StepContext
from waypoint.tasks.common import check_options, preset_sizes, sample_generator, stack_dicts, warmup_cosine
from waypoint.tasks.universeg.baselines import baseline_scores
from waypoint.tasks.universeg.net import UniverSegNet

#: sizes per ``scale``; a value set explicitly in the config wins over the preset
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"encoder_blocks": [16, 16, 16, 16], "image_size": 32, "support_size": 8},
    "smoke": {"encoder_blocks": [8, 8, 8], "image_size": 32, "support_size": 4},
    # the released UniverSeg v1 (1.18M parameters, 128 px, support size 64): a starting point on a GPU
    "paper": {"encoder_blocks": [64, 64, 64, 64], "image_size": 128, "support_size": 64},
}


@dataclass
class UniverSegConfig:
    """Hydra schema of ``model=universeg``."""

    _target_: str = "waypoint.tasks.universeg.UniverSegTask"
    scale: str = "default"
    encoder_blocks: Optional[list[Any]] = None  # ints or [cross, conv] pairs; None = from scale
    decoder_blocks: Optional[list[Any]] = None  # None = encoder_blocks[-2::-1], as upstream
    image_size: Optional[int] = None  # must be divisible by 2 ** (len(encoder_blocks) - 1)
    support_size: Optional[int] = None
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 20
    weight_decay: float = 0.0
    dice_weight: float = 1.0
    bce_weight: float = 1.0


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Mean over images of ``1 - (2 sum(p y) + eps) / (sum p + sum y + eps)`` with ``p = sigmoid(logits)``."""
    p = torch.sigmoid(logits).flatten(1)
    y = target.flatten(1)
    return (1.0 - (2.0 * (p * y).sum(1) + eps) / (p.sum(1) + y.sum(1) + eps)).mean()


def hard_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image Dice of ``sigmoid(logits) >= 0.5`` against a binary target; 1.0 when both are empty."""
    pred = (logits >= 0).flatten(1).float()
    y = (target > 0.5).flatten(1).float()
    inter, total = (pred * y).sum(1), pred.sum(1) + y.sum(1)
    return torch.where(total > 0, 2.0 * inter / total.clamp_min(1.0), torch.ones_like(total))


class UniverSegTask:
    """The UniverSeg family behind the Task contract (``waypoint.tasks.base.Task``)."""

    monitor = "val/dice"
    monitor_mode = "max"

    def __init__(self, data: Any, seed: int = 0, **config: Any) -> None:
        check_options(UniverSegConfig, config, "universeg")
        self.cfg = UniverSegConfig(**config)
        size = preset_sizes(PRESETS, self.cfg.scale, vars(self.cfg))
        self.encoder_blocks = list(size["encoder_blocks"])
        self.image_size, self.support_size = int(size["image_size"]), int(size["support_size"])
        side = 2 ** (len(self.encoder_blocks) - 1)
        if self.image_size % side:
            raise ValueError(
                f"model.image_size {self.image_size} must be divisible by {side} for {len(self.encoder_blocks)} encoder blocks"
            )
        if getattr(data, "kind", None) != "segmentation":
            raise ValueError(
                f"model=universeg needs segmentation data (data=segshapes or data=segfolder), got {type(data).__name__}"
            )
        self.data, self.seed = data, int(seed)
        self.net: Optional[UniverSegNet] = None
        self.train_net: Optional[torch.nn.Module] = None  # what training steps run through (the net, or a DDP wrapper)
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.total_steps = 1
        self.device = torch.device("cpu")
        self._baselines: Optional[dict[str, float]] = None  # a function of the held-out data only

    # -- data ---------------------------------------------------------------------------------------
    def train_dataset(self) -> torch.utils.data.Dataset:
        """Training episodes; ``__getitem__`` takes ``(epoch, index)``."""
        return self.data.train_dataset(self.seed, self.image_size, self.support_size)

    def val_dataset(self) -> torch.utils.data.Dataset | None:
        """Held-out episodes."""
        return self.data.val_dataset(self.image_size, self.support_size)

    collate = staticmethod(stack_dicts)

    # -- modules ------------------------------------------------------------------------------------
    def setup(self, total_steps: int, steps_per_epoch: int, device: torch.device, runtime: Any = None) -> None:
        """Build the network (initialised from ``seed``) and Adam; under torchrun, train through ``runtime.wrap``."""
        self.total_steps, self.device = max(1, int(total_steps)), torch.device(device)
        with torch.device("meta"):  # built empty, then initialised from (seed) only: the global RNG is untouched
            net = UniverSegNet(self.encoder_blocks, self.cfg.decoder_blocks)
        net.to_empty(device=torch.device("cpu"))
        net.reset_parameters(sample_generator(self.seed, "universeg-init"))
        self.net = net.to(self.device)
        self.train_net = runtime.wrap(self.net) if runtime is not None else self.net
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The single AdamW optimizer."""
        return [self._opt()]

    def _opt(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            raise RuntimeError("UniverSegTask.setup() must run before training or restoring")
        return self.optimizer

    def _net(self) -> UniverSegNet:
        if self.net is None:
            raise RuntimeError("UniverSegTask.setup() must run before training or restoring")
        return self.net

    def _forward(self, batch: Mapping[str, torch.Tensor], net: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        b = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        return (net or self._net())(b["image"], b["support_images"], b["support_masks"]), b["mask"]

    def loss(self, logits: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted soft Dice + BCE, and their values for logging."""
        dice = soft_dice_loss(logits.float(), mask)
        bce = F.binary_cross_entropy_with_logits(logits.float(), mask)
        total = self.cfg.dice_weight * dice + self.cfg.bce_weight * bce
        return total, {"train/dice_loss": float(dice.detach()), "train/bce": float(bce.detach())}

    # -- hooks --------------------------------------------------------------------------------------
    def training_step(self, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """Segment each query given its support set; return the loss."""
        self._net().train()
        logits, mask = self._forward(batch, self.train_net)
        total, logs = self.loss(logits, mask)
        logs["train/loss"] = float(total.detach())
        logs["train/dice"] = float(hard_dice(logits.detach(), mask).mean())
        return total, logs

    def before_optimizer_step(self, ctx: StepContext) -> None:
        """Set the learning rate for this step (warmup + cosine over the run)."""
        factor = warmup_cosine(ctx.step, ctx.total_steps or self.total_steps, self.cfg.warmup_steps, self.cfg.min_lr_ratio)
        for group in self._opt().param_groups:
            group["lr"] = self.cfg.lr * factor

    def after_optimizer_step(self, ctx: StepContext) -> None:
        """Nothing to do after a step."""

    @torch.no_grad()
    def validate(self, batches: Any, ctx: StepContext) -> dict[str, float]:
        """Mean hard Dice and mean loss over the held-out episodes, beside the two support-only baselines
        (``val/baseline_mean_mask_dice``, ``val/baseline_threshold_dice``; computed once, they need no model)."""
        net = self._net()
        was_training = net.training
        net.eval()
        dices, losses, weights, seen = [], [], [], []
        for batch in batches:
            if self._baselines is None:
                seen.append(batch)
            logits, mask = self._forward(batch)
            dices.append(hard_dice(logits, mask))
            losses.append(float(self.loss(logits, mask)[0]))
            weights.append(mask.shape[0])
        net.train(was_training)
        if not dices:
            raise ValueError("validation received no batches; check data.val_items and data.max_items")
        if self._baselines is None:
            self._baselines = baseline_scores(seen)
        all_dice = torch.cat(dices)
        return {
            "val/dice": float(all_dice.mean()),
            "val/loss": sum(value * w for value, w in zip(losses, weights)) / sum(weights),
            **self._baselines,
        }

    # -- init_from (waypoint.training.init_from) -----------------------------------------------------
    def init_targets(self) -> dict[str, torch.Tensor]:
        """The live network tensors a start from weights may overwrite (``model.<name>``, as in ``state_dict``)."""
        return {f"model.{k}": v for k, v in self._net().state_dict().items()}

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self, optimizer: bool = True) -> dict[str, Any]:
        """``{"model": network weights, "optimizer": AdamW state}`` (no ``optimizer`` with ``optimizer=False``)."""
        state: dict[str, Any] = {"model": self._net().state_dict()}
        if optimizer:
            state["optimizer"] = self._opt().state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore weights and optimizer state saved by ``state_dict`` (a weights-only state keeps a fresh optimizer)."""
        missing = [k for k in ("model",) if k not in state]
        if missing:
            raise ValueError(f"this is not a UniverSeg state: it lacks {missing}")
        try:
            self._net().load_state_dict(dict(state["model"]))
        except RuntimeError as exc:
            raise ValueError(
                f"the saved UniverSeg weights do not fit model.encoder_blocks={self.encoder_blocks} "
                f"(set the same sizes as the saved run): {str(exc).splitlines()[0]}"
            ) from None
        if "optimizer" in state:
            self._opt().load_state_dict(state["optimizer"])

    def parameter_groups(self) -> dict[str, list[str]]:
        """``encoder`` (encoder CrossBlocks) and ``decoder`` (decoder CrossBlocks and the output conv)."""
        keys = [f"model/{k}" for k in self._net().state_dict()]
        return {
            "encoder": [k for k in keys if k.startswith("model/enc.")],
            "decoder": [k for k in keys if not k.startswith("model/enc.")],
        }


CONFIG_SCHEMAS: dict[str, type] = {
    "model/universeg_schema": UniverSegConfig,
    "data/segshapes_schema": SegShapesConfig,
    "data/segfolder_schema": SegFolderConfig,
}
