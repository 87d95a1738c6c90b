#!/usr/bin/env python
"""What checkpointing costs a real training run.

Runs DINO's and Stack-Wise's default command twice each, in one invocation: once as shipped (a checkpoint
every epoch and on improvement, async, blocking at the end) and once with ``checkpoint.enabled=false``
(nothing saved), each in a fresh run directory under ``--dir``. The variants of a family run back to back
in alternating order (on/off, then off/on, ...), ``--repeats`` times; the overhead is the median wall time
with saving over the median without, minus 1 (target <= 2%). The same is reported for the CPU time the
run used (user + system of the child, which load from other processes on a shared machine disturbs less).
Bytes written per save come from the run's own ``train.log`` lines ("saved step_...: 1.2 MiB in 0.05s").

By default the two variants of a repetition run at the same time, one core each (``OMP_NUM_THREADS=1``):
on a machine shared with other jobs, whose load changes from minute to minute, runs taken one after the
other differ by far more than 2% (measured: DINO 90-180 s for the same command); side by side both see the
same load. ``--one-at-a-time`` runs them back to back in alternating order instead.

``--stackwise-epochs`` shortens Stack-Wise (its default 10 epochs take ~10-15 min on 2 cores; the
default here is 2, i.e. two saves plus the improvement saves at the same validations); DINO runs its
default 10 epochs unless ``--dino-epochs`` says otherwise. ``--smoke`` runs both with ``experiment=smoke``
(seconds; the test suite runs that). Writes ``bench/results/overhead.json``. Asserts nothing.

Usage: ``.venv/bin/python bench/overhead.py [--repeats 3] [--stackwise-epochs 2] [--dino-epochs 10]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.02
_SAVED = re.compile(r"saved (step_\S+) \(step (\d+)[^)]*\): ([\d.]+) (B|KiB|MiB|GiB) in ([\d.]+)s, (async|blocking)")
_UNIT = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def run_pair(commands: dict[str, tuple[list[str], Path]], threads: int) -> dict[str, dict[str, Any]]:
    """Run both variants at the same time (they share whatever load the machine has); per variant its wall
    seconds, CPU seconds (from wait4), exit code and saves."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONHASHSEED": "0"}
    procs: dict[int, tuple[str, Path, float, Any]] = {}
    for variant, (overrides, run_dir) in commands.items():
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        out = open(run_dir.parent / f"{run_dir.name}.out", "w+")
        cmd = [sys.executable, str(REPO / "train.py"), *overrides, "trainer.progress_bar=false", f"hydra.run.dir={run_dir}"]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        procs[proc.pid] = (variant, run_dir, time.monotonic(), out)
    rows: dict[str, dict[str, Any]] = {}
    while procs:
        pid, status, usage = os.wait4(-1, 0)
        if pid not in procs:
            continue
        variant, run_dir, start, out = procs.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        row = {
            "wall_s": time.monotonic() - start,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "exit_code": code,
            "saves": saves_from_log(run_dir / "train.log"),
            "concurrent": True,
        }
        if code != 0:
            out.seek(0)
            row["tail"] = "\n".join(out.read().strip().splitlines()[-8:])
        out.close()
        rows[variant] = row
    return rows


def saves_from_log(log: Path) -> list[dict[str, Any]]:
    """Every 'saved ...' line of a train.log: name, step, bytes written (as logged, 0.1 MiB precision), seconds, mode."""
    out = []
    if not log.exists():
        return out
    for m in _SAVED.finditer(log.read_text(errors="replace")):
        out.append(
            {
                "name": m[1],
                "step": int(m[2]),
                "bytes": int(float(m[3]) * _UNIT[m[4]]),
                "seconds": float(m[5]),
                "mode": m[6],
            }
        )
    return out


def run_once(overrides: list[str], run_dir: Path, threads: int) -> dict[str, Any]:
    """One training run to the end: wall seconds, child CPU seconds, exit code, saves."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, str(REPO / "train.py"), *overrides, "trainer.progress_bar=false", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONHASHSEED": "0"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    saves = saves_from_log(run_dir / "train.log")
    row = {"wall_s": wall, "cpu_s": cpu, "exit_code": proc.returncode, "saves": saves}
    if proc.returncode != 0:
        row["tail"] = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
    return row


def save_seconds_fraction(runs: list[dict[str, Any]]) -> float:
    """Median over runs of (sum of the logged save durations) / wall time: an upper bound of what saving can
    cost a run that is not disturbed by other load (async saves overlap with training, so they cost less)."""
    return statistics.median(sum(s["seconds"] for s in r["saves"]) / r["wall_s"] for r in runs)


def _busy_jiffies() -> Optional[int]:
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    vals = [int(v) for v in fields]
    return sum(vals) - vals[3] - (vals[4] if len(vals) > 4 else 0)  # all but idle and iowait


def families(args: argparse.Namespace) -> dict[str, list[str]]:
    if args.smoke:
        return {"dino": ["model=dino", "experiment=smoke"], "stackwise": ["model=stackwise", "experiment=smoke"]}
    return {
        "dino": ["model=dino", *([f"trainer.max_epochs={args.dino_epochs}"] if args.dino_epochs else [])],
        "stackwise": ["model=stackwise", f"trainer.max_epochs={args.stackwise_epochs}"],
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stackwise-repeats", type=int, default=0, help="0: --repeats (Stack-Wise runs take longest)")
    parser.add_argument("--only", default="dino,stackwise", help="comma-separated families")
    parser.add_argument("--dino-epochs", type=int, default=0, help="0: DINO's default (trainer.max_epochs=10)")
    parser.add_argument("--stackwise-epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the runs")
    parser.add_argument(
        "--one-at-a-time",
        dest="concurrent",
        action="store_false",
        help="run the two variants one after the other (default: both at once, so they share the machine's load)",
    )
    parser.add_argument("--smoke", action="store_true", help="experiment=smoke (seconds per run)")
    parser.add_argument("--dir", type=Path, default=REPO / "bench" / "results" / "overhead_runs")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "overhead.json")
    args = parser.parse_args(argv)
    fams = {k: v for k, v in families(args).items() if k in {f.strip() for f in args.only.split(",")}}
    results: dict[str, Any] = {}
    for fam, overrides in fams.items():
        samples: dict[str, list[dict[str, Any]]] = {"saving": [], "disabled": []}
        repeats = args.stackwise_repeats if fam == "stackwise" and args.stackwise_repeats else args.repeats
        for rep in range(repeats):
            if args.concurrent:
                pair = run_pair(
                    {
                        "saving": (overrides, args.dir / fam / "saving"),
                        "disabled": ([*overrides, "checkpoint.enabled=false"], args.dir / fam / "disabled"),
                    },
                    args.threads,
                )
                for variant, row in pair.items():
                    row["command"] = "python train.py " + " ".join(
                        [*overrides, *([] if variant == "saving" else ["checkpoint.enabled=false"])]
                    )
                    samples[variant].append(row)
                    print(
                        f"  {fam} {variant:8s} rep {rep + 1} (both at once): exit {row['exit_code']}, "
                        f"{row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU, {len(row['saves'])} saves",
                        flush=True,
                    )
                    if row["exit_code"] != 0:
                        print(row.get("tail", ""), file=sys.stderr)
                continue
            order = ("saving", "disabled") if rep % 2 == 0 else ("disabled", "saving")
            for variant in order:
                extra = [] if variant == "saving" else ["checkpoint.enabled=false"]
                jiffies, t0 = _busy_jiffies(), time.monotonic()
                row = run_once([*overrides, *extra], args.dir / fam / variant, args.threads)
                j1, t1 = _busy_jiffies(), time.monotonic()
                if jiffies is not None and j1 is not None:
                    hz = os.sysconf("SC_CLK_TCK")
                    row["other_cores_busy"] = max(0.0, ((j1 - jiffies) / hz - row["cpu_s"]) / (t1 - t0))
                row["command"] = "python train.py " + " ".join([*overrides, *extra])
                samples[variant].append(row)
                print(
                    f"  {fam} {variant:8s} rep {rep + 1}: exit {row['exit_code']}, {row['wall_s']:.1f} s wall, "
                    f"{row['cpu_s']:.1f} s CPU, {len(row['saves'])} saves, others used "
                    f"{row.get('other_cores_busy', float('nan')):.2f} cores",
                    flush=True,
                )
                if row["exit_code"] != 0:
                    print(row.get("tail", ""), file=sys.stderr)
        ok = all(r["exit_code"] == 0 for v in samples.values() for r in v)
        res: dict[str, Any] = {"command": "python train.py " + " ".join(overrides), "samples": samples, "ok": ok}
        if ok:
            on = statistics.median(r["wall_s"] for r in samples["saving"])
            off = statistics.median(r["wall_s"] for r in samples["disabled"])
            cpu_on = statistics.median(r["cpu_s"] for r in samples["saving"])
            cpu_off = statistics.median(r["cpu_s"] for r in samples["disabled"])
            saves = samples["saving"][0]["saves"]
            per_save = [s["bytes"] for s in saves]
            res.update(
                wall_saving_s=on,
                wall_disabled_s=off,
                overhead=on / off - 1,
                cpu_saving_s=cpu_on,
                cpu_disabled_s=cpu_off,
                cpu_overhead=cpu_on / cpu_off - 1,
                saves_per_run=len(saves),
                bytes_per_save_first=per_save[0] if per_save else None,
                bytes_per_save_median=statistics.median(per_save) if per_save else None,
                bytes_per_run=sum(per_save),
                async_save_seconds_median=statistics.median([s["seconds"] for s in saves if s["mode"] == "async"] or [0]),
                blocking_save_seconds_median=statistics.median([s["seconds"] for s in saves if s["mode"] == "blocking"] or [0]),
                save_seconds_fraction=save_seconds_fraction(samples["saving"]),
            )
        results[fam] = res
    import torch

    doc = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
        },
        "args": {k: str(v) for k, v in vars(args).items()},
        "target_overhead": TARGET,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print()
    print(f"Checkpointing overhead on real runs (medians of the repeats; OMP_NUM_THREADS={args.threads})")
    print(
        "| run | repeats | wall saving / disabled | overhead | target | CPU overhead | saves | MiB per save (first / median) "
        "| save time / wall |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results.values():
        if not r["ok"]:
            print(f"| {r['command']} | failed | | | | | | | |")
            continue
        verdict = "met" if r["overhead"] <= TARGET else "**missed**"
        print(
            f"| `{r['command']}` | {len(r['samples']['saving'])} "
            f"| {r['wall_saving_s']:.1f} / {r['wall_disabled_s']:.1f} s | {r['overhead'] * 100:+.1f}% "
            f"| <= 2% {verdict} | {r['cpu_overhead'] * 100:+.1f}% | {r['saves_per_run']} "
            f"| {(r['bytes_per_save_first'] or 0) / 2**20:.1f} / {(r['bytes_per_save_median'] or 0) / 2**20:.1f} "
            f"| {r['save_seconds_fraction'] * 100:.1f}% |"
        )
    print(f"wrote {args.out}")
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
