"""From a composed config to a finished (or resumed, or preempted) run: the body of train.py. It only assembles:
the resume policy is ``resume``, the loop ``trainer``, the factories ``build``.

Order: check the config, build the task, look at the run's store *read-only* (is it finished? does the saved
model/data/seed agree?), take the writer's lease, restore. Only then does anything in the run dir change
(``.hydra/``, ``train.log``, ``metrics.jsonl``, checkpoints), so exit 2 means nothing there changed. Exit codes:
``waypoint.errors``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from waypoint.checkpoint import CheckpointManager, LeaseLostError
from waypoint.checkpoint.manager import SaveReport
from waypoint.checkpoint.refs import backup_root, run_checkpoints
from waypoint.checkpoint.transfer import BackgroundMirror
from waypoint.config import validate
from waypoint.errors import EXIT_ABORTED, EXIT_FAILED, EXIT_NONFINITE, EXIT_OK, EXIT_PREEMPTED, WaypointError
from waypoint.tracking import logs, story
from waypoint.tracking.metrics import MetricsLog
from waypoint.tracking.tensorboard_run import TensorBoardRun
from waypoint.tracking.wandb_run import WandbRun
from waypoint.training import build, init_from, resume
from waypoint.training.build import Schedule
from waypoint.training.evaluate import evaluate
from waypoint.training.rundir import save_hydra_files
from waypoint.training.runtime import DistributedError, Runtime, rank_seed
from waypoint.training.signals import Aborted, StopFlag, listen
from waypoint.training.state import seed_everything
from waypoint.training.trainer import NonFiniteLossError, PeerFailed, Preempted, Trainer
from waypoint.units import human_bytes

log = logging.getLogger(__name__)

#: model options that name another run's checkpoint, resolved here into a task constructor argument
INIT_FROM = {"init_stacks_from": "init_stacks"}


class _PeerStopped(Exception):
    """The coordinator refused or failed while preparing the run (it says why): this rank leaves with its code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _shared(runtime: Runtime, fn: Any) -> Any:
    """Run ``fn`` on the coordinator alone and hand its (picklable) result to every rank; on its error, the other
    ranks leave quietly with the same exit code."""
    if not runtime.distributed:
        return fn()
    outcome: Any = None
    error: BaseException | None = None
    if runtime.is_coordinator:
        try:
            outcome = ("ok", fn())
        except WaypointError as exc:
            error, outcome = exc, ("stop", exc.exit_code)
        except Exception as exc:
            error, outcome = exc, ("stop", EXIT_FAILED)
    outcome = runtime.broadcast_object(outcome, "waiting for rank 0 to prepare the run")
    if error is not None:
        raise error
    if outcome[0] == "stop":
        raise _PeerStopped(int(outcome[1]))
    return outcome[1]


def git_commit() -> str | None:
    """The commit of the code being run, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# ---------------------------------------------------------------------------------------------- entry


def launch(cfg: DictConfig) -> None:
    """Run one job; exits with the codes of ``waypoint.errors``."""
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
    except WaypointError as exc:  # raised before anything in the run dir changed, and nothing does now
        log.error("%s", exc)
        runtime.close()
        return exc.exit_code
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


def _start_runtime(cfg: DictConfig) -> tuple[Runtime, Any, Any]:
    """Device and precision, then the process group the launcher set up (none for one process)."""
    device, autocast, scaler = build.device_and_precision(cfg.hardware)
    hw = cfg.hardware
    runtime = Runtime.start(
        str(hw.get("strategy", "single")), device, timeout_s=float(hw.get("timeout_s", 300.0)), backend=hw.get("backend")
    )
    if not runtime.is_coordinator:  # rank 0 tells the story; the others speak only of their own trouble
        logs.quiet_peer(runtime.rank)
    return runtime, autocast, scaler


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class Prepared:
    """A run ready to train: its trainer, and what the end of the run closes."""

    trainer: Trainer
    metrics: MetricsLog | None
    trackers: tuple[Any, ...] = ()  # W&B, TensorBoard (rank 0): every log row and every commit
    shard_reader: CheckpointManager | None = None  # FSDP, ranks other than 0: the read-only manager of their shards


def _train(prepared: Prepared | Plan, run_dir: Path, flag: StopFlag, runtime: Runtime) -> int:
    if isinstance(prepared, Plan):
        return _finished(prepared, run_dir, flag, runtime)
    trainer, result = prepared.trainer, None
    trainer.flag, code, start, started = flag, EXIT_OK, trainer.progress.step, time.time()
    try:
        code = _fit(trainer, run_dir, flag, runtime)
        if code == EXIT_OK and trainer.manager is not None:
            end, took = trainer.progress.step, story.duration(time.time() - started)
            done = f"{end} steps" + (f" ({end - start} since the resume at step {start})" if start else "") + f" in {took}"
            best = trainer.manager.best()
            result = story.result_line(trainer.meta["config"], trainer.monitor, trainer.monitor_mode, run_dir, best, done)
    finally:
        code = _close(prepared, code)
    if runtime.distributed and code in (EXIT_OK, EXIT_PREEMPTED, EXIT_NONFINITE):
        try:  # every rank leaves once rank 0 committed: torchrun tears the group down when the first rank exits
            runtime.barrier()
        except DistributedError as exc:
            log.error("%s", exc)
            code = code or EXIT_FAILED
    if result is not None and code == EXIT_OK:
        log.info("%s", result)  # the last line of the run
    return code


def _finished(plan: Plan, run_dir: Path, flag: StopFlag, runtime: Runtime) -> int:
    """A finished run started again: the line saying so goes to train.log, and the result line ends the command."""
    if flag.requested:
        log.info("%s received: the run is already finished, nothing to save", flag.name)
    if runtime.is_coordinator:
        logs.attach_file(run_dir)
        with CheckpointManager(plan.store, read_only=True) as mgr:
            best = mgr.best()
        log.info("%s", story.result_line(plan.plain, plan.monitor, plan.mode, run_dir, best, "already finished"))
    return EXIT_OK


def _fit(trainer: Trainer, run_dir: Path, flag: StopFlag, runtime: Runtime) -> int:
    """Train, and turn how training ended into an exit code (every way of ending says so in train.log)."""
    try:
        if flag.requested:  # a signal while starting: nothing was trained since the newest checkpoint
            log.info("%s received before training started: nothing new to save; run the same command again to resume", flag.name)
            return EXIT_PREEMPTED
        trainer.fit()
        if trainer.manager is not None:
            trainer.manager.wait()
        if flag.requested:
            log.info("%s received after the run finished; nothing to save", flag.name)
        return EXIT_OK
    except Preempted as exc:
        log.info("%s", exc)
        return EXIT_PREEMPTED
    except NonFiniteLossError as exc:
        log.error("%s", exc)
        return EXIT_NONFINITE
    except Aborted:
        log.error("aborted by a second Ctrl-C; committed checkpoints are intact")
        return EXIT_ABORTED
    except PeerFailed as exc:  # the failing rank printed its traceback; the emergency save (if any) is logged
        log.error("stopped at step %d: %s failed", trainer.progress.step, exc)
        return EXIT_FAILED
    except (WaypointError, DistributedError) as exc:  # a lost lease, a config error found while training, a dead rank
        log.error("%s", exc)
        return getattr(exc, "exit_code", EXIT_FAILED)
    except Exception:  # the trainer saved an emergency checkpoint
        return _bug(run_dir, f"at step {trainer.progress.step}", runtime)


def _close(prepared: Prepared, code: int) -> int:
    """The end of a run: the backup, the store, the logs (a second Ctrl-C skips the backup)."""
    trainer = prepared.trainer
    if code != EXIT_ABORTED:
        _finish_backup(trainer)
    for manager in (trainer.manager, prepared.shard_reader):
        try:
            if manager is not None:
                manager.close()
        except LeaseLostError as exc:
            log.error("%s", exc)
            code = code or EXIT_FAILED
        except Exception as exc:
            log.error("a background save failed: %s", exc)
            code = code or EXIT_FAILED
    if prepared.metrics is not None:
        prepared.metrics.close()
    for tracker in prepared.trackers:
        tracker.finish(code)
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
        return EXIT_FAILED
    try:
        where = f"; the traceback is in {logs.attach_file(run_dir)}"
    except OSError:  # the run dir cannot be written: the traceback goes to stderr instead
        traceback.print_exc()
        where = ""
    log.exception("unexpected %s %s: %s%s", type(exc).__name__, when, exc, where)
    return EXIT_FAILED


# ---------------------------------------------------------------------------------------------- preparing


@dataclass
class Plan:
    """What the config asks for, built and checked before anything is opened or written."""

    plain: dict
    task: Any
    schedule: Schedule
    store: Path | str  # the run's checkpoints root
    rules: resume.ResumeRules
    monitor: str
    mode: str


def _plan(cfg: DictConfig, run_dir: Path, runtime: Runtime) -> Plan:
    """Build the data and the task on every rank and check what can be checked without touching the run dir."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    seed_everything(rank_seed(int(cfg.seed), runtime.rank))
    task, schedule = build.task_and_schedule(cfg, runtime.world_size, **_init_from(cfg.model))
    monitor, mode = build.monitored_metric(cfg.checkpoint, task.monitor, task.monitor_mode)
    r = cfg.resume
    rules = resume.ResumeRules(
        str(r.mode), plain, bool(r.allow_config_change), runtime.world_size, bool(r.get("allow_world_size_change"))
    )
    store = run_checkpoints(cfg.checkpoint.get("root"), run_dir, Path.cwd())
    return Plan(plain, task, schedule, store, rules, monitor, mode)


def _init_from(model_cfg: DictConfig) -> dict[str, Any]:
    return {arg: init_from.stacks_state(str(model_cfg[key])) for key, arg in INIT_FROM.items() if model_cfg.get(key)}


def _prepare(cfg: DictConfig, run_dir: Path, runtime: Runtime, autocast: Any, scaler: Any) -> Prepared | Plan:
    """Build the run and restore it; its plan alone when it is already finished. Writes nothing until every check passed.
    Rank 0 alone opens the store for writing, picks the checkpoint and writes the run dir; the others restore it read-only."""
    plan = _plan(cfg, run_dir, runtime)
    if _shared(runtime, lambda: resume.finished(plan.store, plan.rules, plan.schedule.total_steps)):
        return plan
    opened = _open(cfg, plan, runtime)  # rank 0 holds the writer's lease from here on
    prepared = Prepared(None, MetricsLog(run_dir) if runtime.is_coordinator else None)  # type: ignore[arg-type]
    try:
        prepared.trainer = _trainer(cfg, plan, opened.get("manager"), runtime, autocast, scaler, prepared.metrics)
        prepared.shard_reader = _shard_reader(cfg, plan, runtime, prepared.trainer)
        resumed = _restore(prepared.trainer, opened, plan, runtime)
        if runtime.is_coordinator:
            _attach(cfg, run_dir, prepared.trainer)  # every check passed: from here on the run dir is this run's
        _announce(cfg, run_dir, plan, prepared.trainer, resumed, opened.get("has_source", False), runtime)
        prepared.trainer._agreed(None, "waiting for every rank to be ready")
    except BaseException:
        for manager in (opened.get("manager"), prepared.shard_reader):
            if manager is not None:
                manager.close()
        raise
    if runtime.is_coordinator:
        prepared.trackers = _trackers(cfg, run_dir, plan, prepared.trainer, resumed)
    return prepared


def _open(cfg: DictConfig, plan: Plan, runtime: Runtime) -> dict[str, Any]:
    """Rank 0 opens the run's store for writing and finds where to resume from; every rank learns whether it
    resumes (``has_source``)."""
    opened: dict[str, Any] = {}

    def open_store() -> bool:
        policy = build.retention_policy(cfg.checkpoint, plan.monitor, plan.mode, plan.schedule.total_steps)
        opened["manager"] = CheckpointManager(plan.store, policy, monitor=plan.monitor, mode=plan.mode, **_store_options(cfg))
        opened["source"] = resume.source(opened["manager"], plan.rules)
        return opened["source"] is not None

    opened["has_source"] = _shared(runtime, open_store)
    return opened


def _store_options(cfg: DictConfig) -> dict[str, Any]:
    """How the run's store writes (compression, parity) and where it repairs from (the backup)."""
    ck = cfg.checkpoint
    backup = str(backup_root(ck.backup_to)) if ck.get("backup_to") else None
    return {"compression": str(ck.compression), "parity": bool(ck.get("parity", False)), "backup": backup}


def _shard_reader(cfg: DictConfig, plan: Plan, runtime: Runtime, trainer: Trainer) -> CheckpointManager | None:
    """FSDP: every rank writes and reads its shards through a manager; ranks other than 0 open the run's store
    read-only (after rank 0 holds its lease)."""
    if not runtime.shards_parameters or runtime.is_coordinator:
        return None
    trainer.shard_manager = CheckpointManager(plan.store, read_only=True, parity=bool(cfg.checkpoint.get("parity", False)))
    return trainer.shard_manager


def _trainer(cfg: DictConfig, plan: Plan, manager: Any, runtime: Runtime, autocast: Any, scaler: Any, metrics: Any) -> Trainer:
    task, s = plan.task, plan.schedule
    task.setup(s.total_steps, s.steps_per_epoch, runtime.device, **({"runtime": runtime} if runtime.distributed else {}))
    meta = {
        "config": {k: plan.plain.get(k) for k in ("model", "data", "trainer", "checkpoint", "hardware", "seed", "name")},
        "config_hash": build.config_hash(plan.plain),
        "git_commit": git_commit(),
        "total_steps": s.total_steps,
        "steps_per_epoch": s.steps_per_epoch,
        "task": type(task).__name__,
        **runtime.describe(),
    }
    triggers = build.save_triggers(cfg.checkpoint, s.steps_per_epoch)
    return Trainer(
        task,
        manager,  # None on ranks other than 0
        triggers,
        s,
        loop=cfg.trainer,
        saving=cfg.checkpoint,
        device=runtime.device,
        metrics=metrics,
        autocast=autocast,
        scaler=scaler,
        meta=meta,
        runtime=runtime,
    )


def _restore(trainer: Trainer, opened: dict[str, Any], plan: Plan, runtime: Runtime) -> tuple[resume.Source, Any] | None:
    """Load the checkpoint to resume from into every rank (rank 0 picks and checks it); None for a fresh start."""
    if not opened["has_source"]:
        return None
    src: resume.Source | None = opened.get("source")
    held: dict[str, Any] = {}

    def pick() -> tuple[str, str, bool]:
        assert src is not None
        if runtime.distributed:  # pick and check it here; every rank loads it below, at the same time
            held["info"] = resume.choose(src, plan.rules)
        else:
            state, held["info"] = resume.restore(src, plan.rules)
            _load(trainer, state, held["info"].name)
        return str(src.manager.root), held["info"].name, src.own

    root, name, own = _shared(runtime, pick)
    if runtime.shards_parameters and own:
        trainer.load_sharded_state(name)
    elif runtime.shards_parameters:  # another run's sharded checkpoint: every rank reads it through its own view
        with CheckpointManager(root, read_only=True) as other:
            trainer.load_sharded_state(name, other)
    elif runtime.distributed:  # loading may rebuild and re-wrap modules (a collective): all ranks together
        with CheckpointManager(root, read_only=True) as reader:
            _load(trainer, reader.restore_with_info(name)[0], name)
    return (src, held["info"]) if runtime.is_coordinator else None


def _load(trainer: Trainer, state: Any, name: str) -> None:
    try:
        trainer.load_state_dict(state)
    except (KeyError, ValueError) as exc:
        log.debug("loading %s failed", name, exc_info=True)
        raise resume.not_resumable(name, exc) from exc


def _attach(cfg: DictConfig, run_dir: Path, trainer: Trainer) -> None:
    """Rank 0, every check passed: the log file, Hydra's files, the config summary, save logging, the backup."""
    logs.attach_file(run_dir)
    hydra = HydraConfig.instance().cfg
    save_hydra_files(run_dir, cfg, hydra, hydra.hydra.overrides.task)
    _log_config(cfg, run_dir)
    trainer.manager.on_commit(_log_save)
    if cfg.checkpoint.get("backup_to"):  # mirrors each commit in the background; a failure never fails training
        trainer.backup = BackgroundMirror(trainer.manager, str(cfg.checkpoint.backup_to))


def _announce(
    cfg: DictConfig, run_dir: Path, plan: Plan, trainer: Trainer, resumed: Any, has_source: bool, runtime: Runtime
) -> None:
    """Say how the run starts (resumed or fresh) and apply ``init_from`` to a fresh one."""
    if resumed is not None:
        src, info = resumed
        if src.own:
            trainer.manager.protect(info.name)
        trainer.metrics.truncate_after(trainer.progress.step)
        where = "" if src.own else f" of {src.manager.root}"
        mode = plan.rules.mode
        why = "the newest checkpoint that verifies, resume=auto" if mode == "auto" else f"resume={mode}"
        p = trainer.progress
        log.info("resuming from %s%s (step %d, epoch %d; %s)", info.name, where, p.step, p.epoch, why)
        src.close()
        if cfg.init_from.ref:
            log.info("init_from=%s is not applied: the run resumes from its own checkpoint", cfg.init_from.ref)
        return
    if has_source:
        return  # a rank other than 0 of a resumed run
    if trainer.metrics is not None and trainer.manager is not None and not trainer.manager.list():
        trainer.metrics.truncate_after(-1)  # rows of an attempt that died before its first checkpoint
    if cfg.init_from.ref:
        report = init_from.init_weights(trainer.task, str(cfg.init_from.ref), strict=bool(cfg.init_from.strict))
        trainer.meta["init_from"] = report.to_json()  # the table is logged by init_weights
    s = plan.schedule
    where = f" on {runtime.world_size} processes ({runtime.strategy})" if runtime.distributed else ""
    steps = f"{s.total_steps} steps ({s.steps_per_epoch} per epoch)"
    log.info("starting %s in %s: %s on %s%s", cfg.name, run_dir, steps, runtime.device, where)


def _trackers(cfg: DictConfig, run_dir: Path, plan: Plan, trainer: Trainer, resumed: Any) -> tuple[Any, ...]:
    """W&B (``logger.wandb``) and TensorBoard (``logger.tensorboard``): every log row and every commit (async ones
    too). A resumed run continues the same tracker run; what the attempt that died logged past the resumed step is
    dropped, as from metrics.jsonl."""
    lg, out = cfg.logger, []
    if lg.wandb:
        out.append(WandbRun(run_dir, lg.project, lg.entity, lg.mode, list(lg.tags), plan.plain, name=run_dir.name))
    if lg.get("tensorboard"):
        out.append(TensorBoardRun(run_dir, trainer.progress.step if resumed is not None else -1))
    manager = trainer.manager
    for tracker in out:
        trainer.on_log.append(tracker.log)
        manager.on_commit(lambda r, t=tracker: t.committed(r.info, manager.checkpoint_files(r.info.name)))
    return tuple(out)


def _log_config(cfg: DictConfig, run_dir: Path) -> None:
    """The config summary at the top of this attempt's part of train.log (the file only)."""
    overrides = list(HydraConfig.get().overrides.task)
    log.debug("run dir %s; command-line overrides: %s", run_dir, " ".join(overrides) or "(none)")
    keys = ("model", "data", "trainer", "checkpoint", "hardware", "resume", "seed", "name")
    log.debug("config:\n%s", OmegaConf.to_yaml({k: cfg[k] for k in keys}, resolve=True).rstrip())


def _log_save(report: SaveReport) -> None:
    info = report.info
    tags = f", tags {','.join(info.tags)}" if info.tags else ""
    how = f"{human_bytes(report.bytes_written)} in {report.seconds:.2f}s, {'blocking' if report.blocking else 'async'}"
    log.info("saved %s (step %d%s): %s", info.name, info.step, tags, how)
    if report.deleted:
        log.info("retention deleted %s", ", ".join(report.deleted))


__all__ = ["launch"]
