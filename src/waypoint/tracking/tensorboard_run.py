"""TensorBoard event files in ``<run_dir>/tensorboard``; never blocking: any failure turns it off with one warning.

A resumed run purges what the attempt that died logged past the resumed step (``purge_step``), as metrics.jsonl
does. Each committed checkpoint is a line of text under ``checkpoints`` at its step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class TensorBoardRun:
    """A fail-safe ``SummaryWriter``: scalars of every logged row, one text line per committed checkpoint."""

    def __init__(self, run_dir: Path, resumed_step: int) -> None:
        self.writer: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
        except ImportError:
            log.warning(
                "logger=tensorboard: the tensorboard package is not installed (pip install tensorboard); "
                "logging to metrics.jsonl only"
            )
            return
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resumed_step + 1)

    def _guard(self, fn: Any, *args: Any) -> None:
        if self.writer is None:
            return
        try:
            fn(*args)
        except Exception as exc:
            log.warning("tensorboard logging failed (%s); turning it off for this run", exc)
            self.writer = None

    def log(self, row: Mapping[str, Any]) -> None:
        """Every numeric metric of one row at its step."""
        self._guard(self._scalars, row)

    def _scalars(self, row: Mapping[str, Any]) -> None:
        for key, value in row.items():
            if key not in ("step", "time", "epoch") and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, float(value), int(row["step"]))

    def committed(self, info: Any, files: Iterable[Path]) -> None:
        """A committed checkpoint (any thread: the writer queues events)."""
        text = f"{info.name} (tags {', '.join(info.tags) or '-'}): digest {info.digest}"
        self._guard(self.writer.add_text if self.writer else None, "checkpoints", text, info.step)

    def finish(self, exit_code: int = 0) -> None:
        self._guard(self.writer.close if self.writer else None)
        self.writer = None
