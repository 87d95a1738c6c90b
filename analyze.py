"""Hydra entry: a run dir or a sweep dir -> report (Markdown + self-contained HTML + PNG plots)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from waypoint.analysis.report import build_run_report
from waypoint.analysis.sweep import is_run_dir, is_sweep_dir


def newest_run(roots: list[str]) -> Path | None:
    """The run directory whose checkpoints or metrics were written most recently."""
    found = []
    for root in map(Path, roots):
        if root.is_dir():
            found += [p.parent for p in root.rglob("metrics.jsonl")]
            found += [p.parent.parent for p in root.rglob("checkpoints/index.json")]
    return max(set(found), key=lambda p: max(f.stat().st_mtime for f in p.iterdir()), default=None)


@hydra.main(config_path="conf", config_name="analyze", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Build the report of one run or one sweep."""
    target = Path(cfg.run) if cfg.run else newest_run(list(cfg.search_roots))
    if target is None:
        sys.exit("analyze.py: no run found under " + ", ".join(cfg.search_roots) + "; pass run=<run or sweep dir>")
    if not target.is_dir():
        sys.exit(f"analyze.py: {target} is not a directory; pass run=<run or sweep dir>")
    if is_sweep_dir(target):
        from waypoint.analysis.sweep import build_sweep_report

        result = build_sweep_report(target)
        print(f"sweep report of {len(result['jobs'])} jobs: {result['html']}")
        return
    if not is_run_dir(target):
        sys.exit(f"analyze.py: {target} holds no checkpoints/ or metrics.jsonl; pass run=<run or sweep dir>")
    compare = (cfg.compare.a, cfg.compare.b) if cfg.compare.a and cfg.compare.b else None
    result = build_run_report(target, compare)
    print(f"report: {result['html']} (and report.md, PNGs in {Path(result['html']).parent})")


if __name__ == "__main__":
    main()
