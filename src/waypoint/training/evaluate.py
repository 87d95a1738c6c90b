"""Evaluate one checkpoint on the held-out data without training: ``trainer.eval_only=true``.

``python train.py model=universeg resume=outputs/universeg/default@best trainer.eval_only=true`` restores the
referenced checkpoint from a read-only view of its store (no lock taken, nothing written there), runs the
task's validation once and logs the metrics (console and train.log). The result is appended as one JSON line to ``eval.jsonl``
in this command's own run directory, never in the source run.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from waypoint.checkpoint.policy import SaveTriggers
from waypoint.checkpoint.refs import open_ref
from waypoint.config import ConfigError
from waypoint.tracking.metrics import MetricsLog
from waypoint.training import build
from waypoint.training.rundir import ConfigChangedError, config_diff
from waypoint.training.state import seed_everything
from waypoint.training.trainer import LoopConfig, Trainer

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
    data, workers = build.build_data(cfg.data)
    task = build.build_task(cfg.model, data, int(cfg.seed))
    if task.val_dataset() is None:
        raise EvalConfigError("this data configuration has no held-out split to evaluate on")
    batch_size = int(data.batch_size)
    steps_per_epoch = max(1, len(task.train_dataset()) // batch_size)
    src, selector = open_ref(ref)  # read-only: no lock, nothing written in the source run
    with src, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state, info = src.restore_with_info(selector)
        saved = src.manifest(info.name).meta
    for w in caught:
        log.warning("%s", w.message)
    diff = config_diff(saved.get("config") or {}, plain, sections=("model",))
    if diff and not cfg.resume.allow_config_change:
        raise ConfigChangedError(
            f"the model config differs from the one {info.name} was trained with; pass the "
            f"same model overrides, or resume.allow_config_change=true:\n{diff}"
        )
    total = int(saved.get("total_steps") or max(1, info.step))
    task.setup(total, int(saved.get("steps_per_epoch") or steps_per_epoch), device)
    metrics_log = MetricsLog(run_dir)
    try:
        trainer = Trainer(
            task,
            src,
            SaveTriggers(),
            LoopConfig(
                total_steps=total,
                steps_per_epoch=steps_per_epoch,
                batch_size=batch_size,
                num_workers=workers,
                progress_bar=False,
                seed=int(cfg.seed),
            ),
            device=device,
            metrics=metrics_log,
            autocast=autocast,
            scaler=scaler,
        )
        trainer.load_state_dict(state)
        started = time.time()
        metrics = trainer.evaluate()
    finally:
        metrics_log.close()
    row = {
        "time": time.time(),
        "source": str(src.root.parent),
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
    log.info("evaluated %s of %s (step %d): %s; recorded in %s", info.name, src.root.parent, info.step, text, run_dir / EVAL_FILE)
    return row
