"""Helpers for subprocess runs of train.py (real processes, real run directories)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMOKE = ["experiment=smoke", "trainer.progress_bar=false"]


def train_cmd(run_dir: Path, *overrides: str) -> list[str]:
    """The command line of a smoke run in ``run_dir``."""
    return [sys.executable, str(REPO / "train.py"), *SMOKE, *overrides, f"hydra.run.dir={run_dir}"]


def run_train(run_dir: Path, *overrides: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run train.py to completion; fail the test with its output when ``check`` and it failed."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(train_cmd(run_dir, *overrides), cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        pytest.fail(f"train.py {' '.join(overrides)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def start_train(run_dir: Path, *overrides: str) -> subprocess.Popen:
    """Start train.py in the background."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        train_cmd(run_dir, *overrides),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )


def committed(run_dir: Path) -> list[Path]:
    """Committed checkpoint directories (a manifest present), oldest first."""
    root = run_dir / "checkpoints"
    return sorted(p for p in root.glob("step_*") if (p / "manifest.json").exists()) if root.exists() else []


def wait_for(cond: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120) -> bool:
    """Poll ``cond`` every 10 ms until it holds (True) or the process ended (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        if proc.poll() is not None:
            return cond()
        time.sleep(0.01)
    raise TimeoutError("condition not reached")


def kill_after(proc: subprocess.Popen, cond: Callable[[], bool], delay: float) -> bool:
    """SIGKILL the whole process group ``delay`` seconds after ``cond`` holds; True if it was killed mid-run."""
    reached = wait_for(cond, proc)
    time.sleep(delay)
    if not reached or proc.poll() is not None:
        proc.wait()
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def final_digest(run_dir: Path) -> tuple[int, str]:
    """(step, digest) of the checkpoint tagged ``end``."""
    for ckpt in reversed(committed(run_dir)):
        doc = json.loads((ckpt / "manifest.json").read_text())
        if "end" in doc["tags"]:
            return doc["step"], doc["digest"]
    raise AssertionError(f"no checkpoint tagged 'end' in {run_dir}")


def metrics_rows(run_dir: Path) -> list[dict]:
    """Rows of metrics.jsonl (a torn last line is skipped)."""
    path = run_dir / "metrics.jsonl"
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def waypoint(*args: str) -> subprocess.CompletedProcess:
    """Run the ``waypoint`` command."""
    return subprocess.run([sys.executable, "-m", "waypoint", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
