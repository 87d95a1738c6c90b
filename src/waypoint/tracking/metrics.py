"""metrics.jsonl: one JSON object per logged step or validation, the source of truth for every report."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Appends rows to ``<run_dir>/metrics.jsonl``; on resume, rows past the resumed step are dropped."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self._fh = None

    def truncate_after(self, step: int) -> int:
        """Drop rows logged after ``step`` (by a run that died before saving them); returns how many."""
        if not self.path.exists():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a torn last line from a kill
                dropped += 1
                continue
            if isinstance(row.get("step"), int) and row["step"] > step:
                dropped += 1
            else:
                kept.append(line)
        if dropped:
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.path)
        return dropped

    def log(self, row: Mapping[str, Any]) -> None:
        """Append one row and flush it."""
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
