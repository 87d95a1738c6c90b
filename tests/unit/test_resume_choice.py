"""Which checkpoint resume=auto continues from when some checkpoints hold weights only."""

from __future__ import annotations

from pathlib import Path

import torch

from waypoint.checkpoint import CheckpointManager
from waypoint.training.launch import _restore_source

STATE = {"w": torch.zeros(2)}


def test_auto_prefers_the_newest_full_checkpoint_over_newer_weights_only_ones(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path) as mgr:
        mgr.save({"w": torch.ones(2)}, step=4)
        mgr.save(STATE, step=8, tags=("weights_only",))
        source = _restore_source(mgr, "auto")
        assert source is not None and mgr.one(source[1]).step == 4


def test_auto_takes_a_weights_only_checkpoint_when_there_is_no_full_one(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path) as mgr:
        mgr.save(STATE, step=8, tags=("weights_only",))
        assert _restore_source(mgr, "auto") == (mgr, "latest")
