"""Helpers for torchrun runs of train.py: real process groups (gloo) on 127.0.0.1, a free port each time."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trainkit import REPO, SMOKE, committed, wait_for

#: a collective waiting on a dead rank fails after this long instead of the 300 s default
TIMEOUT = ["hardware.timeout_s=60"]


def torchrun_cmd(run_dir: Path, nproc: int, *overrides: str) -> list[str]:
    """``torchrun --standalone --nproc_per_node=N train.py <smoke> ...`` (standalone: a free rendezvous port)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(REPO / "train.py"),
        *SMOKE,
        *TIMEOUT,
        *overrides,
        f"hydra.run.dir={run_dir}",
    ]


def _env(extra_path: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    if extra_path is not None:  # e.g. a sitecustomize.py that injects a fault into one rank
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(extra_path), env.get("PYTHONPATH", "")) if p)
    return env


def run_torchrun(
    run_dir: Path, nproc: int, *overrides: str, timeout: float = 300, check: bool = True, extra_path: Path | None = None
) -> subprocess.CompletedProcess:
    """Run torchrun to completion; fail the test with its output when ``check`` and it failed."""
    proc = subprocess.run(
        torchrun_cmd(run_dir, nproc, *overrides),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(extra_path),
    )
    if check and proc.returncode != 0:
        pytest.fail(f"torchrun {' '.join(overrides)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def start_torchrun(run_dir: Path, nproc: int, *overrides: str) -> subprocess.Popen:
    """Start torchrun in the background, in its own session."""
    return subprocess.Popen(
        torchrun_cmd(run_dir, nproc, *overrides),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        start_new_session=True,
    )


def rank_pids(agent: subprocess.Popen, nproc: int, timeout: float = 60) -> list[int]:
    """The worker processes torchrun started, in rank order (their command lines carry no rank: by start order)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{agent.pid}/task/{agent.pid}/children")
        try:
            pids = [int(p) for p in children.read_text().split()]
        except OSError:
            pids = []
        if len(pids) >= nproc:
            return sorted(pids)[:nproc]
        time.sleep(0.05)
    raise TimeoutError("torchrun did not start its workers")


def rank_of(pid: int) -> int:
    """The RANK torchrun gave a worker (from its environment)."""
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(e for e in env if e.startswith(b"RANK=")).split(b"=", 1)[1])


def signal_rank(agent: subprocess.Popen, nproc: int, rank: int, sig: int) -> None:
    """Send ``sig`` to the worker of ``rank`` only."""
    pid = next(p for p in rank_pids(agent, nproc) if rank_of(p) == rank)
    os.kill(pid, sig)


def stop_all(agent: subprocess.Popen) -> None:
    """Make sure nothing of a torchrun run is left (test cleanup)."""
    if agent.poll() is None:
        os.killpg(agent.pid, signal.SIGKILL)
    agent.wait()


def killed_then_resumed(tmp_path: Path, nproc: int, args: list[str], rank: int, rng: random.Random, after_step: int = 0) -> Path:
    """Start a torchrun run, SIGKILL one rank at a random moment after the first checkpoint of step ``after_step`` or
    later (before the end), then run the same command again to completion; returns the run dir."""
    for attempt in range(4):
        run_dir = tmp_path / f"run{attempt}"
        agent = start_torchrun(run_dir, nproc, *args)
        try:
            saved = lambda: any(int(c.name.split("_")[-1]) >= after_step for c in committed(run_dir))  # noqa: B023, E731
            reached = wait_for(saved, agent, timeout=180)
            time.sleep(rng.uniform(0.0, 0.8 / (attempt + 1)))
            if reached and agent.poll() is None:
                signal_rank(agent, nproc, rank, signal.SIGKILL)
                agent.wait(timeout=180)
                ended = any("end" in json.loads((c / "manifest.json").read_text())["tags"] for c in committed(run_dir))
                if not ended:
                    break
        finally:
            stop_all(agent)
    else:
        pytest.fail("every attempt finished before one of its ranks could be killed")
    assert committed(run_dir), "the killed run left no checkpoint"
    run_torchrun(run_dir, nproc, *args)
    return run_dir
