"""logger=wandb: offline by default, same wandb run id on resume, checkpoints referenced (not copied)."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainkit import run_train

pytest.importorskip("wandb", reason="wandb is an optional extra (pip install 'waypoint[wandb]')")


def test_wandb_runs_offline_and_a_resumed_run_continues_the_same_wandb_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_train(run_dir, "model=universeg", "logger=wandb")
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    run_train(run_dir, "model=universeg", "logger=wandb", "trainer.max_epochs=3")
    offline = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(name.endswith(run_id) for name in offline)
    assert (run_dir / "wandb_run_id").read_text().strip() == run_id
    assert not list((run_dir / "wandb").rglob("*.safetensors")), "checkpoint files were copied into wandb"
