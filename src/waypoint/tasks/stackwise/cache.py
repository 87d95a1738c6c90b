"""Activation cache: the output of the rack's frozen prefix per training item, so it is computed once.

Keyed by dataset index (item ``i`` is the same bytes every epoch); entries never change once written, so
checkpoints share them. Valid for one prefix length (an append clears it); filling stops at ``max_items`` (no
eviction, so contents depend on the training history alone).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Optional

import torch


class ActivationCache:
    """``{dataset index: hidden states entering stack `prefix`}``."""

    def __init__(self, max_items: Optional[int]) -> None:
        self.max_items = max_items
        self.prefix = -1
        self.items: dict[int, torch.Tensor] = {}
        self.hits = 0  # rows served from the cache

    def reset(self, prefix: int) -> None:
        """Forget everything; entries will hold inputs of stack ``prefix``."""
        self.prefix, self.items = prefix, {}

    def lookup(self, indices: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Hidden states for ``indices`` (B,), calling ``compute(positions)`` once for the rows not cached."""
        keys = [int(i) for i in indices.tolist()]
        missing = [row for row, key in enumerate(keys) if key not in self.items]
        self.hits += len(keys) - len(missing)
        fresh = compute(torch.tensor(missing, dtype=torch.long)) if missing else None
        rows: list[torch.Tensor] = []
        fresh_row = 0
        for key in keys:
            if key in self.items:
                rows.append(self.items[key])
                continue
            assert fresh is not None
            value = fresh[fresh_row]
            fresh_row += 1
            if self.max_items is None or len(self.items) < self.max_items:
                self.items[key] = value.clone()
            rows.append(value)
        return torch.stack(rows)

    def state_dict(self) -> dict[str, Any]:
        """``{"prefix": int, "items": {index: tensor}}``."""
        return {"prefix": self.prefix, "items": dict(self.items)}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        self.prefix = int(state["prefix"])
        self.items = {int(k): v.to(device) for k, v in dict(state["items"]).items()}
