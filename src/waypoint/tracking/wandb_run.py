"""Weights & Biases, offline by default, never blocking: any failure turns it off with one warning.

The wandb run id is kept in ``<run_dir>/wandb_run_id`` so a resumed run continues the same wandb run.
Each committed checkpoint is one artifact version *by reference* (``file://`` URIs of its files and packs), never
copied; commits are queued from any thread and logged on the training thread.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class WandbRun:
    """A thin, fail-safe wrapper over ``wandb.init`` / ``log`` / ``log_artifact``."""

    def __init__(
        self, run_dir: Path, project: str, entity: str | None, mode: str, tags: list[str], config: Mapping[str, Any], name: str
    ) -> None:
        self.run: Any = None
        self._pending: queue.SimpleQueue[tuple[Any, list[Path]]] = queue.SimpleQueue()
        self._reported: set[str] = set()
        try:
            import wandb  # optional: pip install 'waypoint[wandb]'
        except ImportError:
            log.warning("logger=wandb: the wandb package is not installed (pip install wandb); logging to metrics.jsonl only")
            return
        id_file = run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
        id_file.write_text(run_id + "\n")
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            self.run = wandb.init(
                project=project,
                entity=entity,
                id=run_id,
                resume="allow",
                mode=mode,
                dir=str(run_dir),
                config=dict(config),
                tags=list(tags),
                name=name,
                reinit="finish_previous",
                settings=wandb.Settings(init_timeout=20, console="off"),
            )
            self._wandb = wandb
        except Exception as exc:  # no network, bad credentials, ... : the run goes on
            log.warning(f"logger=wandb could not start ({type(exc).__name__}: {exc}); logging to metrics.jsonl only")
            self.run = None

    def log(self, row: Mapping[str, Any]) -> None:
        """Log one metrics row at its step (and the checkpoints committed since the last call)."""
        self.flush_checkpoints()
        self._guard(
            "logging", lambda: self.run.log({k: v for k, v in row.items() if k not in ("step", "time")}, step=int(row["step"]))
        )

    def _guard(self, what: str, fn: Any) -> None:
        """Call ``fn`` while wandb is on; a failure turns it off with one warning."""
        if self.run is None:
            return
        try:
            fn()
        except Exception as exc:
            log.warning("wandb %s failed (%s); turning wandb off for this run", what, exc)
            self.run = None

    def committed(self, info: Any, files: Iterable[Path]) -> None:
        """Queue a committed checkpoint (any thread; e.g. a ``CheckpointManager.on_commit`` listener)."""
        self._pending.put((info, [Path(f) for f in files]))

    def flush_checkpoints(self) -> int:
        """Log the queued checkpoints, each once; returns how many were logged."""
        logged = 0
        while True:
            try:
                info, files = self._pending.get_nowait()
            except queue.Empty:
                return logged
            if info.name in self._reported:
                continue
            self._reported.add(info.name)
            aliases = [*(["latest"] if "emergency" not in info.tags else []), f"step-{info.step}", *info.tags]
            self.checkpoint(info.name, info.step, files, aliases, {"digest": info.digest, "metrics": dict(info.metrics)})
            logged += 1

    def checkpoint(
        self, name: str, step: int, files: Iterable[Path], aliases: list[str], metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Log one checkpoint as an artifact referencing (not copying) the files that hold its bytes."""

        def log_artifact() -> None:
            meta = {"checkpoint": name, "step": step, **dict(metadata or {})}
            art = self._wandb.Artifact(f"checkpoints-{self.run.id}", type="checkpoint", metadata=meta)
            for f in map(lambda f: Path(f).resolve(), files):
                entry = f"packs/{f.name}" if f.parent.name == "packs" else f"{name}/{f.name}"
                art.add_reference(f"file://{f}", name=entry, checksum=False)
            self.run.log_artifact(art, aliases=list(dict.fromkeys(aliases)))

        self._guard("artifact logging", log_artifact)

    def finish(self, exit_code: int = 0) -> None:
        """Log what is still queued, then close the wandb run."""
        self.flush_checkpoints()
        self._guard("finish", lambda: self.run.finish(exit_code=exit_code))
        self.run = None
