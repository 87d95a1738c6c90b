"""train.py init_from=REF: a new run starts from foreign weights; the run dir and manifest name the source."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from trainkit import REPO, committed, run_train

from waypoint.data.images import Digits
from waypoint.tasks.dino import DinoTask
from waypoint.training.rundir import is_steering, run_name


def seed_docs_pth(path: Path) -> DinoTask:
    """A DINO .pth in the seed docs' layout, from a smoke-size DINO task with seed 11."""
    task = DinoTask(Digits(max_items=64), seed=11, scale="smoke")
    task.setup(total_steps=4, steps_per_epoch=4, device=torch.device("cpu"))
    torch.save(
        {
            "epoch": 1,
            "iteration": 4,
            "student_state_dict": OrderedDict(task.student.state_dict()),
            "teacher_state_dict": OrderedDict(task.teacher.state_dict()),
            "dino_loss_center": task.center + 0.25,
            "optimizer_state_dict": task.optimizer.state_dict(),
            "config": {"arch": "vit"},
        },
        path,
    )
    return task


def test_dino_run_starts_from_a_seed_docs_pth(tmp_path: Path) -> None:
    pth = tmp_path / "checkpoint_best.pth"
    seed_docs_pth(pth)
    run_dir = tmp_path / "run"
    proc = run_train(
        run_dir,
        "model=dino",
        "trainer.max_steps=1",
        "trainer.validate_at_start=false",
        "checkpoint.async_save=false",
        f"init_from={pth}",
    )
    assert f"init_from {pth} (foreign)" in proc.stdout + proc.stderr
    assert f"init_from {pth} (foreign)" in (run_dir / "train.log").read_text()
    manifest = json.loads((committed(run_dir)[0] / "manifest.json").read_text())
    assert manifest["meta"]["init_from"]["ref"] == str(pth) and manifest["meta"]["init_from"]["missing"] == []


def test_init_from_is_part_of_the_run_name() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_entry", REPO / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    argv = train._resume_shorthand(["init_from=/ckpts/dino.pth", "init_from.strict=true", "resume=auto"])
    assert argv == ["init_from.ref=/ckpts/dino.pth", "init_from.strict=true", "resume.mode=auto"]
    assert not is_steering(argv[0]) and "init_from.ref=_ckpts_dino.pth" in run_name(argv)


@pytest.mark.slow
def test_stackwise_run_starts_from_an_exported_stack_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from waypoint.checkpoint import CheckpointManager
    from waypoint.data.text import TextCorpus
    from waypoint.tasks.stackwise import StackWiseTask

    src = StackWiseTask(TextCorpus(max_bytes=40_000), seed=9, scale="smoke")
    src.setup(total_steps=4, steps_per_epoch=4, device=torch.device("cpu"))
    stack = tmp_path / "stack0.safetensors"  # what `waypoint export RUN --part task/rack/stacks/0` writes
    save_file({k: v.contiguous() for k, v in src.rack.stacks[0].state_dict().items()}, str(stack))
    run_dir = tmp_path / "child"
    run_train(
        run_dir, "model=stackwise", "trainer.max_steps=2", "trainer.validate_at_start=false", f"model.init_stacks_from={stack}"
    )
    with CheckpointManager(run_dir / "checkpoints", read_only=True) as mgr:
        state = mgr.restore("latest")
    saved = state["task"]["rack"]["stacks"]["0"]
    assert all(torch.equal(saved[k], v) for k, v in src.rack.stacks[0].state_dict().items())
    assert "1" in state["task"]["rack"]["stacks"], "no trainable stack was added on top of the frozen one"
