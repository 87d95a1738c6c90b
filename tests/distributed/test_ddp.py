"""hardware=ddp under torchrun: 2 processes (gloo, CPU) behave as one run: one run dir, one log, one checkpoint
stream, exact resume after SIGKILL of a rank, and clear refusals."""

from __future__ import annotations

import json
import random
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from distkit import killed_then_resumed, run_torchrun, signal_rank, start_torchrun, stop_all
from trainkit import committed, final_digest, metrics_rows, run_train, wait_for

#: mid-epoch saves (8 steps per epoch, a checkpoint every 3 steps), 2 epochs
RUN = ["trainer.max_epochs=2", "checkpoint.every_n_steps=3", "trainer.val_every_n_steps=5", "hardware=ddp"]
FAMILIES = {"universeg": ["model=universeg"], "stackwise": ["model=stackwise"], "dino": ["model=dino"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The run dir of a family's uninterrupted 2-process run (run once per module)."""
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            run_dir = tmp_path_factory.mktemp(f"ref-{family}") / "run"
            run_torchrun(run_dir, 2, *FAMILIES[family], *RUN)
            cache[family] = run_dir
        return cache[family]

    return get


def _manifests(run_dir: Path) -> list[dict]:
    return [json.loads((c / "manifest.json").read_text()) for c in committed(run_dir)]


@pytest.mark.parametrize(
    ("family", "killed"),
    [("universeg", 1), pytest.param("universeg", 0, marks=pytest.mark.slow)]
    + [pytest.param(f, 1, marks=pytest.mark.slow) for f in ("stackwise", "dino")],
)
def test_sigkill_of_one_rank_and_the_same_command_give_the_uninterrupted_final_digest(
    family: str, killed: int, tmp_path: Path, reference: Callable[[str], Path], rng: random.Random
) -> None:
    run_dir = killed_then_resumed(tmp_path, 2, [*FAMILIES[family], *RUN], killed, rng)
    assert final_digest(run_dir) == final_digest(reference(family))
    steps = [r["step"] for r in metrics_rows(run_dir) if "train/loss" in r]
    assert steps == sorted(steps) and len(steps) == len(set(steps)), "metrics.jsonl repeats or reorders steps after resume"


def test_a_two_process_run_writes_one_log_one_metrics_stream_and_records_its_world_size(
    reference: Callable[[str], Path],
) -> None:
    run_dir = reference("universeg")
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) == [
        "checkpoints",
        "metrics.jsonl",
        "train.log",
    ]
    rows = metrics_rows(run_dir)
    train_steps = [r["step"] for r in rows if "train/loss" in r]
    assert train_steps == sorted(set(train_steps)), "each step is logged once, by rank 0"
    assert [r["step"] for r in rows if "val/dice" in r] == [0, 5, 8, 10, 15, 16]
    manifests = _manifests(run_dir)
    assert manifests and all(m["meta"]["world_size"] == 2 and m["meta"]["strategy"] == "ddp" for m in manifests)
    log = (run_dir / "train.log").read_text()
    assert "on 2 processes (ddp)" in log and "[rank 1]" not in log


def test_resuming_a_two_process_checkpoint_in_one_process_is_refused_unless_allowed(
    tmp_path: Path, reference: Callable[[str], Path]
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(reference("universeg"), run_dir)
    for ckpt in committed(run_dir):  # keep an unfinished run to resume: drop the end checkpoint
        if "end" in json.loads((ckpt / "manifest.json").read_text())["tags"]:
            shutil.rmtree(ckpt)
    (run_dir / "checkpoints" / "index.json").unlink(missing_ok=True)
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    proc = run_train(run_dir, "model=universeg", *RUN[:-1], check=False)
    assert proc.returncode == 2
    assert "saved by 2 process(es) and this run has 1" in proc.stderr
    assert "resume.allow_world_size_change=true" in proc.stderr
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before
    proc = run_train(run_dir, "model=universeg", *RUN[:-1], "resume.allow_world_size_change=true")
    assert "not an exact resume" in proc.stderr


def test_hardware_ddp_without_torchrun_says_how_to_launch_it(tmp_path: Path) -> None:
    proc = run_train(tmp_path / "run", "model=universeg", "hardware=ddp", check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: hardware=ddp needs torchrun's environment (RANK, WORLD_SIZE); launch it as "
        "`torchrun --nproc_per_node=N train.py ... hardware=ddp`"
    ]
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step_with_one_preempt_checkpoint(
    tmp_path: Path, reference: Callable[[str], Path]
) -> None:
    run_dir = tmp_path / "run"
    args = [*FAMILIES["universeg"], *RUN]
    agent = start_torchrun(run_dir, 2, *args)
    try:
        assert wait_for(lambda: bool(committed(run_dir)), agent, timeout=180)
        signal_rank(agent, 2, 1, signal.SIGTERM)
        out, _ = agent.communicate(timeout=180)
    finally:
        stop_all(agent)
    preempts = [m for m in _manifests(run_dir) if "preempt" in m["tags"]]
    assert len(preempts) == 1, out[-3000:]
    # the ranks exit 75 (EX_TEMPFAIL: requeue me); torchrun may report the last as stopped by its own SIGTERM
    assert "exitcode  : 75" in out and "exitcode  : 1 " not in out, out[-3000:]
    assert "a stop signal on another rank received at step" in (run_dir / "train.log").read_text()
    run_torchrun(run_dir, 2, *args)
    assert final_digest(run_dir) == final_digest(reference("universeg"))
