"""The training loop: steps, epochs, validation, save triggers, signals and emergency saves.

The trainer never knows which model family it runs (``waypoint.tasks.base.Task``). Order at each step
boundary: optimizer step -> log -> validate if due -> save if a trigger fires -> service a stop signal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch.utils.data import DataLoader

from waypoint.analysis.fmt import num
from waypoint.checkpoint import CheckpointManager, LeaseLostError
from waypoint.checkpoint.policy import SaveTriggers, TriggerState
from waypoint.config import CheckpointConfig, ConfigError, TrainerConfig
from waypoint.data.sampler import EpochBatchSampler
from waypoint.tasks.base import StepContext, Task
from waypoint.tracking.metrics import MetricsLog
from waypoint.tracking.progress import ProgressBar
from waypoint.tracking.story import EpochMeans
from waypoint.training.build import Schedule, monitored_metric
from waypoint.training.runtime import DistributedError, Runtime, rank_seed
from waypoint.training.signals import StopFlag
from waypoint.training.state import Progress, rng_state, seed_everything, set_rng_state

log = logging.getLogger(__name__)

#: the stored tag of a checkpoint saved with ``checkpoint.save_optimizer=false``
WEIGHTS_ONLY = "weights_only"


class Preempted(Exception):
    """A stop signal was serviced: a ``preempt`` checkpoint was saved."""

    def __init__(self, signal_name: str, step: int, checkpoint: str | None) -> None:
        super().__init__(
            f"{signal_name} received: saved checkpoint {checkpoint} at step {step}; run the same command again to resume"
            if checkpoint is not None
            else f"{signal_name} received at step {step}; no checkpoint was saved (checkpoint.enabled=false)"
        )
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint


class NonFiniteLossError(Exception):
    """The loss became NaN or infinite; nothing of that step was applied or saved."""


class MonitorError(ConfigError):
    """The monitored metric (``checkpoint.monitor``) is not among the metrics validation returns: a config error."""


class _StopInValidation(Exception):
    pass


class PeerFailed(Exception):
    """Another rank raised an error at this step boundary (its own output has the traceback)."""


class Trainer:
    """Fits a task, saving through a CheckpointManager; resumable at any step boundary."""

    def __init__(
        self,
        task: Task,
        manager: CheckpointManager,
        triggers: SaveTriggers,
        schedule: Schedule,
        *,
        loop: TrainerConfig | None = None,
        saving: CheckpointConfig | None = None,
        device: torch.device,
        metrics: MetricsLog,
        autocast: Callable[[], Any] = nullcontext,
        scaler: torch.amp.GradScaler | None = None,
        meta: Mapping[str, Any] | None = None,
        on_log: Sequence[Callable[[Mapping[str, Any]], None]] = (),
        runtime: Runtime | None = None,
    ) -> None:
        # on a rank other than the coordinator ``manager`` and ``metrics`` are None: rank 0 alone logs and commits
        self.runtime = runtime or Runtime(device=device)
        self.task, self.manager, self.triggers, self.schedule = task, manager, triggers, schedule
        self.loop, self.saving = loop or TrainerConfig(), saving or CheckpointConfig()
        self.device, self.metrics, self.autocast, self.scaler = device, metrics, autocast, scaler
        self.meta = dict(meta or {})
        self.on_log = list(on_log)  # trackers (W&B, TensorBoard): every logged row
        self.epoch_means = EpochMeans()
        self.progress = Progress()
        self.trigger_state = TriggerState(last_save_step=-1, last_save_time=time.time(), best_value=None)
        self.flag = StopFlag()
        self.train_set = task.train_dataset()
        self.val_set = task.val_dataset()
        self.last_val: dict[str, float] = {}
        self.last_train: dict[str, float] = {}
        self.last_val_step = self.last_train_step = -1  # the step each was measured at
        self.monitor, self.monitor_mode = monitored_metric(self.saving, task.monitor, task.monitor_mode)
        self._rng_before_val: dict[str, Any] | None = None
        self.view: Any = None
        # FSDP: the manager this rank writes its shards through (rank 0's own; a read-only one over the same root elsewhere)
        self.shard_manager: CheckpointManager | None = manager
        self._now, self._stop = time.time(), False  # the agreed clock and stop decision of the last step boundary
        self._shared_failure = False  # every rank knows of the failure being handled (so all can join a save)

    # ------------------------------------------------------------------ state
    def state_dict(self, rng: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The whole training state: task, data cursor and counters, RNG streams, loss scaler (no optimizer state,
        and ``weights_only`` set, with ``save_optimizer=False``)."""
        mine = dict(rng or rng_state())
        if self.runtime.shards_parameters:  # every rank holds a part of the state: every rank builds all of it
            streams: list[Any] | None = self.runtime.all_gather_object(mine, "gathering every rank's RNG streams")
        else:
            streams = self.runtime.gather_object(mine, "gathering every rank's RNG streams")
        if streams is None:  # not the coordinator: it writes the (replicated) state once
            return {}
        task_state = self.task.state_dict() if self.saving.save_optimizer else self.task.state_dict(optimizer=False)
        state: dict[str, Any] = {"task": task_state, "progress": self.progress.to_state(), "rng": streams[0]}
        if len(streams) > 1:
            state["rank_rng"] = streams[1:]  # ranks 1..N-1, in order
        if not self.saving.save_optimizer:
            state["weights_only"] = True
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state saved by ``state_dict`` (the task must be set up)."""
        if state.get("weights_only"):
            log.warning(
                "this checkpoint was saved without optimizer state (checkpoint.save_optimizer=false): the "
                "optimizer restarts from scratch, so this resume is not exact"
            )
        self.task.load_state_dict(state["task"])
        self.progress = Progress.from_state(state["progress"])
        self.trigger_state = TriggerState(self.progress.step, time.time(), self.progress.best_value)
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self._set_rank_rng(state)

    def load_sharded_state(self, name: str, manager: CheckpointManager | None = None) -> None:
        """Collective: restore checkpoint ``name`` (of this run's store, or of ``manager``'s) into this rank's shards
        (DCP reshards as needed). A task whose modules change while it trains (``prepare_restore``) first builds the
        structure the saved state describes."""
        source = manager or self.shard_manager
        assert source is not None
        prepare = getattr(self.task, "prepare_restore", None)
        if prepare is not None:
            prepare(source.state_tree(name)["task"])
        for opt in self.task.optimizers():  # the optimizer state must exist (sharded like its parameter) to load into
            self.runtime.init_optimizer_state(opt)
        self.load_state_dict(source.restore_sharded(self.state_dict(), name)[0])

    def _set_rank_rng(self, state: Mapping[str, Any]) -> None:
        """This rank's saved streams; a rank the checkpoint has none for (another world size) is seeded afresh."""
        rank = self.runtime.rank
        if rank == 0:
            set_rng_state(state["rng"])
            return
        saved = list(state.get("rank_rng") or [])
        if rank - 1 < len(saved):
            set_rng_state(saved[rank - 1])
        else:
            seed_everything(rank_seed(self.schedule.seed, rank))

    def ctx(self) -> StepContext:
        p = self.progress
        return StepContext(p.step, p.epoch, self.schedule.total_steps, self.schedule.steps_per_epoch, self.device)

    # ------------------------------------------------------------------ data
    def _loader(self, dataset: Any, batch_sampler: Any = None, batch_size: int | None = None) -> DataLoader:
        workers = self.schedule.num_workers
        sizing = {"batch_sampler": batch_sampler} if batch_sampler is not None else {"batch_size": batch_size}
        return DataLoader(
            dataset,
            **sizing,
            num_workers=workers,
            collate_fn=self.task.collate,
            generator=torch.Generator(),
            persistent_workers=False,
            pin_memory=False,
            prefetch_factor=2 if workers else None,
        )

    def _train_batches(self) -> DataLoader:
        p, s, rt = self.progress, self.schedule, self.runtime
        sampler = EpochBatchSampler(
            len(self.train_set), s.batch_size, s.seed, p.epoch, p.batch_in_epoch, rank=rt.rank, world_size=rt.world_size
        )
        return self._loader(self.train_set, batch_sampler=sampler)

    def _val_batches(self) -> Iterator[Any]:
        collective = self.runtime.shards_parameters  # every rank runs validation in step: agree on a stop per batch
        for batch in self._loader(self.val_set, batch_size=self.schedule.batch_size):
            stop = self.runtime.any(self.flag.requested, "agreeing on a stop") if collective else self.flag.requested
            if stop:
                raise _StopInValidation()
            yield batch

    # ------------------------------------------------------------------ loop
    def fit(self) -> None:
        """Train until ``total_steps``; an unexpected error first saves an ``emergency`` checkpoint, then propagates."""
        try:
            self._fit()
        except (Preempted, NonFiniteLossError, LeaseLostError):  # a writer that lost its lease saves nothing more
            raise
        except Exception as exc:
            if (isinstance(exc, MonitorError) and self.progress.step == 0) or not self.saving.enabled:
                raise  # a config error before any training, or a run that saves nothing
            if isinstance(exc, DistributedError):  # the ranks cannot agree any more: no emergency save is possible
                log.error("no emergency checkpoint: %s", exc)
                raise
            if self.runtime.distributed and not self._shared_failure:
                # only this rank knows (e.g. its data loader failed): the others wait in a collective, so a save
                # (itself collective) could not match theirs; leave at once, torchrun stops the others
                log.error("no emergency checkpoint: rank %d failed where the other ranks cannot join a save", self.runtime.rank)
                raise
            try:
                info = self.emergency_save()
                if info is not None:
                    what = type(exc).__name__ if not isinstance(exc, PeerFailed) else f"an error on {exc}"
                    msg = "%s at step %d: saved emergency checkpoint %s (resume=tag:emergency continues from it)"
                    log.error(msg, what, self.progress.step, info.name)
            except Exception as save_exc:
                log.error("the emergency save failed too: %s", save_exc)
            raise

    def _fit(self) -> None:
        p = self.progress
        self._now = time.time()
        loop, s = self.loop, self.schedule
        epochs = -(-s.total_steps // s.steps_per_epoch)
        self.view = ProgressBar(
            s.total_steps, p.step, epochs, loop.progress_bar, loop.log_every_n_steps, self.runtime.is_coordinator
        )
        try:
            with self.flag:
                if p.pending_validation or (p.step == 0 and self.loop.validate_at_start):
                    self._validate_and_maybe_save(
                        epoch_end=p.step > 0 and p.batch_in_epoch == 0, is_end=p.step >= self.schedule.total_steps
                    )
                while p.step < s.total_steps:
                    for batch in self._train_batches():
                        self._train_step(batch)
                        epoch_end = p.batch_in_epoch >= s.steps_per_epoch
                        if epoch_end:
                            p.epoch, p.batch_in_epoch = p.epoch + 1, 0
                        if epoch_end or p.step >= s.total_steps:  # an epoch's means, or those of the last one begun
                            log.info("%s", self.epoch_means.line(p.epoch + (not epoch_end), epochs, p.step))
                        self._after_step(epoch_end)
                        if p.step >= s.total_steps:
                            break
                    else:
                        if p.batch_in_epoch:  # the loader ended early (never with drop_last), be safe
                            p.epoch, p.batch_in_epoch = p.epoch + 1, 0
        finally:
            self.view.close()

    def _agreed(self, error: BaseException | None, what: str) -> None:
        """Every rank learns whether any rank failed in the phase just run: the failed one re-raises, the others stop."""
        if not self.runtime.distributed:
            if error is not None:
                raise error
            return
        sums = self.runtime.all_sum([float(self.runtime.rank + 1) if error is not None else 0.0], what)
        self._shared_failure = sums[0] > 0
        if error is not None:
            raise error
        if sums[0] > 0:
            raise PeerFailed(f"another rank (rank sum {int(sums[0]) - 1}) at step {self.progress.step}")

    def _train_step(self, batch: Any) -> None:
        p, ctx = self.progress, self.ctx()
        optimizers = self.task.optimizers()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        error: BaseException | None = None
        try:
            with self.autocast():
                loss, logs = self.task.training_step(batch, ctx)
            nonfinite = not bool(torch.isfinite(loss.detach()).all())
        except Exception as exc:  # every rank must hear of it before the collective backward pass
            error, nonfinite = exc, False
        self._check_loss(error, nonfinite, loss if error is None else None)
        logs = self._optimizer_step(loss, logs, optimizers, ctx)
        p.step, p.batch_in_epoch = p.step + 1, p.batch_in_epoch + 1
        self.last_train, self.last_train_step = {k: float(v) for k, v in logs.items()}, p.step
        lr = optimizers[0].param_groups[0].get("lr") if optimizers else None
        if lr is not None:
            self.last_train.setdefault("train/lr", float(lr))
        self._agree_after_step()
        self.epoch_means.add(self.last_train)
        if p.step % max(1, self.loop.log_every_n_steps) == 0 or p.step == self.schedule.total_steps:
            self._log({"epoch": p.epoch, **self.last_train})
        assert self.view is not None
        self.view.update(p.step, p.epoch, self.last_train)

    def _check_loss(self, error: BaseException | None, nonfinite: bool, loss: Any) -> None:
        """Every rank learns whether any rank's forward pass failed or gave a non-finite loss; then all stop."""
        p, distributed = self.progress, self.runtime.distributed
        bad_rank = nonfinite
        if distributed:
            flags = self.runtime.all_sum([float(error is not None), float(nonfinite)], "agreeing on the loss before backward")
            self._shared_failure = flags[0] > 0
            if error is None and flags[0] > 0:
                raise PeerFailed(f"another rank at step {p.step + 1}")
            bad_rank = flags[1] > 0
        if error is not None:
            raise error
        if bad_rank:
            value = float(loss.detach()) if nonfinite else float("nan")
            where = "" if not distributed else (" on this rank" if nonfinite else " on another rank")
            raise NonFiniteLossError(
                f"the loss became {value}{where} at step {p.step + 1} (epoch {p.epoch}); "
                f"the step was not applied; {self._where_a_rerun_starts()}. "
                "Lower model.lr or set trainer.gradient_clip_val, then run the same command again."
            )

    def _optimizer_step(self, loss: Any, logs: Mapping[str, Any], optimizers: Sequence[Any], ctx: StepContext) -> dict:
        """Backward, clipping (the norm joins the logs), the optimizer (and loss scaler) step; the logs."""
        scaler = self.scaler
        if scaler is not None:
            scaler.scale(loss).backward()
            for opt in optimizers:
                scaler.unscale_(opt)
        else:
            loss.backward()
        self.task.before_optimizer_step(ctx)
        logs = dict(logs)
        if self.loop.gradient_clip_val:
            params = [q for opt in optimizers for g in opt.param_groups for q in g["params"] if q.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, self.loop.gradient_clip_val)
            logs["train/grad_norm"] = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # DTensor (FSDP)
        for opt in optimizers:
            scaler.step(opt) if scaler is not None else opt.step()
        if scaler is not None:
            scaler.update()
        self.task.after_optimizer_step(ctx)
        return logs

    def _agree_after_step(self) -> None:
        """One all-reduce per step: the train metrics averaged over ranks, any rank's stop signal, the coordinator's
        clock (time-based save triggers fire on every rank at once). A world of one keeps its own values."""
        self._now = time.time()
        self._stop = self.flag.requested
        rt = self.runtime
        if not rt.distributed:
            return
        keys = sorted(self.last_train)
        sums = rt.all_sum(
            [1.0 if self._stop else 0.0, self._now if rt.is_coordinator else 0.0, *(self.last_train[k] for k in keys)],
            "the step agreement",
        )
        self._stop, self._now = sums[0] > 0, sums[1]
        self.last_train = {k: v / rt.world_size for k, v in zip(keys, sums[2:])}

    def _after_step(self, epoch_end: bool) -> None:
        p, c = self.progress, self.loop
        is_end = p.step >= self.schedule.total_steps
        due_val = (
            is_end
            or (c.val_every_n_steps and p.step % c.val_every_n_steps == 0)
            or (epoch_end and c.val_every_n_epochs and p.epoch % c.val_every_n_epochs == 0)
        )
        if due_val and self.val_set is not None:
            self._validate_and_maybe_save(epoch_end, is_end=is_end)
        else:
            self._maybe_save(epoch_end, is_end, monitored=None)
        if self._stop or (self.flag.requested and not self.runtime.distributed):
            self._preempt(rng=None)

    def evaluate(self) -> dict[str, float]:
        """Validate the current state once: no training step, no save, no log row (``trainer.eval_only``)."""
        if self.val_set is None:
            raise ValueError(f"{type(self.task).__name__} has no validation data to evaluate on")
        with torch.no_grad():
            metrics = self.task.validate(self._val_batches(), self.ctx())
        return {k: float(v) for k, v in metrics.items()}

    def _validate_and_maybe_save(self, epoch_end: bool, is_end: bool = False) -> None:
        p = self.progress
        if self.val_set is None:
            p.pending_validation = False
            return
        self._rng_before_val = rng_state()
        try:
            metrics = self._run_validation()
        except _StopInValidation:
            p.pending_validation = True
            self._preempt(rng=self._rng_before_val)
        p.pending_validation = False
        self.last_val, self.last_val_step = {k: float(v) for k, v in metrics.items()}, p.step
        if self.monitor not in self.last_val:
            raise MonitorError(
                f"checkpoint.monitor={self.monitor} is not a metric this model's validation reports; "
                f"choose one of {', '.join(sorted(self.last_val)) or '(none)'}"
            )
        self._log({"epoch": p.epoch, **self.last_val})
        log.info(
            "validation at step %d (epoch %d): %s", p.step, p.epoch, ", ".join(f"{k} {num(v)}" for k, v in self.last_val.items())
        )
        if p.step > 0:
            self._maybe_save(epoch_end, is_end, monitored=self.last_val[self.monitor])
        else:
            self.trigger_state = self.triggers.after_validation(
                self.trigger_state, self.last_val[self.monitor], self.monitor_mode
            )
            p.best_value = self.trigger_state.best_value

    def _run_validation(self) -> dict[str, float]:
        """The task's validation over the whole held-out set, once: on the coordinator alone, shared with every rank
        (so each item counts once), unless parameters are sharded (FSDP: every rank runs it in step, rank 0's is kept)."""
        rt = self.runtime
        if not rt.distributed or rt.shards_parameters:
            return self.task.validate(self._val_batches(), self.ctx())
        outcome: Any = None
        error: BaseException | None = None
        if rt.is_coordinator:
            try:
                outcome = ("ok", self.task.validate(self._val_batches(), self.ctx()))
            except _StopInValidation:
                outcome = ("stop", None)
            except Exception as exc:
                error, outcome = exc, ("error", f"{type(exc).__name__}: {exc}")
        outcome = rt.broadcast_object(outcome, "sharing the validation result")
        if outcome[0] == "stop":
            raise _StopInValidation()
        if outcome[0] == "error":
            self._shared_failure = True
            if error is not None:
                raise error
            raise PeerFailed(f"rank 0 in validation ({outcome[1]})")
        return {k: float(v) for k, v in outcome[1].items()}

    def _maybe_save(self, epoch_end: bool, is_end: bool, monitored: float | None) -> None:
        p = self.progress
        reasons = self.triggers.due(
            self.trigger_state,
            step=p.step,
            total_steps=self.schedule.total_steps,
            now=self._now,
            epoch_end=epoch_end,
            epochs_done=p.epoch,
            is_end=is_end,
            monitored=monitored,
            mode=self.monitor_mode,
        )
        if monitored is not None:
            self.trigger_state = self.triggers.after_validation(self.trigger_state, monitored, self.monitor_mode)
            p.best_value = self.trigger_state.best_value
        if reasons:
            tags = tuple(t for t in ("milestone", "end") if t in reasons)
            self.save(tags, blocking=is_end or not self.saving.async_save)

    def save(self, tags: tuple[str, ...], blocking: bool, rng: Mapping[str, Any] | None = None) -> Any:
        """Save the training state now, with the metrics measured at this step only (so a checkpoint never carries,
        and cannot become ``best`` with, an earlier checkpoint's score)."""
        if not self.saving.enabled:
            return None
        p = self.progress
        metrics = {
            **(self.last_train if self.last_train_step == p.step else {}),
            **(self.last_val if self.last_val_step == p.step else {}),
        }
        if not self.saving.save_optimizer:
            tags = (*tags, WEIGHTS_ONLY)
        state = self.state_dict(rng)
        info, error = None, None
        if self.runtime.shards_parameters:  # collective: each rank writes its shards, rank 0 commits (or none does)
            assert self.shard_manager is not None
            info = self.shard_manager.save_sharded(state, p.step, p.epoch, metrics, tags, meta=self.meta)
        elif self.manager is not None:
            try:
                info = self.manager.save(
                    state, step=p.step, epoch=p.epoch, metrics=metrics, tags=tags, blocking=blocking, meta=self.meta
                )
            except Exception as exc:
                error = exc
        self._agreed(error, "agreeing that the checkpoint was committed")
        self.trigger_state = self.triggers.after_save(self.trigger_state, step=p.step, now=self._now)
        return info

    def _where_a_rerun_starts(self) -> str:
        """Where running the same command again continues from, as a phrase (for the non-finite loss message)."""
        if self.manager is None:
            return "rank 0 says where a rerun starts"
        try:
            self.manager.wait()  # a background save still in flight counts once it committed
        except Exception as exc:  # noqa: BLE001 - it does not count, and says so
            log.warning("%s", exc)
        latest = self.manager.latest()
        if latest is None:
            return "no checkpoint has been saved yet, so running again starts from step 0"
        where = f"the newest checkpoint, {latest.name} (step {latest.step})"
        return f"{where}, holds the last good state and running again resumes from it"

    def _preempt(self, rng: Mapping[str, Any] | None) -> None:
        name = self.flag.name or "a stop signal on another rank"
        log.info("%s received at step %d: saving a preempt checkpoint", name, self.progress.step)
        info = self.save(("preempt",), blocking=True, rng=rng)
        raise Preempted(name, self.progress.step, info.name if info is not None else None)

    def emergency_save(self) -> Any:
        """Save what there is, tagged ``emergency`` (auto-resume skips it unless asked)."""
        try:
            if self.manager is not None:
                self.manager.wait()
        except LeaseLostError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed background save must not stop the emergency save
            log.warning("%s", exc)
        return self.save(("emergency",), blocking=True)

    def _log(self, row: Mapping[str, Any]) -> None:
        if self.metrics is None:  # not the coordinator
            return
        full = {"step": self.progress.step, "time": time.time(), **row}
        self.metrics.log(full)
        for listener in self.on_log:
            listener(full)
