"""The runs under the roots the interface was started on, and the fence around them.

The browser never sends a path: it names a run by the id this catalog gave it (``<root>/<relative path>``)
and a checkpoint by a selector. Every run directory is resolved (symlinks followed) and must lie inside
one of the resolved roots; anything else is refused with ``PathRefusedError``. Listing walks the roots
without following symbolic links, and is done again on every refresh so that new runs and sweep jobs appear.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from waypoint.checkpoint import CheckpointManager

from .errors import PathRefusedError

log = logging.getLogger(__name__)

SKIP_DIRS = frozenset({"checkpoints", "report", ".hydra", "wandb", "__pycache__"})
#: what the browser may send as a checkpoint selector (the manager's selector forms; no path separators)
_SELECTOR = re.compile(r"^(latest|best|step:\d{1,18}|tag:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}|[A-Za-z0-9][A-Za-z0-9_.-]{0,127})$")


@dataclass(frozen=True)
class RunRef:
    """One run directory found under a root."""

    id: str  # what the browser sends back: "<root label>/<path relative to the root>"
    path: Path  # resolved, inside ``root``
    root: Path
    sweep: str | None = None  # id of the sweep (Hydra multirun) directory it belongs to

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def has_checkpoints(self) -> bool:
        return self.checkpoints.is_dir()


def is_run_dir(path: Path) -> bool:
    """A directory holding a run's checkpoints or metrics (as ``analyze.py`` decides)."""
    return (path / "checkpoints").is_dir() or (path / "metrics.jsonl").is_file()


def check_selector(selector: str) -> str:
    """``selector`` when it is one of the manager's selector forms, else ``PathRefusedError`` (no paths, no ``..``)."""
    selector = (selector or "").strip()
    if not _SELECTOR.match(selector) or ".." in selector:
        raise PathRefusedError(
            f"'{selector}' is not a checkpoint selector; use latest, best, step:N, tag:NAME or a checkpoint name"
        )
    return selector


def inside(path: Path, root: Path) -> bool:
    """``path`` resolved (symlinks followed) lies in ``root`` resolved."""
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except (ValueError, OSError, RuntimeError):
        return False


class Catalog:
    """Runs and sweeps under a fixed set of root directories."""

    def __init__(self, roots: list[str | os.PathLike]) -> None:
        if not roots:
            raise PathRefusedError("no directory to show; pass run, sweep, outputs/ or multirun/ directories")
        resolved: list[Path] = []
        for r in roots:
            p = Path(r).expanduser()
            if not p.is_dir():
                raise PathRefusedError(f"{r} is not a directory; pass run, sweep, outputs/ or multirun/ directories")
            if p.resolve() not in resolved:
                resolved.append(p.resolve())
        self.roots = resolved
        self.labels: dict[str, Path] = {}
        for root in self.roots:
            label = root.name or "root"
            n = 2
            while label in self.labels:
                label, n = f"{root.name}-{n}", n + 1
            self.labels[label] = root

    # ------------------------------------------------------------------ listing
    def runs(self) -> list[RunRef]:
        """Every run directory under the roots, sorted by id (walked again on every call)."""
        found: dict[str, RunRef] = {}
        for label, root in self.labels.items():
            for path, sweep in self._walk(root):
                rel = path.relative_to(root).as_posix()
                run_id = label if rel == "." else f"{label}/{rel}"
                sweep_id = None
                if sweep is not None:
                    srel = sweep.relative_to(root).as_posix()
                    sweep_id = label if srel == "." else f"{label}/{srel}"
                found.setdefault(run_id, RunRef(run_id, path, root, sweep_id))
        return sorted(found.values(), key=lambda r: r.id)

    def _walk(self, root: Path) -> list[tuple[Path, Path | None]]:
        out: list[tuple[Path, Path | None]] = []
        sweeps: list[Path] = []
        for dirpath, dirnames, _files in os.walk(root, followlinks=False):
            here = Path(dirpath)
            if (here / "multirun.yaml").is_file():
                sweeps.append(here)
            if is_run_dir(here):
                if self._safe_run(here, root):
                    sweep = next((s for s in reversed(sweeps) if s != here and here.is_relative_to(s)), None)
                    if sweep is None and here != root and "multirun" in here.relative_to(root).parts[:-1]:
                        sweep = here.parent  # a Hydra sweep dir whose multirun.yaml is missing
                    out.append((here, sweep))
                dirnames[:] = []  # a run's subdirectories are its own business
                continue
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        return out

    @staticmethod
    def _safe_run(path: Path, root: Path) -> bool:
        ckpts = path / "checkpoints"
        if ckpts.exists() and (ckpts.is_symlink() or not inside(ckpts, root)):
            log.warning("skipping %s: its checkpoints/ leads outside %s", path, root)
            return False
        return inside(path, root)

    def sweeps(self) -> dict[str, list[RunRef]]:
        """Sweep id -> its jobs."""
        out: dict[str, list[RunRef]] = {}
        for run in self.runs():
            if run.sweep:
                out.setdefault(run.sweep, []).append(run)
        return out

    def sweep_path(self, sweep_id: str) -> Path:
        """The directory of a sweep id this catalog listed."""
        for run in self.runs():
            if run.sweep == sweep_id:
                label, _, rel = sweep_id.partition("/")
                path = (self.labels[label] / rel) if rel else self.labels[label]
                if inside(path, self.labels[label]):
                    return path.resolve()
        raise PathRefusedError(f"'{sweep_id}' is not a sweep under {self._roots_text()}")

    # ------------------------------------------------------------------ lookups
    def run(self, run_id: str) -> RunRef:
        """The run with this id; ``PathRefusedError`` for anything that is not a listed run inside the roots."""
        run_id = (run_id or "").strip()
        label, _, rel = run_id.partition("/")
        root = self.labels.get(label)
        if root is None or any(part in ("..", ".") for part in rel.split("/")) or rel.startswith("/") or "\\" in rel:
            raise PathRefusedError(f"'{run_id}' is not a run under {self._roots_text()}")
        path = root / rel if rel else root
        if not inside(path, root) or not path.is_dir() or not self._safe_run(path, root) or not is_run_dir(path):
            raise PathRefusedError(f"'{run_id}' is not a run under {self._roots_text()}")
        for ref in self.runs():
            if ref.id == run_id:
                return ref
        raise PathRefusedError(f"'{run_id}' is not a run under {self._roots_text()}")

    def manager(self, run_id: str, *, write: bool = False) -> CheckpointManager:
        """A manager over a run's checkpoints: read-only (no lock, nothing written) unless ``write``."""
        ref = self.run(run_id)
        if not ref.has_checkpoints:
            raise PathRefusedError(f"run '{run_id}' has no checkpoints/ directory")
        return CheckpointManager(ref.checkpoints, read_only=not write)

    def split_ref(self, ref: str) -> tuple[str, str]:
        """``"<run id>@<selector>"`` -> (run id, selector), both checked."""
        run_id, sep, selector = (ref or "").rpartition("@")
        if not sep:
            run_id, selector = ref, "latest"
        self.run(run_id)
        return run_id, check_selector(selector)

    def _roots_text(self) -> str:
        return ", ".join(str(r) for r in self.roots)
