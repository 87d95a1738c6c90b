"""The trainer on a tiny real task: emergency saves, non-finite losses, stop signals, validation interrupts."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

from waypoint.checkpoint import CheckpointManager, RetentionPolicy, SaveTriggers
from waypoint.config import CheckpointConfig, TrainerConfig
from waypoint.tasks.base import StepContext
from waypoint.tracking.metrics import MetricsLog
from waypoint.training.build import Schedule
from waypoint.training.trainer import MonitorError, NonFiniteLossError, Preempted, Trainer


class Points(Dataset):
    """y = 2x + 1 with per-sample noise from (epoch, index)."""

    def __len__(self) -> int:
        return 32

    def __getitem__(self, key: Any) -> torch.Tensor:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        g = torch.Generator().manual_seed(epoch * 1000 + index)
        x = torch.randn(1, generator=g)
        return torch.cat([x, 2 * x + 1 + 0.01 * torch.randn(1, generator=g)])


class Line:
    """A linear model with dropout (so the global RNG stream matters); hooks can misbehave on request."""

    monitor, monitor_mode = "val/mse", "min"

    def __init__(self, fail_at: int | None = None, nan_at: int | None = None, on_step: Any = None) -> None:
        self.fail_at, self.nan_at, self.on_step = fail_at, nan_at, on_step

    def train_dataset(self) -> Dataset:
        return Points()

    def val_dataset(self) -> Dataset:
        return Points()

    collate = staticmethod(torch.stack)

    def setup(self, total_steps: int, steps_per_epoch: int, device: torch.device) -> None:
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(1, 1))
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.1)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt]

    def training_step(self, batch: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        if self.on_step is not None:
            self.on_step(ctx)
        if ctx.step == self.fail_at:
            raise RuntimeError("boom")
        loss = ((self.net(batch[:, :1]) - batch[:, 1:]) ** 2).mean()
        if ctx.step == self.nan_at:
            loss = loss * float("nan")
        return loss, {"train/loss": float(loss.detach())}

    def before_optimizer_step(self, ctx: StepContext) -> None:
        pass

    def after_optimizer_step(self, ctx: StepContext) -> None:
        pass

    def validate(self, batches: Any, ctx: StepContext) -> dict[str, float]:
        self.net.eval()
        with torch.no_grad():
            errs = [float(((self.net(b[:, :1]) - b[:, 1:]) ** 2).mean()) for b in batches]
        self.net.train()
        return {"val/mse": sum(errs) / len(errs)}

    def state_dict(self, optimizer: bool = True) -> dict[str, Any]:
        return {"net": self.net.state_dict(), **({"opt": self.opt.state_dict()} if optimizer else {})}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.net.load_state_dict(dict(state["net"]))
        if "opt" in state:
            self.opt.load_state_dict(state["opt"])

    def parameter_groups(self) -> dict[str, list[str]]:
        return {"net": ["net/1.weight", "net/1.bias"]}


def make(tmp_path: Path, task: Line, steps: int = 16, every: int = 4) -> Trainer:
    task.setup(steps, 8, torch.device("cpu"))
    mgr = CheckpointManager(tmp_path / "checkpoints", RetentionPolicy(), monitor=task.monitor, mode=task.monitor_mode)
    loop = TrainerConfig(log_every_n_steps=1, progress_bar=False)
    return Trainer(
        task,
        mgr,
        SaveTriggers(every_n_steps=every),
        Schedule(total_steps=steps, steps_per_epoch=8, batch_size=4),
        loop=loop,
        saving=CheckpointConfig(async_save=False),
        device=torch.device("cpu"),
        metrics=MetricsLog(tmp_path),
    )


def test_an_uncaught_error_saves_an_emergency_checkpoint_that_latest_skips(tmp_path: Path) -> None:
    trainer = make(tmp_path, Line(fail_at=6))
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit()
    trainer.manager.close()
    mgr = CheckpointManager(tmp_path / "checkpoints", read_only=True)
    emergency = [i for i in mgr.list() if "emergency" in i.tags]
    assert [i.step for i in emergency] == [6]
    assert mgr.latest().step == 4
    assert mgr.one("tag:emergency").step == 6


def test_a_non_finite_loss_stops_without_saving_that_step(tmp_path: Path) -> None:
    trainer = make(tmp_path, Line(nan_at=9))
    with pytest.raises(NonFiniteLossError, match="step 10"):
        trainer.fit()
    trainer.manager.close()
    mgr = CheckpointManager(tmp_path / "checkpoints", read_only=True)
    assert [i.step for i in mgr.list()] == [4, 8]
    assert all("emergency" not in i.tags for i in mgr.list())


def test_a_stop_signal_is_serviced_at_the_next_step_boundary(tmp_path: Path) -> None:
    def send(ctx: StepContext) -> None:
        if ctx.step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    trainer = make(tmp_path, Line(on_step=send))
    with pytest.raises(Preempted) as caught:
        trainer.fit()
    trainer.manager.close()
    assert caught.value.step == 6 and caught.value.signal_name == "SIGTERM"
    mgr = CheckpointManager(tmp_path / "checkpoints", read_only=True)
    assert "preempt" in mgr.latest().tags and mgr.latest().step == 6
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_a_signal_during_validation_saves_the_pre_validation_state_and_validates_again_on_resume(tmp_path: Path) -> None:
    class SlowVal(Line):
        def validate(self, batches: Any, ctx: StepContext) -> dict[str, float]:
            if ctx.step == 8 and not getattr(self, "sent", False):
                self.sent = True
                os.kill(os.getpid(), signal.SIGTERM)
            return super().validate(batches, ctx)

    trainer = make(tmp_path / "a", SlowVal(), every=100)
    trainer.loop.val_every_n_steps = 8
    with pytest.raises(Preempted):
        trainer.fit()
    trainer.manager.close()
    resumed = make(tmp_path / "a", Line(), every=100)
    state, info = resumed.manager.restore_with_info("latest")
    assert info.step == 8 and state["progress"]["pending_validation"] is True
    resumed.load_state_dict(state)
    resumed.loop.val_every_n_steps = 8
    resumed.fit()
    resumed.manager.close()
    rows = [r for r in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines() if "val/mse" in r]
    assert len(rows) == 3  # step 0, the redone step 8, step 16

    reference = make(tmp_path / "b", Line(), every=100)
    reference.loop.val_every_n_steps = 8
    reference.fit()
    reference.manager.close()
    digest = lambda d: CheckpointManager(d / "checkpoints", read_only=True).latest().digest  # noqa: E731
    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def test_a_checkpoint_holds_only_the_metrics_measured_at_its_own_step(tmp_path: Path) -> None:
    trainer = make(tmp_path, Line(), every=4)
    trainer.loop.val_every_n_steps, trainer.loop.val_every_n_epochs = 8, None
    trainer.fit()
    trainer.manager.close()
    mgr = CheckpointManager(tmp_path / "checkpoints", read_only=True)
    assert {i.step: "val/mse" in i.metrics for i in mgr.list()} == {4: False, 8: True, 12: False, 16: True}
    assert all("train/loss" in i.metrics for i in mgr.list())
    assert mgr.best().step in (8, 16)


def test_an_emergency_checkpoint_is_never_best_nor_what_resume_best_restores(tmp_path: Path) -> None:
    trainer = make(tmp_path, Line(fail_at=6), every=4)
    trainer.loop.val_every_n_steps = 4
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit()
    trainer.manager.close()
    mgr = CheckpointManager(tmp_path / "checkpoints", read_only=True)
    assert mgr.one("tag:emergency").step == 6
    assert mgr.best().step == 4
    assert mgr.restore_with_info("best")[1].step == 4


def test_a_preempt_checkpoint_between_validations_is_never_best(tmp_path: Path) -> None:
    def send(ctx: StepContext) -> None:
        if ctx.step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    trainer = make(tmp_path, Line(on_step=send), every=4)
    trainer.loop.val_every_n_steps = 4
    with pytest.raises(Preempted):
        trainer.fit()
    trainer.manager.close()
    mgr = CheckpointManager(tmp_path / "checkpoints", read_only=True)
    preempt = mgr.one("tag:preempt")
    assert preempt.step == 6 and "val/mse" not in preempt.metrics
    assert mgr.best().step == 4 and [i.name for i in mgr.list() if "best" in i.derived_tags] == [mgr.best().name]


def test_an_unknown_monitored_metric_stops_at_the_first_validation_naming_the_metrics_there_are(tmp_path: Path) -> None:
    trainer = make(tmp_path, Line())
    trainer = Trainer(
        trainer.task,
        trainer.manager,
        trainer.triggers,
        trainer.schedule,
        loop=trainer.loop,
        saving=CheckpointConfig(async_save=False, monitor="val/accuracy", mode="max"),
        device=torch.device("cpu"),
        metrics=trainer.metrics,
    )
    with pytest.raises(MonitorError, match=r"checkpoint.monitor=val/accuracy .* choose one of val/mse"):
        trainer.fit()
    trainer.manager.close()
    assert not CheckpointManager(tmp_path / "checkpoints", read_only=True).list()  # nothing trained, nothing saved


def test_the_non_finite_loss_message_says_where_a_rerun_starts(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError, match=r"the newest checkpoint, step_000000004 \(step 4\), holds the last good state"):
        make(tmp_path / "a", Line(nan_at=5)).fit()
    with pytest.raises(NonFiniteLossError, match="no checkpoint has been saved yet, so running again starts from step 0"):
        make(tmp_path / "b", Line(nan_at=2)).fit()


def test_save_optimizer_false_saves_weights_only_and_a_resume_from_it_warns(tmp_path: Path, caplog) -> None:
    trainer = make(tmp_path, Line(), steps=8)
    trainer.saving.save_optimizer = False
    trainer.fit()
    trainer.manager.close()
    mgr = CheckpointManager(tmp_path / "checkpoints")
    state, info = mgr.restore_with_info("latest")
    mgr.close()
    assert "weights_only" in info.tags and "opt" not in state["task"] and "net" in state["task"]
    assert state["progress"]["step"] == 8
    resumed = make(tmp_path, Line(), steps=16)
    with caplog.at_level("WARNING"):
        resumed.load_state_dict(state)
    assert "optimizer restarts from scratch, so this resume is not exact" in caplog.text
    resumed.fit()
    resumed.manager.close()


def checkpoint_group(name: str) -> Any:
    """conf/checkpoint/<name>.yaml over its defaults, as train.py composes it."""
    from omegaconf import OmegaConf

    from waypoint.config import CheckpointConfig

    conf = Path(__file__).resolve().parents[2] / "conf" / "checkpoint"
    cfg = OmegaConf.structured(CheckpointConfig)
    for layer in ("default", name):
        doc = OmegaConf.load(conf / f"{layer}.yaml")
        doc.pop("defaults", None)
        cfg = OmegaConf.merge(cfg, doc)
    return cfg


def test_best_only_saves_only_on_improvement_and_at_the_end_and_keeps_the_best_and_the_newest(tmp_path: Path) -> None:
    from waypoint.checkpoint.policy import Candidate
    from waypoint.training import build

    scores = {0: 5.0, 2: 4.0, 4: 3.0, 6: 3.5, 8: 3.2, 10: 2.0, 12: 2.5, 14: 2.2, 16: 2.8}  # improves at 2, 4, 10

    class Scripted(Line):
        def validate(self, batches: Any, ctx: StepContext) -> dict[str, float]:
            return {"val/mse": scores[ctx.step]}

    ck = checkpoint_group("best_only")
    task = Scripted()
    task.setup(16, 8, torch.device("cpu"))
    mgr = CheckpointManager(
        tmp_path / "checkpoints", RetentionPolicy(), monitor="val/mse", mode="min"
    )  # keep all: see every save
    loop = TrainerConfig(val_every_n_steps=2, progress_bar=False)
    saving = CheckpointConfig(async_save=False, monitor="val/mse", mode="min")
    schedule = Schedule(total_steps=16, steps_per_epoch=8, batch_size=4)
    triggers, cpu = build.save_triggers(ck, 8), torch.device("cpu")
    Trainer(task, mgr, triggers, schedule, loop=loop, saving=saving, device=cpu, metrics=MetricsLog(tmp_path)).fit()
    infos = mgr.list()
    mgr.close()
    assert [i.step for i in infos] == [2, 4, 10, 16]  # not 8, the end of epoch 0: no improvement there
    candidates = [Candidate(i.name, i.step, i.epoch, i.metrics, frozenset(i.tags)) for i in infos]
    kept = build.retention_policy(ck, "val/mse", "min", 16).select(candidates)
    assert kept == {i.name for i in infos if i.step in (10, 16)}
