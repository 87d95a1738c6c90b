"""Factories from the config groups: device and precision, retention policy, save triggers, data, task."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from waypoint.checkpoint.policy import (
    KeepBest,
    KeepEveryN,
    KeepEvolution,
    KeepLast,
    KeepMilestones,
    KeepTagged,
    RetentionPolicy,
    SaveTriggers,
)
from waypoint.config import ConfigError

log = logging.getLogger(__name__)


def device_and_precision(hw: DictConfig) -> tuple[torch.device, Callable[[], Any], torch.amp.GradScaler | None]:
    """The device, an autocast context factory and a loss scaler (fp16 on CUDA only), with CPU fallback."""
    if hw.num_threads:
        torch.set_num_threads(int(hw.num_threads))
    want, precision = str(hw.device), str(hw.precision)
    cuda = torch.cuda.is_available()
    if want == "cuda" and not cuda:
        log.warning("hardware=gpu asked for CUDA but no GPU is visible; running on the CPU in fp32")
        want, precision = "cpu", "32"
    device = torch.device("cuda" if want in ("cuda", "auto") and cuda else "cpu")
    if hw.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bf16; using fp16 autocast with loss scaling")
        precision = "16"
    if device.type == "cpu" and precision == "16":
        log.warning("fp16 training needs CUDA; using bf16 autocast on the CPU")
        precision = "bf16"
    if precision == "32":
        return device, contextlib.nullcontext, None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    autocast = functools.partial(torch.autocast, device_type=device.type, dtype=dtype)
    scaler = torch.amp.GradScaler("cuda") if precision == "16" else None
    return device, autocast, scaler


def retention_policy(ck: DictConfig, monitor: str, mode: str, total_steps: int) -> RetentionPolicy:
    """Retention pools from the ``checkpoint`` group (none with ``keep_all``); evolution snapshots span ``total_steps``."""
    if ck.keep_all:
        return RetentionPolicy()
    pools: list[Any] = [KeepTagged(frozenset({"pinned"}))]
    if ck.keep_last:
        pools.append(KeepLast(int(ck.keep_last)))
    if ck.keep_best:
        pools.append(KeepBest(int(ck.keep_best), monitor, mode))
    if ck.milestone_fractions or ck.milestone_steps or ck.milestone_epochs:
        pools.append(
            KeepMilestones(
                steps=frozenset(int(s) for s in ck.milestone_steps),
                epochs=frozenset(int(e) for e in ck.milestone_epochs),
                fractions=frozenset(float(f) for f in ck.milestone_fractions),
                total_steps=total_steps,
            )
        )
    if ck.keep_every_n_steps:
        pools.append(KeepEveryN(int(ck.keep_every_n_steps)))
    if ck.get("keep_evolution"):
        pools.append(KeepEvolution(int(ck.keep_evolution), total_steps))
    return RetentionPolicy(tuple(pools))


def save_triggers(ck: DictConfig, steps_per_epoch: int) -> SaveTriggers:
    """Save triggers from the ``checkpoint`` group; milestone epochs become steps."""
    steps = [int(s) for s in ck.milestone_steps] + [int(e) * steps_per_epoch for e in ck.milestone_epochs]
    return SaveTriggers(
        every_n_steps=ck.every_n_steps,
        every_n_epochs=ck.every_n_epochs,
        every_n_minutes=ck.every_n_minutes,
        on_improvement=bool(ck.on_improvement),
        at_end=bool(ck.at_end),
        milestone_fractions=tuple(float(f) for f in ck.milestone_fractions),
        milestone_steps=tuple(steps),
    )


def instantiate(cfg: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` where a component refusing its arguments (a bad value, a bad path) is a ConfigError.

    Constructors validate their configuration, so their ValueError or OSError is the user's input; anything else
    is a bug and keeps its traceback.
    """
    try:
        return hydra_instantiate(cfg, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        if isinstance(cause, (ValueError, OSError)):
            raise ConfigError(str(cause)) from cause
        raise


def build_data(data_cfg: DictConfig) -> tuple[Any, int]:
    """Instantiate the data source; returns it and ``num_workers`` (a trainer setting kept in the data group)."""
    plain = OmegaConf.to_container(data_cfg, resolve=True)
    assert isinstance(plain, dict)
    workers = int(plain.pop("num_workers", 0) or 0)
    return instantiate(plain), workers


def build_task(model_cfg: DictConfig, data: Any, seed: int, **extra: Any) -> Any:
    """Instantiate the model family's task."""
    return instantiate(model_cfg, data=data, seed=seed, _recursive_=False, **extra)


@dataclass(frozen=True)
class Schedule:
    """The run's length and batches, derived when a run starts (from the data and the ``trainer`` group)."""

    total_steps: int
    steps_per_epoch: int
    batch_size: int
    num_workers: int = 0
    seed: int = 0


def task_and_schedule(cfg: DictConfig, world_size: int = 1, **extra: Any) -> tuple[Any, Any]:
    """The task and the run's schedule (steps, batches), checked: a training set smaller than one batch or a batch
    the processes cannot split is refused in one sentence (ConfigError)."""
    data, workers = build_data(cfg.data)
    task = build_task(cfg.model, data, int(cfg.seed), **extra)
    n, batch = len(task.train_dataset()), int(data.batch_size)
    if n // batch < 1:
        raise ConfigError(
            f"the training set has {n} items, fewer than one batch of {batch}; lower data.batch_size or raise data.max_items"
        )
    if batch % world_size:
        raise ConfigError(
            f"data.batch_size={batch} is the global batch and must be divisible by the {world_size} "
            "processes; change data.batch_size or --nproc_per_node"
        )
    limits = [m for m in ((cfg.trainer.max_epochs or 0) * (n // batch), cfg.trainer.max_steps or 0) if m > 0]
    return task, Schedule(min(limits), n // batch, batch, workers, int(cfg.seed))


def config_hash(cfg: dict) -> str:
    """SHA-256 of the run-defining config sections (model, data without num_workers, seed)."""
    data = {k: v for k, v in (cfg.get("data") or {}).items() if k != "num_workers"}
    doc = json.dumps({"model": cfg.get("model"), "data": data, "seed": cfg.get("seed")}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()


#: substrings of metric names where lower is better (the mode a custom ``checkpoint.monitor`` gets by default)
LOWER_IS_BETTER = ("loss", "bpb", "mse", "error", "perplexity")


def monitored_metric(ck: Any, task_monitor: str, task_mode: str) -> tuple[str, str]:
    """(metric, mode) that define ``best``: ``checkpoint.monitor``/``checkpoint.mode``, else the family's own.

    A custom metric without a mode gets ``min`` when its name says lower is better (loss, bpb, ...), else needs one;
    whether it exists is known at the first validation.
    """
    monitor = str(getattr(ck, "monitor", None) or task_monitor)
    mode = getattr(ck, "mode", None)
    if mode is None:
        if monitor == task_monitor:
            mode = task_mode
        elif any(word in monitor.lower() for word in LOWER_IS_BETTER):
            mode = "min"
        else:
            raise ConfigError(
                f"checkpoint.monitor={monitor} needs checkpoint.mode=max or checkpoint.mode=min "
                "(is a higher value better or a lower one?)"
            )
    if mode not in ("max", "min"):
        raise ConfigError(f"checkpoint.mode must be max or min, not '{mode}'")
    return monitor, str(mode)
