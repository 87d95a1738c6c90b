"""From a composed config to a finished (or resumed, or preempted) run: the body of train.py."""
from __future__ import annotations

import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from waypoint.checkpoint import CheckpointError, CheckpointManager
from waypoint.checkpoint import manifest as mf
from waypoint.checkpoint.refs import BadReferenceError, open_ref
from waypoint.tracking.metrics import MetricsLog
from waypoint.tracking.wandb_run import WandbRun
from waypoint.training import build, init_from
from waypoint.training.evaluate import evaluate
from waypoint.training.rundir import ConfigChangedError, config_diff
from waypoint.training.signals import EXIT_ABORTED, EXIT_ERROR, EXIT_NONFINITE, EXIT_PREEMPTED, EXIT_USAGE, Aborted
from waypoint.training.state import seed_everything
from waypoint.training.trainer import WEIGHTS_ONLY, LoopConfig, MonitorError, NonFiniteLossError, Preempted, Trainer

#: model options that name another run's checkpoint, resolved here into a task constructor argument
INIT_FROM = {"init_stacks_from": "init_stacks"}
USER_ERRORS = (ValueError, KeyError, CheckpointError, FileNotFoundError, ConfigChangedError, BadReferenceError)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def git_commit() -> str | None:
    """The commit of the code being run, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _init_from(model_cfg: DictConfig) -> dict[str, Any]:
    extra = {}
    for key, arg in INIT_FROM.items():
        ref = model_cfg.get(key)
        if ref:
            extra[arg] = init_from.stacks_state(str(ref))
    return extra


def _restore_source(manager: CheckpointManager, mode: str) -> tuple[CheckpointManager, str] | None:
    """Which store and selector to resume from, or None for a fresh start."""
    has_any = bool(manager.store.infos)
    if mode == "never":
        if has_any:
            raise ValueError(f"resume=never but {manager.root} already holds checkpoints; run without resume=never to "
                             "continue it, or start fresh elsewhere with hydra.run.dir=<new dir> (or delete that directory)")
        return None
    if mode == "auto":
        if manager.latest() is None:
            if has_any:
                _say("resume=auto: no resumable checkpoint (only damaged or emergency ones); starting fresh. "
                     "Use resume=tag:emergency to continue from an emergency save.")
            return None
        return manager, _auto_selector(manager)
    if Path(mode.split("@")[0]).exists():
        return open_ref(mode)
    return manager, mode


def _auto_selector(manager: CheckpointManager) -> str:
    """``latest``, unless it is weights-only and an older full checkpoint exists: auto prefers an exact resume."""
    latest = manager.latest()
    if latest is None or WEIGHTS_ONLY not in latest.tags or "end" in latest.tags:
        return "latest"
    full = next((i for i in manager.resolve("latest") if WEIGHTS_ONLY not in i.tags), None)
    if full is None:
        return "latest"
    _say(f"resume=auto: resuming from {full.name}, the newest checkpoint with optimizer state, for an exact resume; "
         f"the newer {latest.name} holds weights only (resume=latest continues from it instead)")
    return full.name


def launch(cfg: DictConfig) -> None:
    """Run one job; exits with the codes documented in ``waypoint.training.signals``."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.trainer.get("eval_only"):
        try:
            evaluate(cfg, run_dir)
        except USER_ERRORS as exc:
            _say(f"error: {exc}")
            sys.exit(EXIT_USAGE)
        return
    try:
        trainer, wandb_run, metrics = _prepare(cfg, run_dir)
    except USER_ERRORS as exc:
        _say(f"error: {exc}")
        sys.exit(EXIT_USAGE)
    if trainer is None:
        return
    code, started = 0, time.time()
    try:
        trainer.fit()
        trainer.manager.wait()
        _say(f"done: {trainer.progress.step} steps in {time.time() - started:.1f}s; run dir {run_dir}")
    except Preempted as exc:
        _say(str(exc))
        code = EXIT_PREEMPTED
    except NonFiniteLossError as exc:
        _say(f"error: {exc}")
        code = EXIT_NONFINITE
    except MonitorError as exc:
        _say(f"error: {exc}")
        code = EXIT_USAGE
    except Aborted:
        _say("aborted by a second Ctrl-C; committed checkpoints are intact")
        code = EXIT_ABORTED
    except Exception:
        code = EXIT_ERROR  # the trainer saved an emergency checkpoint; Hydra prints the error
        raise
    finally:
        try:
            trainer.manager.close()
        except Exception as exc:
            _say(f"error: a background save failed: {exc}")
            code = code or EXIT_ERROR
        metrics.close()
        if wandb_run is not None:
            wandb_run.finish(code)
    if code:
        sys.exit(code)


def _prepare(cfg: DictConfig, run_dir: Path) -> tuple[Trainer | None, WandbRun | None, MetricsLog]:
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    device, autocast, scaler = build.device_and_precision(cfg.hardware)
    seed_everything(int(cfg.seed))
    data, workers = build.build_data(cfg.data)
    task = build.build_task(cfg.model, data, int(cfg.seed), **_init_from(cfg.model))
    train_set = task.train_dataset()
    batch_size = int(data.batch_size)
    steps_per_epoch = len(train_set) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"the training set has {len(train_set)} items, fewer than one batch of {batch_size}; "
                         "lower data.batch_size or raise data.max_items")
    limits = [n for n in ((cfg.trainer.max_epochs or 0) * steps_per_epoch, cfg.trainer.max_steps or 0) if n > 0]
    if not limits:
        raise ValueError("set trainer.max_epochs or trainer.max_steps to a positive number")
    total = min(limits)
    monitor, mode = build.monitored_metric(cfg.checkpoint, task.monitor, task.monitor_mode)
    policy = build.retention_policy(cfg.checkpoint, monitor, mode, total)
    manager = CheckpointManager(run_dir / "checkpoints", policy, monitor=monitor, mode=mode)
    metrics = MetricsLog(run_dir)
    try:
        source = _restore_source(manager, str(cfg.resume.mode))
        if source is not None:
            first = _first_sound(*source)
            if first is not None:
                _check_config(first, plain, bool(cfg.resume.allow_config_change))
                if source[0] is manager and source[1] == "latest" and "end" in first.tags and first.step >= total:
                    _say(f"already finished: {first.name} is the end of this run ({first.step} steps); nothing to do")
                    manager.close()
                    return None, None, metrics
        task.setup(total, steps_per_epoch, device)
        meta = {"config": {k: plain.get(k) for k in ("model", "data", "trainer", "checkpoint", "hardware", "seed", "name")},
                "config_hash": build.config_hash(plain), "git_commit": git_commit(), "total_steps": total,
                "steps_per_epoch": steps_per_epoch, "task": type(task).__name__}
        trainer = Trainer(task, manager, build.save_triggers(cfg.checkpoint, steps_per_epoch),
                          LoopConfig(total_steps=total, steps_per_epoch=steps_per_epoch, batch_size=batch_size, num_workers=workers,
                                     val_every_n_epochs=cfg.trainer.val_every_n_epochs, val_every_n_steps=cfg.trainer.val_every_n_steps,
                                     validate_at_start=cfg.trainer.validate_at_start, gradient_clip_val=cfg.trainer.gradient_clip_val,
                                     log_every_n_steps=cfg.trainer.log_every_n_steps, progress_bar=cfg.trainer.progress_bar,
                                     async_save=cfg.checkpoint.async_save, seed=int(cfg.seed), monitor=monitor,
                                     monitor_mode=mode, save_optimizer=bool(cfg.checkpoint.save_optimizer)),
                          device=device, metrics=metrics, autocast=autocast, scaler=scaler, meta=meta)
        if source is not None:
            _resume(trainer, manager, source, plain, bool(cfg.resume.allow_config_change))
            if cfg.init_from.ref:
                _say(f"init_from={cfg.init_from.ref} is not applied: the run resumes from its own checkpoint")
        else:
            if not manager.store.infos:  # rows of an attempt that died before its first checkpoint
                metrics.truncate_after(-1)
            if cfg.init_from.ref:
                report = init_from.init_weights(task, str(cfg.init_from.ref), strict=bool(cfg.init_from.strict))
                trainer.meta["init_from"] = report.to_json()  # the table is logged by init_weights
            _say(f"starting {cfg.name} in {run_dir}: {total} steps ({steps_per_epoch} per epoch) on {device}")
    except BaseException:
        manager.close()
        raise
    wandb_run = None
    if cfg.logger.wandb:
        wandb_run = WandbRun(run_dir, cfg.logger.project, cfg.logger.entity, cfg.logger.mode, list(cfg.logger.tags),
                             plain, name=run_dir.name)
        trainer.on_log = wandb_run.log
        run = wandb_run
        manager.on_commit(lambda info: run.committed(info, manager.checkpoint_files(info.name)))  # async saves too
    return trainer, wandb_run, metrics


def _first_sound(manager: CheckpointManager, selector: str) -> Any:
    """The first checkpoint the selector names that verifies (damaged ones are reported at restore)."""
    for info in manager.resolve(selector):
        if not manager.store.verify(info.name):
            return info
    return None


def _check_config(info: Any, plain: dict, allow_change: bool, quiet: bool = False) -> None:
    """Refuse a changed model/data config with a diff, unless allowed."""
    saved = mf.load(info.path, check=False).get("meta", {}).get("config") or {}
    diff = config_diff(saved, plain)
    if diff and not allow_change:
        raise ConfigChangedError(f"the model/data config differs from the one {info.name} was trained with; "
                                 f"start a new run (another hydra.run.dir) or pass resume.allow_config_change=true:\n{diff}")
    if diff and not quiet:
        _say(f"warning: resuming {info.name} with a changed config (resume.allow_config_change=true):\n{diff}")


def _resume(trainer: Trainer, manager: CheckpointManager, source: tuple[CheckpointManager, str], plain: dict,
            allow_change: bool) -> None:
    src, selector = source
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state, info = src.restore_with_info(selector)
    for w in caught:
        _say(f"warning: {w.message}")
    _check_config(info, plain, allow_change, quiet=True)
    trainer.load_state_dict(state)
    if src is manager:
        manager.protect(info.name)
    trainer.metrics.truncate_after(trainer.progress.step)
    where = "" if src is manager else f" of {src.root}"
    _say(f"resuming from {info.name}{where} (step {trainer.progress.step}, epoch {trainer.progress.epoch})")
