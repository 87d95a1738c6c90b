"""Console progress: a tqdm bar with step rate and ETA, or plain lines when the bar is off."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping

from tqdm import tqdm


def clock(seconds: float) -> str:
    """``1:02:03`` (hours, minutes, seconds)."""
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressBar:
    """Optimizer steps done out of the planned total, the epoch being trained (1-based, of ``epochs``), the step
    rate and the time left; nothing at all when ``shown`` is false (ranks other than 0)."""

    def __init__(self, total: int, initial: int, epochs: int, bar: bool, every: int, shown: bool = True) -> None:
        self.total, self.epochs, self.every, self.start, self.t0 = total, epochs, max(1, every), initial, time.monotonic()
        self.shown = shown
        self.bar = (
            tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr, mininterval=0.5)
            if bar and shown
            else None
        )

    def update(self, step: int, epoch: int, logs: Mapping[str, float]) -> None:
        """Advance to ``step`` completed steps, in (0-based) ``epoch``."""
        if not self.shown:
            return
        loss = logs.get("train/loss")
        text = f"epoch {epoch + 1}/{self.epochs}" + (f" loss {loss:.4g}" if loss is not None else "")
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix_str(text, refresh=False)
        elif step % self.every == 0 or step == self.total:
            rate = (step - self.start) / max(1e-9, time.monotonic() - self.t0)
            eta = (self.total - step) / rate if rate > 0 else 0.0
            print(f"step {step}/{self.total} {text} | {rate:.2f} steps/s | ETA {clock(eta)}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
