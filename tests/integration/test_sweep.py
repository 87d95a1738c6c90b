"""`train.py -m`: each job has a deterministic dir under the sweep dir; re-running the sweep resumes per job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from trainkit import REPO, SMOKE, committed, final_digest, wait_for

SWEEP = ["-m", "model=universeg", *SMOKE, "seed=0,1", "trainer.max_epochs=3", "checkpoint.every_n_steps=4"]


def sweep_cmd(root: Path) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), *SWEEP, f"hydra.sweep.dir={root}"]


def test_a_killed_sweep_rerun_skips_finished_jobs_and_resumes_the_unfinished_one(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job0, job1 = tmp_path / "experiment=smoke,seed=0", tmp_path / "experiment=smoke,seed=1"
    proc = subprocess.Popen(
        sweep_cmd(tmp_path),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert wait_for(lambda: bool(committed(job1)), proc), "the sweep ended before job 1 saved"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "end" in (committed(job0)[-1] / "manifest.json").read_text()
    t0 = time.monotonic()
    rerun = subprocess.run(sweep_cmd(tmp_path), cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    out = rerun.stdout + rerun.stderr
    assert out.count("already finished:") == 1 and "resuming from" in out
    final_digest(job0), final_digest(job1)
    skip = subprocess.run(sweep_cmd(tmp_path), cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert (skip.stdout + skip.stderr).count("already finished:") == 2
    assert time.monotonic() - t0 < 120


def test_a_sweep_over_a_model_hyperparameter_gives_one_finished_run_per_value(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        "model=universeg",
        "model.lr=0.001,0.003",
        *SMOKE,
        "trainer.max_steps=4",
        f"hydra.sweep.dir={tmp_path}",
    ]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    jobs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert jobs == ["experiment=smoke,model.lr=0.001", "experiment=smoke,model.lr=0.003"]
    for job in jobs:
        assert final_digest(tmp_path / job)[0] == 4
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and (again.stdout + again.stderr).count("already finished:") == 2, again.stderr[-3000:]
