"""Numbers in reports carry the digits that mean something: 4 significant, and mean ± std to the spread's precision."""

from __future__ import annotations

import pytest

from waypoint.analysis.fmt import mean_std, num, pm


@pytest.mark.parametrize(
    "value, shown",
    [
        (0.9526462554931641, "0.9526"),
        (5.857141971588135, "5.857"),
        (0.0001999205663843396, "0.0001999"),
        (880.0, "880"),
        (2.0, "2"),
        (12, "12"),
        (None, "-"),
        (float("nan"), "nan"),
        ("step_000000008", "step_000000008"),
    ],
)
def test_a_single_figure_is_shown_to_four_significant_digits(value, shown) -> None:
    assert num(value) == shown


def test_mean_and_spread_are_rounded_to_the_spreads_second_significant_digit() -> None:
    assert pm(*mean_std([0.41, 0.4412, 0.38])) == "0.410 ± 0.031 (n=3)"
    assert pm(*mean_std([0.5, 0.5])) == "0.5 ± 0 (n=2)"
    assert pm(*mean_std([0.73])) == "0.73 (n=1)"
    assert pm(*mean_std([])) == "-"
    assert mean_std([1.0, float("nan"), 3.0]) == (2.0, pytest.approx(2**0.5), 2)
