"""train.py with ``checkpoint.root=s3://...``: the same command on a fresh machine (a fresh working directory,
no local run dir) resumes from the bucket and ends where an uninterrupted local run ends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from waypoint.checkpoint import CheckpointManager

REPO = Path(__file__).resolve().parents[2]
SMOKE = ["experiment=smoke", "trainer.progress_bar=false", "model=stackwise"]


def train(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *SMOKE, *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_the_same_command_on_a_fresh_machine_resumes_from_the_bucket(bucket, tmp_path):
    root = f"checkpoint.root=s3://{bucket}/ck"
    train(tmp_path / "machine-a", root, "trainer.max_epochs=1")
    second = train(tmp_path / "machine-b", root, "trainer.max_epochs=2")
    assert "resuming from step_" in second.stderr + second.stdout
    assert not (tmp_path / "machine-b" / "outputs" / "stackwise" / "default" / "checkpoints").exists()  # metrics/logs only
    assert (tmp_path / "machine-b" / "outputs" / "stackwise" / "default" / "metrics.jsonl").exists()
    url = f"s3://{bucket}/ck/outputs/stackwise/default/checkpoints"
    with CheckpointManager(url, read_only=True) as mgr:
        assert all(not p for p in mgr.verify().values())
        end = mgr.one("tag:end")
    train(tmp_path / "local", "trainer.max_epochs=2")
    with CheckpointManager(tmp_path / "local" / "outputs" / "stackwise" / "default" / "checkpoints", read_only=True) as local:
        want = local.one("tag:end")
    assert (end.step, end.digest) == (want.step, want.digest)
