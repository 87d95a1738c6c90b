"""Compare runs of one family: grouped by the config keys that differ, seeds aggregated (mean ± std, n), the family's
baselines beside the monitored metric, curves overlaid, and a config diff table.

Runs are what ``waypoint compare`` is given (run directories, or sweep directories standing for their jobs) or the
jobs of one sweep (``analyze.py <sweep dir>``). Runs of different families are refused in one sentence.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import plots
from . import series as sr
from .fmt import mean_std, num, pm
from .health import verdicts
from .render import Section, write_report
from .runinfo import STEERING, STEERING_KEYS, RunInfo, is_run_dir, load_run


class CompareError(ValueError):
    """Runs that cannot be compared (different families, a path that is no run): a user error."""


@dataclass
class Group:
    """Runs that agree on every grouping key (they differ in seed, or in nothing)."""

    label: str
    runs: list[RunInfo] = field(default_factory=list)
    final: list[float] = field(default_factory=list)
    best: list[float] = field(default_factory=list)


def job_dirs(sweep: Path) -> list[Path]:
    """The run directories below a sweep dir (nested subdirs included), sorted by name."""
    found = {p.parent for p in sweep.rglob("checkpoints") if p.is_dir()} | {p.parent for p in sweep.rglob("metrics.jsonl")}
    return sorted((p for p in found if "report" not in p.relative_to(sweep).parts), key=str)


def expand(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories: each path itself when it is a run, the jobs of a sweep directory otherwise."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise CompareError(f"{raw} is not a directory; pass run directories or sweep directories")
        jobs = [path] if is_run_dir(path) else job_dirs(path)
        if not jobs:
            raise CompareError(f"{raw} holds no run (no checkpoints/ or metrics.jsonl) and no sweep job")
        out += [j for j in jobs if j.resolve() not in {o.resolve() for o in out}]
    return out


def load_runs(paths: Sequence[str | Path]) -> list[RunInfo]:
    """The runs ``paths`` name, all of one family (a ``CompareError`` naming two that differ otherwise)."""
    runs = [load_run(p) for p in expand(paths)]
    first = runs[0]
    other = next((r for r in runs if r.family.key != first.family.key), None)
    if other is not None:
        raise CompareError(
            f"runs of different families cannot be compared: {first.path} is {first.family.label}, "
            f"{other.path} is {other.family.label}; compare runs of one family"
        )
    return runs


def differing_keys(runs: Sequence[RunInfo]) -> list[str]:
    """Config keys whose values are not the same in every run (a key some runs lack differs)."""
    flats = [r.flat_config() for r in runs]
    keys = sorted({k for f in flats for k in f})
    return [k for k in keys if len({repr(f.get(k, "<absent>")) for f in flats}) > 1]


def grouping_keys(keys: Sequence[str]) -> list[str]:
    """The differing keys that change what is computed: not the seed (aggregated), not steering ones."""
    return [k for k in keys if k != "seed" and k.split(".")[0] not in STEERING and k not in STEERING_KEYS]


def group_runs(runs: Sequence[RunInfo], keys: Sequence[str]) -> list[Group]:
    """Runs grouped by their values of ``keys`` (in the order groups first appear); final and best values collected."""
    groups: dict[str, Group] = {}
    for run in runs:
        flat = run.flat_config()
        label = ", ".join(f"{k}={num(flat.get(k))}" for k in keys) or "all runs"
        group = groups.setdefault(label, Group(label))
        group.runs.append(run)
        best, final = sr.best_and_final(sr.series(run.rows).get(run.monitor or "", []), run.mode)
        if final is not None and best is not None:
            group.final.append(final)
            group.best.append(best)
    return list(groups.values())


def group_baselines(group: Group) -> dict[str, float]:
    """Each baseline's mean over the group's runs (most are a function of the data only, so equal in every run)."""
    collected: dict[str, list[float]] = {}
    for run in group.runs:
        for label, value in sr.baselines(sr.series(run.rows), run.monitor).items():
            collected.setdefault(label, []).append(value)
    return {k: sum(v) / len(v) for k, v in collected.items()}


def group_table(groups: Sequence[Group], mode: str) -> tuple[list[str], list[list[Any]]]:
    """One row per group: runs, seeds, final and best monitored value as mean ± std (n), baselines, verdict."""
    header = ["group", "runs", "seeds", "final (mean ± std, n)", "best (mean ± std, n)", "baselines", "final mean vs baselines"]
    rows = []
    for g in groups:
        base = group_baselines(g)
        mean = mean_std(g.final)[0]
        rows.append(
            [
                g.label,
                len(g.runs),
                ", ".join(num(r.seed) for r in g.runs),
                pm(*mean_std(g.final)),
                pm(*mean_std(g.best)),
                ", ".join(f"{k} {num(v)}" for k, v in base.items()) or "-",
                verdicts(mean, base, mode) if mean is not None and base else "-",
            ]
        )
    return header, rows


def run_table(runs: Sequence[RunInfo], groups: Sequence[Group]) -> tuple[list[str], list[list[Any]]]:
    """One row per run: name, group, seed, final and best monitored value, last step, directory."""
    group_of = {id(r): g.label for g in groups for r in g.runs}
    rows = []
    for run in runs:
        points = sr.series(run.rows).get(run.monitor or "", [])
        best, final = sr.best_and_final(points, run.mode)
        last = max((r["step"] for r in run.rows if isinstance(r.get("step"), int)), default=None)
        rows.append([run.name, group_of[id(run)], run.seed, final, best, last, str(run.path)])
    return ["run", "group", "seed", "final", "best", "last step", "directory"], rows


def config_diff_table(runs: Sequence[RunInfo], keys: Sequence[str]) -> tuple[list[str], list[list[Any]]]:
    """Rows: runs; columns: every config key whose value differs between them."""
    rows = []
    for run in runs:
        flat = run.flat_config()
        rows.append([run.name, *[flat.get(k, "<absent>") for k in keys]])
    return ["run", *keys], rows


def comparison_sections(runs: Sequence[RunInfo], out: Path) -> tuple[list[Section], dict[str, Any]]:
    """Summary per group beside the baselines, overlaid curves, every run, and the config diff."""
    first = runs[0]
    monitor, mode = first.monitor, first.mode
    diff = differing_keys(runs)
    keys = grouping_keys(diff)
    groups = group_runs(runs, keys)
    base = group_baselines(Group("all", list(runs)))
    text = [
        f"{len(runs)} {first.family.label} runs in {len(groups)} group{'s' if len(groups) != 1 else ''}, grouped by "
        + (", ".join(keys) if keys else "nothing (no config key that changes what is trained differs)")
        + f"; seeds aggregated. Monitored metric: {monitor or '-'} ({mode}).",
    ]
    if any(r.monitor != monitor for r in runs):
        text.append(f"Some runs monitor another metric; {monitor} is compared.")
    summary_img = plots.group_summary([(g.label, g.final) for g in groups], base, out / "groups.png", monitor or "", "final")
    summary = Section("Groups", text, tables=[group_table(groups, mode)], images=[summary_img])
    curves = {str(r.path): sr.series(r.rows) for r in runs}
    group_of = {str(r.path): g.label for g in groups for r in g.runs}
    names = [m for m in sr.ranked(sorted({k for c in curves.values() for k in c}), first.family, monitor)[:3]]
    marks = plots.PanelMarks(monitor=monitor, baselines=base)
    curve_img = plots.grouped_curves(curves, group_of, names, marks, out / "curves.png")
    sections = [
        summary,
        Section("Curves", [f"Every run's {', '.join(names)}; one colour per group."], images=[curve_img]),
        Section("Runs", tables=[run_table(runs, groups)]),
        Section("Config diff", [f"{len(diff)} config keys differ between the runs."], tables=[config_diff_table(runs, diff)]),
    ]
    doc = {
        "family": first.family.key,
        "monitor": monitor,
        "grouped_by": keys,
        "groups": [{"label": g.label, "runs": [str(r.path) for r in g.runs], "final": g.final, "best": g.best} for g in groups],
        "baselines": base,
    }
    return sections, doc


def build_comparison_report(paths: Sequence[str | Path], out: str | Path, title: str | None = None) -> dict[str, Any]:
    """Write the comparison of the runs ``paths`` name into ``out`` (report.md, report.html, PNGs, summary.json)."""
    runs = load_runs(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections, doc = comparison_sections(runs, out)
    title = title or f"{runs[0].family.label} comparison · {len(runs)} runs"
    paths_written = write_report(out, title, sections)
    (out / "summary.json").write_text(json.dumps(doc, indent=1, default=str))
    return {"summary": doc, **{k: str(v) for k, v in paths_written.items()}}


def default_out(paths: Sequence[str | Path]) -> Path:
    """Where a comparison goes unless told: ``reports/compare-<hash of the runs' paths>`` (the same runs, the same place)."""
    key = "\n".join(sorted(str(Path(p).resolve()) for p in paths))
    return Path("reports") / f"compare-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
