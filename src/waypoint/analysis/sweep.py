"""A sweep (Hydra multirun) directory: one row per job, and overlaid curves of the monitored metric."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from waypoint.checkpoint import CheckpointManager

from . import plots
from .render import Section, write_report
from .report import read_metrics

FINISHED_TAGS = ("end", "final")


def is_run_dir(path: Path) -> bool:
    """A directory that holds a run's checkpoints or metrics."""
    return (path / "checkpoints").is_dir() or (path / "metrics.jsonl").is_file()


def is_sweep_dir(path: Path) -> bool:
    """A Hydra multirun dir: ``multirun.yaml``, or sub-directories that are runs while it is not."""
    if (path / "multirun.yaml").is_file():
        return True
    return not is_run_dir(path) and any(is_run_dir(p) for p in path.iterdir() if p.is_dir())


def job_dirs(sweep: Path) -> list[Path]:
    """The run directories below a sweep dir (nested subdirs included), sorted by name."""
    return sorted(
        {p.parent for p in sweep.rglob("checkpoints") if p.is_dir()} | {p.parent for p in sweep.rglob("metrics.jsonl")}, key=str
    )


def job_row(job: Path, sweep: Path) -> dict[str, Any]:
    """Overrides, best and final monitored metric, steps, wall time and status of one job."""
    overrides_file = job / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    row: dict[str, Any] = {
        "job": str(job.relative_to(sweep)),
        "overrides": " ".join(overrides or []),
        "best": None,
        "final": None,
        "steps": None,
        "wall_time_s": None,
        "status": "no checkpoints",
    }
    metrics = read_metrics(job)
    times = [r["time"] for r in metrics if isinstance(r.get("time"), (int, float))]
    if len(times) >= 2:
        row["wall_time_s"] = round(times[-1] - times[0], 1)
    if (job / "checkpoints").is_dir():
        with CheckpointManager(job / "checkpoints", read_only=True) as mgr:
            infos = [i for i in mgr.list() if i.valid]
            if infos:
                last, best = infos[-1], mgr.best()
                row["monitor"] = mgr.monitor
                row["steps"] = last.step
                # the last measured value: a checkpoint records the metric only when validated at its own step
                row["final"] = next((i.metrics[mgr.monitor] for i in reversed(infos) if mgr.monitor in i.metrics), None)
                row["best"] = best.metrics.get(mgr.monitor or "") if best else None
                tags = set(last.tags)
                row["status"] = (
                    "finished"
                    if tags & set(FINISHED_TAGS)
                    else "preempted"
                    if "preempt" in tags
                    else "failed"
                    if "emergency" in tags
                    else "unfinished"
                )
    return row


def build_sweep_report(sweep: str | Path) -> dict[str, Any]:
    """Write ``<sweep>/report/`` with the job table and overlaid curves; return the rows."""
    sweep = Path(sweep)
    out = sweep / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = [job_row(j, sweep) for j in job_dirs(sweep)]
    monitor = next((r.get("monitor") for r in rows if r.get("monitor")), None)
    curves = {}
    for job in job_dirs(sweep):
        pts = [
            (r["step"], float(r[monitor]))
            for r in read_metrics(job)
            if monitor and isinstance(r.get(monitor), (int, float)) and isinstance(r.get("step"), int)
        ]
        if pts:
            curves[str(job.relative_to(sweep))] = pts
    header = ["job", "overrides", f"best {monitor or ''}", f"final {monitor or ''}", "steps", "wall time (s)", "status"]
    table = [[r["job"], r["overrides"], r["best"], r["final"], r["steps"], r["wall_time_s"], r["status"]] for r in rows]
    sections = [
        Section(
            "Jobs",
            [f"{len(rows)} jobs in {sweep}."],
            tables=[(header, table)],
            images=[plots.overlaid(curves, out / "sweep_curves.png", f"{monitor or 'metric'} per job", monitor or "")],
        )
    ]
    paths = write_report(out, f"Waypoint sweep report: {sweep.name}", sections)
    (out / "summary.json").write_text(json.dumps(rows, indent=1, default=str))
    return {"jobs": rows, **{k: str(v) for k, v in paths.items()}}
