"""The ``waypoint`` command: inspect and manage a run's checkpoints.

Exit codes: 0 ok, 1 a check failed (e.g. a damaged checkpoint), 2 usage error (bad path or arguments).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

from waypoint.checkpoint import CheckpointError, CheckpointManager

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A bad argument or path; exit code 2."""


def checkpoints_root(run_dir: str) -> Path:
    """The ``checkpoints/`` directory of a run dir (a checkpoints dir itself is accepted too)."""
    path = Path(run_dir)
    if (path / "checkpoints").is_dir():
        return path / "checkpoints"
    if path.is_dir() and ((path / "packs").is_dir() or (path / "index.json").exists() or path.name == "checkpoints"):
        return path
    if not path.exists():
        raise UsageError(f"{run_dir} does not exist")
    raise UsageError(f"{run_dir} holds no checkpoints/ directory; pass a run directory or its checkpoints/ directory")


def open_read_only(run_dir: str) -> CheckpointManager:
    """A read-only manager over a run dir (no lock taken, nothing written)."""
    return CheckpointManager(checkpoints_root(run_dir), read_only=True)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _metrics_text(metrics: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items()))


def cmd_ls(args: argparse.Namespace) -> int:
    """List checkpoints: name, step, epoch, tags, metrics, digest, size, time, validity."""
    with open_read_only(args.run_dir) as mgr:
        infos = mgr.list()
        if args.json:
            print(json.dumps([i.to_json() for i in infos], indent=1))
            return EXIT_OK
        if not infos:
            print(f"no checkpoints in {mgr.root}")
            return EXIT_OK
        print(f"{'name':<18} {'step':>8} {'epoch':>5}  {'size':>9}  {'created':<19}  {'digest':<12}  tags / metrics")
        for i in infos:
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i.created_at))
            tags = ",".join(i.all_tags) or "-"
            status = "" if i.valid else f"  DAMAGED: {i.problem}"
            epoch = "-" if i.epoch is None else str(i.epoch)
            print(f"{i.name:<18} {i.step:>8} {epoch:>5}  {_human(i.logical_bytes):>9}  {created:<19}  "
                  f"{i.digest[:12]:<12}  [{tags}] {_metrics_text(i.metrics)}{status}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    """Re-hash every committed checkpoint; exit 1 naming each damaged one."""
    with open_read_only(args.run_dir) as mgr:
        report = mgr.verify()
    bad = {name: problems for name, problems in report.items() if problems}
    if args.json:
        print(json.dumps({"ok": not bad, "checked": len(report), "damaged": bad}, indent=1))
    else:
        for name, problems in report.items():
            print(f"{'ok      ' if not problems else 'DAMAGED '} {name}" + (f": {'; '.join(problems)}" if problems else ""))
        print(f"{len(report) - len(bad)} of {len(report)} checkpoints verify" + (f"; damaged: {', '.join(bad)}" if bad else ""))
    return EXIT_FAILED if bad else EXIT_OK


def cmd_du(args: argparse.Namespace) -> int:
    """Logical bytes (what plain saves would write) vs physical bytes on disk."""
    with open_read_only(args.run_dir) as mgr:
        infos = [i for i in mgr.list() if i.valid]
        logical = sum(i.logical_bytes for i in infos)
        physical = mgr.store.physical_bytes()
    doc = {"checkpoints": len(infos), "logical_bytes": logical, "physical_bytes": physical,
           "ratio": round(physical / logical, 4) if logical else None}
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        ratio = f" ({doc['ratio']:.2f}x of logical)" if logical else ""
        print(f"{len(infos)} checkpoints: logical {_human(logical)}, physical {_human(physical)}{ratio}")
    return EXIT_OK


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, str]] = {
    "ls": (cmd_ls, "list the checkpoints of a run", "waypoint ls outputs/dino/2026-11-23 --json"),
    "verify": (cmd_verify, "re-hash every checkpoint; exit 1 if any is damaged", "waypoint verify outputs/dino/run"),
    "du": (cmd_du, "logical vs physical bytes of a run's checkpoints", "waypoint du outputs/stackwise/run --json"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``waypoint`` command."""
    parser = argparse.ArgumentParser(prog="waypoint", description="Inspect and manage Waypoint checkpoints.",
                                     epilog="exit codes: 0 ok, 1 check failed, 2 usage error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (fn, help_text, example) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text + ".", epilog=f"example: {example}")
        p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holding checkpoints/) or a checkpoints/ directory")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.set_defaults(func=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``waypoint`` console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    warnings.simplefilter("ignore")  # damaged checkpoints are reported in the output itself
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"waypoint: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CheckpointError as exc:
        print(f"waypoint: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
