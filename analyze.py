"""Hydra entry: a run dir, a sweep dir or several runs -> report (Markdown + self-contained HTML + PNG plots).

    python analyze.py                                  the newest run under outputs/ or multirun/
    python analyze.py outputs/universeg/model.lr=0.01,seed=1          one run (any path: '=', ',', spaces, quotes)
    python analyze.py multirun/universeg/seed=0,1,2                   a sweep: its jobs compared
    python analyze.py RUN_A RUN_B [...]                               runs compared (as ``waypoint compare``)
    python analyze.py RUN compare.a=step:100 compare.b=best           and two of its checkpoints compared

Directories are taken as plain arguments before Hydra parses the rest (``run=DIR`` works too), so a path is never
read as an override. For one run, the model is rebuilt from the run's saved config and its checkpoints are restored
through the ``CheckpointManager`` to draw the family's pictures (``src/waypoint/tasks/<family>/figures.py``) and to
start parameter evolution at the initial weights (step 0).
"""

from __future__ import annotations

import copy
import importlib
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from waypoint.analysis.compare_runs import CompareError, build_comparison_report, default_out
from waypoint.analysis.report import build_run_report
from waypoint.analysis.runinfo import load_run
from waypoint.analysis.sweep import build_sweep_report, is_run_dir, is_sweep_dir
from waypoint.checkpoint import NoCheckpointError
from waypoint.config import ConfigError

log = logging.getLogger("analyze")
EXIT_USAGE = 2
#: analyze.yaml's options (anything else that is not an existing path is taken for a run directory)
OPTIONS = ("run", "search_roots", "out", "pictures", "compare")
#: Hydra flags that take the next argument as their value
FLAGS_WITH_VALUE = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
INFO_VALUES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
_TARGETS: list[str] = []


def _unquote(value: str) -> str:
    """``"DIR"`` or ``'DIR'`` (a hand-quoted ``run='"DIR"'``) -> ``DIR``, unless the quoted name itself exists."""
    while len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" and not Path(value).exists():
        value = value[1:-1]
    return value


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(run or sweep directories, arguments for Hydra): an existing path, ``run=PATH`` or anything that is not an
    analyze option is a directory, whatever characters it holds."""
    paths, rest = [], []
    args = iter(argv)
    for arg in args:
        if arg.startswith("-"):
            rest.append(arg)
            nxt = next(args, None) if arg in FLAGS_WITH_VALUE or arg in ("--info", "-i") else None
            if nxt is not None:
                (rest if arg not in ("--info", "-i") or nxt in INFO_VALUES else paths).append(nxt)
            continue
        key, eq, value = arg.partition("=")
        key = key.lstrip("+~")
        if Path(arg).exists():
            paths.append(arg)
        elif eq and key == "run":
            paths += [] if value in ("", "null") else [_unquote(value)]
        elif eq and (key.split(".")[0] in OPTIONS or key.startswith(("hydra.", "hydra/"))):
            rest.append(arg)
        else:
            paths.append(arg)
    return paths, rest


def newest_run(roots: list[str]) -> Path | None:
    """The run directory whose checkpoints or metrics were written most recently."""
    found = []
    for root in map(Path, roots):
        if root.is_dir():
            found += [p.parent for p in root.rglob("metrics.jsonl")]
            found += [p.parent.parent for p in root.rglob("checkpoints/index.json")]
    return max(set(found), key=lambda p: max(f.stat().st_mtime for f in p.iterdir()), default=None)


def _usage(message: str) -> None:
    print(f"analyze.py: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def build_task_of(config: dict[str, Any], meta: dict[str, Any]) -> Any:
    """The run's task, built from its saved config and set up for the run's length on the CPU (fresh weights)."""
    import torch

    from waypoint.training.build import build_data, build_task

    model = dict(config["model"])
    if "init_stacks_from" in model:  # the restored states carry the stacks; the source run is not needed
        model["init_stacks_from"] = None
    data, _ = build_data(OmegaConf.create(config["data"]))
    task = build_task(OmegaConf.create(model), data, int(config.get("seed") or 0))
    task.setup(int(meta.get("total_steps") or 1), int(meta.get("steps_per_epoch") or 1), torch.device("cpu"))
    return task


def family_pictures(run_dir: Path, out: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The family's pictures and the initial weights (keyed like the checkpoints' tensors) of a run with checkpoints."""
    from waypoint.checkpoint import CheckpointManager, encode

    run = load_run(run_dir)
    try:
        figures = importlib.import_module(f"waypoint.tasks.{run.family.key}.figures")
    except ModuleNotFoundError:
        return [], None
    with CheckpointManager(run_dir / "checkpoints", read_only=True) as mgr:
        infos = sorted(mgr.list(include_invalid=False), key=lambda i: (i.step, i.name))
        if not infos:
            return [], None
        meta = dict(mgr.manifest(infos[-1].name).meta or {})
        task = build_task_of(dict(meta.get("config") or run.config), meta)
        initial = copy.deepcopy(task.state_dict(optimizer=False))
        tables = [(i.name, i.step, list(mgr.manifest(i.name).tensors)) for i in infos]
        names = figures.wanted(tables) if hasattr(figures, "wanted") else [infos[-1].name]
        steps = {i.name: i.step for i in infos}
        snapshots = [("step 0 (initial)", 0, initial)]
        snapshots += [(f"step {steps[n]}", steps[n], mgr.restore(n)["task"]) for n in names]
    initial_tensors = encode({"task": copy.deepcopy(initial)})[0]
    out.mkdir(parents=True, exist_ok=True)
    return figures.render(task, snapshots, out), initial_tensors


def report_one(target: Path, cfg: DictConfig) -> None:
    """The report of one run (with the family's pictures) or of one sweep."""
    if is_sweep_dir(target):
        result = build_sweep_report(target)
        print(f"sweep report of {len(result['jobs'])} jobs: {result['html']}")
        return
    if not is_run_dir(target):
        _usage(f"{target} holds no checkpoints/ or metrics.jsonl; pass a run or sweep directory")
    pictures, initial = [], None
    if cfg.pictures and (target / "checkpoints").is_dir():
        try:
            pictures, initial = family_pictures(target, target / "report")
        except (ConfigError, ValueError, OSError, KeyError) as exc:  # the run's data or config cannot be rebuilt here
            pictures = [
                {"title": "Pictures", "text": [f"No pictures: the model could not be rebuilt from the run's config ({exc})."]}
            ]
    compare = (cfg.compare.a, cfg.compare.b) if cfg.compare.a and cfg.compare.b else None
    try:
        result = build_run_report(target, compare, pictures=pictures, initial=initial)
    except NoCheckpointError as exc:  # compare.a/b names no checkpoint of this run
        _usage(f"{exc}; see `waypoint ls {target}`")
    print(f"report: {result['html']} (and report.md, PNGs in {Path(result['html']).parent})")


@hydra.main(config_path="conf", config_name="analyze", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Build the report of one run, one sweep, or the comparison of several runs."""
    targets = [Path(t) for t in _TARGETS]
    if not targets:
        newest = newest_run(list(cfg.search_roots))
        if newest is None:
            _usage("no run found under " + ", ".join(cfg.search_roots) + "; pass a run or sweep directory")
        targets = [newest]
    missing = next((t for t in targets if not t.is_dir()), None)
    if missing is not None:
        _usage(f"{missing} is not a directory; pass a run or sweep directory (quote a path with spaces)")
    if len(targets) == 1:
        report_one(targets[0], cfg)
        return
    try:
        result = build_comparison_report(targets, Path(cfg.out) if cfg.out else default_out(targets))
    except CompareError as exc:
        _usage(str(exc))
    print(f"comparison report of {len(result['summary']['groups'])} groups: {result['html']}")


if __name__ == "__main__":
    _TARGETS[:], sys.argv[1:] = split_args(sys.argv[1:])
    main()
