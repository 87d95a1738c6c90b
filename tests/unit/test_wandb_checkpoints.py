"""wandb sees every committed checkpoint once, async saves included, by reference to the files holding its bytes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from waypoint.checkpoint import CheckpointManager
from waypoint.tracking.wandb_run import WandbRun

wandb = pytest.importorskip("wandb", reason="wandb is an optional extra (pip install 'waypoint[wandb]')")


def test_async_and_blocking_saves_each_log_one_artifact_whose_references_restore_the_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    run = WandbRun(tmp_path / "run", "waypoint-test", None, "offline", [], {}, name="t")
    assert run.run is not None
    logged = []
    original = run.run.log_artifact
    run.run.log_artifact = lambda art, aliases: (logged.append((art, aliases)), original(art, aliases=aliases))[1]
    frozen = torch.arange(4096, dtype=torch.float32)
    states = {}
    with CheckpointManager(tmp_path / "run" / "checkpoints") as mgr:
        mgr.on_commit(lambda report: run.committed(report.info, mgr.checkpoint_files(report.info.name)))
        for step, blocking in ((1, False), (2, False), (3, True)):
            states[step] = {"frozen": frozen, "w": torch.full((64,), float(step)), "step": step}
            mgr.save(states[step], step, blocking=blocking, tags=("end",) if step == 3 else ())
            run.log({"step": step, "train/loss": 1.0 / step})
    run.finish()
    names = [art.metadata["checkpoint"] for art, _ in logged]
    assert names == ["step_000000001", "step_000000002", "step_000000003"]
    assert "end" in logged[-1][1] and "step-3" in logged[-1][1]
    for art, _ in logged:  # the referenced files alone hold the whole checkpoint
        copy = tmp_path / "from-artifact" / art.metadata["checkpoint"] / "checkpoints"
        for entry in art.manifest.entries.values():
            source = Path(entry.ref.removeprefix("file://"))
            (copy / entry.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / entry.path)
        with CheckpointManager(copy, read_only=True) as alone:
            state = alone.restore(art.metadata["checkpoint"])
        step = art.metadata["step"]
        assert torch.equal(state["w"], states[step]["w"]) and torch.equal(state["frozen"], frozen)


def test_a_failing_commit_listener_is_logged_and_never_fails_the_save(tmp_path: Path, caplog) -> None:
    def broken(report):
        raise RuntimeError("tracker down")

    with CheckpointManager(tmp_path / "checkpoints") as mgr:
        mgr.on_commit(broken)
        mgr.save({"w": torch.ones(3)}, 1, blocking=False)
        mgr.wait()
        assert "tracker down" in caplog.text
        assert [i.step for i in mgr.list()] == [1]
