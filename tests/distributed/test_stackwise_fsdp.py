"""Stack-Wise under hardware=fsdp: each stack is sharded as it is appended, checkpoints are sharded into the store,
and they resume exactly at 2 ranks, restore in one process, and give up their stacks to exports and new runs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from distkit import killed_then_resumed, run_torchrun
from safetensors.torch import load_file
from trainkit import committed, final_digest, metrics_rows, run_train, waypoint

from waypoint.checkpoint import CheckpointManager

#: 24 steps, the second stack appended after step 12, a checkpoint every 3 steps
RUN = ["model=stackwise", "trainer.max_epochs=3", "checkpoint.every_n_steps=3"]
FSDP = [*RUN, "hardware=fsdp"]
STACK0 = "task/rack/stacks/0/"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted 2-rank FSDP run."""
    run_dir = tmp_path_factory.mktemp("ref-stackwise-fsdp") / "run"
    run_torchrun(run_dir, 2, *FSDP)
    return run_dir


def val_rows(run_dir: Path) -> list[dict]:
    return [r for r in metrics_rows(run_dir) if "val/bpb" in r]


def full_state(run_dir: Path, selector: str = "latest") -> dict:
    with CheckpointManager(run_dir / "checkpoints", read_only=True) as mgr:
        return mgr.restore(selector)


def test_a_two_rank_fsdp_stackwise_run_grows_learns_and_saves_sharded_checkpoints_that_verify(reference: Path) -> None:
    rows = val_rows(reference)
    assert [r["val/stacks"] for r in (rows[0], rows[-1])] == [1.0, 2.0]
    assert rows[-1]["val/bpb"] < rows[0]["val/bpb"] - 0.3, "the rack did not learn"
    doc = json.loads((committed(reference)[-1] / "manifest.json").read_text())
    assert doc["meta"]["world_size"] == 2 and doc["meta"]["strategy"] == "fsdp" and "end" in doc["tags"]
    for i in (0, 1):  # the frozen stack stays sharded, the appended one is sharded
        assert any(k.startswith(f"task/rack/stacks/{i}/") and "@" in k for k in doc["tensors"]), f"stack {i} is not sharded"
    proc = waypoint("verify", str(reference))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(committed(reference))} of {len(committed(reference))} checkpoints verify" in proc.stdout


@pytest.mark.slow
def test_a_rank_killed_after_an_append_and_the_same_command_end_with_the_uninterrupted_digest(
    tmp_path: Path, reference: Path, rng: random.Random
) -> None:
    run_dir = killed_then_resumed(tmp_path, 2, FSDP, 1, rng, after_step=12)
    assert final_digest(run_dir) == final_digest(reference)
    steps = [r["step"] for r in metrics_rows(run_dir) if "train/loss" in r]
    assert steps == sorted(set(steps))


@pytest.mark.slow
def test_a_killed_rack_of_mixed_precisions_with_adapters_resumes_to_the_uninterrupted_digest(
    tmp_path: Path, rng: random.Random
) -> None:
    args = [*FSDP, "model.target_stacks=3", "model.lora.enabled=true", "model.stack_precisions=[half,full,half]"]
    run_torchrun(tmp_path / "reference", 2, *args)
    assert val_rows(tmp_path / "reference")[-1]["val/stacks"] == 3.0
    run_dir = killed_then_resumed(tmp_path, 2, args, 0, rng, after_step=8)
    assert final_digest(run_dir) == final_digest(tmp_path / "reference")
    steps = [r["step"] for r in metrics_rows(run_dir) if "train/loss" in r]
    assert steps == sorted(set(steps))


@pytest.mark.slow
def test_frozen_stacks_keep_their_bytes_and_lose_their_optimizer_state_after_the_append(reference: Path) -> None:
    before, after = full_state(reference, "step_000000012"), full_state(reference)
    tensors = lambda s: {k: v for k, v in s["task"]["rack"]["stacks"]["0"].items()}  # noqa: E731
    assert all(torch.equal(tensors(before)[k], v) for k, v in tensors(after).items())
    n_trainable = sum(p.numel() for p in after["task"]["rack"]["stacks"]["1"].values()) + sum(
        p.numel() for p in after["task"]["rack"]["head"].values()
    )
    moments = after["task"]["optimizer"]["state"].values()
    assert sum(s["exp_avg"].numel() for s in moments) == n_trainable, "the optimizer holds more than stack 1 and the head"


@pytest.mark.slow
def test_the_final_val_bpb_under_fsdp_is_the_one_process_runs_within_2_percent(reference: Path, tmp_path: Path) -> None:
    run_train(tmp_path / "one", *RUN)
    sharded, single = val_rows(reference)[-1]["val/bpb"], val_rows(tmp_path / "one")[-1]["val/bpb"]
    assert sharded == pytest.approx(single, rel=0.02)


@pytest.mark.slow
def test_a_two_rank_checkpoint_is_evaluated_and_resumed_in_one_process(reference: Path, tmp_path: Path) -> None:
    with CheckpointManager(reference / "checkpoints", read_only=True) as mgr:
        end = mgr.one("latest")
    run_train(tmp_path / "eval", *RUN, f"resume={reference}@latest", "trainer.eval_only=true")
    row = json.loads((tmp_path / "eval" / "eval.jsonl").read_text().splitlines()[0])
    assert row["metrics"]["val/bpb"] == pytest.approx(end.metrics["val/bpb"], rel=1e-5)
    resumed = tmp_path / "resumed"
    run_train(resumed, *RUN, f"resume={reference}@step_000000015", "resume.allow_world_size_change=true")
    assert val_rows(resumed)[-1]["val/stacks"] == 2.0
    assert val_rows(resumed)[-1]["val/bpb"] == pytest.approx(end.metrics["val/bpb"], rel=0.02)


def flat(tree: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


@pytest.mark.slow
def test_a_stack_of_a_sharded_checkpoint_exports_whole_and_seeds_a_sharded_run(reference: Path, tmp_path: Path) -> None:
    state = full_state(reference)
    for part, tree in ((STACK0, state["task"]["rack"]["stacks"]["0"]), ("task/rack/", state["task"]["rack"])):
        out = tmp_path / f"{part.strip('/').replace('/', '-')}.safetensors"
        proc = waypoint("export", f"{reference}@latest", str(out), "--part", part)
        assert proc.returncode == 0, proc.stderr
        exported, saved = load_file(str(out)), {k: v for k, v in flat(tree).items() if isinstance(v, torch.Tensor)}
        assert set(exported) == set(saved) and all(torch.equal(exported[k], v) for k, v in saved.items())
    saved = state["task"]["rack"]["stacks"]["0"]

    child = tmp_path / "child"
    run_torchrun(child, 2, "model=stackwise", "trainer.max_epochs=1", "hardware=fsdp", f"model.init_stacks_from={reference}")
    state = full_state(child)
    assert all(torch.equal(state["task"]["rack"]["stacks"]["0"][k], v) for k, v in saved.items())
    assert state["task"]["rack"]["meta"]["stacks"][0]["frozen"] and "1" in state["task"]["rack"]["stacks"]


@pytest.mark.slow
def test_init_from_a_sharded_checkpoint_starts_a_sharded_rack_where_one_process_starts(reference: Path, tmp_path: Path) -> None:
    args = ["model=stackwise", "trainer.max_steps=2", f"init_from.ref={reference}"]
    run_torchrun(tmp_path / "two", 2, *args, "hardware=fsdp")
    run_train(tmp_path / "one", *args)
    first = [val_rows(tmp_path / run)[0]["val/bpb"] for run in ("two", "one")]
    assert first[0] == pytest.approx(first[1], rel=1e-6)
    assert first[0] < val_rows(reference)[0]["val/bpb"] - 0.2, "the weights of the sharded checkpoint were not loaded"


@pytest.mark.slow
def test_stackwise_with_the_activation_cache_under_fsdp_is_refused_with_what_to_use_instead(tmp_path: Path) -> None:
    proc = run_torchrun(tmp_path / "run", 2, "model=stackwise", "model.cache_activations=true", "hardware=fsdp", check=False)
    assert proc.returncode != 0 and "exitcode  : 2" in proc.stderr  # torchrun itself exits 1 when a worker fails
    assert (
        "hardware=fsdp does not shard Stack-Wise with model.cache_activations=true; turn it off or use hardware=ddp"
        in proc.stderr
    )
    assert not committed(tmp_path / "run")
