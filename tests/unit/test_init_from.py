"""init_from: start a new run's model from a Waypoint checkpoint, an exported safetensors or a foreign .pth."""

from __future__ import annotations

import argparse
from collections import OrderedDict

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from waypoint.checkpoint import CheckpointManager
from waypoint.data.images import Digits
from waypoint.data.segshapes import SegShapes
from waypoint.data.text import TextCorpus
from waypoint.tasks.dino import DinoTask
from waypoint.tasks.stackwise import StackWiseTask
from waypoint.tasks.universeg import UniverSegTask
from waypoint.training.init_from import InitFromError, init_weights, stacks_state

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits() -> Digits:
    return Digits(max_items=64)


def dino(digits: Digits, seed: int, **kw) -> DinoTask:
    task = DinoTask(digits, seed=seed, scale="smoke", **kw)
    task.setup(total_steps=20, steps_per_epoch=4, device=CPU)
    return task


def trained_dino(digits: Digits) -> DinoTask:
    """A DINO task whose student, teacher and center all differ from a fresh one's (and from each other)."""
    task = dino(digits, seed=7)
    with torch.no_grad():
        for p in task.student.parameters():
            p.add_(0.01)
        for p in task.teacher.parameters():
            p.sub_(0.02)
        task.center.fill_(0.5)
    return task


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_dino_from_a_pth_in_the_seed_docs_layout(digits, tmp_path):
    src = trained_dino(digits)
    path = tmp_path / "checkpoint_best.pth"
    torch.save(
        {
            "epoch": 3,
            "iteration": 12,
            "student_state_dict": OrderedDict(src.student.state_dict()),
            "teacher_state_dict": OrderedDict(src.teacher.state_dict()),
            "optimizer_state_dict": src.optimizer.state_dict(),
            "dino_loss_center": src.center.clone(),
            "config": {"lr": 5e-4},
            "metrics": {"loss": 2.5},
            "timestamp": "2026-01-01T00:00:00",
            # what the seed lesson's save_checkpoint also stores: numpy RNG state and the torch version
            "rng_state": {"numpy": np.random.get_state(), "torch": torch.get_rng_state()},
            "torch_version": torch.__version__,
        },
        path,
    )
    task = dino(digits, seed=0)
    report = init_weights(task, str(path))
    assert report.clean and len(report.loaded) == len(task.init_targets())
    assert same(task.student, src.student) and same(task.teacher, src.teacher) and torch.equal(task.center, src.center)


def test_dino_from_an_upstream_main_dino_pth_with_ddp_prefixes_and_old_weight_norm(digits, tmp_path):
    src = trained_dino(digits)

    def upstream(net: torch.nn.Module, prefix: str) -> dict:
        names = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
        out = {}
        for k, v in net.state_dict().items():
            for new, old in names.items():
                k = k.replace(new, old)
            out[prefix + k] = v
        return out

    path = tmp_path / "checkpoint.pth"
    torch.save(
        {
            "student": upstream(src.student, "module."),
            "teacher": upstream(src.teacher, ""),
            "optimizer": src.optimizer.state_dict(),
            "epoch": 4,
            "dino_loss": {"center": src.center.clone()},
            "args": argparse.Namespace(arch="vit_small", lr=5e-4, out_dim=65536),
        },
        path,
    )
    task = dino(digits, seed=0)
    report = init_weights(task, str(path))
    assert report.clean
    assert same(task.student, src.student) and same(task.teacher, src.teacher) and torch.equal(task.center, src.center)


def test_a_bare_backbone_fills_student_and_teacher_and_strict_refuses_it(digits, tmp_path):
    src = trained_dino(digits)
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in src.teacher.backbone.state_dict().items()}, str(path))
    strict = dino(digits, seed=0)
    before = {k: v.clone() for k, v in strict.init_targets().items()}
    with pytest.raises(InitFromError, match="strict"):
        init_weights(strict, str(path), strict=True)
    assert all(torch.equal(before[k], v) for k, v in strict.init_targets().items())  # nothing copied
    task = dino(digits, seed=0)
    report = init_weights(task, str(path))
    assert same(task.student.backbone, src.teacher.backbone) and same(task.teacher.backbone, src.teacher.backbone)
    assert report.missing and all(k == "center" or k.split(".")[1] == "head" for k in report.missing)
    n = len(src.teacher.backbone.state_dict())
    assert f"student {n}, teacher {n}" in report.table().splitlines()[1]


def test_shape_mismatches_are_reported_and_nothing_matching_is_refused(digits, tmp_path):
    src = trained_dino(digits)
    path = tmp_path / "weights.safetensors"
    save_file(
        {f"student.{k}": v.contiguous() for k, v in src.student.state_dict().items()} | {"foo.bar": torch.ones(2)}, str(path)
    )
    task = dino(digits, seed=0, out_dim=128)
    report = init_weights(task, str(path))
    assert [k for k, _, _ in report.mismatched] == [
        f"student.head.last_layer.parametrizations.weight.original{i}" for i in (0, 1)
    ]
    assert report.unexpected == ["foo.bar"] and report.missing == ["center"]
    assert report.derived and all(k.startswith("teacher.") for k in report.derived)
    assert same(task.student.backbone, src.student.backbone) and same(task.teacher.backbone, src.student.backbone)
    junk = tmp_path / "junk.safetensors"
    save_file({"encoder.weight": torch.ones(3, 3)}, str(junk))
    with pytest.raises(InitFromError, match="nothing in"):
        init_weights(dino(digits, seed=0), str(junk))


def test_universeg_from_a_waypoint_checkpoint_reference(tmp_path):
    data = SegShapes(train_items=64, val_items=8)
    src = UniverSegTask(data, seed=3, scale="smoke")
    src.setup(total_steps=20, steps_per_epoch=8, device=CPU)
    with CheckpointManager(tmp_path / "run" / "checkpoints", monitor="val/dice") as mgr:
        mgr.save({"task": src.state_dict(), "progress": {"step": 8}}, 8, metrics={"val/dice": 0.5})
    task = UniverSegTask(data, seed=4, scale="smoke")
    task.setup(total_steps=20, steps_per_epoch=8, device=CPU)
    assert not same(task.net, src.net)
    report = init_weights(task, f"{tmp_path / 'run'}@best")
    assert report.clean and report.source.kind == "waypoint" and same(task.net, src.net)


def stackwise(seed: int, **kw) -> StackWiseTask:
    options = {"scale": "smoke", "target_stacks": 3, "append_at": [2, 4], "warmup_steps": 2}
    options.update(kw)
    task = StackWiseTask(TextCorpus(max_bytes=40_000), seed=seed, **options)
    task.setup(total_steps=12, steps_per_epoch=12, device=CPU)
    return task


def test_stackwise_stack_from_an_exported_stack_file(tmp_path):
    from waypoint.cli import main

    src = stackwise(seed=5)
    with CheckpointManager(tmp_path / "run" / "checkpoints") as mgr:
        mgr.save({"task": src.state_dict()}, 4)
    out = tmp_path / "stack0.safetensors"
    assert main(["export", str(tmp_path / "run"), str(out), "--part", "task/rack/stacks/0"]) == 0
    state = stacks_state(str(out))
    task = StackWiseTask(
        TextCorpus(max_bytes=40_000),
        seed=6,
        init_stacks=state,
        scale="smoke",
        target_stacks=3,
        append_at=[2, 4],
        warmup_steps=2,
        init_stacks_from=str(out),
    )
    task.setup(total_steps=12, steps_per_epoch=12, device=CPU)
    assert [s.source for s in task.specs] == ["init", "fresh"]
    assert same(task.rack.stacks[0], src.rack.stacks[0])
    fresh = stackwise(seed=6)
    report = init_weights(fresh, f"{tmp_path / 'run'}")
    assert report.clean and same(fresh.rack.stacks[0], src.rack.stacks[0])
