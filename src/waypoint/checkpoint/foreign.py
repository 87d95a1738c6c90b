"""Loading foreign ``.pt/.pth/.ckpt`` files without ever executing code from them."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .store import CheckpointError


class UnsafeCheckpointError(CheckpointError):
    """A foreign checkpoint whose unpickling would need arbitrary code (refused)."""


def load_foreign(path: str | os.PathLike) -> Any:
    """Load a foreign PyTorch checkpoint with ``torch.load(weights_only=True)``; refuse code-executing pickles."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError:
        try:
            names = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)) or "unknown objects"
        except Exception:  # noqa: BLE001 - only used to word the message
            names = "unknown objects"
        raise UnsafeCheckpointError(
            f"{path} was refused: unpickling it would call {names}, which can run arbitrary code; only "
            "weights-only checkpoints (tensors, numbers, strings and containers) can be imported") from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({str(exc).splitlines()[0]})") from None
