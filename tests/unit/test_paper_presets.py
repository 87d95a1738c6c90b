"""``model.scale=paper``: the upstream sizes, built empty on the meta device and counted."""

from __future__ import annotations

from pathlib import Path

import torch

from waypoint.tasks.dino import PRESETS as DINO_PRESETS
from waypoint.tasks.dino.model import DINOHead, build_backbone
from waypoint.tasks.stackwise import PRESETS as STACKWISE_PRESETS
from waypoint.tasks.stackwise.model import Dims, Stack
from waypoint.tasks.universeg import PRESETS as UNIVERSEG_PRESETS
from waypoint.tasks.universeg.net import UniverSegNet

UNIVERSEG_V1_PARAMS = 1.18e6  # the released UniverSeg v1 weights
DINO_VIT_S16_PARAMS = 21.7e6  # upstream DINO ViT-S/16 backbone
CONF = Path(__file__).resolve().parents[2] / "conf"


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_universeg_paper_preset_has_the_released_models_parameter_count():
    preset = UNIVERSEG_PRESETS["paper"]
    with torch.device("meta"):
        net = UniverSegNet(preset["encoder_blocks"])
    assert abs(count(net) - UNIVERSEG_V1_PARAMS) / UNIVERSEG_V1_PARAMS < 0.01
    assert preset["image_size"] == 128


def test_stackwise_paper_stack_holds_four_full_width_blocks():
    p = STACKWISE_PRESETS["paper"]
    dims = Dims(p["d_model"], p["n_heads"], p["d_ff"], p["seq_len"])
    with torch.device("meta"):
        stack = Stack(dims, p["blocks_per_stack"])
    d, f = p["d_model"], p["d_ff"]
    per_block = 4 * d * d + 3 * d * f + 2 * d  # q, k, v, o; SwiGLU gate/up/down; two RMSNorms
    assert count(stack) == p["blocks_per_stack"] * per_block
    assert p["target_stacks"] * count(stack) > 7e9  # the 4096-wide, 8x4-block rack of the upstream defaults


def test_dino_paper_preset_backbone_is_vit_s16_with_upstreams_parameter_count():
    p = DINO_PRESETS["paper"]
    with torch.device("meta"):
        backbone = build_backbone(
            "vit_small_patch16_224",
            img_size=224,
            in_chans=3,
            patch_size=p["patch_size"],
            embed_dim=p["embed_dim"],
            depth=p["depth"],
            num_heads=p["num_heads"],
            drop_path_rate=0.1,
        )
        head = DINOHead(p["embed_dim"], p["out_dim"], p["hidden_dim"], p["bottleneck_dim"])
    assert abs(count(backbone) - DINO_VIT_S16_PARAMS) / DINO_VIT_S16_PARAMS < 0.01
    assert head.last_layer.weight.shape[0] == 65536 and p["n_local_crops"] == 10


def test_dino_paper_experiment_composes_with_the_upstream_recipe():
    from hydra import compose, initialize_config_dir

    from waypoint.config import register

    register()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("config", overrides=["experiment=dino_paper", "data.root=/data/images"])
    assert cfg.model.scale == "paper" and cfg.model.local_size == 96 and cfg.data.image_size == 224
    assert (cfg.model.momentum_teacher, cfg.model.warmup_teacher_temp, cfg.model.teacher_temp) == (0.996, 0.04, 0.07)
