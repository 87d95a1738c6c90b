"""Sweeps on a real single-node Slurm (scripts/slurm-local.sh) through ``hydra/launcher=slurm``.

A job preempted for real (``scancel -s USR2``, what Slurm sends ``signal_delay_s`` before a time limit, or a job in a
higher-priority partition, which makes Slurm send SIGTERM) saves a ``preempt`` checkpoint, is requeued by submitit,
resumes in its own run directory and ends with the same final digest as a run never interrupted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from waypoint.checkpoint import CheckpointManager

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm-local.sh"
RUN = ["experiment=smoke", "model=stackwise", "trainer.progress_bar=false", "trainer.max_epochs=12", "checkpoint.every_n_steps=8"]

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """SLURM_CONF of a running single-node Slurm (started by scripts/slurm-local.sh; skipped when it cannot start)."""
    if os.geteuid() != 0:
        pytest.skip("the local Slurm runs its daemons as root")
    for tool in ("slurmctld", "slurmd", "munged", "sbatch", "scontrol", "mariadbd", "slurmdbd"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.skip(f"Slurm is not installed ({tool} missing); run scripts/slurm-local.sh install")
    base = os.environ.get("WAYPOINT_SLURM_BASE", "/tmp/waypoint-slurm")
    env = {**os.environ, "WAYPOINT_SLURM_BASE": base, "SLURM_CONF": f"{base}/etc/slurm.conf"}
    already = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, env=env, timeout=30).stdout.count("UP") > 0
    proc = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=180, env=env)
    if proc.returncode != 0:
        pytest.skip(f"the local Slurm did not start: {proc.stderr.strip()[-300:]}")
    yield f"{base}/etc/slurm.conf"
    if not already:  # leave a cluster someone else started alone
        subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, timeout=120, env=env)


def _env(slurm: str) -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": slurm, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


def _committed(run: Path) -> list[Path]:
    return sorted(p for p in (run / "checkpoints").glob("step_*") if (p / "manifest.json").exists()) if run.exists() else []


@pytest.mark.parametrize("preempt", ["scancel-usr2", "high-priority-partition"])
def test_a_preempted_sweep_job_is_requeued_and_ends_like_an_uninterrupted_run(slurm, tmp_path, preempt):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=slurm", "seed=0,1", *RUN,
           f"hydra.sweep.dir={sweep}", "hydra.launcher.cpus_per_task=1"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(slurm), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job0 = sweep / "experiment=smoke,seed=0"
    deadline = time.monotonic() + 300
    while not _committed(job0):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "the first checkpoint of job 0 never appeared"
        time.sleep(0.2)
    array = next(p.name for p in (sweep / ".submitit").iterdir() if p.name.endswith("_0"))  # <array id>_0: seed=0
    if preempt == "scancel-usr2":  # what Slurm sends signal_delay_s before the time limit
        subprocess.run(["scancel", "-s", "USR2", array], env=_env(slurm), check=True, timeout=30)
    else:  # a job in the `high` partition needs every CPU: Slurm preempts the sweep's jobs (SIGTERM, then requeue)
        cpus = str(os.cpu_count() or 2)
        subprocess.run(["sbatch", "-p", "high", "-c", cpus, "--wrap", "sleep 3"], env=_env(slurm), check=True, timeout=30)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]

    log = (job0 / "train.log").read_text()
    assert "handing over to the launcher to requeue the job" in log and "resuming from" in log
    job = subprocess.run(["scontrol", "show", "job", array], env=_env(slurm), capture_output=True, text=True).stdout
    assert "Restarts=0" not in job and "Restarts=" in job, job
    with CheckpointManager(job0 / "checkpoints", read_only=True) as mgr:
        tags = {t for i in mgr.list() for t in i.tags}
        end = mgr.one("tag:end")
    assert "preempt" in tags

    plain = tmp_path / "plain"
    ref = subprocess.run([sys.executable, str(REPO / "train.py"), "seed=0", *RUN, f"hydra.run.dir={plain}"],
                         cwd=tmp_path, env=_env(slurm), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]
    with CheckpointManager(plain / "checkpoints", read_only=True) as mgr:
        want = mgr.one("tag:end")
    assert (end.step, end.digest) == (want.step, want.digest)
