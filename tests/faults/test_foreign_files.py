"""Real-world foreign checkpoints read with the data-only allow-list: numpy RNG state, TorchVersion,
argparse.Namespace, OrderedDict, DDP/torch.compile prefixes. `read_foreign` is what other code builds on."""

from __future__ import annotations

import argparse
import collections
import random

import numpy as np
import pytest
import torch

from waypoint.checkpoint import CheckpointManager
from waypoint.checkpoint.transfer.foreign import UnsafeCheckpointError, read_foreign
from waypoint.cli import main


def seed_lesson_file(path):
    """The layout of the seed lesson's save_checkpoint (/work/shared/seeds/dino-checkpoint-lesson.md)."""
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters())
    net(torch.randn(1, 3)).sum().backward()
    opt.step()
    torch.save(
        {
            "epoch": 3,
            "step": 30,
            "model_state_dict": net.state_dict(),
            "optimizer_state_dict": opt.state_dict(),
            "scheduler_state_dict": None,
            "loss_state_dict": collections.OrderedDict(),
            "metrics": {"loss": 0.5},
            "config": {"lr": 1e-3},
            "timestamp": "2026-01-01T00:00:00",
            "git_commit": None,
            "torch_version": torch.__version__,
            "python_version": "3.11",
            "random_states": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "torch_cuda": None,
            },
            "numpy_misc": {"f32": np.float32(1.5), "i64": np.int64(3), "dtype": np.dtype("float16"), "arr": np.arange(4.0)},
        },
        path,
    )
    return net


def dino_upstream_file(path):
    """The layout of upstream DINO's main_dino.py: DDP-wrapped student, args as a Namespace, dino_loss."""
    student, teacher = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    torch.save(
        {
            "student": collections.OrderedDict(("module." + k, v) for k, v in student.state_dict().items()),
            "teacher": teacher.state_dict(),
            "optimizer": torch.optim.SGD(student.parameters(), lr=0.1).state_dict(),
            "epoch": 40,
            "args": argparse.Namespace(arch="vit_small", patch_size=16, out_dim=65536, lr=0.0005),
            "dino_loss": {"center": torch.zeros(1, 8)},
            "fp16_scaler": None,
        },
        path,
    )
    return student, teacher


def test_read_foreign_reads_the_seed_lessons_checkpoint_with_numpy_rng_state_and_torch_version(tmp_path):
    net = seed_lesson_file(tmp_path / "seed.pth")
    state = read_foreign(tmp_path / "seed.pth")
    assert torch.equal(state["model_state_dict"]["weight"], net.weight)
    assert type(state["torch_version"]) is str and state["torch_version"] == str(torch.__version__)
    kind, keys, pos, *_ = state["random_states"]["numpy"]
    assert kind == "MT19937" and keys.dtype == np.uint32 and keys.shape == (624,)
    assert state["numpy_misc"]["f32"] == np.float32(1.5) and state["numpy_misc"]["dtype"] == "float16"
    assert type(state["loss_state_dict"]) is dict


def test_read_foreign_reads_upstream_dino_and_strips_the_ddp_prefix(tmp_path):
    student, teacher = dino_upstream_file(tmp_path / "dino.pth")
    state = read_foreign(tmp_path / "dino.pth")
    assert set(state) >= {"student", "teacher", "dino_loss", "args"}
    assert state["args"] == {"arch": "vit_small", "patch_size": 16, "out_dim": 65536, "lr": 0.0005}
    assert set(state["student"]) == {"weight", "bias"}
    fresh = torch.nn.Linear(4, 3)
    fresh.load_state_dict(state["student"])
    assert torch.equal(fresh.weight, student.weight)


def test_torch_compile_and_ddp_prefixes_are_stripped_together_and_mixed_keys_are_left_alone(tmp_path):
    w = torch.ones(2)
    torch.save(
        {"a": {"module._orig_mod.fc.weight": w, "module._orig_mod.fc.bias": w}, "b": {"module.x": w, "y": w}}, tmp_path / "f.pt"
    )
    state = read_foreign(tmp_path / "f.pt")
    assert set(state["a"]) == {"fc.weight", "fc.bias"}
    assert set(state["b"]) == {"module.x", "y"}


@pytest.mark.parametrize(
    "builder,layout,step", [(seed_lesson_file, "model-optimizer", 30), (dino_upstream_file, "dino-upstream", 0)]
)
def test_import_takes_these_files_and_restores_them(tmp_path, capsys, builder, layout, step):
    builder(tmp_path / "in.pth")
    assert main(["import", str(tmp_path / "in.pth"), str(tmp_path / "run"), "--json"]) == 0
    assert f'"layout": "{layout}"' in capsys.readouterr().out
    with CheckpointManager(tmp_path / "run" / "checkpoints", read_only=True) as mgr:
        assert mgr.verify() != {} and all(not p for p in mgr.verify().values())
        assert mgr.one("tag:imported").step == step


def test_the_allow_list_still_refuses_a_callable(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"args": argparse.Namespace(x=Evil())}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match="system"):
        read_foreign(tmp_path / "evil.pth")
