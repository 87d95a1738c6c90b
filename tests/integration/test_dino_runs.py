"""DINO through train.py: milestone retention, and the teacher backbone exported for timm."""

from __future__ import annotations

import json
from pathlib import Path

import timm
from trainkit import run_train, waypoint


def test_checkpoint_milestones_keeps_25_50_75_100_percent_plus_best_and_latest(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_train(run, "model=dino", "checkpoint=milestones", "trainer.max_epochs=4")  # 8 steps per epoch: 32 steps
    rows = json.loads(waypoint("ls", str(run), "--json").stdout)
    milestones = sorted(r["step"] for r in rows if "milestone" in r["tags"])
    assert milestones == [8, 16, 24, 32]
    tags = {t for r in rows for t in r["tags"]}
    assert {"best", "latest", "end"} <= tags
    text = waypoint("ls", str(run)).stdout
    assert "milestone" in text and "best" in text and "latest" in text


def test_the_exported_teacher_backbone_loads_into_timm(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_train(run, "model=dino", "trainer.max_epochs=1")
    out = tmp_path / "teacher.safetensors"
    proc = waypoint("export", f"{run}@best", str(out), "--part", "task/teacher/backbone/")
    assert proc.returncode == 0, proc.stderr
    from safetensors.torch import load_file

    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=0,
        img_size=32,
        in_chans=1,
        patch_size=4,
        embed_dim=32,
        depth=2,
        num_heads=2,
        dynamic_img_size=True,
    )
    missing, unexpected = model.load_state_dict(load_file(str(out)), strict=True)
    assert not missing and not unexpected
