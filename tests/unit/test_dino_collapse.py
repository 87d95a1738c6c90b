"""DINO collapse detection: pure logic over the teacher's entropy, one value per step."""

from __future__ import annotations

import math

import pytest

from waypoint.tasks.dino.collapse import CollapseDetector

K = 256
UNIFORM = math.log(K)


def feed(det: CollapseDetector, values: list[float]) -> list[str]:
    return [msg for step, h in enumerate(values, 1) if (msg := det.update(h, step))]


def test_uniform_entropy_for_patience_steps_is_reported_once() -> None:
    det = CollapseDetector(K, patience=5)
    messages = feed(det, [0.995 * UNIFORM] * 12)
    assert len(messages) == 1
    assert "uniform" in messages[0] and "step 5" in messages[0] and f"ln({K})" in messages[0]


def test_entropy_near_zero_is_one_prototype_collapse() -> None:
    det = CollapseDetector(K, patience=3)
    messages = feed(det, [0.001] * 3)
    assert len(messages) == 1 and "one-prototype" in messages[0]


def test_a_streak_shorter_than_patience_says_nothing() -> None:
    det = CollapseDetector(K, patience=5)
    assert feed(det, [UNIFORM] * 4 + [0.5 * UNIFORM] + [UNIFORM] * 4) == []


def test_healthy_entropy_is_never_reported() -> None:
    det = CollapseDetector(K, patience=1)
    assert feed(det, [0.98 * UNIFORM, 0.5 * UNIFORM, 0.02 * UNIFORM] * 10) == []


def test_a_new_streak_after_recovery_is_reported_again() -> None:
    det = CollapseDetector(K, patience=2)
    assert len(feed(det, [UNIFORM] * 3 + [2.0] + [UNIFORM] * 3)) == 2


def test_patience_zero_disables_detection() -> None:
    assert feed(CollapseDetector(K, patience=0), [UNIFORM] * 100) == []


def test_restored_counters_continue_the_streak() -> None:
    a = CollapseDetector(K, patience=6)
    feed(a, [UNIFORM] * 4)
    b = CollapseDetector(K, patience=6)
    b.load(a.state())
    assert b.update(UNIFORM, 5) is None
    assert b.update(UNIFORM, 6) is not None


@pytest.mark.parametrize(
    "kw, message", [({"patience": -1}, "collapse_patience"), ({"patience": 5, "tolerance": 0.0}, "collapse_tolerance")]
)
def test_an_impossible_setting_is_named(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CollapseDetector(K, **kw)
