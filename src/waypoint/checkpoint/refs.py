"""Checkpoint references: a run dir, a ``checkpoints/`` dir, a checkpoint dir, or ``RUN_DIR@SELECTOR``."""

from __future__ import annotations

from pathlib import Path

from . import manifest as mf
from .errors import CheckpointError
from .manager import CheckpointManager


class BadReferenceError(CheckpointError, ValueError):
    """A path that holds no checkpoints."""


def checkpoints_root(run_dir: str | Path) -> Path:
    """The ``checkpoints/`` directory of a run dir (a checkpoints dir itself is accepted too)."""
    path = Path(run_dir)
    if (path / "checkpoints").is_dir():
        return path / "checkpoints"
    if path.is_dir() and ((path / "packs").is_dir() or (path / "index.json").exists() or path.name == "checkpoints"):
        return path
    if not path.exists():
        raise BadReferenceError(f"{run_dir} does not exist")
    raise BadReferenceError(f"{run_dir} holds no checkpoints/ directory; pass a run directory or its checkpoints/ directory")


def parse_ref(ref: str) -> tuple[str, str]:
    """Split a checkpoint reference into (run or checkpoints dir, selector)."""
    if "@" in ref:
        path, selector = ref.rsplit("@", 1)
        return path, selector or "latest"
    path = Path(ref)
    if (path / mf.MANIFEST).exists() and path.parent.name == "checkpoints":
        return str(path.parent), path.name
    return ref, "latest"


def open_ref(ref: str, *, write: bool = False) -> tuple[CheckpointManager, str]:
    """A manager over the referenced store (read-only unless ``write``) and the selector within it."""
    path, selector = parse_ref(ref)
    return CheckpointManager(checkpoints_root(path), read_only=not write), selector
