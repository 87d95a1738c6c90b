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
        (KeepLast(2), KeepBest(1, "acc", "min"), KeepMilestones(fractions=frozenset({0.5, 1.0}), total_steps=8), KeepEveryN(4))
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
