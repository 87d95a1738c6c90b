"""Which checkpoint resume=auto continues from when some checkpoints hold weights only."""

from __future__ import annotations

from pathlib import Path

import torch

from waypoint.checkpoint import CheckpointManager
from waypoint.training.resume import ResumeRules, source

STATE = {"w": torch.zeros(2)}


def test_auto_prefers_the_newest_full_checkpoint_over_newer_weights_only_ones(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path) as mgr:
        mgr.save({"w": torch.ones(2)}, step=4)
        mgr.save(STATE, step=8, tags=("weights_only",))
        src = source(mgr, ResumeRules("auto", {}))
        assert src is not None and mgr.one(src.selector).step == 4


def test_auto_takes_a_weights_only_checkpoint_when_there_is_no_full_one(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path) as mgr:
        mgr.save(STATE, step=8, tags=("weights_only",))
        src = source(mgr, ResumeRules("auto", {}))
        assert src is not None and (src.manager, src.selector, src.own) == (mgr, "latest", True)
