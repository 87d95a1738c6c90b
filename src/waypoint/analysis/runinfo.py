"""One run as reports see it: where it is, its saved config and overrides, its family and monitored metric, its metrics.

Everything comes from what the run wrote: ``.hydra/config.yaml`` and ``.hydra/overrides.yaml`` (else the config
its newest checkpoint records, asked of the ``CheckpointManager``), and ``metrics.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from waypoint.checkpoint import CheckpointManager

from .family import Family, family_of

#: config sections that never change what a run computes (left out of grouping, still in the diff table)
STEERING = ("checkpoint", "logger", "hardware", "resume", "name", "init_from")
#: trainer keys that only steer a run
STEERING_KEYS = ("trainer.progress_bar", "trainer.log_every_n_steps", "data.num_workers", "trainer.eval_only")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl`` (damaged lines, e.g. a torn last line after a crash, are skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def is_run_dir(path: Path) -> bool:
    """A directory that holds a run's checkpoints or metrics."""
    return (path / "checkpoints").is_dir() or (path / "metrics.jsonl").is_file()


def flatten(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted.key, value)`` of every leaf of a nested config (lists stay whole values)."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, tree


def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None


@dataclass
class RunInfo:
    """A run directory and what it recorded about itself."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    family: Family = field(default_factory=lambda: family_of(None))
    monitor: str | None = None
    mode: str = "max"
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The run directory's name (a sweep job's name is its overrides)."""
        return self.path.name

    @property
    def described_by(self) -> str:
        """The command-line overrides that made the run (``default`` when none)."""
        shown = [o for o in self.overrides if not o.startswith("hydra.") and o != f"model={self.family.key}"]
        return ", ".join(shown) or "default"

    @property
    def title(self) -> str:
        """What a report's title calls the run: its family and its overrides."""
        return f"{self.family.label} · {self.described_by}"

    def flat_config(self) -> dict[str, Any]:
        """The saved config as ``dotted.key -> value`` (lists as JSON text, so they compare and print)."""
        return {k: json.dumps(v) if isinstance(v, list) else v for k, v in flatten(self.config)}

    @property
    def seed(self) -> Any:
        """The run's seed (None when unknown)."""
        return self.config.get("seed")


def _checkpoint_meta(run_dir: Path) -> dict[str, Any]:
    """The meta the newest checkpoint records (config, task, monitor, mode), or {} when there is none."""
    if not (run_dir / "checkpoints").is_dir():
        return {}
    with CheckpointManager(run_dir / "checkpoints", read_only=True) as mgr:
        infos = mgr.list(include_invalid=False)
        if not infos:
            return {}
        meta = dict(mgr.manifest(infos[-1].name).meta or {})
        meta.setdefault("monitor", mgr.monitor)
        meta.setdefault("mode", mgr.mode)
        return meta


def load_run(run_dir: str | Path) -> RunInfo:
    """What ``run_dir`` recorded about itself (a run without ``.hydra/`` or checkpoints gets what it has)."""
    path = Path(run_dir)
    config = _yaml(path / ".hydra" / "config.yaml")
    overrides = _yaml(path / ".hydra" / "overrides.yaml")
    meta = _checkpoint_meta(path)
    if not isinstance(config, dict):
        config = dict(meta.get("config") or {})
    family = family_of(config, meta.get("task"))
    monitor = meta.get("monitor") or family.monitor
    mode = meta.get("mode") or family.mode
    return RunInfo(
        path=path,
        config=config,
        overrides=[str(o) for o in overrides] if isinstance(overrides, list) else [],
        family=family,
        monitor=monitor,
        mode=str(mode),
        rows=read_metrics(path),
    )
