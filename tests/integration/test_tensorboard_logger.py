"""logger=tensorboard: event files in the run dir; a resumed run continues them as metrics.jsonl continues."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainkit import metrics_rows, run_train

pytest.importorskip("tensorboard", reason="logger=tensorboard needs the tensorboard package")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def scalars(run_dir: Path, key: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir / "tensorboard"), purge_orphaned_data=True)
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(key)]


def test_a_run_resumed_from_an_earlier_checkpoint_shows_each_step_once_as_metrics_jsonl_does(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_train(run_dir, "model=universeg", "logger=tensorboard")
    first = {r["step"]: r["train/loss"] for r in metrics_rows(run_dir) if "train/loss" in r}
    run_train(run_dir, "model=universeg", "logger=tensorboard", "resume=step:8")  # steps 9.. are trained again
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one stream, continued
    rows = {r["step"]: r["train/loss"] for r in metrics_rows(run_dir) if "train/loss" in r}
    shown = scalars(run_dir, "train/loss")
    assert [s for s, _ in shown] == sorted(rows) == sorted(first)
    assert all(abs(v - rows[s]) < 1e-6 and abs(v - first[s]) < 1e-6 for s, v in shown)  # an exact resume
