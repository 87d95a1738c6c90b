"""checkpoint.monitor / checkpoint.mode: which metric defines best, and in which direction."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from waypoint.training.build import monitored_metric


def ck(**kw):
    return OmegaConf.create({"monitor": None, "mode": None, **kw})


def test_the_default_is_the_model_familys_own_metric_and_mode() -> None:
    assert monitored_metric(ck(), "val/dice", "max") == ("val/dice", "max")


def test_a_configured_metric_and_mode_win() -> None:
    assert monitored_metric(ck(monitor="val/loss", mode="min"), "val/dice", "max") == ("val/loss", "min")


def test_a_loss_like_metric_without_a_mode_is_minimised() -> None:
    assert monitored_metric(ck(monitor="val/loss"), "val/dice", "max") == ("val/loss", "min")


def test_another_metric_without_a_mode_is_refused_in_one_sentence() -> None:
    with pytest.raises(ValueError, match=r"checkpoint.monitor=val/stacks needs checkpoint.mode=max or checkpoint.mode=min"):
        monitored_metric(ck(monitor="val/stacks"), "val/bpb", "min")


def test_a_mode_other_than_max_or_min_is_refused() -> None:
    with pytest.raises(ValueError, match="checkpoint.mode must be max or min, not 'up'"):
        monitored_metric(ck(mode="up"), "val/dice", "max")
