"""SIGKILL at a random step after the first checkpoint + the same command = the uninterrupted run's final digest."""

from __future__ import annotations

import json
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


def test_a_damaged_resume_source_is_repaired_from_its_parity_and_the_run_ends_bit_exact(
    tmp_path: Path, reference: Callable, rng: random.Random
) -> None:
    """The newest checkpoint's own pack loses 1/16 of its bytes while the run is down: the rerun repairs it (and
    says so in train.log) instead of falling back, and ends with the uninterrupted run's digest."""
    args = [*FAMILIES["universeg"], *RUN, "checkpoint.parity=true"]
    for attempt in range(4):
        run_dir = tmp_path / f"run{attempt}"
        if kill_after(start_train(run_dir, *args), lambda: len(committed(run_dir)) >= 2, delay=0.0):  # noqa: B023
            break
    else:
        pytest.fail("every attempt finished before it could be killed")
    newest = committed(run_dir)[-1]
    manifests = [json.loads((c / "manifest.json").read_text()) for c in committed(run_dir)]
    own = set(manifests[-1]["packs"]) - {p for m in manifests[:-1] for p in m["packs"]}
    pack = newest.parent / "packs" / sorted(own)[0]
    data = bytearray(pack.read_bytes())
    data[len(data) // 2 : len(data) // 2 + len(data) // 16] = bytes(len(data) // 16)
    pack.write_bytes(bytes(data))
    run_train(run_dir, *args)
    log = (run_dir / "train.log").read_text()
    assert f"repaired {newest.name}: pack" in log and f"resuming from {newest.name}" in log, log[-2000:]
    assert final_digest(run_dir) == reference("universeg")
