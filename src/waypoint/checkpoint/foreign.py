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
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported content"
        raise UnsafeCheckpointError(
            f"{path} was refused: loading it would execute code or build objects that are not plain tensors and "
            f"containers ({first}); only weights-only checkpoints can be imported") from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({str(exc).splitlines()[0]})") from None
