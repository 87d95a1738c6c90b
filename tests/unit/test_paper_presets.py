"""``model.scale=paper``: the upstream sizes, built empty on the meta device and counted."""
from __future__ import annotations

import torch

from waypoint.tasks.stackwise import PRESETS as STACKWISE_PRESETS
from waypoint.tasks.stackwise.model import Dims, Stack
from waypoint.tasks.universeg import PRESETS as UNIVERSEG_PRESETS
from waypoint.tasks.universeg.net import UniverSegNet

UNIVERSEG_V1_PARAMS = 1.18e6  # the released UniverSeg v1 weights


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
