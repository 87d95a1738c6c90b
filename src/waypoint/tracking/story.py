"""What train.log and the console say about a run: per-epoch training means, and the result line that ends it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from waypoint.analysis import series as sr
from waypoint.analysis.family import family_of
from waypoint.analysis.fmt import num
from waypoint.analysis.runinfo import read_metrics


class EpochMeans:
    """The mean of every train metric over the steps of the epoch being trained."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0

    def add(self, row: Mapping[str, float]) -> None:
        """One optimizer step's train metrics."""
        self.steps += 1
        for key, value in row.items():
            if math.isfinite(value):
                self.sums[key] = self.sums.get(key, 0.0) + value

    def line(self, epoch: int, epochs: int, step: int) -> str:
        """``epoch 3/40 (step 66): means over 22 steps: train/loss 4.21, train/lr ...``; starts the next epoch afresh."""
        keys = sorted(self.sums, key=lambda k: (k not in ("train/loss", "train/lr"), k))
        means = ", ".join(f"{k} {num(self.sums[k] / self.steps)}" for k in keys)
        text = f"epoch {epoch}/{epochs} (step {step}): means over {self.steps} steps: {means or '-'}"
        self.sums, self.steps = {}, 0
        return text


def duration(seconds: float) -> str:
    """``42.1s``, ``5m56s``, ``2h03m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    m = int(seconds) // 60
    return f"{m}m{int(seconds) % 60:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def result_line(config: Mapping[str, Any], monitor: str, mode: str, run_dir: Path, best: Any, done: str) -> str:
    """The last line of a run: its family, the monitored metric's best and final values beside the baselines the
    run logged for it (metrics.jsonl), how far it got (``done``), its directory and its best checkpoint."""
    all_series = sr.series(read_metrics(run_dir))
    top, final = sr.best_and_final(all_series.get(monitor, []), mode)
    base = ", ".join(f"{k} {num(v)}" for k, v in sr.baselines(all_series, monitor).items())
    score = f"{monitor} best {num(top)}, final {num(final)}" + (f" (baselines: {base})" if base else "")
    name = getattr(best, "name", None) or "-"
    return f"result: {family_of(config).label} {score}; {done}; run {run_dir}; best checkpoint {name}"
