#!/usr/bin/env python
"""Peak memory of ``analyze.py`` against the number of checkpoints in a run.

The report streams tensors one at a time (``iter_tensors``), so its peak RSS must not grow with the
number of checkpoints. This builds synthetic run directories with the real ``CheckpointManager`` (a
DINO-like state ``{"task": {"student", "teacher", "center"}, "progress"}`` of ``--state-mib`` fp32 in
~50 tensors; every checkpoint moves the student by SGD-like noise and the teacher by EMA, a frozen stem
stays deduplicated) plus ``metrics.jsonl``, for each N in ``--counts``. Then, ``--repeats`` times per N,
it runs ``analyze.py run=<dir>`` in a subprocess, spawned by a lean ``python -S`` (see ``measure``), and
records that child's own peak RSS (``os.wait4`` rusage), wall and CPU time. The baseline is the same
interpreter importing ``analyze.py``'s stack (hydra, torch, matplotlib/pyplot, waypoint.analysis) and
nothing else. Figures are medians; wall times suffer from other load on the machine, CPU times less.

Usage: ``.venv/bin/python bench/analyze_memory.py [--state-mib 48] [--counts 10,40,80] [--repeats 3]``
Writes ``bench/results/analyze_memory.json``; run dirs live in a temp dir under ``bench/results/`` (the
repository's filesystem) and are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from waypoint.checkpoint import CheckpointManager  # noqa: E402
from waypoint.tracking.metrics import MetricsLog  # noqa: E402

MiB = float(1 << 20)
DEPTH = 4  # transformer blocks per network: 4 x 5 + 6 = 26 tensors per network, 52 in the state
BASELINE_CODE = f"import sys; sys.path.insert(0, {str(REPO)!r}); import analyze"
SPAWNER = """import json, os, subprocess, sys, time
rss = int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmRSS:")))
t0 = time.perf_counter()
with open(sys.argv[1], "wb") as log:
    pid = subprocess.Popen(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT).pid
    _, status, u = os.wait4(pid, 0)
print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "maxrss_kib": u.ru_maxrss, "spawner_rss_kib": rss,
                  "wall_s": time.perf_counter() - t0, "cpu_s": u.ru_utime + u.ru_stime}))
"""


def network(width: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A small ViT-like parameter dict: stem, ``DEPTH`` blocks (qkv, proj, fc1, fc2, norm), head."""
    d = width
    net = {
        "patch_embed.proj.weight": torch.randn(d, 3 * 16 * 16, generator=gen) * 0.02,
        "pos_embed": torch.randn(1, 197, d, generator=gen) * 0.02,
        "cls_token": torch.zeros(1, 1, d),
    }
    for b in range(DEPTH):
        p = f"blocks.{b}."
        net[p + "attn.qkv.weight"] = torch.randn(3 * d, d, generator=gen) * d**-0.5
        net[p + "attn.proj.weight"] = torch.randn(d, d, generator=gen) * d**-0.5
        net[p + "mlp.fc1.weight"] = torch.randn(4 * d, d, generator=gen) * d**-0.5
        net[p + "mlp.fc2.weight"] = torch.randn(d, 4 * d, generator=gen) * (4 * d) ** -0.5
        net[p + "norm1.weight"] = torch.ones(d)
    net.update(
        {
            "norm.weight": torch.ones(d),
            "head.weight": torch.randn(4 * d, d, generator=gen) * d**-0.5,
            "head.bias": torch.zeros(4 * d),
        }
    )
    return net


def width_for(state_mib: float) -> int:
    """The width (a multiple of 8) whose student + teacher state is closest to ``state_mib`` MiB of fp32."""
    per_d2 = 2 * (DEPTH * 12 + 4) * 4  # bytes per d^2: blocks (12 d^2 each) + head (4 d^2), two networks
    per_d = 2 * (768 + 197 + 1 + DEPTH + 1 + 4) * 4
    d = (-per_d + math.sqrt(per_d**2 + 4 * per_d2 * state_mib * MiB)) / (2 * per_d2)
    return max(8, int(round(d / 8)) * 8)


def build_run(run_dir: Path, n: int, width: int, seed: int = 0) -> dict[str, Any]:
    """Write ``n`` checkpoints (one per 'epoch' of 50 steps) and metrics.jsonl into ``run_dir``."""
    gen = torch.Generator().manual_seed(seed)
    student = network(width, gen)
    teacher = {k: v.clone() for k, v in student.items()}
    center = torch.zeros(4 * width)
    log = MetricsLog(run_dir)
    t0, steps_per_ckpt = time.time(), 50
    with CheckpointManager(run_dir / "checkpoints", monitor="val/acc", mode="max") as mgr:
        for i in range(1, n + 1):
            step = i * steps_per_ckpt
            for k, v in student.items():
                if not k.startswith("patch_embed"):  # a frozen stem: same content id, deduplicated
                    v.add_(torch.randn(v.shape, generator=gen) * (1e-3 * (float(v.std()) if v.numel() > 1 else 1.0) + 1e-4))
                    teacher[k].mul_(0.99).add_(v, alpha=0.01)
            center.mul_(0.9).add_(torch.randn(center.shape, generator=gen), alpha=0.1)
            for s in range(step - steps_per_ckpt + 10, step + 1, 10):
                log.log({"step": s, "epoch": i - 1, "time": t0 + s * 0.1, "train/loss": 5.0 / (1 + s / 200)})
            acc = 0.9 - 0.5 / (1 + i) + 0.01 * float(torch.rand((), generator=gen))
            log.log({"step": step, "epoch": i - 1, "time": t0 + step * 0.1, "val/acc": acc, "val/loss": 1 - acc})
            state = {
                "task": {"student": student, "teacher": teacher, "center": center},
                "progress": {"step": step, "epoch": i - 1, "batch_in_epoch": 0},
            }
            mgr.save(
                state, step=step, epoch=i - 1, metrics={"val/acc": acc, "val/loss": 1 - acc}, tags=("end",) if i == n else ()
            )
    log.close()
    tensors = [*student.values(), *teacher.values(), center]
    return {
        "state_bytes": sum(t.numel() * t.element_size() for t in tensors),
        "largest_tensor_bytes": max(t.numel() * t.element_size() for t in tensors),
        "tensors": len(tensors),
    }


def measure(cmd: list[str], log_path: Path) -> dict[str, float]:
    """Run ``cmd`` from a lean spawner; its own peak RSS (``wait4`` rusage of that child), wall and CPU time.

    A child's ``ru_maxrss`` starts at the RSS of the process that forked it (Linux keeps the old mm's
    high-water mark across exec), so spawning from this torch-laden process would floor every figure at
    our own RSS; a fresh ``python -S`` (~10 MiB) spawns instead and reports its own RSS as that floor.
    """
    out = subprocess.run(
        [sys.executable, "-S", "-c", SPAWNER, str(log_path), *cmd], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    res = json.loads(out.strip().splitlines()[-1])
    if res["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res['rc']}):\n{log_path.read_text()[-3000:]}")
    return {
        "peak_rss_bytes": res["maxrss_kib"] * 1024.0,
        "wall_s": res["wall_s"],
        "cpu_s": res["cpu_s"],
        "spawner_rss_bytes": res["spawner_rss_kib"] * 1024.0,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Build the runs, measure, print the table and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state-mib", type=float, default=48.0, help="fp32 state size (student + teacher)")
    ap.add_argument("--counts", default="10,40,80", help="numbers of checkpoints, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "analyze_memory.json")
    ap.add_argument("--keep", action="store_true", help="keep the run dirs")
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    python = sys.executable
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="analyze-memory-", dir=REPO / "bench" / "results"))
    try:
        width = width_for(args.state_mib)
        runs: dict[int, dict[str, Any]] = {}
        for n in counts:
            t0 = time.perf_counter()
            runs[n] = {"dir": work / f"run-{n}", **build_run(work / f"run-{n}", n, width)}
            print(
                f"built N={n}: {runs[n]['state_bytes'] / MiB:.1f} MiB state in {runs[n]['tensors']} tensors "
                f"({time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
        base_runs: list[dict[str, float]] = []
        samples: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
        for r in range(args.repeats):  # interleaved, so drift affects every N alike
            base_runs.append(measure([python, "-c", BASELINE_CODE], work / "baseline.log"))
            for n in counts:
                samples[n].append(measure([python, "analyze.py", f"run={runs[n]['dir']}"], work / f"analyze-{n}.log"))
                print(
                    f"  repeat {r + 1}: N={n} peak {samples[n][-1]['peak_rss_bytes'] / MiB:.0f} MiB, "
                    f"{samples[n][-1]['wall_s']:.1f} s",
                    flush=True,
                )
        base = statistics.median(b["peak_rss_bytes"] for b in base_runs)
        rows = []
        for n in counts:
            peak = statistics.median(s["peak_rss_bytes"] for s in samples[n])
            st = runs[n]["state_bytes"]
            rows.append(
                {
                    "checkpoints": n,
                    "state_bytes": st,
                    "largest_tensor_bytes": runs[n]["largest_tensor_bytes"],
                    "tensors": runs[n]["tensors"],
                    "peak_rss_bytes": peak,
                    "above_baseline_bytes": peak - base,
                    "ratio_to_state": (peak - base) / st,
                    "wall_s": statistics.median(s["wall_s"] for s in samples[n]),
                    "cpu_s": statistics.median(s["cpu_s"] for s in samples[n]),
                    "samples": samples[n],
                }
            )
        growth = (
            (rows[-1]["peak_rss_bytes"] - rows[0]["peak_rss_bytes"]) / (counts[-1] - counts[0])
            if len(rows) > 1 and counts[-1] != counts[0]
            else None
        )
        lines = [
            f"analyze.py peak RSS (median of {args.repeats}; baseline = importing analyze.py's stack: {base / MiB:.0f} MiB)",
            f"{'N':>4} {'state MiB':>10} {'peak RSS MiB':>13} {'above base MiB':>15} {'x state':>8} {'wall s':>7} {'cpu s':>6}",
        ]
        lines += [
            f"{r['checkpoints']:>4} {r['state_bytes'] / MiB:>10.1f} {r['peak_rss_bytes'] / MiB:>13.0f} "
            f"{r['above_baseline_bytes'] / MiB:>15.0f} {r['ratio_to_state']:>8.2f} {r['wall_s']:>7.1f} {r['cpu_s']:>6.1f}"
            for r in rows
        ]
        if growth is not None:
            lines.append(
                f"growth: {growth / MiB:+.2f} MiB per extra checkpoint (N={counts[0]} -> N={counts[-1]}); "
                f"largest tensor {rows[0]['largest_tensor_bytes'] / MiB:.1f} MiB fp32"
            )
        print("\n".join(lines))
        result = {
            "python": python,
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "state_mib_arg": args.state_mib,
            "width": width,
            "repeats": args.repeats,
            "work_dir": str(work),
            "baseline_rss_bytes": base,
            "baseline_samples": base_runs,
            "growth_bytes_per_checkpoint": growth,
            "rows": rows,
            "table": lines,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=str))
        print(f"wrote {args.out}")
        return result
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
