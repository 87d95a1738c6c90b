"""UniverSeg: CrossConv semantics, Dice, determinism, exact resume."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from waypoint.checkpoint.codec import decode, encode
from waypoint.data.segshapes import SegShapes
from waypoint.data.text import TextCorpus
from waypoint.tasks.base import StepContext, Task
from waypoint.tasks.universeg import UniverSegTask, hard_dice, soft_dice_loss
from waypoint.tasks.universeg.net import CrossBlock, CrossConv2d, UniverSegNet

CPU = torch.device("cpu")


def ctx(step: int, total: int = 20) -> StepContext:
    return StepContext(step=step, epoch=0, total_steps=total, steps_per_epoch=total, device=CPU)


def smoke_task(**kw) -> UniverSegTask:
    task = UniverSegTask(SegShapes(train_items=64, val_items=8), seed=3, scale="smoke", **kw)
    task.setup(total_steps=20, steps_per_epoch=8, device=CPU)
    return task


def batch_at(task: UniverSegTask, step: int, size: int = 2) -> dict:
    ds = task.train_dataset()
    return task.collate([ds[(0, step * size + i)] for i in range(size)])


def train_step(task: UniverSegTask, step: int) -> None:
    loss, _ = task.training_step(batch_at(task, step), ctx(step))
    loss.backward()
    task.before_optimizer_step(ctx(step))
    for opt in task.optimizers():
        opt.step()
    task.after_optimizer_step(ctx(step))
    for opt in task.optimizers():
        opt.zero_grad(set_to_none=True)


def test_crossconv_pairs_every_query_map_with_every_support_map():
    torch.manual_seed(0)
    conv = CrossConv2d((2, 3), 4)
    x, y = torch.randn(2, 1, 2, 8, 8), torch.randn(2, 5, 3, 8, 8)
    out = conv(x, y)
    assert out.shape == (2, 1, 5, 4, 8, 8)
    direct = F.conv2d(torch.cat([x[1, 0], y[1, 3]])[None], conv.weight, conv.bias, padding=1)[0]
    torch.testing.assert_close(out[1, 0, 3], direct)


def test_crossblock_query_output_is_invariant_to_support_order():
    torch.manual_seed(0)
    block = CrossBlock((1, 2), 6)
    target, support = torch.randn(1, 1, 1, 8, 8), torch.randn(1, 4, 2, 8, 8)
    perm = torch.tensor([2, 0, 3, 1])
    t1, s1 = block(target, support)
    t2, s2 = block(target, support[:, perm])
    torch.testing.assert_close(t1, t2)
    torch.testing.assert_close(s1[:, perm], s2)


def test_network_matches_upstream_v1_size_and_output_shape():
    net = UniverSegNet([64, 64, 64, 64])
    assert sum(p.numel() for p in net.parameters()) == 1_182_785
    small = UniverSegNet([4, 4, 4])
    assert small(torch.rand(2, 1, 16, 16), torch.rand(2, 3, 1, 16, 16), torch.rand(2, 3, 1, 16, 16)).shape == (2, 1, 16, 16)


def test_hard_dice_on_known_masks():
    target = torch.zeros(4, 1, 4, 4)
    target[0, 0, :2] = 1  # 8 pixels
    target[1, 0, :2] = 1
    logits = torch.full((4, 1, 4, 4), -5.0)
    logits[0, 0, :2] = 5  # exact
    logits[1, 0, :1] = 5  # 4 of 8: dice = 2*4 / (4 + 8)
    logits[3, 0, 0, 0] = 5  # predicts 1 pixel on an empty target
    dice = hard_dice(logits, target)
    torch.testing.assert_close(dice, torch.tensor([1.0, 8 / 12, 1.0, 0.0]))  # both empty counts as 1


def test_soft_dice_loss_is_near_zero_for_confident_correct_logits():
    target = (torch.rand(3, 1, 8, 8) > 0.5).float()
    assert float(soft_dice_loss(target * 40 - 20, target)) < 1e-6
    assert float(soft_dice_loss(20 - target * 40, target)) > 0.9


def test_task_satisfies_protocol_and_validates_the_monitor():
    task = smoke_task()
    assert isinstance(task, Task)
    metrics = task.validate([task.collate([task.val_dataset()[i] for i in range(4)])], ctx(0))
    assert task.monitor == "val/dice" and task.monitor_mode == "max"
    assert 0.0 <= metrics["val/dice"] <= 1.0 and metrics["val/loss"] > 0


def test_setup_depends_on_seed_only_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = smoke_task(), smoke_task()
    assert torch.equal(torch.random.get_rng_state(), before)
    for (ka, va), (kb, vb) in zip(a.state_dict()["model"].items(), b.state_dict()["model"].items()):
        assert ka == kb and torch.equal(va, vb)


def test_resume_from_encoded_state_is_bit_identical():
    a = smoke_task()
    for step in range(2):
        train_step(a, step)
    tensors, tree = encode(a.state_dict())
    b = smoke_task()
    b.load_state_dict(decode(tree, {k: v.clone() for k, v in tensors.items()}))
    for step in range(2, 4):
        train_step(a, step)
        train_step(b, step)
    for (ka, va), (_kb, vb) in zip(a.state_dict()["model"].items(), b.state_dict()["model"].items()):
        assert torch.equal(va, vb), ka


def test_parameter_groups_split_encoder_and_decoder():
    task = smoke_task()
    groups = task.parameter_groups()
    assert set(groups) == {"encoder", "decoder"}
    assert all(k.startswith("model/enc.") for k in groups["encoder"])
    assert "model/out.0.weight" in groups["decoder"]
    assert sorted(groups["encoder"] + groups["decoder"]) == sorted(f"model/{k}" for k in task.state_dict()["model"])


def test_text_data_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="needs segmentation data"):
        UniverSegTask(TextCorpus(max_bytes=5000), seed=0)


def test_image_size_must_fit_the_encoder_depth():
    with pytest.raises(ValueError, match="divisible by 8"):
        UniverSegTask(SegShapes(), seed=0, image_size=60)


@pytest.mark.slow
def test_smoke_scale_runs_at_least_five_steps_per_second():
    task = UniverSegTask(SegShapes(), seed=0, scale="smoke")
    task.setup(total_steps=40, steps_per_epoch=40, device=CPU)
    ds = task.train_dataset()
    train_step(task, 0)
    start = time.perf_counter()
    for step in range(1, 21):
        batch = task.collate([ds[(0, step * 8 + i)] for i in range(8)])
        loss, _ = task.training_step(batch, ctx(step, 40))
        loss.backward()
        task.before_optimizer_step(ctx(step, 40))
        task.optimizers()[0].step()
        task.optimizers()[0].zero_grad(set_to_none=True)
    assert 20 / (time.perf_counter() - start) >= 5.0


def test_a_weights_only_state_restores_the_weights_and_a_fresh_optimizer():
    a = smoke_task()
    train_step(a, 0)
    state = a.state_dict(optimizer=False)
    assert set(state) == {"model"}
    b = smoke_task()
    b.load_state_dict(decode(*reversed(encode(state))))
    assert all(torch.equal(va, vb) for va, vb in zip(a.state_dict()["model"].values(), b.state_dict()["model"].values()))
    assert not b.optimizers()[0].state
