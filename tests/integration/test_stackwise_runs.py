"""Stack-Wise through train.py: growth, exact resume after an append, frozen stacks stored once, stack reuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trainkit import committed, final_digest, kill_after, metrics_rows, run_train, start_train, waypoint

from waypoint.checkpoint import CheckpointManager

GROW = ["model=stackwise", "model.target_stacks=4", "trainer.max_epochs=8", "checkpoint=all"]


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run that grew to 4 stacks, with a kept checkpoint at every epoch."""
    run_dir = tmp_path_factory.mktemp("grown") / "run"
    run_train(run_dir, *GROW)
    return run_dir


def manifests(run_dir: Path) -> list[dict]:
    return [json.loads((p / "manifest.json").read_text()) for p in committed(run_dir)]


def stack_ids(doc: dict, i: int) -> dict[str, str]:
    prefix = f"task/rack/stacks/{i}/"
    return {k: v["id"] for k, v in doc["tensors"].items() if k.startswith(prefix) and ".lora." not in k}


def test_a_kill_right_after_a_stack_was_appended_resumes_to_the_uninterrupted_digest(tmp_path: Path) -> None:
    args = [
        "model=stackwise",
        "model.target_stacks=3",
        "trainer.max_epochs=4",
        "checkpoint.every_n_steps=5",
        "trainer.log_every_n_steps=1",
    ]
    run_train(tmp_path / "ref", *args)
    run_dir = tmp_path / "run"
    proc = start_train(run_dir, *args)
    grew = lambda: any(r.get("train/stacks") == 2.0 for r in metrics_rows(run_dir))  # noqa: E731
    assert kill_after(proc, grew, delay=0.0), "the run finished before it could be killed after the first append"
    newest = manifests(run_dir)[-1]
    run_train(run_dir, *args)
    assert final_digest(run_dir) == final_digest(tmp_path / "ref")
    assert newest["step"] < final_digest(run_dir)[0]


def test_frozen_stacks_are_written_once_and_du_shows_the_saving(grown: Path) -> None:
    docs = manifests(grown)
    final = docs[-1]
    assert sum(1 for k in final["tensors"] if k.startswith("task/rack/stacks/3/")) > 0, "the rack did not grow to 4 stacks"
    for i in range(3):  # stacks 0..2 froze when the next one was appended
        frozen_from = next(d for d in docs if stack_ids(d, i + 1))
        later = [d for d in docs if d["step"] >= frozen_from["step"]]
        assert all(stack_ids(d, i) == stack_ids(frozen_from, i) for d in later), f"frozen stack {i} changed"
    du = json.loads(waypoint("du", str(grown), "--json").stdout)
    # every checkpoint is kept; frozen stacks are stored once (about 20% of the logical bytes at this size; pack
    # headers, manifests with their spare copies and the index cost part of that back)
    assert du["physical_bytes"] < du["logical_bytes"]


def test_restoring_a_checkpoint_rebuilds_the_grown_rack(grown: Path) -> None:
    from waypoint.data.text import TextCorpus
    from waypoint.tasks.stackwise import StackWiseTask

    mgr = CheckpointManager(grown / "checkpoints", read_only=True)
    state, info = mgr.restore_with_info("latest")
    saved = json.loads((Path(info.path) / "manifest.json").read_text())["meta"]["config"]
    data_cfg = {k: v for k, v in saved["data"].items() if k not in ("_target_", "num_workers")}
    task = StackWiseTask(TextCorpus(**data_cfg), seed=0, **{k: v for k, v in saved["model"].items() if k != "_target_"})
    task.setup(100, 8, torch.device("cpu"))
    assert len(task.specs) == 1
    task.load_state_dict(state["task"])
    assert len(task.specs) == 4
    assert [p.requires_grad for p in task.rack.stacks[0].parameters()] == [False] * len(list(task.rack.stacks[0].parameters()))
    batches = torch.utils.data.DataLoader(task.val_dataset(), batch_size=8, collate_fn=task.collate)
    bpb = task.validate(batches, None)["val/bpb"]  # type: ignore[arg-type]
    assert bpb == pytest.approx(info.metrics["val/bpb"], rel=1e-5)


def test_a_stack_exports_to_safetensors_and_seeds_a_new_run(grown: Path, tmp_path: Path) -> None:
    out = tmp_path / "stack0.safetensors"
    proc = waypoint("export", f"{grown}@latest", str(out), "--part", "task/rack/stacks/0/")
    assert proc.returncode == 0, proc.stderr
    tensors = load_file(str(out))
    final = manifests(grown)[-1]
    assert set(tensors) == {k[len("task/rack/stacks/0/") :] for k in final["tensors"] if k.startswith("task/rack/stacks/0/")}

    child = tmp_path / "child"
    run_train(child, "model=stackwise", "trainer.max_epochs=2", f"model.init_stacks_from={grown}")
    first = manifests(child)[0]
    assert stack_ids(first, 0) == {k: v for k, v in stack_ids(final, 0).items()}, "stack 0 was not taken from the parent run"
    assert stack_ids(first, 1), "no trainable stack was added on top of the frozen one"


def test_a_new_run_starts_from_any_stacks_of_an_earlier_run(grown: Path, tmp_path: Path) -> None:
    child = tmp_path / "child"
    run_train(
        child, "model=stackwise", "trainer.max_epochs=1", f"model.init_stacks_from={grown}", "model.init_stacks_indices=[3,1]"
    )
    first, final = manifests(child)[0], manifests(grown)[-1]
    ids = lambda doc, i: sorted(stack_ids(doc, i).values())  # noqa: E731 - the tensors, wherever the stack sits
    assert ids(first, 0) == ids(final, 3) and ids(first, 1) == ids(final, 1) and ids(first, 0) != ids(first, 1)
    assert stack_ids(first, 2), "no trainable stack was added on top of the two taken"
