"""Structured configs (dataclasses) for train.py, registered in Hydra's ConfigStore.

Every group yaml under ``conf/`` names its schema first in its defaults list (``- /model_dino_schema@_here_``;
schemas live outside the groups, so ``--help`` lists only real options): a misspelt key or a wrong type fails at
start with the key's name. Task modules export ``CONFIG_SCHEMAS`` (``"group/name" -> dataclass``) for their model
and data configs. ``validate()`` checks what the schemas cannot (ranges, keys appended with ``+``); every refusal
of a configuration or input is a ``ConfigError`` naming the key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException, MissingConfigException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from waypoint.errors import EXIT_USAGE, UserError

TASK_MODULES = ("waypoint.tasks.dino", "waypoint.tasks.universeg", "waypoint.tasks.stackwise")


class ConfigError(UserError, ValueError):
    """A configuration value or an input (path, file, checkpoint) that cannot be used; the message names the key
    (exit 2, one sentence, no traceback)."""


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

    enabled: bool = True  # false: the run saves no checkpoint at all (no resume; for overhead measurements)
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
    keep_evolution: Optional[int] = 10  # about this many snapshots spread over the run, kept for evolution reports
    keep_all: bool = False  # no retention at all
    async_save: bool = True  # periodic saves hash and write in the background
    monitor: Optional[str] = None  # metric that defines best and on-improvement saves; null = the model family's own
    mode: Optional[str] = None  # max | min; null = the family's mode for its own metric, min for a *loss metric
    save_optimizer: bool = True  # false: weights and progress only, smaller, and a resume from one is not exact
    root: Optional[str] = None  # null: <run dir>/checkpoints; a dir or fsspec URL (s3://bucket/prefix): <root>/<run>/checkpoints
    backup_to: Optional[str] = None  # a dir or URL: each committed checkpoint is mirrored there in the background
    compression: str = "none"  # none | zstd: byte-grouped zstd for the tensors a save writes (slower; smaller)
    parity: bool = False  # a parity object per pack (+12.5% bytes, ~3 CPU-s/GiB): verify --repair rebuilds damage


@dataclass
class HardwareConfig:
    """Where to run and in which precision."""

    device: str = "cpu"  # cpu | cuda | auto
    precision: str = "32"  # 32 | bf16 | 16 (fp16 with loss scaling, CUDA only)
    num_threads: Optional[int] = None  # torch intra-op threads; null = torch's default
    deterministic: bool = False  # torch.use_deterministic_algorithms (CUDA needs CUBLAS_WORKSPACE_CONFIG)
    strategy: str = "single"  # single | ddp | fsdp (ddp and fsdp run under torchrun, one process per device)
    backend: Optional[str] = None  # process-group backend; null = nccl on CUDA, gloo on the CPU
    timeout_s: float = 300.0  # a collective waiting longer than this (a dead or stalled rank) fails the run


@dataclass
class LoggerConfig:
    """Where metrics go besides metrics.jsonl (always written)."""

    wandb: bool = False
    tensorboard: bool = False  # event files in <run dir>/tensorboard (needs the tensorboard package)
    project: str = "waypoint"
    entity: Optional[str] = None
    mode: str = "offline"  # offline | online | disabled; online only when you ask for it
    tags: list[str] = field(default_factory=list)


@dataclass
class ResumeConfig:
    """``resume=auto|never|<selector or path>`` sets ``mode``; ``resume.allow_config_change=true`` accepts a changed config."""

    mode: str = "auto"
    allow_config_change: bool = False
    allow_world_size_change: bool = False  # resume per-rank state saved at another world size (not an exact resume)


@dataclass
class InitFromConfig:
    """``init_from=REF`` (shorthand for ``init_from.ref=REF``): start a new run from these weights.

    REF: a run/checkpoint reference, a ``.safetensors`` or a foreign ``.pt``; loaded before step 0, never on resume.
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
    """Register the run schema, the group schemas and every task module's schemas (``model/dino_schema`` as
    ``model_dino_schema``)."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    for group, node in (
        ("trainer", TrainerConfig),
        ("checkpoint", CheckpointConfig),
        ("hardware", HardwareConfig),
        ("logger", LoggerConfig),
    ):
        cs.store(name=f"{group}_schema", node=node)
    for module in TASK_MODULES:
        try:
            schemas = importlib.import_module(module).CONFIG_SCHEMAS
        except ModuleNotFoundError as exc:  # a family whose module is absent cannot be selected, the others still work
            if exc.name != module:
                raise
            continue
        for key, node in schemas.items():
            cs.store(name=key.replace("/", "_"), node=node)


#: (key, accepts null, smallest value, largest value or None, what to say); ranges are inclusive
_RANGES: tuple[tuple[str, bool, float, float | None, str], ...] = (
    ("seed", False, 0, 2**32 - 1, "an integer in [0, 2**32 - 1]"),
    ("trainer.max_epochs", True, 1, None, "a positive integer or null"),
    ("trainer.max_steps", True, 1, None, "a positive integer or null"),
    ("trainer.val_every_n_epochs", True, 1, None, "a positive integer or null"),
    ("trainer.val_every_n_steps", True, 1, None, "a positive integer or null"),
    ("trainer.log_every_n_steps", False, 1, None, "a positive integer"),
    ("checkpoint.every_n_steps", True, 1, None, "a positive integer or null"),
    ("checkpoint.every_n_epochs", True, 1, None, "a positive integer or null"),
    ("checkpoint.keep_last", True, 0, None, "an integer >= 0 or null"),
    ("checkpoint.keep_best", True, 0, None, "an integer >= 0 or null"),
    ("checkpoint.keep_every_n_steps", True, 1, None, "a positive integer or null"),
    ("checkpoint.keep_evolution", True, 0, None, "an integer >= 0 or null"),
    ("hardware.num_threads", True, 1, None, "a positive integer or null (torch's default)"),
    ("data.batch_size", False, 1, None, "a positive integer"),
    ("data.num_workers", False, 0, None, "an integer >= 0"),
    ("data.max_items", True, 1, None, "a positive integer or null (all items)"),
)
#: (key, accepts null, what to say) for values that must be strictly positive floats
_POSITIVE: tuple[tuple[str, bool, str], ...] = (
    ("trainer.gradient_clip_val", True, "a positive number or null (no clipping)"),
    ("checkpoint.every_n_minutes", True, "a positive number or null"),
    ("hardware.timeout_s", False, "a positive number of seconds"),
)
_CHOICES = {
    "hardware.device": ("cpu", "cuda", "auto"),
    "hardware.precision": ("32", "bf16", "16"),
    "hardware.strategy": ("single", "ddp", "fsdp"),
    "checkpoint.compression": ("none", "zstd"),
}
_MISSING = object()


def _select(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)


def _unknown_keys(node: DictConfig, path: str = "") -> None:
    """Refuse a key no schema declares: Hydra appends ``+key=value`` even to a structured config."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    known = {f.name for f in dataclasses.fields(schema)}
    for key in node.keys():
        if key not in known:
            raise ConfigError(f"{path}{key} is not a config key; check its spelling (python train.py --cfg job lists every key)")
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _unknown_keys(child, f"{path}{key}.")


def validate(cfg: DictConfig) -> None:
    """Refuse values the schemas accept but a run cannot use, and keys no schema declares (ConfigError naming the
    key); changes nothing."""
    _unknown_keys(cfg)
    for key, nullable, low, high, want in _RANGES:
        value = _select(cfg, key)
        if value is _MISSING or (value is None and nullable):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            raise ConfigError(f"{key} must be {want}, got {value}")
    for key, nullable, want in _POSITIVE:
        value = _select(cfg, key)
        if value is _MISSING or (value is None and nullable):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{key} must be {want}, got {value}")
    for key, choices in _CHOICES.items():
        value = _select(cfg, key)
        if value is not _MISSING and str(value) not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}, got '{value}'")
    for key in ("checkpoint.milestone_steps", "checkpoint.milestone_epochs"):
        bad = [v for v in _select(cfg, key) or () if not isinstance(v, int) or v < 1]
        if bad:
            raise ConfigError(f"{key} must list positive integers, got {bad}")
    bad_fractions = [f for f in _select(cfg, "checkpoint.milestone_fractions") or () if not 0 < float(f) <= 1]
    if bad_fractions:
        raise ConfigError(f"checkpoint.milestone_fractions must lie in (0, 1], got {bad_fractions}")
    if not _select(cfg, "trainer.max_epochs") and not _select(cfg, "trainer.max_steps"):
        raise ConfigError("trainer.max_epochs and trainer.max_steps are both null; set one of them to a positive number")


def describe_hydra_error(exc: BaseException) -> str:
    """One sentence naming the key for an error Hydra raised while composing the config."""
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and "/" in exc.missing_cfg_file:
        group, choice = exc.missing_cfg_file.rsplit("/", 1)
        return f"{group}={choice} is not a config of '{group}'; choose one of {', '.join(exc.options or ())}"
    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else exc
    key = getattr(cause, "full_key", None)
    first = (str(getattr(cause, "msg", None) or cause).strip().splitlines() or [type(cause).__name__])[0]
    if key and isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        return f"{key} is not a config key; check its spelling (python train.py --cfg job lists every key)"
    if key and isinstance(cause, ValidationError):
        return f"{key}: {first[:1].lower()}{first[1:]}"
    return first if not key else f"{key}: {first}"


@contextlib.contextmanager
def hydra_errors_exit_2(full_error: bool = False) -> Iterator[None]:
    """Around ``hydra.main``: a config Hydra cannot compose exits 2 with one sentence (HYDRA_FULL_ERROR is set so
    errors reach this handler); ``full_error`` (the user set it) lets Hydra's full traceback through."""
    if full_error:
        yield
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except (HydraException, OmegaConfBaseException) as exc:
        print(f"error: {describe_hydra_error(exc)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USAGE)
