"""One rank fails, the others follow at the same step: an exception in a rank's training step gets an emergency
checkpoint that every rank joins; a non-finite loss on one rank stops all before that step is applied. The fault is
injected into one rank only, by a sitecustomize.py on that run's PYTHONPATH."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from distkit import run_torchrun
from trainkit import committed

RUN = ["model=universeg", "trainer.max_epochs=2", "checkpoint.every_n_steps=3", "hardware=ddp"]

FAULT = """
import os
if os.environ.get("RANK") == "{rank}":
    import torch
    import waypoint.tasks.universeg.task as task

    original = task.UniverSegTask.training_step

    def faulty(self, batch, ctx):
        loss, logs = original(self, batch, ctx)
        if ctx.step == 4:  # the fifth step
            {action}
        return loss, logs

    task.UniverSegTask.training_step = faulty
"""


def _inject(tmp_path: Path, rank: int, action: str) -> Path:
    where = tmp_path / "fault"
    where.mkdir()
    (where / "sitecustomize.py").write_text(FAULT.format(rank=rank, action=action))
    return where


def _manifests(run_dir: Path) -> list[dict]:
    return [json.loads((c / "manifest.json").read_text()) for c in committed(run_dir)]


def test_an_exception_on_one_rank_gets_an_emergency_checkpoint_every_rank_joins(tmp_path: Path) -> None:
    fault = _inject(tmp_path, 1, 'raise RuntimeError("injected failure on rank 1")')
    started = time.monotonic()
    proc = run_torchrun(tmp_path / "run", 2, *RUN, check=False, extra_path=fault)
    assert time.monotonic() - started < 120, "a failing rank must not leave the others waiting for the timeout"
    assert proc.returncode != 0
    assert "injected failure on rank 1" in proc.stderr
    emergency = [m for m in _manifests(tmp_path / "run") if "emergency" in m["tags"]]
    assert [m["step"] for m in emergency] == [4], "the state after the last completed step, saved once"
    assert emergency[0]["meta"]["world_size"] == 2
    log = (tmp_path / "run" / "train.log").read_text()
    assert "saved emergency checkpoint" in log


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_stops_every_rank_before_the_step_is_applied(tmp_path: Path) -> None:
    fault = _inject(tmp_path, 1, 'loss = loss * float("nan")')
    proc = run_torchrun(tmp_path / "run", 2, *RUN, check=False, extra_path=fault)
    # every rank leaves with 3; torchrun may report the last one as stopped by its own SIGTERM after the first exits
    assert "exitcode  : 3" in proc.stderr and "exitcode  : 1 " not in proc.stderr, proc.stderr[-3000:]
    assert "the loss became nan on another rank at step 5" in (tmp_path / "run" / "train.log").read_text()
    assert max(m["step"] for m in _manifests(tmp_path / "run")) == 3, "nothing of step 5 was saved"
