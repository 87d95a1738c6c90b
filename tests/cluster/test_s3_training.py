"""train.py with ``checkpoint.root=s3://...``: the same command on a fresh machine (a fresh working directory,
no local run dir) resumes from the bucket and ends where an uninterrupted local run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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


RUN = ["trainer.max_epochs=6", "checkpoint.every_n_steps=4"]


@pytest.mark.slow
def test_the_same_command_on_a_fresh_machine_resumes_from_the_bucket(bucket, s3fs_client, tmp_path):
    """Machine A is preempted (SIGTERM) after its first checkpoint reached the bucket; machine B, with nothing local,
    runs the same command, resumes from the bucket and ends bit-identical to an uninterrupted local run."""
    root = f"checkpoint.root=s3://{bucket}/ck"
    a = tmp_path / "machine-a"
    a.mkdir()
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *SMOKE, *RUN, root], cwd=a, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while not [k for k in s3fs_client.find(f"{bucket}/ck") if k.endswith("manifest.json")]:
        assert proc.poll() is None and time.monotonic() < deadline, "machine A ended before its first checkpoint"
        time.sleep(0.2)
        s3fs_client.invalidate_cache()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 75  # preempted: a preempt checkpoint in the bucket

    second = train(tmp_path / "machine-b", root, *RUN)
    assert "resuming from step_" in second.stderr + second.stdout
    runs = list((tmp_path / "machine-b" / "outputs" / "stackwise").iterdir())  # the run dir the command names
    assert len(runs) == 1 and (runs[0] / "metrics.jsonl").exists()  # metrics and logs stay local...
    assert not (runs[0] / "checkpoints").exists()  # ...checkpoints do not
    url = f"s3://{bucket}/ck/outputs/stackwise/{runs[0].name}/checkpoints"
    with CheckpointManager(url, read_only=True) as mgr:
        assert all(not p for p in mgr.verify().values())
        end = mgr.one("tag:end")
    train(tmp_path / "local", *RUN)
    with CheckpointManager(tmp_path / "local" / "outputs" / "stackwise" / runs[0].name / "checkpoints", read_only=True) as local:
        want = local.one("tag:end")
    assert (end.step, end.digest) == (want.step, want.digest)
