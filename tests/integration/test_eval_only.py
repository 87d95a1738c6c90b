"""trainer.eval_only=true: validate one checkpoint of another run, train nothing, change nothing there."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest
from trainkit import run_train

from waypoint.checkpoint import CheckpointManager
from waypoint.training.evaluate import EvalConfigError, source_ref

RUN = ["model=universeg", "trainer.max_steps=2", "trainer.validate_at_start=false"]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished UniverSeg smoke run (2 steps, validated at its end)."""
    run_dir = tmp_path_factory.mktemp("source") / "run"
    run_train(run_dir, *RUN)
    return run_dir


@pytest.mark.slow
def test_eval_only_reports_the_checkpoints_metrics_and_leaves_the_source_byte_for_byte(source: Path, tmp_path: Path) -> None:
    before = snapshot(source)
    with CheckpointManager(source / "checkpoints", read_only=True) as mgr:
        end = mgr.one("latest")
    # someone holds the source's writer lock the whole time: evaluation must not need it
    with open(source / "checkpoints" / "LOCK", "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = run_train(tmp_path / "eval", *RUN, f"resume={source}@latest", "trainer.eval_only=true")
    assert snapshot(source) == before
    rows = [json.loads(line) for line in (tmp_path / "eval" / "eval.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["checkpoint"] == end.name and rows[0]["step"] == end.step == 2
    assert rows[0]["metrics"]["val/dice"] == pytest.approx(end.metrics["val/dice"], abs=1e-6)
    assert f"evaluated {end.name} of {source} (step 2): val/dice" in proc.stdout + proc.stderr
    assert not (tmp_path / "eval" / "checkpoints").exists()


def test_eval_only_without_a_checkpoint_reference_is_a_usage_error(tmp_path: Path) -> None:
    for mode in ("auto", "best", str(tmp_path / "nowhere") + "@best"):
        with pytest.raises(EvalConfigError, match="resume=RUN_DIR"):
            source_ref(mode)
    assert source_ref(f"{tmp_path}@step:4") == f"{tmp_path}@step:4"
