"""Sharded (FSDP2/DTensor) checkpoints through torch.distributed.checkpoint on the Waypoint store: each rank writes
its own pack, rank 0 commits one manifest (DCP metadata as JSON), and the checkpoint restores at any world size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}


def worker(nproc: int, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """dcp_worker.py under ``torchrun --standalone`` (a free port) or, for one process, alone (no process group)."""
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        if nproc > 1
        else [sys.executable]
    )
    proc = subprocess.run(
        [*launcher, str(HERE / "dcp_worker.py"), *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=_env()
    )
    if check and proc.returncode != 0:
        pytest.fail(f"dcp_worker {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], tuple[Path, dict[str, torch.Tensor]]]:
    """A checkpoint saved by 2 FSDP2 ranks, and the full tensors it holds (saved once per module)."""
    cache: dict[str, tuple[Path, dict[str, torch.Tensor]]] = {}

    def get() -> tuple[Path, dict[str, torch.Tensor]]:
        if not cache:
            where = tmp_path_factory.mktemp("sharded")
            worker(2, "save", str(where / "ckpts"), str(where / "full.safetensors"))
            cache["v"] = (where / "ckpts", load_file(str(where / "full.safetensors")))
        return cache["v"]

    return get


def _manifest(root: Path) -> dict:
    (ckpt,) = sorted(root.glob("step_*"))
    return json.loads((ckpt / "manifest.json").read_text())


def test_each_rank_writes_its_own_pack_and_one_manifest_lists_every_shard(saved: Callable) -> None:
    root, _ = saved()
    doc = _manifest(root)
    assert len(doc["packs"]) == 2, "one pack per rank"
    assert {"model/0.weight@0,0", "model/0.weight@15,0"} <= set(doc["tensors"]), "the 30x12 weight in two 15-row shards"
    assert not list(root.glob("step_*/.metadata")) and not list(root.rglob("*.distcp")), "no DCP pickle files"
    state = json.loads((root / doc["name"] / "state.json").read_text())
    assert set(state) == {"__sharded__"} and state["__sharded__"]["dcp"]["tensors"]["model/0.weight"]["size"] == [30, 12]


def test_a_sharded_checkpoint_verifies_lists_and_exports_one_consolidated_safetensors(saved: Callable, tmp_path: Path) -> None:
    root, full = saved()
    run = [sys.executable, "-m", "waypoint"]
    verify = subprocess.run([*run, "verify", str(root)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0 and "1 of 1 checkpoints verify" in verify.stdout
    listing = subprocess.run([*run, "ls", str(root)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "step_000000003" in listing.stdout
    out = tmp_path / "model.safetensors"
    exported = subprocess.run(
        [*run, "export", "--part", "model", f"{root}@latest", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert exported.returncode == 0, exported.stderr
    got = load_file(str(out))  # no process group here: a plain file of full tensors
    assert sorted(got) == sorted(k[len("model.") :] for k in full if k.startswith("model."))
    assert all(torch.equal(got[k], full[f"model.{k}"]) for k in got)


def test_a_plain_restore_in_one_process_assembles_the_full_state(saved: Callable) -> None:
    from waypoint.checkpoint import CheckpointManager

    root, full = saved()
    with CheckpointManager(root, read_only=True) as manager:
        state = manager.restore("latest")
    assert state["step"] == 3 and state["note"] == "sharded"
    assert torch.equal(state["model"]["0.weight"], full["model.0.weight"])
    assert torch.equal(state["optim"]["state"][1]["exp_avg"], full["optim.1.exp_avg"])


@pytest.mark.parametrize("world", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_saved_at_world_size_two_restores_resharded_with_identical_full_tensors(
    world: int, saved: Callable, tmp_path: Path
) -> None:
    root, full = saved()
    worker(world, "load", str(root), str(tmp_path / "seen"))
    for rank in range(world):
        seen = load_file(str(tmp_path / f"seen.rank{rank}.safetensors"))
        assert sorted(seen) == sorted(full)
        assert all(torch.equal(seen[k], full[k]) for k in full), f"rank {rank} of {world} holds other values"


@pytest.mark.slow
def test_a_rank_that_cannot_write_its_shards_commits_nothing_and_every_rank_reports_it(saved: Callable, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "ckpts"
    shutil.copytree(saved()[0], root)
    before = sorted(p.name for p in root.glob("step_*"))
    proc = worker(2, "fail", str(root), str(tmp_path / "full.safetensors"), check=False)
    assert proc.returncode != 0
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in reports) == [0, 1], proc.stdout[-2000:]
    assert all("No space left on device" in r["message"] for r in reports)
    assert sorted(p.name for p in root.glob("step_*")) == before, "nothing new was committed"
    verify = subprocess.run([sys.executable, "-m", "waypoint", "verify", str(root)], cwd=REPO, capture_output=True, text=True)
    assert verify.returncode == 0, "the earlier checkpoint is intact"


@pytest.mark.slow
def test_shards_the_store_already_holds_are_not_written_again(saved: Callable, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "ckpts"
    shutil.copytree(saved()[0], root)
    packs_before = sorted(p.name for p in (root / "packs").iterdir())
    worker(2, "save", str(root), str(tmp_path / "again.safetensors"))  # the same training, so the same tensors
    assert sorted(p.name for p in (root / "packs").iterdir()) == packs_before, "no rank wrote a new pack"
    first, second = (json.loads((c / "manifest.json").read_text()) for c in sorted(root.glob("step_*")))
    assert second["tensors"] == first["tensors"]
