"""hardware=fsdp with checkpoint.root on the S3 server: every rank writes its shards to the bucket through the
manager, a SIGKILL of one rank + the same command ends with the uninterrupted run's final digest, and
`waypoint verify` on the URL finds the run (exit 0) and a flipped byte in a live pack (exit 1)."""

from __future__ import annotations

import random
import re
import signal
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for helper in (HERE.parent / "distributed", HERE.parent / "integration"):
    if str(helper) not in sys.path:
        sys.path.insert(0, str(helper))

from distkit import run_torchrun, signal_rank, start_torchrun, stop_all  # noqa: E402

from waypoint import cli  # noqa: E402
from waypoint.checkpoint import CheckpointManager  # noqa: E402
from waypoint.checkpoint.storage import backend_for  # noqa: E402

UNIVERSEG = ["model=universeg", "trainer.max_epochs=2", "checkpoint.every_n_steps=3", "trainer.val_every_n_steps=5"]
DINO = ["model=dino", *UNIVERSEG[1:]]


def store_of(root: str, run_dir: Path) -> str:
    """Where a run's checkpoints go under ``checkpoint.root`` (the run dir is named absolutely: its last part)."""
    return f"{root}/{run_dir.name}/checkpoints"


def end_digest(url: str) -> tuple[int, str]:
    with CheckpointManager(url, read_only=True) as reader:
        end = next(i for i in reversed(reader.list()) if "end" in i.tags)
        return end.step, end.digest


def listed(url: str) -> list[str]:
    try:
        with CheckpointManager(url, read_only=True) as reader:
            return [i.name for i in reader.list()]
    except Exception:  # noqa: BLE001 - not there yet
        return []


def killed_then_resumed(tmp_path: Path, args: list[str], root: str, rng: random.Random) -> Path:
    """A run whose rank 1 is SIGKILLed after its first checkpoint reached the bucket (before the end), then the same
    command again to completion; returns its run dir."""
    for attempt in range(4):
        run_dir = tmp_path / f"run{attempt}"
        agent = start_torchrun(run_dir, 2, *args)
        try:
            deadline = time.monotonic() + 240
            while not listed(store_of(root, run_dir)) and agent.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(rng.uniform(0.0, 0.5 / (attempt + 1)))
            if agent.poll() is None and listed(store_of(root, run_dir)):
                signal_rank(agent, 2, 1, signal.SIGKILL)
                agent.wait(timeout=180)
                if not any("end" in name for name in tags(store_of(root, run_dir))):
                    break
        finally:
            stop_all(agent)
    else:
        pytest.fail("every attempt finished before one of its ranks could be killed")
    run_torchrun(run_dir, 2, *args)
    return run_dir


def tags(url: str) -> list[str]:
    with CheckpointManager(url, read_only=True) as reader:
        return [t for i in reader.list() for t in i.tags]


@pytest.mark.parametrize(
    "family", [pytest.param(UNIVERSEG, id="universeg"), pytest.param(DINO, id="dino", marks=pytest.mark.slow)]
)
def test_fsdp_on_s3_resumes_exactly_after_a_rank_is_killed_and_verifies_on_the_url(bucket, tmp_path, capsys, family):
    root = f"s3://{bucket}/ck"
    args = [*family, "hardware=fsdp", f"checkpoint.root={root}"]
    reference = tmp_path / "reference"
    run_torchrun(reference, 2, *args)
    run_dir = killed_then_resumed(tmp_path, args, root, random.Random(3))
    assert end_digest(store_of(root, run_dir)) == end_digest(store_of(root, reference))
    assert cli.main(["verify", root]) == 0  # the root: every run beneath it
    assert re.search(r"checkpoints verify in [2-5] runs", capsys.readouterr().out)
    backend = backend_for(store_of(root, run_dir))
    pack = sorted(k for k in backend.list("packs/"))[-1]
    data = bytearray(backend.read(pack))
    data[-5] ^= 1
    backend.put(pack, bytes(data))
    assert cli.main(["verify", str(run_dir)]) == 1  # the local run dir, followed to its checkpoints on the URL
    assert "DAMAGED" in capsys.readouterr().out
