"""Which checkpoint is `best`: only one validated at its own step, by the configured metric; best_only keeps just that."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainkit import metrics_rows, run_train

from waypoint.checkpoint import CheckpointManager
from waypoint.errors import EXIT_USAGE


def validated(run_dir: Path, metric: str) -> dict[int, float]:
    """step -> value of ``metric`` for every validation in metrics.jsonl."""
    return {r["step"]: r[metric] for r in metrics_rows(run_dir) if metric in r}


def first_best(values: dict[int, float], mode: str) -> int:
    """The step of the best value, the earliest one on a tie."""
    pick = max if mode == "max" else min
    target = pick(values.values())
    return min(s for s, v in values.items() if v == target)


def test_checkpoints_between_validations_carry_no_score_and_best_is_a_validated_one(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_train(
        run_dir,
        "model=universeg",
        "checkpoint.every_n_steps=4",
        "trainer.val_every_n_steps=8",
        "trainer.val_every_n_epochs=null",
        "checkpoint.keep_all=true",
    )
    scores = validated(run_dir, "val/dice")
    assert set(scores) == {0, 8, 16}
    mgr = CheckpointManager(run_dir / "checkpoints", read_only=True)
    infos = mgr.list()
    assert [i.step for i in infos] == [4, 8, 12, 16]
    for info in infos:
        assert info.metrics.get("val/dice") == scores.get(info.step), info.name
    saved = {s: v for s, v in scores.items() if s in {i.step for i in infos}}
    assert mgr.best().step == first_best(saved, "max")


def test_best_only_with_a_configured_monitor_keeps_the_best_by_it_and_the_end(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_train(
        run_dir,
        "model=universeg",
        "checkpoint=best_only",
        "checkpoint.monitor=val/loss",
        "checkpoint.mode=min",
        "trainer.val_every_n_steps=2",
    )
    losses = {s: v for s, v in validated(run_dir, "val/loss").items() if s > 0}
    mgr = CheckpointManager(run_dir / "checkpoints", read_only=True)
    assert (mgr.monitor, mgr.mode) == ("val/loss", "min")
    best = first_best(losses, "min")
    assert mgr.best().step == best
    assert sorted(i.step for i in mgr.list()) == sorted({best, 16})


def test_an_unknown_monitored_metric_is_a_config_error_naming_the_metrics_there_are(tmp_path: Path) -> None:
    proc = run_train(tmp_path / "run", "model=universeg", "checkpoint.monitor=val/accuracy", "checkpoint.mode=max", check=False)
    assert proc.returncode == EXIT_USAGE, proc.stderr[-2000:]
    assert "checkpoint.monitor=val/accuracy is not a metric this model's validation reports; choose one of " in proc.stderr
    assert "val/dice, val/loss" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_weights_only_checkpoint_resumes_with_a_plain_warning(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_train(run_dir, "model=universeg", "trainer.max_steps=8", "checkpoint.save_optimizer=false")
    mgr = CheckpointManager(run_dir / "checkpoints", read_only=True)
    state, info = mgr.restore_with_info("latest")
    assert "weights_only" in info.tags and set(state["task"]) == {"model"} and state["progress"]["step"] == 8
    proc = run_train(run_dir, "model=universeg", "trainer.max_steps=12")
    out = proc.stdout + proc.stderr
    assert "the optimizer restarts from scratch, so this resume is not exact" in out
    latest = CheckpointManager(run_dir / "checkpoints", read_only=True).latest()
    assert latest.step == 12 and "weights_only" not in latest.tags
