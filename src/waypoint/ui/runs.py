"""The Runs view: one row per run (model, overrides, status, steps, metrics, wall time, disk) and sweep groups.

Status comes from the writer lock (held: ``running``) and the newest checkpoint's tags (``end``/``final``:
``finished``, ``preempt``: ``preempted``, ``emergency``: ``failed``); a run that stopped without any of
those (killed) is ``failed`` too, with the reason in ``note``. Reads take no lock.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from waypoint.analysis.report import read_metrics
from waypoint.analysis.sweep import job_row
from waypoint.checkpoint import CheckpointError, CheckpointManager

from .catalog import Catalog, RunRef, inside

log = logging.getLogger(__name__)

COLUMNS = [
    "run",
    "sweep",
    "model",
    "overrides",
    "status",
    "steps",
    "monitor",
    "best",
    "last",
    "wall time (s)",
    "checkpoints",
    "logical MiB",
    "physical MiB",
    "note",
]
STATUSES = ("running", "finished", "preempted", "failed", "no checkpoints")
FINISHED_TAGS = frozenset({"end", "final"})


def overrides_of(run: RunRef) -> list[str]:
    """The command-line overrides Hydra saved for the run (``.hydra/overrides.yaml``), or []."""
    path = run.path / ".hydra" / "overrides.yaml"
    if not path.is_file() or not inside(path, run.root):
        return []
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in doc] if isinstance(doc, list) else []


def status_of(tags: set[str], running: bool, has_checkpoint: bool) -> tuple[str, str]:
    """(status, note) from whether the writer lock is held and the newest checkpoint's tags."""
    if running:
        return "running", "a process holds the writer lock"
    if not has_checkpoint:
        return "no checkpoints", ""
    if tags & FINISHED_TAGS:
        return "finished", ""
    if "preempt" in tags:
        return "preempted", "saved on a preemption signal; the same command resumes it"
    if "emergency" in tags:
        return "failed", "emergency checkpoint after an error"
    return "failed", "stopped without a final checkpoint (killed?)"


def wall_time(rows: list[dict[str, Any]]) -> float | None:
    """Seconds from the first to the last timed row of metrics.jsonl."""
    times = [r["time"] for r in rows if isinstance(r.get("time"), (int, float))]
    return round(times[-1] - times[0], 1) if len(times) >= 2 else None


def model_of(config: dict[str, Any]) -> str:
    """The model family a run's saved config names."""
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    name = config.get("name")
    target = str(model.get("_target_", "")).rsplit(".", 1)[-1]
    return str(name or target or "")


def run_summary(run: RunRef) -> dict[str, Any]:
    """One row of the Runs table."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(run=run.id, sweep=run.sweep or "", overrides=" ".join(overrides_of(run)), checkpoints=0, note="")
    if inside(run.path / "metrics.jsonl", run.root):
        row["wall time (s)"] = wall_time(read_metrics(run.path))
    if not run.has_checkpoints:
        row["status"] = "no checkpoints"
        return row
    try:
        with CheckpointManager(run.checkpoints, read_only=True) as mgr:
            infos = [i for i in mgr.list() if i.valid]
            damaged = sum(1 for i in mgr.list() if not i.valid)
            holder = mgr.lock_holder()
            last = infos[-1] if infos else None
            best = mgr.best()
            row["status"], row["note"] = status_of(set(last.tags) if last else set(), holder is not None, last is not None)
            if holder is not None:
                row["note"] = f"training: pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
            row["checkpoints"] = len(infos)
            if damaged:
                row["note"] = (row["note"] + "; " if row["note"] else "") + f"{damaged} damaged checkpoint(s)"
            if last is not None:
                row["steps"] = max(i.step for i in infos)
                try:
                    row["model"] = model_of(mgr.manifest(last.name).config)
                except (CheckpointError, OSError, KeyError) as exc:  # deleted by a live writer since listed
                    log.info("no config for %s: %s", run.id, exc)
            mon = mgr.monitor
            row["monitor"] = mon or ""
            if mon:
                row["best"] = best.metrics.get(mon) if best else None
                row["last"] = next((i.metrics[mon] for i in reversed(infos) if i.metrics.get(mon) is not None), None)
            row["logical MiB"] = round(sum(i.logical_bytes for i in infos) / 2**20, 3)
            row["physical MiB"] = round(mgr.physical_bytes() / 2**20, 3)
    except (CheckpointError, OSError) as exc:
        row["status"], row["note"] = "failed", f"cannot read the checkpoints: {exc}"
    return row


def runs_table(catalog: Catalog) -> list[dict[str, Any]]:
    """Every run under the catalog's roots, one summary row each."""
    return [run_summary(r) for r in catalog.runs()]


def filter_rows(rows: list[dict[str, Any]], text: str = "", status: str = "all") -> list[dict[str, Any]]:
    """Rows whose run, sweep, model or overrides contain every word of ``text``, with ``status`` (or any)."""
    words = (text or "").lower().split()

    def hay(r: dict[str, Any]) -> str:
        return " ".join(str(r.get(k) or "") for k in ("run", "sweep", "model", "overrides", "status")).lower()

    return [r for r in rows if all(w in hay(r) for w in words) and (status in ("", "all", None) or r["status"] == status)]


def sort_rows(rows: list[dict[str, Any]], column: str = "run", descending: bool = False) -> list[dict[str, Any]]:
    """Rows sorted by one column; empty values last either way."""
    present = [r for r in rows if r.get(column) not in (None, "")]
    empty = [r for r in rows if r.get(column) in (None, "")]

    def key(r: dict[str, Any]) -> tuple:
        v = r[column]
        return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))

    return sorted(present, key=key, reverse=descending) + empty


def as_table(rows: list[dict[str, Any]], columns: list[str] = COLUMNS) -> list[list[Any]]:
    """Rows as lists in column order (what a table widget takes)."""
    return [[r.get(c) for c in columns] for r in rows]


SWEEP_COLUMNS = ["job", "overrides", "best", "final", "steps", "wall_time_s", "status"]


def sweep_table(catalog: Catalog, sweep_id: str) -> list[dict[str, Any]]:
    """The job table ``analyze.py`` computes for a sweep (``analysis.sweep.job_row``), one row per job."""
    sweep = catalog.sweep_path(sweep_id)
    jobs = [j for j in catalog.sweeps().get(sweep_id, []) if inside(j.path / ".hydra" / "overrides.yaml", j.root)]
    return [job_row(job.path, sweep) for job in jobs]


def run_dir(catalog: Catalog, run_id: str) -> Path:
    """The resolved directory of a listed run."""
    return catalog.run(run_id).path
