"""conf/model/universeg.yaml and conf/data/seg*.yaml compose with their schemas and build a working task."""

from __future__ import annotations

import shutil
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from waypoint.config import register
from waypoint.tasks import universeg
from waypoint.tasks.base import StepContext
from waypoint.training.build import build_data

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture()
def conf_dir(tmp_path):
    """A primary config listing data before model (Hydra needs that order for the model's data override)."""
    for group, names in {"model": ["universeg"], "data": ["segshapes", "segfolder", "text"]}.items():
        (tmp_path / group).mkdir()
        for name in names:
            shutil.copy(CONF / group / f"{name}.yaml", tmp_path / group)
    (tmp_path / "config.yaml").write_text("defaults:\n  - data: text\n  - model: universeg\n  - _self_\nseed: 0\n")
    register()  # every family's schemas, as train.py registers them
    return str(tmp_path)


def build(conf_dir: str, overrides: list[str]):
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    data, _ = build_data(cfg.data)
    return cfg, hydra.utils.instantiate(cfg.model, data=data, seed=cfg.seed, _recursive_=False)


def test_model_universeg_switches_default_data_to_segshapes(conf_dir):
    cfg, task = build(conf_dir, ["model.scale=smoke", "data.max_items=4"])
    assert cfg.data._target_.endswith("SegShapes") and cfg.model.scale == "smoke"
    assert isinstance(task, universeg.UniverSegTask) and task.image_size == 32
    task.setup(total_steps=2, steps_per_epoch=2, device=torch.device("cpu"))
    ds = task.train_dataset()
    loss, _ = task.training_step(task.collate([ds[(0, 0)], ds[(0, 1)]]), StepContext(0, 0, 2, 2, torch.device("cpu")))
    assert torch.isfinite(loss)


def test_explicit_sizes_win_over_the_scale_preset(conf_dir):
    _, task = build(conf_dir, ["model.scale=smoke", "model.encoder_blocks=[4,[6,5]]", "model.image_size=16"])
    assert task.encoder_blocks == [4, [6, 5]] and task.image_size == 16 and task.support_size == 4


def test_segfolder_root_override(conf_dir, tmp_path):
    for task_name in ("a", "b"):
        for i in range(3):
            for sub in ("images", "masks"):
                (tmp_path / "root" / task_name / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((8, 8), 200 * (sub == "masks"), np.uint8)).save(
                    tmp_path / "root" / task_name / sub / f"{i}.png"
                )
    cfg, task = build(conf_dir, ["data=segfolder", f"data.root={tmp_path / 'root'}", "model.scale=smoke"])
    assert cfg.data._target_.endswith("SegFolder") and len(task.val_dataset()) == 3


def test_unknown_model_option_is_refused_by_the_schema(conf_dir):
    with pytest.raises(Exception, match="widths"):
        build(conf_dir, ["model.widths=3"])
