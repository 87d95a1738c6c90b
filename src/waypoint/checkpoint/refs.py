"""Checkpoint references: where a run's checkpoints live, and ``RUN_DIR@SELECTOR``.

A reference names a run directory, its ``checkpoints/``, one checkpoint directory, or an fsspec URL of any of
these, optionally followed by ``@SELECTOR``. With ``checkpoint.root`` a run's checkpoints live at
``<root>/<run>/checkpoints`` (``run_checkpoints``), found through the run's saved Hydra config; ``stores_beneath``
finds the many stores under such a root.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import manifest as mf
from .catalog import CKPT_NAME, FENCE
from .errors import CheckpointError
from .manager import CheckpointManager
from .storage import backend_for, is_url, local_path


class BadReferenceError(CheckpointError, ValueError):
    """A path that holds no checkpoints."""


def run_key(run_dir: Path, cwd: Path) -> str:
    """A run directory as a ``/``-separated key: relative to ``cwd`` when below it, else its name."""
    try:
        rel = Path(os.path.abspath(run_dir)).relative_to(os.path.abspath(cwd))
    except ValueError:
        rel = Path(Path(run_dir).name)
    return rel.as_posix()


def run_checkpoints(root: str | os.PathLike | None, run_dir: Path, cwd: Path) -> Path | str:
    """Where a run's checkpoints go: ``<run_dir>/checkpoints``, or ``<root>/<run>/checkpoints`` under a
    configured ``checkpoint.root`` (a directory or a URL)."""
    if not root:
        return Path(run_dir) / "checkpoints"
    text, key = str(root).rstrip("/"), run_key(run_dir, cwd)
    return f"{text}/{key}/checkpoints" if is_url(text) else Path(local_path(text)) / key / "checkpoints"


def saved_checkpoint_config(run_dir: str | Path) -> dict:
    """The ``checkpoint`` group a local run directory was trained with (empty when it has no saved config)."""
    import yaml

    try:
        cfg = yaml.safe_load((Path(run_dir) / ".hydra" / "config.yaml").read_text()) or {}
        return dict(cfg.get("checkpoint") or {})
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return {}


def backup_root(dest: str | os.PathLike) -> Path | str:
    """The checkpoints root of a backup destination (a run-like layout: ``<dest>/checkpoints``)."""
    text = str(dest).rstrip("/")
    if text.endswith("/checkpoints") or text.endswith(os.sep + "checkpoints"):
        return text if is_url(text) else Path(local_path(text))
    return f"{text}/checkpoints" if is_url(text) else Path(local_path(text)) / "checkpoints"


def _configured(run_dir: Path) -> Path | str | None:
    """A local run directory's checkpoints as its saved config placed them (``checkpoint.root``), or None."""
    import yaml

    try:
        root = saved_checkpoint_config(run_dir).get("root")
        if not root:
            return None
        runtime = (yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text()) or {})["hydra"]["runtime"]
        return run_checkpoints(root, Path(runtime["output_dir"]), Path(runtime["cwd"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return None


def checkpoints_root(run_dir: str | Path) -> Path | str:
    """The checkpoints root a reference names: a run's ``checkpoints/`` (followed to ``checkpoint.root`` when the
    run was configured so), a checkpoints directory itself, or a URL (its ``checkpoints/`` prefix when that holds
    objects, else the URL itself)."""
    if is_url(run_dir):
        url = str(run_dir).rstrip("/")
        if url.endswith("/checkpoints"):
            return url
        return f"{url}/checkpoints" if backend_for(url).list("checkpoints/") else url
    path = Path(local_path(run_dir))
    if (path / "checkpoints").is_dir():
        return path / "checkpoints"
    if path.is_dir() and ((path / "packs").is_dir() or (path / "index.json").exists() or path.name == "checkpoints"):
        return path
    configured = _configured(path) if path.is_dir() else None
    if configured is not None:
        return configured
    if not path.exists():
        raise BadReferenceError(f"{run_dir} does not exist")
    raise BadReferenceError(f"{run_dir} holds no checkpoints/ directory; pass a run directory or its checkpoints/ directory")


def stores_beneath(location: str | Path) -> list[Path | str]:
    """Every checkpoints root below ``location`` (a ``checkpoint.root`` holding many runs), sorted."""
    backend = backend_for(str(location))
    found = set()
    for key in backend.list():
        parts = key.split("/")
        if len(parts) >= 2 and parts[-1] == FENCE:
            found.add("/".join(parts[:-1]))
        elif len(parts) >= 3 and parts[-1] == mf.MANIFEST and CKPT_NAME.match(parts[-2]):
            found.add("/".join(parts[:-2]))
    if is_url(location):
        return [f"{str(location).rstrip('/')}/{b}" for b in sorted(found)]
    return [Path(local_path(location)) / b for b in sorted(found)]


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
