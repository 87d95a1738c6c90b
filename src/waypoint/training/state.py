"""Everything of a run that must survive a restart, besides the task's own state.

The saved training state is ``{"task": ..., "progress": ..., "rng": ..., "scaler": ...}``. Nothing in it
depends on wall-clock time or on where the run was interrupted, so an interrupted and resumed run ends
with the same ``digest`` as one that never stopped.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Progress:
    """The data cursor and counters: where the next step starts."""

    step: int = 0  # optimizer steps completed
    epoch: int = 0  # the epoch the next step belongs to
    batch_in_epoch: int = 0  # batches of ``epoch`` already consumed
    best_value: float | None = None  # best monitored value seen (drives on-improvement saves)
    pending_validation: bool = False  # interrupted during validation: validate again before training on

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Progress:
        return cls(**{k: state[k] for k in asdict(cls()) if k in state})


def rng_state() -> dict[str, Any]:
    """The global RNG streams: python, numpy, torch CPU and every initialised CUDA device."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "key": np_state["state"]["key"],
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": np.asarray(npst["key"], dtype=np.uint32), "pos": npst["pos"]},
            "has_gauss": npst["has_gauss"],
            "gauss": npst["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) from the run seed."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
