"""hardware=fsdp under torchrun: FSDP2-sharded training whose checkpoints are sharded through DCP into the store,
and a SIGKILL of one rank + the same command ends with the uninterrupted run's final digest."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from distkit import killed_then_resumed, run_torchrun
from trainkit import committed, final_digest, metrics_rows

RUN = ["model=universeg", "trainer.max_epochs=2", "checkpoint.every_n_steps=3", "trainer.val_every_n_steps=5", "hardware=fsdp"]
DINO = ["model=dino", *RUN[1:]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted 2-process FSDP run."""
    run_dir = tmp_path_factory.mktemp("ref-fsdp") / "run"
    run_torchrun(run_dir, 2, *RUN)
    return run_dir


@pytest.mark.slow  # the default suite kills an FSDP rank on the S3 server (tests/cluster/test_fsdp_on_s3.py)
def test_sigkill_of_one_fsdp_rank_and_the_same_command_give_the_uninterrupted_final_digest(
    tmp_path: Path, reference: Path, rng: random.Random
) -> None:
    run_dir = killed_then_resumed(tmp_path, 2, RUN, 1, rng)
    assert final_digest(run_dir) == final_digest(reference)
    steps = [r["step"] for r in metrics_rows(run_dir) if "train/loss" in r]
    assert steps == sorted(set(steps))


def test_fsdp_checkpoints_are_sharded_one_pack_per_rank_and_record_their_world(reference: Path) -> None:
    docs = [json.loads((c / "manifest.json").read_text()) for c in committed(reference)]
    assert docs and all(d["meta"]["world_size"] == 2 and d["meta"]["strategy"] == "fsdp" for d in docs)
    state = json.loads((committed(reference)[-1] / "state.json").read_text())
    assert set(state) == {"__sharded__"}
    assert any("@" in key for key in docs[-1]["tensors"]), "parameters are stored as per-rank shards"


@pytest.mark.slow
def test_dino_under_fsdp_resumes_exactly_after_a_sigkill(tmp_path: Path, rng: random.Random) -> None:
    reference = tmp_path / "reference"
    run_torchrun(reference, 2, *DINO)
    run_dir = killed_then_resumed(tmp_path, 2, DINO, 0, rng)
    assert final_digest(run_dir) == final_digest(reference)
