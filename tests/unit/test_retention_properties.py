"""Retention is a pure union of pools; these properties hold for any checkpoint history."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from waypoint.checkpoint import (
    Candidate,
    KeepBest,
    KeepEveryN,
    KeepLast,
    KeepMilestones,
    KeepTagged,
    RetentionPolicy,
    SaveTriggers,
    TriggerState,
    milestone_steps,
)
from waypoint.checkpoint.policy import KeepEvolution, evolution_steps

metric = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32))


@st.composite
def histories(draw):
    steps = draw(st.lists(st.integers(1, 500), min_size=0, max_size=25, unique=True))
    out = []
    for s in sorted(steps):
        tags = draw(st.frozensets(st.sampled_from(["pinned", "milestone", "preempt", "emergency", "note"]), max_size=2))
        out.append(Candidate(f"step_{s:09d}", s, s // 10, {"acc": draw(metric)}, tags, draw(st.booleans()) or True))
    return out


@st.composite
def policies(draw):
    pools = []
    if draw(st.booleans()):
        pools.append(KeepLast(draw(st.integers(0, 5))))
    if draw(st.booleans()):
        pools.append(KeepBest(draw(st.integers(0, 3)), "acc", draw(st.sampled_from(["max", "min"]))))
    if draw(st.booleans()):
        pools.append(KeepEveryN(draw(st.integers(1, 100))))
    if draw(st.booleans()):
        pools.append(KeepMilestones(steps=frozenset(draw(st.lists(st.integers(1, 500), max_size=4)))))
    if draw(st.booleans()):
        pools.append(KeepEvolution(draw(st.integers(0, 12)), draw(st.integers(1, 600))))
    return RetentionPolicy(tuple(pools))


@given(histories(), policies(), st.data())
@settings(max_examples=300, deadline=None)
def test_newest_and_protected_checkpoints_always_survive(history, policy, data):
    protect = frozenset(data.draw(st.lists(st.sampled_from([c.name for c in history]), max_size=2))) if history else frozenset()
    keep = policy.select(history, protect)
    if history:
        assert max(history, key=lambda c: c.step).name in keep
    assert protect <= keep


@given(histories(), policies())
@settings(max_examples=300, deadline=None)
def test_a_checkpoint_survives_if_any_pool_keeps_it(history, policy):
    keep = policy.select(history)
    for pool in policy.pools:
        assert pool.keep(history) <= keep
    assert KeepTagged().keep(history) <= keep or not policy.pools


@given(histories(), policies())
@settings(max_examples=300, deadline=None)
def test_retention_is_idempotent(history, policy):
    survivors = [c for c in history if c.name in policy.select(history)]
    assert policy.select(survivors) == {c.name for c in survivors}


@given(histories(), policies())
@settings(max_examples=200, deadline=None)
def test_delete_and_keep_partition_the_history(history, policy):
    keep = policy.select(history)
    doomed = policy.to_delete(history)
    assert set(doomed).isdisjoint(keep)
    assert set(doomed) | keep == {c.name for c in history}


@given(histories(), st.integers(0, 10))
def test_keep_last_keeps_exactly_the_k_newest(history, k):
    kept = KeepLast(k).keep(history)
    assert kept == {c.name for c in sorted(history, key=lambda c: c.step)[len(history) - min(k, len(history)) :]}


@given(histories(), st.integers(1, 5), st.sampled_from(["max", "min"]))
def test_keep_best_keeps_the_best_finite_values_only(history, k, mode):
    kept = [c for c in history if c.name in KeepBest(k, "acc", mode).keep(history)]
    finite = [
        c
        for c in history
        if c.metrics["acc"] is not None and math.isfinite(c.metrics["acc"]) and not c.tags & {"preempt", "emergency"}
    ]
    assert len(kept) == min(k, len(finite))
    assert all(c in finite for c in kept)
    worst_kept = (min if mode == "max" else max)((c.metrics["acc"] for c in kept), default=None)
    for c in finite:
        if c not in kept and worst_kept is not None:
            assert (c.metrics["acc"] <= worst_kept) if mode == "max" else (c.metrics["acc"] >= worst_kept)


@given(histories(), st.sampled_from(["max", "min"]))
def test_best_is_never_an_emergency_or_preempt_save_and_ties_go_to_the_earlier_checkpoint(history, mode):
    ranked = KeepBest(1, "acc", mode).ranked(history)
    if not ranked:
        return
    best = ranked[0]
    assert not best.tags & {"preempt", "emergency"}
    assert all(c.step > best.step for c in ranked if c.metrics["acc"] == best.metrics["acc"] and c is not best)


def test_a_tie_keeps_the_earlier_checkpoint_when_only_one_best_is_kept():
    history = [
        Candidate("s64", 64, metrics={"bpb": 2.0}),
        Candidate("s69", 69, metrics={"bpb": 2.0}, tags=frozenset({"preempt"})),
        Candidate("s72", 72, metrics={"bpb": 2.0}),
        Candidate("s80", 80, metrics={"bpb": 2.5}),
    ]
    assert RetentionPolicy((KeepBest(1, "bpb", "min"), KeepLast(1))).select(history) == {"s64", "s80"}


def test_no_pools_keeps_everything():
    history = [Candidate(f"s{i}", i) for i in range(5)]
    assert RetentionPolicy().select(history) == {c.name for c in history}


def test_milestone_pool_keeps_fractions_of_the_planned_run():
    history = [Candidate(f"s{i}", i) for i in range(1, 41)]
    pool = KeepMilestones(fractions=frozenset({0.25, 0.5, 0.75, 1.0}), total_steps=40)
    assert pool.keep(history) == {"s10", "s20", "s30", "s40"}


def test_policy_round_trips_through_json():
    from waypoint.checkpoint.policy import policy_from_json, policy_to_json

    policy = RetentionPolicy(
        (
            KeepLast(2),
            KeepBest(1, "acc", "min"),
            KeepMilestones(fractions=frozenset({0.5, 1.0}), total_steps=8),
            KeepEveryN(4),
            KeepEvolution(3, 8),
        )
    )
    history = [Candidate(f"s{i}", i, metrics={"acc": (i * 7) % 5}) for i in range(1, 9)]
    assert policy_from_json(policy_to_json(policy)).select(history) == policy.select(history)


def test_milestone_fractions_map_to_steps_of_the_planned_run():
    assert milestone_steps((0.25, 0.5, 0.75, 1.0), 40) == {10, 20, 30, 40}
    assert milestone_steps((0.01,), 10) == {1}


@given(st.integers(1, 200), st.integers(1, 20))
def test_every_n_steps_trigger_fires_exactly_on_multiples(total, n):
    trig = SaveTriggers(every_n_steps=n, at_end=False)
    fired = [s for s in range(1, total + 1) if trig.due(TriggerState(), step=s, total_steps=total, now=0.0)]
    assert fired == [s for s in range(1, total + 1) if s % n == 0]


def test_time_trigger_and_improvement_trigger():
    trig = SaveTriggers(every_n_minutes=1.0, on_improvement=True, at_end=True)
    state = TriggerState(last_save_step=3, last_save_time=100.0, best_value=0.5)
    assert trig.due(state, step=4, total_steps=10, now=130.0) == ()
    assert trig.due(state, step=4, total_steps=10, now=161.0) == ("every_n_minutes",)
    assert trig.due(state, step=4, total_steps=10, now=130.0, monitored=0.6, mode="max") == ("improved",)
    assert trig.due(state, step=10, total_steps=10, now=130.0, is_end=True) == ("end",)


@given(st.integers(0, 30), st.integers(1, 10_000))
def test_evolution_targets_span_the_run_from_step_0_to_its_end(count, total):
    targets = evolution_steps(count, total)
    assert len(targets) <= count
    if count >= 2:
        assert targets[0] == 0 and targets[-1] == total
    gaps = [b - a for a, b in zip(targets, targets[1:])]
    assert all(g >= 1 for g in gaps) and (not gaps or max(gaps) - min(gaps) <= 1)


@st.composite
def saved_runs(draw):
    """Steps at which a run saved (increasing), its planned length and a keep-last setting."""
    total = draw(st.integers(1, 400))
    steps = sorted(draw(st.lists(st.integers(1, total), min_size=1, max_size=60, unique=True)))
    return steps, total, draw(st.integers(0, 3)), draw(st.integers(1, 12))


@given(saved_runs())
@settings(max_examples=300, deadline=None)
def test_evolution_snapshots_kept_while_a_run_goes_on_are_the_first_checkpoint_at_or_after_each_target(run):
    steps, total, keep_last, count = run
    policy = RetentionPolicy((KeepLast(keep_last), KeepEvolution(count, total)))
    alive: list[Candidate] = []
    for step in steps:  # retention runs after every commit, as the manager does
        alive.append(Candidate(f"step_{step:09d}", step))
        doomed = set(policy.to_delete(alive))
        alive = [c for c in alive if c.name not in doomed]
    expected = {next(s for s in steps if s >= t) for t in evolution_steps(count, total) if any(s >= t for s in steps)}
    kept = {c.step for c in alive}
    assert expected <= kept
    assert {c.step for c in alive if c.name in policy.evolution(alive)} == expected
    assert len(kept) <= len(expected) + max(keep_last, 1)


def test_evolution_snapshots_of_a_long_run_are_about_ten_spread_from_its_first_checkpoint_to_its_end():
    history = [Candidate(f"s{s}", s) for s in range(22, 881, 22)]  # make train: 40 epochs of 22 steps
    kept = sorted(int(n[1:]) for n in RetentionPolicy((KeepLast(3), KeepEvolution(10, 880))).select(history))
    assert kept == [22, 110, 198, 308, 396, 506, 594, 704, 792, 836, 858, 880]


def test_emergency_and_damaged_checkpoints_are_never_evolution_snapshots():
    history = [
        Candidate("s5", 5, tags=frozenset({"emergency"})),
        Candidate("s6", 6, valid=False),
        Candidate("s7", 7),
    ]
    assert KeepEvolution(2, 10).keep(history) == {"s7"}


def test_the_default_checkpoint_group_keeps_ten_evolution_snapshots_of_the_planned_run():
    from pathlib import Path

    from omegaconf import OmegaConf

    from waypoint.config import CheckpointConfig
    from waypoint.training.build import retention_policy

    conf = Path(__file__).resolve().parents[2] / "conf" / "checkpoint"
    for group, expected in (("default", KeepEvolution(10, 880)), ("frequent", KeepEvolution(10, 880)), ("best_only", None)):
        cfg = OmegaConf.structured(CheckpointConfig)
        for layer in ("default", group):
            doc = OmegaConf.load(conf / f"{layer}.yaml")
            doc.pop("defaults", None)
            cfg = OmegaConf.merge(cfg, doc)
        pools = [p for p in retention_policy(cfg, "val/acc", "max", 880).pools if isinstance(p, KeepEvolution)]
        assert pools == ([expected] if expected else []), group
