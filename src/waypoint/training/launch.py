"""From a composed config to a finished (or resumed, or preempted) run: the body of train.py.

Order: check the config, build the task, look at the run dir *read-only* (is it finished? does the saved
model/data/seed agree?), take the writer lock, restore. Only then does anything in the run dir change
(``.hydra/``, ``train.log``, ``metrics.jsonl``, checkpoints), so exit 2 means nothing there changed.
Exit codes: ``waypoint.training.signals``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from waypoint.checkpoint import CheckpointError, CheckpointManager
from waypoint.checkpoint.manager import SaveReport
from waypoint.checkpoint.mirror import BackgroundMirror
from waypoint.checkpoint.refs import open_ref
from waypoint.config import ConfigError, validate
from waypoint.tracking import logs
from waypoint.tracking.metrics import MetricsLog
from waypoint.tracking.wandb_run import WandbRun
from waypoint.training import build, init_from, storage
from waypoint.training.evaluate import evaluate
from waypoint.training.rundir import ConfigChangedError, config_diff, save_hydra_files
from waypoint.training.runtime import DistributedError, LaunchError, Runtime, rank_seed
from waypoint.training.signals import (
    EXIT_ABORTED,
    EXIT_ERROR,
    EXIT_NONFINITE,
    EXIT_OK,
    EXIT_PREEMPTED,
    EXIT_USAGE,
    Aborted,
    StopFlag,
    listen,
)
from waypoint.training.state import seed_everything
from waypoint.training.trainer import (
    WEIGHTS_ONLY,
    LoopConfig,
    MonitorError,
    NonFiniteLossError,
    PeerFailed,
    Preempted,
    Trainer,
)

log = logging.getLogger(__name__)

#: model options that name another run's checkpoint, resolved here into a task constructor argument
INIT_FROM = {"init_stacks_from": "init_stacks"}
#: errors that mean "this configuration or input cannot be used": exit 2, one sentence, nothing changed
USER_ERRORS = (ConfigError, CheckpointError, LaunchError)


class _PeerStopped(Exception):
    """The coordinator refused or failed while preparing the run (it says why): this rank leaves with its code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _shared(runtime: Runtime, fn: Any) -> Any:
    """Run ``fn`` on the coordinator alone and hand its (picklable) result to every rank.

    Its error is raised on the coordinator as usual; the other ranks leave quietly with the same exit code.
    """
    if not runtime.distributed:
        return fn()
    outcome: Any = None
    error: BaseException | None = None
    if runtime.is_coordinator:
        try:
            outcome = ("ok", fn())
        except USER_ERRORS as exc:
            error, outcome = exc, ("stop", EXIT_USAGE)
        except Exception as exc:
            error, outcome = exc, ("stop", EXIT_ERROR)
    outcome = runtime.broadcast_object(outcome, "waiting for rank 0 to prepare the run")
    if error is not None:
        raise error
    if outcome[0] == "stop":
        raise _PeerStopped(int(outcome[1]))
    return outcome[1]


def _start_runtime(cfg: DictConfig) -> tuple[Runtime, Any, Any]:
    """Device and precision, then the process group the launcher set up (none for one process)."""
    device, autocast, scaler = build.device_and_precision(cfg.hardware)
    hw = cfg.hardware
    runtime = Runtime.start(
        str(hw.get("strategy", "single")),
        device,
        timeout_s=float(hw.get("timeout_s", 300.0)),
        backend=hw.get("backend"),
    )
    if not runtime.is_coordinator:  # rank 0 tells the story; the others speak only of their own trouble
        logs.quiet_peer(runtime.rank)
    return runtime, autocast, scaler


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


def _restore_source(manager: CheckpointManager, mode: str, quiet: bool = False) -> tuple[CheckpointManager, str] | None:
    """Which store and selector to resume from, or None for a fresh start."""
    has_any = bool(manager.list())
    if mode == "never":
        if has_any:
            raise ConfigError(
                f"resume=never but {manager.root} already holds checkpoints; run without resume=never to "
                "continue it, or start fresh elsewhere with hydra.run.dir=<new dir> (or delete that directory)"
            )
        return None
    if mode == "auto":
        if manager.latest() is None:
            if has_any and not quiet:
                log.info(
                    "resume=auto: no resumable checkpoint (only damaged or emergency ones); starting fresh. "
                    "Use resume=tag:emergency to continue from an emergency save."
                )
            return None
        return manager, _auto_selector(manager, quiet)
    if Path(mode.split("@")[0]).exists():
        return open_ref(mode)
    return manager, mode


def _auto_selector(manager: CheckpointManager, quiet: bool = False) -> str:
    """``latest``, unless it is weights-only and an older full checkpoint exists: auto prefers an exact resume."""
    latest = manager.latest()
    if latest is None or WEIGHTS_ONLY not in latest.tags or "end" in latest.tags:
        return "latest"
    full = next((i for i in manager.resolve("latest") if WEIGHTS_ONLY not in i.tags), None)
    if full is None:
        return "latest"
    if not quiet:
        log.info(
            "resume=auto: resuming from %s, the newest checkpoint with optimizer state, for an exact resume; the newer "
            "%s holds weights only (resume=latest continues from it instead)",
            full.name,
            latest.name,
        )
    return full.name


def launch(cfg: DictConfig) -> None:
    """Run one job; exits with the codes documented in ``waypoint.training.signals``."""
    flag = listen()
    logs.start()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        code = _launch(cfg, run_dir, flag)
        log.debug("exit code %d", code)
        if code == EXIT_PREEMPTED and flag.requeuer() is not None:
            log.info("%s: the preempt checkpoint is committed; handing over to the launcher to requeue the job", flag.name)
    finally:
        logs.stop()
    if code == EXIT_PREEMPTED:
        flag.hand_over()  # under submitit: requeue the job and exit; otherwise exit 75 below
    if code:
        raise SystemExit(code)


def _launch(cfg: DictConfig, run_dir: Path, flag: StopFlag) -> int:
    runtime = Runtime()
    try:
        validate(cfg)
        if cfg.trainer.get("eval_only"):  # validate one checkpoint of another run; nothing is trained
            evaluate(cfg, run_dir)
            return EXIT_OK
        runtime, autocast, scaler = _start_runtime(cfg)
        prepared = _prepare(cfg, run_dir, runtime, autocast, scaler)
    except _PeerStopped as exc:
        runtime.close()
        return exc.code
    except USER_ERRORS as exc:  # raised before anything in the run dir changed, and nothing does now
        log.error("%s", exc)
        runtime.close()
        return EXIT_USAGE
    except Aborted:
        log.error("aborted by a second Ctrl-C before training started; nothing was changed")
        return EXIT_ABORTED
    except Exception:
        code = _bug(run_dir, "before training started", runtime)
        runtime.close()
        return code
    try:
        return _train(prepared, run_dir, flag, runtime)
    finally:
        runtime.close()


def _train(prepared: Any, run_dir: Path, flag: StopFlag, runtime: Runtime) -> int:
    if prepared is None:
        if flag.requested:
            log.info("%s received: the run is already finished, nothing to save", flag.name)
        return EXIT_OK
    trainer, wandb_run, metrics = prepared
    trainer.flag = flag
    code, started = EXIT_OK, time.time()
    try:
        if flag.requested:  # a signal while starting: nothing was trained since the newest checkpoint
            log.info("%s received before training started: nothing new to save; run the same command again to resume", flag.name)
            code = EXIT_PREEMPTED
        else:
            trainer.fit()
            if trainer.manager is not None:
                trainer.manager.wait()
            log.info("done: %d steps in %.1fs; run dir %s", trainer.progress.step, time.time() - started, run_dir)
            if flag.requested:
                log.info("%s received after the run finished; nothing to save", flag.name)
    except Preempted as exc:
        log.info("%s", exc)
        code = EXIT_PREEMPTED
    except NonFiniteLossError as exc:
        log.error("%s", exc)
        code = EXIT_NONFINITE
    except MonitorError as exc:
        log.error("%s", exc)
        code = EXIT_USAGE
    except Aborted:
        log.error("aborted by a second Ctrl-C; committed checkpoints are intact")
        code = EXIT_ABORTED
    except PeerFailed as exc:  # the failing rank printed its traceback; the emergency save (if any) is logged
        log.error("stopped at step %d: %s failed", trainer.progress.step, exc)
        code = EXIT_ERROR
    except DistributedError as exc:
        log.error("%s", exc)
        code = EXIT_ERROR
    except Exception:  # the trainer saved an emergency checkpoint
        code = _bug(run_dir, f"at step {trainer.progress.step}", runtime)
    finally:
        if code != EXIT_ABORTED:  # a second Ctrl-C leaves at once
            _finish_backup(trainer)
        try:
            if trainer.manager is not None:
                trainer.manager.close()
        except Exception as exc:
            log.error("a background save failed: %s", exc)
            code = code or EXIT_ERROR
        if metrics is not None:
            metrics.close()
        if wandb_run is not None:
            wandb_run.finish(code)
    if runtime.distributed and code in (EXIT_OK, EXIT_PREEMPTED, EXIT_NONFINITE):
        try:  # every rank leaves once rank 0 committed: torchrun tears the group down when the first rank exits
            runtime.barrier()
        except DistributedError as exc:
            log.error("%s", exc)
            code = code or EXIT_ERROR
    return code


def _finish_backup(trainer: Trainer) -> None:
    """The end of the run waits for the backup of its last checkpoint (``checkpoint.backup_to``); never fails the run."""
    mirror = getattr(trainer, "backup", None)
    if mirror is None:
        return
    while trainer.manager.writer.busy:  # the last background save's commit asks the mirror for a pass
        time.sleep(0.05)
    log.info("waiting for the backup to %s", mirror.dest)
    if mirror.finish():
        log.info("backup to %s is up to date", mirror.dest)
    else:
        log.warning("the backup to %s is not complete; `waypoint backup` or the next run completes it", mirror.dest)


def _bug(run_dir: Path, when: str, runtime: Runtime | None = None) -> int:
    """An error that is neither a bad config nor a store error (a bug, most likely): exit 1, traceback in train.log."""
    exc = sys.exc_info()[1]
    if runtime is not None and not runtime.is_coordinator:  # train.log is rank 0's; this rank's goes to stderr
        traceback.print_exc()
        log.error("unexpected %s on rank %d %s: %s", type(exc).__name__, runtime.rank, when, exc)
        return EXIT_ERROR
    try:
        where = f"; the traceback is in {logs.attach_file(run_dir)}"
    except OSError:  # the run dir cannot be written: the traceback goes to stderr instead
        traceback.print_exc()
        where = ""
    log.exception("unexpected %s %s: %s%s", type(exc).__name__, when, exc, where)
    return EXIT_ERROR


def _prepare(
    cfg: DictConfig, run_dir: Path, runtime: Runtime, autocast: Any, scaler: Any
) -> tuple[Trainer, WandbRun | None, MetricsLog | None] | None:
    """Build the run and restore it; None when it is already finished. Writes nothing until every check passed.

    Across ranks: every rank builds the task; rank 0 alone looks at the run dir, takes the writer lock, picks the
    checkpoint to resume and writes ``.hydra``/``train.log``/``metrics.jsonl``; the others restore the checkpoint
    it picked (by name, read-only) and keep no manager and no metrics log.
    """
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    device = runtime.device
    seed_everything(rank_seed(int(cfg.seed), runtime.rank))
    data, workers = build.build_data(cfg.data)
    task = build.build_task(cfg.model, data, int(cfg.seed), **_init_from(cfg.model))
    train_set = task.train_dataset()
    batch_size = int(data.batch_size)
    steps_per_epoch = len(train_set) // batch_size
    if steps_per_epoch < 1:
        raise ConfigError(
            f"the training set has {len(train_set)} items, fewer than one batch of {batch_size}; "
            "lower data.batch_size or raise data.max_items"
        )
    if runtime.shards_parameters and not getattr(task, "shardable", True):
        raise ConfigError(
            f"hardware=fsdp cannot shard {type(task).__name__} (its modules change while it trains); use hardware=ddp"
        )
    if batch_size % runtime.world_size:
        raise ConfigError(
            f"data.batch_size={batch_size} is the global batch and must be divisible by the {runtime.world_size} "
            "processes; change data.batch_size or --nproc_per_node"
        )
    limits = [n for n in ((cfg.trainer.max_epochs or 0) * steps_per_epoch, cfg.trainer.max_steps or 0) if n > 0]
    total = min(limits)
    mode = str(cfg.resume.mode)
    allow_change = bool(cfg.resume.allow_config_change)
    allow_world = bool(cfg.resume.get("allow_world_size_change", False))
    ck_root = storage.checkpoints_root(cfg.checkpoint, run_dir)
    if runtime.shards_parameters and isinstance(ck_root, str):
        raise ConfigError(
            f"hardware=fsdp writes each rank's shards to a filesystem, not to {ck_root}; keep checkpoint.root local "
            "(or on a shared filesystem) and mirror it with checkpoint.backup_to=URL"
        )
    if _shared(
        runtime,
        lambda: _finished_or_refused(ck_root, mode, plain, allow_change, total, runtime.world_size, allow_world),
    ):
        return None
    monitor, monitor_mode = build.monitored_metric(cfg.checkpoint, task.monitor, task.monitor_mode)
    policy = build.retention_policy(cfg.checkpoint, monitor, monitor_mode, total)
    opened: dict[str, Any] = {}

    def open_store() -> bool:
        opened["manager"] = CheckpointManager(
            ck_root, policy, monitor=monitor, mode=monitor_mode, compression=str(cfg.checkpoint.compression)
        )
        opened["source"] = _restore_source(opened["manager"], mode)
        return opened["source"] is not None

    has_source = _shared(runtime, open_store)  # rank 0 holds the writer lock from here on
    manager: CheckpointManager | None = opened.get("manager")
    metrics = MetricsLog(run_dir) if runtime.is_coordinator else None
    try:
        source = opened.get("source")
        task.setup(total, steps_per_epoch, device, **({"runtime": runtime} if runtime.distributed else {}))
        meta = {
            "config": {k: plain.get(k) for k in ("model", "data", "trainer", "checkpoint", "hardware", "seed", "name")},
            "config_hash": build.config_hash(plain),
            "git_commit": git_commit(),
            "total_steps": total,
            "steps_per_epoch": steps_per_epoch,
            "task": type(task).__name__,
            **runtime.describe(),
        }
        trainer = Trainer(
            task,
            manager,  # type: ignore[arg-type]  # None on ranks other than 0
            build.save_triggers(cfg.checkpoint, steps_per_epoch),
            LoopConfig(
                total_steps=total,
                steps_per_epoch=steps_per_epoch,
                batch_size=batch_size,
                num_workers=workers,
                val_every_n_epochs=cfg.trainer.val_every_n_epochs,
                val_every_n_steps=cfg.trainer.val_every_n_steps,
                validate_at_start=cfg.trainer.validate_at_start,
                gradient_clip_val=cfg.trainer.gradient_clip_val,
                log_every_n_steps=cfg.trainer.log_every_n_steps,
                progress_bar=cfg.trainer.progress_bar,
                async_save=cfg.checkpoint.async_save,
                seed=int(cfg.seed),
                monitor=monitor,
                monitor_mode=monitor_mode,
                save_optimizer=bool(cfg.checkpoint.save_optimizer),
                checkpointing=bool(cfg.checkpoint.enabled),
            ),
            device=device,
            metrics=metrics,  # type: ignore[arg-type]
            autocast=autocast,
            scaler=scaler,
            meta=meta,
            runtime=runtime,
        )
        trainer.store_root = ck_root
        resumed = None
        if has_source:
            holder: dict[str, Any] = {}

            def resume_coordinator() -> tuple[str, str]:
                assert source is not None
                if runtime.distributed:  # pick and check it here; every rank loads it below, at the same time
                    holder["resumed"] = _pick(source, plain, allow_change, runtime.world_size, allow_world)
                else:
                    holder["resumed"] = _resume(trainer, source, plain, allow_change, runtime.world_size, allow_world)
                return str(holder["resumed"][0].root), holder["resumed"][1].name

            picked = _shared(runtime, resume_coordinator)
            if runtime.shards_parameters:
                trainer.load_sharded_state(picked[0], picked[1])
            elif runtime.distributed:  # loading may rebuild and re-wrap modules (a collective): all ranks together
                _resume_peer(trainer, picked[0], picked[1])
            if runtime.is_coordinator:
                resumed = holder["resumed"]
        if runtime.is_coordinator:
            # every check passed: from here on the run dir is this run's
            logs.attach_file(run_dir)
            hydra = HydraConfig.instance().cfg
            save_hydra_files(run_dir, cfg, hydra, hydra.hydra.overrides.task)
            _log_config(cfg, run_dir)
            assert manager is not None and metrics is not None
            manager.on_commit(_log_save)
            if cfg.checkpoint.get("backup_to"):  # mirrors each commit in the background; a failure never fails training
                trainer.backup = BackgroundMirror(manager, str(cfg.checkpoint.backup_to))
        if resumed is not None:
            assert manager is not None and metrics is not None
            if resumed[0] is manager:
                manager.protect(resumed[1].name)
            trainer.metrics.truncate_after(trainer.progress.step)
            where = "" if resumed[0] is manager else f" of {resumed[0].root}"
            why = "the newest checkpoint that verifies, resume=auto" if mode == "auto" else f"resume={mode}"
            log.info(
                "resuming from %s%s (step %d, epoch %d; %s)",
                resumed[1].name,
                where,
                trainer.progress.step,
                trainer.progress.epoch,
                why,
            )
            if cfg.init_from.ref:
                log.info("init_from=%s is not applied: the run resumes from its own checkpoint", cfg.init_from.ref)
        elif not has_source:  # a fresh start (on every rank: has_source is rank 0's answer)
            if metrics is not None and manager is not None and not manager.list():
                metrics.truncate_after(-1)  # rows of an attempt that died before its first checkpoint
            if cfg.init_from.ref:
                report = init_from.init_weights(task, str(cfg.init_from.ref), strict=bool(cfg.init_from.strict))
                trainer.meta["init_from"] = report.to_json()  # the table is logged by init_weights
            where = f" on {runtime.world_size} processes ({runtime.strategy})" if runtime.distributed else ""
            log.info(
                "starting %s in %s: %d steps (%d per epoch) on %s%s", cfg.name, run_dir, total, steps_per_epoch, device, where
            )
        trainer._agreed(None, "waiting for every rank to be ready")
    except BaseException:
        if manager is not None:
            manager.close()
        raise
    wandb_run = None
    if cfg.logger.wandb and runtime.is_coordinator:
        assert manager is not None
        wandb_run = WandbRun(
            run_dir, cfg.logger.project, cfg.logger.entity, cfg.logger.mode, list(cfg.logger.tags), plain, name=run_dir.name
        )
        trainer.on_log = wandb_run.log
        run = wandb_run
        mgr = manager
        manager.on_commit(lambda report: run.committed(report.info, mgr.checkpoint_files(report.info.name)))  # async too
    return trainer, wandb_run, metrics


def _pick(
    source: tuple[CheckpointManager, str], plain: dict, allow_change: bool, world_size: int, allow_world: bool
) -> tuple[CheckpointManager, Any]:
    """The checkpoint a multi-process run resumes from (the first the selector names that verifies), checked like
    ``_resume``; every rank then loads it."""
    src, selector = source
    info = _first_sound(src, selector)
    if info is None:
        raise ConfigError(f"no checkpoint that '{selector}' names in {src.root} verifies; choose another with resume=...")
    _check_config(src, info, plain, allow_change)
    _check_world_size(src, info, world_size, allow_world)
    return src, info


def _resume_peer(trainer: Trainer, root: str, name: str) -> None:
    """Every rank restores the checkpoint rank 0 picked (read-only, no lock)."""
    with CheckpointManager(root, read_only=True) as reader:
        state, _ = reader.restore_with_info(name)
    try:
        trainer.load_state_dict(state)
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            f"{name} does not hold a state this run can resume ({type(exc).__name__}: {exc}); "
            "choose another checkpoint with resume=... or start a new run"
        ) from exc


def _finished_or_refused(
    root: Path | str, mode: str, plain: dict, allow_change: bool, total: int, world_size: int = 1, allow_world: bool = False
) -> bool:
    """Look at the run dir read-only, before taking the writer lock: True when the run is already finished;
    ConfigChangedError when the checkpoint it would resume from was trained with another model/data/seed."""
    if isinstance(root, Path) and not root.is_dir():
        return False
    with CheckpointManager(root, read_only=True) as peek:
        source = _restore_source(peek, mode, quiet=True)
        if source is None:
            return False
        try:
            first = _first_sound(*source)
            if first is not None:
                _check_config(source[0], first, plain, allow_change, quiet=True)  # _resume says it, once
                _check_world_size(source[0], first, world_size, allow_world, quiet=True)
        finally:
            if source[0] is not peek:
                source[0].close()
        if first is None:
            return False
        if source[0] is peek and source[1] == "latest" and "end" in first.tags and first.step >= total:
            log.info("already finished: %s is the end of this run (%d steps); nothing to do", first.name, first.step)
            return True
    return False


def _first_sound(manager: CheckpointManager, selector: str) -> Any:
    """The first checkpoint the selector names that verifies (damaged ones are reported at restore)."""
    for info in manager.resolve(selector):
        if not manager.verify_one(info.name):
            return info
    return None


def _check_config(manager: CheckpointManager, info: Any, plain: dict, allow_change: bool, quiet: bool = False) -> None:
    """Refuse a changed model/data/seed with a diff, unless allowed."""
    saved = manager.manifest(info.name).config
    diff = config_diff(saved, plain)
    if diff and not allow_change:
        raise ConfigChangedError(
            f"the model/data/seed config differs from the one {info.name} was trained with; "
            f"start a new run (another hydra.run.dir) or pass resume.allow_config_change=true:\n{diff}"
        )
    if diff and not quiet:
        log.warning("resuming %s with a changed config (resume.allow_config_change=true):\n%s", info.name, diff)


def _check_world_size(manager: CheckpointManager, info: Any, world_size: int, allow: bool, quiet: bool = False) -> None:
    """Refuse to resume per-rank state (every rank's RNG streams) saved by another number of processes, unless allowed."""
    saved = int(manager.manifest(info.name).meta.get("world_size") or 1)
    if saved == world_size:
        return
    if not allow:
        raise ConfigError(
            f"{info.name} was saved by {saved} process(es) and this run has {world_size}: its per-rank RNG streams "
            f"cannot be mapped onto {world_size} ranks; run with --nproc_per_node={saved} (or without torchrun for 1), "
            "or pass resume.allow_world_size_change=true to continue anyway (not an exact resume)"
        )
    if not quiet:
        log.warning(
            "resuming %s, saved by %d process(es), on %d (resume.allow_world_size_change=true): weights, optimizer and "
            "data cursor carry over, ranks without saved RNG streams are seeded afresh; not an exact resume",
            info.name,
            saved,
            world_size,
        )


def _resume(
    trainer: Trainer,
    source: tuple[CheckpointManager, str],
    plain: dict,
    allow_change: bool,
    world_size: int = 1,
    allow_world: bool = False,
) -> tuple[CheckpointManager, Any]:
    """Restore the state ``source`` names into the trainer (damaged checkpoints are skipped with a warning)."""
    src, selector = source
    state, info = src.restore_with_info(selector)
    _check_config(src, info, plain, allow_change)
    _check_world_size(src, info, world_size, allow_world)
    try:
        trainer.load_state_dict(state)
    except (KeyError, ValueError) as exc:
        log.debug("loading %s failed", info.name, exc_info=True)
        raise ConfigError(
            f"{info.name} does not hold a state this run can resume ({type(exc).__name__}: {exc}); "
            "choose another checkpoint with resume=... or start a new run"
        ) from exc
    return src, info


def _log_config(cfg: DictConfig, run_dir: Path) -> None:
    """The config summary at the top of this attempt's part of train.log (the file only)."""
    overrides = list(HydraConfig.get().overrides.task)
    log.debug("run dir %s; command-line overrides: %s", run_dir, " ".join(overrides) or "(none)")
    log.debug(
        "config:\n%s",
        OmegaConf.to_yaml(
            {k: cfg[k] for k in ("model", "data", "trainer", "checkpoint", "hardware", "resume", "seed", "name")}, resolve=True
        ).rstrip(),
    )


def _log_save(report: SaveReport) -> None:
    info = report.info
    log.info(
        "saved %s (step %d%s): %s in %.2fs, %s",
        info.name,
        info.step,
        f", tags {','.join(info.tags)}" if info.tags else "",
        _size(report.bytes_written),
        report.seconds,
        "blocking" if report.blocking else "async",
    )
    if report.deleted:
        log.info("retention deleted %s", ", ".join(report.deleted))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
