"""SIGTERM / SIGUSR1 / Ctrl-C: a `preempt` checkpoint at the next step boundary and exit code 75; the same command resumes."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from trainkit import committed, final_digest, run_train, start_train, wait_for

from waypoint.errors import EXIT_PREEMPTED

# epochs of ~30 steps: a stop serviced only at an epoch's end (or the run's) would come far too late
RUN = ["model=universeg", "trainer.max_epochs=2", "data.max_items=256", "checkpoint.every_n_steps=5"]
RESUMED = ["model=universeg", "trainer.max_epochs=6", "checkpoint.every_n_steps=5"]  # ~48 short steps


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_a_stop_signal_saves_a_preempt_checkpoint_at_the_next_steps_and_exits_75(sig: signal.Signals, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start_train(run_dir, *RUN)
    assert wait_for(lambda: bool(committed(run_dir)), proc), "the run ended before its first checkpoint"
    first = json.loads((committed(run_dir)[0] / "manifest.json").read_text())["step"]
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_PREEMPTED, out[-2000:]
    newest = json.loads((committed(run_dir)[-1] / "manifest.json").read_text())
    assert "preempt" in newest["tags"]
    # serviced at a step boundary soon after delivery, not at the end of an epoch or of the run; counted in steps,
    # not seconds, so a loaded machine cannot fail it (the epoch ends ~25 steps later)
    assert newest["step"] <= first + 10, f"stopped at step {newest['step']}, signalled just after step {first}"
    assert sig.name in out and "run the same command again to resume" in out


def test_a_preempted_run_resumed_with_the_same_command_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    run_train(ref, *RESUMED)
    run_dir = tmp_path / "run"
    proc = start_train(run_dir, *RESUMED)
    assert wait_for(lambda: bool(committed(run_dir)), proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == EXIT_PREEMPTED
    resumed = run_train(run_dir, *RESUMED)
    assert "resuming from" in resumed.stderr
    assert final_digest(run_dir) == final_digest(ref)
