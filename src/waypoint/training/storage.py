"""Where a run's checkpoints live: ``<run dir>/checkpoints`` or, with ``checkpoint.root``, a directory or
an fsspec URL (``s3://bucket/prefix``). Metrics and logs always stay in the local run directory.

Under a root, a run's checkpoints go to ``<root>/<run>/checkpoints``, where ``<run>`` is the run directory
as the command names it (relative to the working directory, e.g. ``outputs/dino/default``; just its name
when it lies elsewhere). The run directory is a function of the command, so the same command on a fresh
machine finds the same prefix and resumes from it.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from waypoint.checkpoint.backend import is_url, local_path


def run_key(run_dir: Path) -> str:
    """The run directory as a ``/``-separated key: relative to the working directory when below it, else its name."""
    try:
        rel = Path(os.path.abspath(run_dir)).relative_to(Path.cwd())
    except ValueError:
        rel = Path(run_dir.name)
    return rel.as_posix()


def checkpoints_root(ck: DictConfig, run_dir: Path) -> Path | str:
    """The checkpoints root of a run (a local path, or a URL string)."""
    root = ck.get("root")
    if not root:
        return run_dir / "checkpoints"
    root = str(root).rstrip("/")
    if is_url(root):
        return f"{root}/{run_key(run_dir)}/checkpoints"
    return Path(local_path(root)) / run_key(run_dir) / "checkpoints"
