"""Evolution snapshots survive retention after every save and a later `gc`, which re-applies the recorded policy."""

from __future__ import annotations

from pathlib import Path

import torch

from waypoint.checkpoint import CheckpointManager, KeepLast, RetentionPolicy
from waypoint.checkpoint.policy import KeepEvolution


def test_snapshots_spread_over_the_run_survive_saving_and_gc(tmp_path: Path) -> None:
    policy = RetentionPolicy((KeepLast(2), KeepEvolution(5, 40)))
    with CheckpointManager(tmp_path / "ck", policy) as mgr:
        for step in range(4, 41, 4):
            mgr.save({"w": torch.full((4,), float(step))}, step)
    with CheckpointManager(tmp_path / "ck") as mgr:  # a later `waypoint gc`: the policy comes from the manifests
        assert mgr.gc()["deleted"] == []
        steps = [i.step for i in mgr.list()]
    assert steps == [4, 12, 20, 32, 36, 40]  # targets 0, 10, 20, 30, 40: the first checkpoint at or after each
