"""Structured configs (dataclasses) for train.py, registered in Hydra's ConfigStore.

Every group yaml under ``conf/`` names its schema first in its defaults list, so a misspelt key or a wrong
type fails at start with the key's name. Task modules export ``CONFIG_SCHEMAS`` (``"group/name" -> dataclass``)
for their model and data configs; ``register()`` collects them.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

TASK_MODULES = ("waypoint.tasks.dino", "waypoint.tasks.universeg", "waypoint.tasks.stackwise")


@dataclass
class TrainerConfig:
    """How long to train and how often to validate and log."""

    max_epochs: Optional[int] = 10
    max_steps: Optional[int] = None  # the run ends at whichever of max_epochs / max_steps comes first
    val_every_n_epochs: Optional[int] = 1
    val_every_n_steps: Optional[int] = None
    validate_at_start: bool = True  # measure the untrained model once (step 0) for comparison
    gradient_clip_val: Optional[float] = 3.0  # max global grad norm; null disables clipping
    log_every_n_steps: int = 10
    progress_bar: bool = True
    eval_only: bool = False  # validate the checkpoint resume=RUN_DIR@SELECTOR names once; train nothing, write nothing there


@dataclass
class CheckpointConfig:
    """When to save (triggers) and what to keep (retention pools); a checkpoint survives if any pool keeps it."""

    every_n_steps: Optional[int] = None
    every_n_epochs: Optional[int] = 1
    every_n_minutes: Optional[float] = None
    on_improvement: bool = True  # save when the monitored metric improves
    at_end: bool = True
    milestone_fractions: list[float] = field(default_factory=list)  # of the planned run, e.g. [0.25, 0.5, 0.75, 1.0]
    milestone_steps: list[int] = field(default_factory=list)
    milestone_epochs: list[int] = field(default_factory=list)
    keep_last: Optional[int] = 3
    keep_best: Optional[int] = 1
    keep_every_n_steps: Optional[int] = None  # permanent
    keep_all: bool = False  # no retention at all
    async_save: bool = True  # periodic saves hash and write in the background
    monitor: Optional[str] = None  # metric that defines best and on-improvement saves; null = the model family's own
    mode: Optional[str] = None  # max | min; null = the family's mode for its own metric, min for a *loss metric
    save_optimizer: bool = True  # false: weights and progress only, smaller, and a resume from one is not exact


@dataclass
class HardwareConfig:
    """Where to run and in which precision."""

    device: str = "cpu"  # cpu | cuda | auto
    precision: str = "32"  # 32 | bf16 | 16 (fp16 with loss scaling, CUDA only)
    num_threads: Optional[int] = None  # torch intra-op threads; null = torch's default
    deterministic: bool = False  # torch.use_deterministic_algorithms (CUDA needs CUBLAS_WORKSPACE_CONFIG)


@dataclass
class LoggerConfig:
    """Where metrics go besides metrics.jsonl (always written)."""

    wandb: bool = False
    project: str = "waypoint"
    entity: Optional[str] = None
    mode: str = "offline"  # offline | online | disabled; online only when you ask for it
    tags: list[str] = field(default_factory=list)


@dataclass
class ResumeConfig:
    """``resume=auto|never|<selector or path>`` sets ``mode``; ``resume.allow_config_change=true`` accepts a changed config."""

    mode: str = "auto"
    allow_config_change: bool = False


@dataclass
class InitFromConfig:
    """``init_from=REF`` (shorthand for ``init_from.ref=REF``): start a new run from these weights.

    REF: a Waypoint run/checkpoint reference, an exported ``.safetensors`` or a foreign ``.pt/.pth/.ckpt``.
    Matching tensors are loaded before step 0 (not when the run resumes); ``strict`` refuses any mismatch.
    """

    ref: Optional[str] = None
    strict: bool = False


@dataclass
class RunConfig:
    """The top-level config of train.py."""

    model: Any = MISSING
    data: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)
    init_from: InitFromConfig = field(default_factory=InitFromConfig)
    seed: int = 0
    name: str = "run"  # the experiment name: first part of the run directory


def register() -> None:
    """Register the run schema, the group schemas and every task module's schemas."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    for group, node in (("trainer", TrainerConfig), ("checkpoint", CheckpointConfig),
                        ("hardware", HardwareConfig), ("logger", LoggerConfig)):
        cs.store(group=group, name=f"{group}_schema", node=node)
    for module in TASK_MODULES:
        try:
            schemas = importlib.import_module(module).CONFIG_SCHEMAS
        except ModuleNotFoundError as exc:  # a family whose module is absent cannot be selected, the others still work
            if exc.name != module:
                raise
            continue
        for key, node in schemas.items():
            group, name = key.rsplit("/", 1)
            cs.store(group=group, name=name, node=node)
