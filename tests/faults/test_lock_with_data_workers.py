"""`kill -9` of a training run whose DataLoader workers inherited the lock descriptor: the same
command run at once goes on (the forked workers outlive their parent for seconds but hold no lock)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from trainkit import committed, run_train, start_train, wait_for  # noqa: E402

from waypoint.checkpoint import CheckpointManager  # noqa: E402

RUN = ["model=dino", "data.num_workers=1", "trainer.max_epochs=4", "checkpoint.every_n_steps=2"]


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.slow
def test_the_same_command_resumes_at_once_after_kill_9_with_a_data_worker_alive(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start_train(run_dir, *RUN)
    assert wait_for(lambda: bool(committed(run_dir)) and bool(_children(proc.pid)), proc), (
        "the run ended before its first checkpoint with a worker alive"
    )
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)  # the main process only: its workers live on for a while
    proc.wait(timeout=30)
    try:
        alive = [w for w in workers if Path(f"/proc/{w}").exists()]
        assert alive, "no worker outlived the SIGKILL, so this run did not test the inherited descriptor"
        with CheckpointManager(run_dir / "checkpoints"):  # while the orphaned worker still holds the descriptor
            pass
        resumed = run_train(run_dir, *RUN, check=False)
        assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
        assert "already being written" not in resumed.stderr
        assert "resuming from" in resumed.stderr
    finally:
        for w in workers:
            try:
                os.kill(w, signal.SIGKILL)
            except ProcessLookupError:
                pass
