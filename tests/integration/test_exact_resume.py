"""SIGKILL at a random step after the first checkpoint + the same command = the uninterrupted run's final digest."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from trainkit import committed, final_digest, kill_after, metrics_rows, run_train, start_train

#: mid-epoch saves (8 steps per epoch, a checkpoint every 3 steps), 4 epochs
RUN = ["trainer.max_epochs=4", "checkpoint.every_n_steps=3", "trainer.val_every_n_steps=5"]
FAMILIES = {"universeg": ["model=universeg"], "stackwise": ["model=stackwise"], "dino": ["model=dino"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[int, str]]:
    """Final (step, digest) of a family's uninterrupted run with data.num_workers=0 (run once per module)."""
    cache: dict[str, tuple[int, str]] = {}

    def get(family: str) -> tuple[int, str]:
        if family not in cache:
            run_dir = tmp_path_factory.mktemp(f"ref-{family}") / "run"
            run_train(run_dir, *FAMILIES[family], *RUN)
            cache[family] = final_digest(run_dir)
        return cache[family]

    return get


def _killed_then_resumed(tmp_path: Path, args: list[str], rng: random.Random) -> Path:
    for attempt in range(4):
        run_dir = tmp_path / f"run{attempt}"
        proc = start_train(run_dir, *args)
        if kill_after(
            proc,
            lambda: bool(committed(run_dir)),  # noqa: B023 - polled before the next attempt
            delay=rng.uniform(0.0, 0.6 / (attempt + 1)),
        ):
            break
    else:
        pytest.fail("every attempt finished before it could be killed after its first checkpoint")
    assert committed(run_dir), "the killed run left no checkpoint"
    run_train(run_dir, *args)
    return run_dir


# with 2 data workers only Stack-Wise runs by default (the fastest); the other two are in `make test-all`
@pytest.mark.parametrize(
    ("family", "workers"),
    [(f, 0) for f in FAMILIES] + [(f, 2) if f == "stackwise" else pytest.param(f, 2, marks=pytest.mark.slow) for f in FAMILIES],
)
def test_sigkill_and_the_same_command_give_the_uninterrupted_final_digest(
    family: str, workers: int, tmp_path: Path, reference: Callable, rng: random.Random
) -> None:
    args = [*FAMILIES[family], *RUN, f"data.num_workers={workers}"]
    run_dir = _killed_then_resumed(tmp_path, args, rng)
    assert final_digest(run_dir) == reference(family)
    steps = [r["step"] for r in metrics_rows(run_dir) if "train/loss" in r]
    assert steps == sorted(steps) and len(steps) == len(set(steps)), "metrics.jsonl repeats or reorders steps after resume"
