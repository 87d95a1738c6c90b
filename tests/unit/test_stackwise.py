"""Stack-Wise: growing, freezing, precision, LoRA, activation cache, restore, extraction, init stacks."""

from __future__ import annotations

import time
from functools import lru_cache

import pytest
import torch

from waypoint.checkpoint.codec import decode, encode
from waypoint.data.segshapes import SegShapes
from waypoint.data.text import TextCorpus
from waypoint.tasks.base import StepContext, Task
from waypoint.tasks.stackwise import StackWiseTask
from waypoint.tasks.stackwise.rack import StackStateError, extract_stack

CPU = torch.device("cpu")
TOTAL = 12


@lru_cache(maxsize=1)
def corpus() -> TextCorpus:
    return TextCorpus(max_bytes=40_000)


def ctx(step: int) -> StepContext:
    return StepContext(step=step, epoch=0, total_steps=TOTAL, steps_per_epoch=TOTAL, device=CPU)


def make(**kw) -> StackWiseTask:
    options = dict(scale="smoke", target_stacks=3, append_at=[2, 4], warmup_steps=2)
    options.update(kw)
    init = options.pop("init_stacks", None)
    task = StackWiseTask(corpus(), seed=5, init_stacks=init, **options)
    task.setup(total_steps=TOTAL, steps_per_epoch=TOTAL, device=CPU)
    return task


def batch_at(task: StackWiseTask, step: int, size: int = 4) -> dict:
    ds = task.train_dataset()
    return task.collate([ds[(0, (step * size + i) % 8)] for i in range(size)])  # 8 windows: repeats hit the cache


def train_step(task: StackWiseTask, step: int) -> float:
    loss, _ = task.training_step(batch_at(task, step), ctx(step))
    loss.backward()
    task.before_optimizer_step(ctx(step))
    for opt in task.optimizers():
        opt.step()
    task.after_optimizer_step(ctx(step))
    for opt in task.optimizers():  # re-read: an append replaces the optimizer
        opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def train(task: StackWiseTask, start: int, stop: int) -> None:
    for step in range(start, stop):
        train_step(task, step)


def round_trip(state: dict) -> dict:
    tensors, tree = encode(state)
    return decode(tree, {k: v.clone() for k, v in tensors.items()})


def tensors_of(task: StackWiseTask) -> dict[str, torch.Tensor]:
    return encode(task.state_dict())[0]


def test_task_satisfies_protocol():
    task = make()
    assert isinstance(task, Task) and task.monitor == "val/bpb" and task.monitor_mode == "min"


def test_append_freezes_earlier_stacks():
    task = make()
    train(task, 0, 2)
    assert len(task.rack.stacks) == 2
    assert not any(p.requires_grad for p in task.rack.stacks[0].parameters())
    assert not task.rack.embed.weight.requires_grad
    assert all(p.requires_grad for p in task.rack.stacks[1].parameters())
    trainable = {id(p) for g in task.optimizers()[0].param_groups for p in g["params"]}
    assert trainable == {id(p) for p in task.rack.parameters() if p.requires_grad}
    assert [s.frozen for s in task.specs] == [True, False] and task.specs[1].appended_at == 2


def test_frozen_stack_bytes_unchanged_after_further_steps():
    task = make(weight_decay=0.5)
    train(task, 0, 2)
    frozen = {k: v.clone() for k, v in extract_stack(task.state_dict(), 0).items()}
    embed = task.rack.embed.weight.detach().clone()
    train(task, 2, 8)
    assert len(task.rack.stacks) == 3
    after = extract_stack(task.state_dict(), 0)
    assert frozen.keys() == after.keys() and all(torch.equal(frozen[k], after[k]) for k in frozen)
    assert torch.equal(embed, task.rack.embed.weight)


def test_restore_of_a_grown_rack_rebuilds_it_on_a_fresh_task():
    grown = make(stack_precisions=["half", "full", "full"], lora={"enabled": True, "rank": 2, "alpha": 4.0})
    train(grown, 0, 5)
    fresh = make(stack_precisions=["half", "full", "full"], lora={"enabled": True, "rank": 2, "alpha": 4.0})
    assert len(fresh.rack.stacks) == 1
    fresh.load_state_dict(round_trip(grown.state_dict()))
    assert [s.to_json() for s in fresh.specs] == [s.to_json() for s in grown.specs]
    assert [s.dtype for s in fresh.rack.stacks] == [torch.bfloat16, torch.float32, torch.float32]
    assert [s.frozen for s in fresh.specs] == [True, True, False] and fresh.specs[0].lora_rank == 2
    assert [p.requires_grad for p in fresh.rack.parameters()] == [p.requires_grad for p in grown.rack.parameters()]
    assert [len(g["params"]) for g in fresh.optimizers()[0].param_groups] == [
        len(g["params"]) for g in grown.optimizers()[0].param_groups
    ]
    a, b = tensors_of(grown), tensors_of(fresh)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("cut", [2, 3], ids=["right-after-append", "mid-phase-with-cache"])
def test_resume_is_bit_identical(cut):
    a = make(cache_activations=True)
    train(a, 0, cut)  # the append happens inside after_optimizer_step of step 1
    b = make(cache_activations=True)
    b.load_state_dict(round_trip(a.state_dict()))
    train(a, cut, 7)
    train(b, cut, 7)
    ta, tb = tensors_of(a), tensors_of(b)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_half_precision_stack_holds_bf16_weights_on_cpu():
    task = make(precision="half")
    train(task, 0, 3)
    assert task.rack.stacks[0].dtype == torch.bfloat16 and task.specs[0].dtype == "bfloat16"
    assert all(p.dtype == torch.bfloat16 for p in task.rack.stacks[1].base_parameters())
    assert task.rack(batch_at(task, 0)["tokens"][:, :-1]).dtype == torch.float32


def test_lora_changes_output_only_through_adapters():
    task = make(lora={"enabled": True, "rank": 2, "alpha": 4.0})
    train(task, 0, 2)
    stack0 = task.rack.stacks[0]
    base = {k: v.clone() for k, v in extract_stack(task.state_dict(), 0, adapters=False).items()}
    x = torch.randn(2, 8, task.dims.d_model)
    with torch.no_grad():
        untouched = stack0(x)  # adapters start at up = 0
    train(task, 2, 4)
    with torch.no_grad():
        adapted = stack0(x)
        for _, linear in stack0.linears():
            assert linear.lora is not None and float(linear.lora.up.abs().sum()) > 0
            linear.lora.up.zero_()
        zeroed = stack0(x)
    now = extract_stack(task.state_dict(), 0, adapters=False)
    assert all(torch.equal(base[k], now[k]) for k in base)
    assert not torch.equal(untouched, adapted) and torch.equal(untouched, zeroed)


def test_activation_cache_gives_the_same_loss_as_recomputing():
    cached, plain = make(cache_activations=True), make()
    train(cached, 0, 3)
    train(plain, 0, 3)
    batch = batch_at(cached, 2)  # the windows of step 2, cached after the append at step 2
    assert cached.cache is not None and all(int(i) in cached.cache.items for i in batch["index"])
    hits = cached.cache.hits
    loss_cached, _ = cached.training_step(batch, ctx(3))
    loss_plain, _ = plain.training_step(batch, ctx(3))
    assert cached.cache.hits == hits + len(batch["index"])
    torch.testing.assert_close(loss_cached, loss_plain, rtol=1e-5, atol=1e-6)


def test_activation_cache_is_part_of_the_state_only_when_enabled():
    with_cache, without = make(cache_activations=True), make()
    train(with_cache, 0, 3)
    train(without, 0, 3)
    state = with_cache.state_dict()
    assert state["cache"]["prefix"] == 1 and len(state["cache"]["items"]) > 0
    assert any(k.startswith("cache/items/") for k in encode(state)[0])
    assert "cache" not in without.state_dict()


def test_extract_stack_by_prefix_from_nested_or_flat_state():
    task = make()
    train(task, 0, 3)
    nested = extract_stack(task.state_dict(), 1)
    flat = extract_stack(encode(task.state_dict())[0], 1)
    assert nested.keys() == flat.keys() and "blocks.0.attn.W_q.weight" in nested
    assert torch.equal(nested["blocks.0.attn.W_q.weight"], task.rack.stacks[1].blocks[0].attn.W_q.weight)
    with pytest.raises(StackStateError, match="no tensors under 'rack/stacks/7/'"):
        extract_stack(task.state_dict(), 7)


def test_init_stacks_start_a_run_from_earlier_stacks():
    earlier = make()
    train(earlier, 0, 5)
    state = round_trip(earlier.state_dict())
    task = make(init_stacks=state, init_stacks_frozen=True, target_stacks=5)
    assert [s.source for s in task.specs] == ["init", "init", "init", "fresh"]
    assert [s.frozen for s in task.specs] == [True, True, True, False]
    for i in range(3):
        a, b = extract_stack(state, i), extract_stack(task.state_dict(), i)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(task.rack.embed.weight, state["rack"]["embed"]["weight"]) and not task.rack.embed.weight.requires_grad
    loose = make(init_stacks={0: extract_stack(state, 0)}, init_stacks_frozen=False)
    assert len(loose.specs) == 1 and all(p.requires_grad for p in loose.rack.stacks[0].parameters())


def test_restore_with_other_sizes_is_a_clear_error():
    state = make().state_dict()
    with pytest.raises(StackStateError, match="set model.d_model=32"):
        make(d_model=48).load_state_dict(state)


def test_segmentation_data_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="needs text data"):
        StackWiseTask(SegShapes(), seed=0)


def test_validate_reports_bits_per_byte():
    task = make()
    ds = task.val_dataset()
    metrics = task.validate([task.collate([ds[i] for i in range(4)])], ctx(0))
    assert 7.0 < metrics["val/bpb"] < 9.0  # an untrained byte model is near uniform (8 bits)


@pytest.mark.slow
def test_smoke_scale_runs_at_least_five_steps_per_second():
    task = StackWiseTask(TextCorpus(), seed=0, scale="smoke")
    task.setup(total_steps=40, steps_per_epoch=40, device=CPU)
    ds = task.train_dataset()
    start = time.perf_counter()
    for step in range(40):
        c = StepContext(step, 0, 40, 40, CPU)
        loss, _ = task.training_step(task.collate([ds[(0, step * 16 + i)] for i in range(16)]), c)
        loss.backward()
        task.before_optimizer_step(c)
        task.optimizers()[0].step()
        task.after_optimizer_step(c)
        task.optimizers()[0].zero_grad(set_to_none=True)
    assert 40 / (time.perf_counter() - start) >= 5.0


def test_end_to_end_strategy_trains_the_final_rack_whole_from_step_zero():
    task = make(strategy="end_to_end")
    assert len(task.specs) == 3 and not any(s.frozen for s in task.specs)
    assert task.append_steps() == []
    before = [p.detach().clone() for p in task.rack.stacks[0].parameters()]
    train(task, 0, 6)
    assert len(task.specs) == 3  # nothing is appended
    assert all(p.requires_grad for p in task.rack.parameters() if p.dtype.is_floating_point)
    assert any(not torch.equal(a, b) for a, b in zip(before, task.rack.stacks[0].parameters()))


def test_end_to_end_strategy_resumes_bit_exactly():
    a = make(strategy="end_to_end")
    train(a, 0, 3)
    b = make(strategy="end_to_end")
    b.load_state_dict(round_trip(a.state_dict()))
    train(a, 3, 5)
    train(b, 3, 5)
    for (ka, va), (kb, vb) in zip(a.rack.state_dict().items(), b.rack.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_unknown_strategy_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="model.strategy must be one of"):
        make(strategy="sideways")


def test_validation_reports_the_held_out_unigram_baseline_beside_bits_per_byte():
    task = make()
    ds = task.val_dataset()
    metrics = task.validate([task.collate([ds[i] for i in range(4)])], ctx(0))
    assert metrics["val/baseline_unigram_bpb"] == pytest.approx(corpus().unigram_val_bpb())
    assert 2.0 < metrics["val/baseline_unigram_bpb"] < 8.0


def test_a_weights_only_state_rebuilds_the_grown_rack_with_a_fresh_optimizer():
    grown = make(stack_precisions=["half", "full", "full"], lora={"enabled": True, "rank": 2, "alpha": 4.0})
    train(grown, 0, 5)
    state = grown.state_dict(optimizer=False)
    assert "optimizer" not in state and "rack" in state
    fresh = make(stack_precisions=["half", "full", "full"], lora={"enabled": True, "rank": 2, "alpha": 4.0})
    fresh.load_state_dict(round_trip(state))
    assert [s.to_json() for s in fresh.specs] == [s.to_json() for s in grown.specs]
    assert [p.requires_grad for p in fresh.rack.parameters()] == [p.requires_grad for p in grown.rack.parameters()]
    a, b = encode(grown.state_dict(optimizer=False))[0], encode(fresh.state_dict(optimizer=False))[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not fresh.optimizers()[0].state
    train(fresh, 5, 6)  # and it trains on


def test_init_stacks_take_any_stacks_of_the_earlier_run_in_the_order_asked():
    earlier = make()
    train(earlier, 0, 5)
    state = round_trip(earlier.state_dict())
    task = make(init_stacks=state, init_stacks_indices=[2, 0], target_stacks=5)
    assert [s.source for s in task.specs] == ["init", "init", "fresh"]
    for new, old in ((0, 2), (1, 0)):
        a, b = extract_stack(state, old), extract_stack(task.state_dict(), new)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    gapped = make(init_stacks={1: extract_stack(state, 1), 3: extract_stack(state, 2)}, init_stacks_frozen=False)
    assert len(gapped.specs) == 2  # stacks 1 and 3 of a file become 0 and 1
    with pytest.raises(StackStateError, match=r"init_stacks_indices=\[5\] must name distinct stacks of the \[0, 1, 2\]"):
        make(init_stacks=state, init_stacks_indices=[5])
