"""checkpoint.enabled=false: a run trains and logs as usual and saves no checkpoint (what bench/overhead.py compares against)."""

from __future__ import annotations

from pathlib import Path

from trainkit import committed, run_train


def test_a_run_with_checkpointing_disabled_trains_and_saves_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_train(run_dir, "model=dino", "trainer.max_steps=4", "checkpoint.enabled=false")
    assert committed(run_dir) == []
    assert (run_dir / "metrics.jsonl").read_text().count('"step": 4') >= 1
