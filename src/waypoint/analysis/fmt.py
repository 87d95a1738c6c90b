"""Numbers as a reader wants them: a few meaningful digits, and mean ± std with the digits the spread allows."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

#: significant digits of a single figure (0.9526462554931641 -> 0.9526)
DIGITS = 4


def num(value: Any, digits: int = DIGITS) -> str:
    """A value for a table or a sentence: floats to ``digits`` significant digits, whole floats without '.0'."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.{digits}g}"


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (None for fewer than 2 values) and count of the finite values."""
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return None, None, 0
    std = statistics.stdev(finite) if len(finite) > 1 else None
    return statistics.fmean(finite), std, len(finite)


def pm(mean: float | None, std: float | None, n: int) -> str:
    """``mean ± std (n=N)``, the mean rounded to the standard deviation's second significant digit."""
    if mean is None:
        return "-"
    if std is None or std == 0 or not math.isfinite(std):
        body = num(mean) + (" ± 0" if std == 0 else "")
        return f"{body} (n={n})"
    decimals = max(0, 1 - math.floor(math.log10(std)))
    return f"{mean:.{decimals}f} ± {std:.{decimals}f} (n={n})"
