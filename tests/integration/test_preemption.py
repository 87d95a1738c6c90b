"""SIGTERM / SIGUSR1 / Ctrl-C: a `preempt` checkpoint and exit code 75 within seconds; the same command resumes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from trainkit import committed, final_digest, run_train, start_train, wait_for

from waypoint.training.signals import EXIT_PREEMPTED

RUN = ["model=universeg", "trainer.max_epochs=6", "checkpoint.every_n_steps=5"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_a_stop_signal_saves_a_preempt_checkpoint_and_exits_75_within_seconds(sig: signal.Signals, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start_train(run_dir, *RUN)
    assert wait_for(lambda: bool(committed(run_dir)), proc), "the run ended before its first checkpoint"
    sent = time.monotonic()
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == EXIT_PREEMPTED, out[-2000:]
    assert took < 5.0, f"exit took {took:.1f}s after {sig.name}"
    newest = json.loads((committed(run_dir)[-1] / "manifest.json").read_text())
    assert "preempt" in newest["tags"]
    assert sig.name in out and "run the same command again to resume" in out


def test_a_preempted_run_resumed_with_the_same_command_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    run_train(ref, *RUN)
    run_dir = tmp_path / "run"
    proc = start_train(run_dir, *RUN)
    assert wait_for(lambda: bool(committed(run_dir)), proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == EXIT_PREEMPTED
    resumed = run_train(run_dir, *RUN)
    assert "resuming from" in resumed.stderr
    assert final_digest(run_dir) == final_digest(ref)
