"""Evaluate one checkpoint on the held-out data without training: ``trainer.eval_only=true``.

The checkpoint ``resume`` names is restored read-only (nothing written in the source run), validated once, and
the metrics logged and appended to ``eval.jsonl`` in this command's own run directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from waypoint.checkpoint.policy import SaveTriggers
from waypoint.checkpoint.refs import open_ref
from waypoint.config import ConfigError, TrainerConfig
from waypoint.tracking.metrics import MetricsLog
from waypoint.training import build
from waypoint.training.build import Schedule
from waypoint.training.rundir import ConfigChangedError, config_diff
from waypoint.training.state import seed_everything
from waypoint.training.trainer import Trainer

log = logging.getLogger(__name__)

EVAL_FILE = "eval.jsonl"


class EvalConfigError(ConfigError):
    """eval_only was asked for without a checkpoint to evaluate."""


def source_ref(mode: str) -> str:
    """The checkpoint reference to evaluate: ``resume=`` must name another run (``RUN_DIR[@SELECTOR]``)."""
    if mode in ("auto", "never") or not Path(mode.split("@")[0]).exists():
        raise EvalConfigError(
            f"trainer.eval_only=true needs the checkpoint to evaluate as resume=RUN_DIR[@SELECTOR] (an existing "
            f"path, e.g. resume=outputs/universeg/default@best), not resume={mode}"
        )
    return mode


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Restore the checkpoint ``cfg.resume.mode`` names (read-only), validate once, print and record the metrics."""
    ref = source_ref(str(cfg.resume.mode))
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    device, autocast, scaler = build.device_and_precision(cfg.hardware)
    seed_everything(int(cfg.seed))
    task, schedule = build.task_and_schedule(cfg)
    if task.val_dataset() is None:
        raise EvalConfigError("this data configuration has no held-out split to evaluate on")
    src, selector = open_ref(ref)  # read-only: no lock, nothing written in the source run
    with src:
        state, info, saved = _restore(src, selector)
        _check_model(saved, plain, info.name, bool(cfg.resume.allow_config_change))
        total = int(saved.get("total_steps") or max(1, info.step))
        task.setup(total, int(saved.get("steps_per_epoch") or schedule.steps_per_epoch), device)
        started = time.time()
        metrics = _validate(task, src, dataclasses.replace(schedule, total_steps=total), state, run_dir, device, autocast, scaler)
    row = {
        "time": time.time(),
        "source": str(src.root).removesuffix("/checkpoints"),
        "checkpoint": info.name,
        "step": info.step,
        "epoch": info.epoch,
        "digest": info.digest,
        "monitor": task.monitor,
        "metrics": metrics,
        "seconds": round(time.time() - started, 3),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / EVAL_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
    text = ", ".join(f"{k} {v:.6g}" + (" (monitored)" if k == task.monitor else "") for k, v in sorted(metrics.items()))
    log.info("evaluated %s of %s (step %d): %s; recorded in %s", info.name, row["source"], info.step, text, run_dir / EVAL_FILE)
    return row


def _restore(src: Any, selector: str) -> tuple[Any, Any, dict]:
    """The state, its checkpoint and its manifest's meta; a damaged checkpoint skipped is said in the log."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state, info = src.restore_with_info(selector)
        saved = src.manifest(info.name).meta
    for w in caught:
        log.warning("%s", w.message)
    return state, info, saved


def _check_model(saved: dict, plain: dict, name: str, allowed: bool) -> None:
    diff = config_diff(saved.get("config") or {}, plain, sections=("model",))
    if diff and not allowed:
        raise ConfigChangedError(
            f"the model config differs from the one {name} was trained with; pass the "
            f"same model overrides, or resume.allow_config_change=true:\n{diff}"
        )


def _validate(
    task: Any, src: Any, schedule: Schedule, state: Any, run_dir: Path, device: Any, autocast: Any, scaler: Any
) -> dict:
    metrics_log = MetricsLog(run_dir)
    try:
        loop = TrainerConfig(progress_bar=False)
        trainer = Trainer(
            task, src, SaveTriggers(), schedule, loop=loop, device=device, metrics=metrics_log, autocast=autocast, scaler=scaler
        )
        trainer.load_state_dict(state)
        return trainer.evaluate()
    finally:
        metrics_log.close()
