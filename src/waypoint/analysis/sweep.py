"""A sweep (Hydra multirun) directory: the comparison of its jobs (groups, seeds aggregated, baselines, curves,
config diff) and one row per job (overrides, best and final monitored metric, steps, wall time, status)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from waypoint.checkpoint import CheckpointManager

from .compare_runs import CompareError, comparison_sections, job_dirs, load_runs
from .render import Section, write_report
from .runinfo import is_run_dir, read_metrics

__all__ = ["build_sweep_report", "is_run_dir", "is_sweep_dir", "job_dirs", "job_row"]

FINISHED_TAGS = ("end", "final")


def is_sweep_dir(path: Path) -> bool:
    """A Hydra multirun dir: ``multirun.yaml``, or sub-directories that are runs while it is not."""
    if (path / "multirun.yaml").is_file():
        return True
    return not is_run_dir(path) and any(is_run_dir(p) for p in path.iterdir() if p.is_dir())


def _status(tags: set[str]) -> str:
    if tags & set(FINISHED_TAGS):
        return "finished"
    if "preempt" in tags:
        return "preempted"
    return "failed" if "emergency" in tags else "unfinished"


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
    times = [r["time"] for r in read_metrics(job) if isinstance(r.get("time"), (int, float))]
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
                row["status"] = _status(set(last.tags))
    return row


def jobs_section(sweep: Path, rows: list[dict[str, Any]]) -> Section:
    """The job table: what each job's checkpoints say."""
    monitor = next((r.get("monitor") for r in rows if r.get("monitor")), None) or ""
    header = ["job", "overrides", f"best {monitor}", f"final {monitor}", "steps", "wall time (s)", "status"]
    table = [[r["job"], r["overrides"], r["best"], r["final"], r["steps"], r["wall_time_s"], r["status"]] for r in rows]
    return Section("Jobs", [f"{len(rows)} jobs in {sweep}."], tables=[(header, table)])


def build_sweep_report(sweep: str | Path) -> dict[str, Any]:
    """Write ``<sweep>/report/``: the comparison of the jobs and the job table; return the rows."""
    sweep = Path(sweep)
    out = sweep / "report"
    out.mkdir(parents=True, exist_ok=True)
    jobs = job_dirs(sweep)
    rows = [job_row(j, sweep) for j in jobs]
    sections = [jobs_section(sweep, rows)]
    doc: dict[str, Any] = {}
    title = f"Sweep · {sweep.name}"
    try:
        runs = load_runs(jobs) if jobs else []
    except CompareError as exc:  # a sweep over model families: each job has its own report
        sections[0].text.append(f"No comparison: {exc}.")
        runs = []
    if runs:
        compared, doc = comparison_sections(runs, out)
        sections = compared[:2] + sections + compared[2:]
        title = f"{runs[0].family.label} sweep · {sweep.name}"
    paths = write_report(out, title, sections)
    (out / "summary.json").write_text(json.dumps({"jobs": rows, "comparison": doc}, indent=1, default=str))
    return {"jobs": rows, "comparison": doc, **{k: str(v) for k, v in paths.items()}}
