"""checkpoint.backup_to and `waypoint backup` store to store: packs first, manifest last; a failed mirror never
fails a save and is retried after the next one; a backup destination has its own `waypoint gc`."""

from __future__ import annotations

import json
import logging
import time

import pytest
import torch

from waypoint import cli
from waypoint.checkpoint import CheckpointManager
from waypoint.checkpoint.transfer import BackgroundMirror

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"frozen": torch.arange(512, dtype=torch.float32), "live": torch.randn(32, 32, generator=g), "step": step}


def test_each_commit_is_mirrored_in_the_background(tmp_path):
    with CheckpointManager(tmp_path / "run" / "checkpoints") as mgr:
        mirror = BackgroundMirror(mgr, str(tmp_path / "backup"))
        for step in (1, 2, 3):
            mgr.save(state(step), step=step, blocking=step == 1)
        mgr.wait()
        assert mirror.finish(timeout=60)
    with CheckpointManager(tmp_path / "backup" / "checkpoints", read_only=True) as copy:
        assert copy.verify() == {f"step_00000000{s}": [] for s in (1, 2, 3)}
        assert copy.restore()["step"] == 3


def test_a_failing_mirror_never_fails_a_save_and_is_retried_after_the_next(tmp_path, caplog):
    blocker = tmp_path / "backup"
    blocker.mkdir()
    (blocker / "checkpoints").write_text("in the way")  # the destination cannot be created
    with caplog.at_level(logging.WARNING, logger="waypoint.checkpoint.mirror"):
        with CheckpointManager(tmp_path / "run" / "checkpoints") as mgr:
            mirror = BackgroundMirror(mgr, str(blocker))
            mgr.save(state(1), step=1)  # the save succeeds; its mirror fails in the background
            deadline = time.monotonic() + 60
            while not mirror.failures and time.monotonic() < deadline:
                time.sleep(0.05)
            assert mirror.failures == 1 and "is retried after the next save" in caplog.text
            (blocker / "checkpoints").unlink()
            mgr.save(state(2), step=2)
            assert mirror.finish(timeout=60)
    with CheckpointManager(blocker / "checkpoints", read_only=True) as copy:
        assert [i.name for i in copy.list()] == ["step_000000001", "step_000000002"]


def test_a_backup_destination_has_its_own_gc(tmp_path, capsys):
    with CheckpointManager(tmp_path / "run" / "checkpoints") as mgr:
        mirror = BackgroundMirror(mgr, str(tmp_path / "backup"))
        for step in (1, 2, 3):
            mgr.save(state(step), step=step)
        assert mirror.finish(timeout=60)
    assert cli.main(["gc", str(tmp_path / "backup"), "--keep-last", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["deleted"] == ["step_000000001", "step_000000002"] and doc["packs_removed"]
    assert cli.main(["verify", str(tmp_path / "backup")]) == 0


def test_backup_from_a_bucket_and_back_is_incremental_and_verified(bucket, tmp_path, capsys):
    src = f"s3://{bucket}/src"
    with CheckpointManager(f"{src}/checkpoints") as mgr:
        mgr.save(state(1), step=1)
        mgr.save(state(2), step=2)
    local = tmp_path / "copy"
    assert cli.main(["backup", src, str(local), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    copied_checkpoints = [rel.split("/")[1] for rel in first["copied"] if rel.endswith("manifest.json")]
    assert copied_checkpoints == ["step_000000001", "step_000000002"] and not first["damaged"]
    assert cli.main(["backup", src, str(local), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["copied"] == []  # incremental: nothing new
    back = f"s3://{bucket}/restored"
    assert cli.main(["backup", str(local), back, "--json"]) == 0  # a local run to a URL
    capsys.readouterr()
    with CheckpointManager(f"{back}/checkpoints", read_only=True) as restored:
        assert restored.verify() == {"step_000000001": [], "step_000000002": []}
        assert torch.equal(restored.restore()["live"], state(2)["live"])


@pytest.mark.slow
def test_a_run_with_backup_to_a_bucket(bucket, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(repo / "train.py"), "experiment=smoke", "model=stackwise", "trainer.progress_bar=false",
         f"checkpoint.backup_to=s3://{bucket}/bk", f"hydra.run.dir={run}"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run / "train.log").read_text()
    assert f"backup to s3://{bucket}/bk is up to date" in log
    with (
        CheckpointManager(run / "checkpoints", read_only=True) as mgr,
        CheckpointManager(f"s3://{bucket}/bk/checkpoints", read_only=True) as bk,
    ):
        assert [i.digest for i in mgr.list()] == [i.digest for i in bk.list()]
        assert all(not p for p in bk.verify().values())
