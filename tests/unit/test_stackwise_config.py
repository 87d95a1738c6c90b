"""conf/model/stackwise.yaml and conf/data/text.yaml compose with their schemas and build a working task."""

from __future__ import annotations

import shutil
from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir

from waypoint.config import register
from waypoint.tasks.base import StepContext
from waypoint.training.build import build_data

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture()
def conf_dir(tmp_path):
    """A primary config listing data before model (Hydra needs that order for the model's data override)."""
    for group, names in {"model": ["stackwise"], "data": ["text", "segshapes"]}.items():
        (tmp_path / group).mkdir()
        for name in names:
            shutil.copy(CONF / group / f"{name}.yaml", tmp_path / group)
    (tmp_path / "config.yaml").write_text("defaults:\n  - data: segshapes\n  - model: stackwise\n  - _self_\nseed: 0\n")
    register()  # every family's schemas, as train.py registers them
    return str(tmp_path)


def build(conf_dir: str, overrides: list[str], **extra):
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    data, _ = build_data(cfg.data)
    return cfg, hydra.utils.instantiate(cfg.model, data=data, seed=cfg.seed, _recursive_=False, **extra)


def test_model_stackwise_switches_default_data_to_text_and_trains(conf_dir):
    cfg, task = build(conf_dir, ["model.scale=smoke", "data.max_bytes=20000", "model.lora.enabled=true"])
    assert cfg.data._target_.endswith("TextCorpus") and task.cfg.lora.enabled and task.cfg.betas == [0.9, 0.95]
    task.setup(total_steps=2, steps_per_epoch=2, device=torch.device("cpu"))
    ds = task.train_dataset()
    loss, _ = task.training_step(task.collate([ds[(0, 0)], ds[(0, 1)]]), StepContext(0, 0, 2, 2, torch.device("cpu")))
    assert torch.isfinite(loss)


def test_init_stacks_pass_through_instantiate(conf_dir):
    _, earlier = build(conf_dir, ["model.scale=smoke", "data.max_bytes=20000"])
    earlier.setup(total_steps=2, steps_per_epoch=2, device=torch.device("cpu"))
    _, task = build(
        conf_dir, ["model.scale=smoke", "data.max_bytes=20000", "model.init_stacks_from=run0"], init_stacks=earlier.state_dict()
    )
    task.setup(total_steps=2, steps_per_epoch=2, device=torch.device("cpu"))
    assert [s.source for s in task.specs] == ["init", "fresh"]


def test_init_stacks_from_without_resolved_stacks_is_a_clear_error(conf_dir):
    with pytest.raises(Exception, match="the trainer resolves it"):
        build(conf_dir, ["model.scale=smoke", "data.max_bytes=20000", "model.init_stacks_from=run0"])


def test_unknown_precision_is_a_clear_error(conf_dir):
    with pytest.raises(Exception, match="must be one of"):
        build(conf_dir, ["model.scale=smoke", "data.max_bytes=20000", "model.stack_precisions=[full,quarter]"])
