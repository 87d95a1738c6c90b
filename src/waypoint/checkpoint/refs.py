"""Checkpoint references: a run dir, a ``checkpoints/`` dir, a checkpoint dir, or ``RUN_DIR@SELECTOR``."""

from __future__ import annotations

from pathlib import Path

from . import manifest as mf
from .backend import FsspecBackend, is_url, local_path
from .errors import CheckpointError
from .manager import CheckpointManager


class BadReferenceError(CheckpointError, ValueError):
    """A path that holds no checkpoints."""


def checkpoints_root(run_dir: str | Path) -> Path | str:
    """The ``checkpoints/`` directory of a run dir (a checkpoints dir itself is accepted too).

    An fsspec URL (``s3://bucket/run``) names a run the same way: its ``checkpoints/`` prefix when that holds
    objects (a backup, or a run's ``checkpoint.root``), else the URL itself.
    """
    if is_url(run_dir):
        url = str(run_dir).rstrip("/")
        if url.endswith("/checkpoints"):
            return url
        backend = FsspecBackend(url)
        return f"{url}/checkpoints" if backend.list("checkpoints/") else url
    path = Path(local_path(run_dir))
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
    if not is_url(ref) and (path / mf.MANIFEST).exists() and path.parent.name == "checkpoints":
        return str(path.parent), path.name
    return ref, "latest"


def open_ref(ref: str, *, write: bool = False) -> tuple[CheckpointManager, str]:
    """A manager over the referenced store (read-only unless ``write``) and the selector within it."""
    path, selector = parse_ref(ref)
    return CheckpointManager(checkpoints_root(path), read_only=not write), selector
