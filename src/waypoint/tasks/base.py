"""The contract between the trainer and a model family.

A task owns its modules, optimizers and everything model-specific, and never touches files; the trainer owns
the loop, counters, RNG streams, data cursor, precision, clipping, signals, logging and checkpointing. A task's
training datasets take ``(epoch, index)`` in ``__getitem__`` and seed any augmentation from ``(seed, epoch,
index)`` only, so data never depends on process history or the number of workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils.data import Dataset


@dataclass(frozen=True)
class StepContext:
    """Where the run is, handed to every task hook."""

    step: int  # optimizer steps completed before this one (0-based index of the current step)
    epoch: int  # current epoch (0-based)
    total_steps: int  # planned optimizer steps for the whole run
    steps_per_epoch: int
    device: torch.device


@runtime_checkable
class Task(Protocol):
    """What every model family provides to the trainer. A task whose modules change while it trains (Stack-Wise) may
    also define ``prepare_restore(tree)``: under FSDP the trainer calls it with the checkpoint's saved state tree
    before a sharded restore, so that every saved tensor has a sharded place to load into."""

    #: name of the validation metric used for ``best`` (e.g. ``"val/knn_top1"``)
    monitor: str
    #: ``"max"`` or ``"min"``
    monitor_mode: str

    def train_dataset(self) -> Dataset:
        """Training items; ``__getitem__`` takes an ``(epoch, index)`` pair."""

    def val_dataset(self) -> Dataset | None:
        """Validation items (``__getitem__`` takes a plain index), or None."""

    def collate(self, items: list[Any]) -> Any:
        """Batch a list of dataset items (must be picklable for worker processes)."""

    def setup(self, total_steps: int, steps_per_epoch: int, device: torch.device, runtime: Any = None) -> None:
        """Build modules and optimizers once the run length is known; called once before fit/restore. Under torchrun
        ``runtime`` is given: training forwards go through ``runtime.wrap(module)`` and batch statistics (DINO's
        centre) are averaged with ``runtime.mean_``; the unwrapped modules keep their state-dict keys."""

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers the trainer steps (may change after ``after_optimizer_step``)."""

    def training_step(self, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward pass: return the scalar loss to back-propagate and metrics to log."""

    def before_optimizer_step(self, ctx: StepContext) -> None:
        """Hook after backward (and unscale), before clipping and ``optimizer.step()``."""

    def after_optimizer_step(self, ctx: StepContext) -> None:
        """Hook after ``optimizer.step()`` (EMA updates, appending a stack, ...)."""

    def validate(self, batches: Any, ctx: StepContext) -> dict[str, float]:
        """Evaluate on an iterable of validation batches; must include ``self.monitor``."""

    def state_dict(self, optimizer: bool = True) -> dict[str, Any]:
        """Everything of the task that must survive a restart (modules, optimizers, extra buffers); without optimizer
        state with ``optimizer=False`` (``checkpoint.save_optimizer=false``)."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from ``state_dict()`` output, rebuilding structure first if it changed (a state without optimizer
        state leaves the optimizers as freshly built)."""

    def parameter_groups(self) -> dict[str, list[str]]:
        """Named groups of state keys for analysis (e.g. ``{"student": [...], "teacher": [...]}``)."""
