#!/usr/bin/env python
"""Sharded save/restore benchmark: 2 ranks (torchrun, gloo, CPU, FSDP2) writing one checkpoint through
``waypoint.checkpoint.dcp`` vs one process saving the same state with ``CheckpointManager.save``.

The state: a stack of ``nn.Linear`` layers with AdamW state (weights + exp_avg + exp_avg_sq, fp32), about
``--size-mib`` MiB in all. Sharded: each layer and the root are ``fully_shard``-ed, so each rank owns half of
every tensor; a save writes each rank's half into its own pack (in parallel, no lock) and rank 0 commits the
manifest. Single: the same full tensors, one blocking ``save`` into a new store. Every repetition changes every
tensor first (nothing deduplicates), each figure is the median of ``--repeats``. Restores are timed into the
live (sharded) state (``load_sharded``) and, for the single process, ``restore("latest")`` (verified).

Usage: ``.venv/bin/python bench/sharded_io.py [--size-mib 128] [--repeats 3] [--out bench/results/sharded_io.json]``.
Timings depend on what else the machine runs (2 ranks share the CPU cores with it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
LAYER = 512  # each layer is LAYER x LAYER (+ bias): 1 MiB of fp32 weights


def build(size_mib: int, sharded: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    n_layers = max(1, size_mib // 3)  # weights + two AdamW moments per layer
    model = torch.nn.Sequential(*[torch.nn.Linear(LAYER, LAYER) for _ in range(n_layers)])
    if sharded:
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            fully_shard(layer)
        fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    from torch.distributed.checkpoint.state_dict import _init_optim_state

    _init_optim_state(opt)
    return model, opt


def local_bytes(state: dict, rank: int) -> int:
    """Bytes this rank owns: its DTensor shards, and plain tensors on rank 0 (DCP writes a replicated one once)."""
    total = 0

    def walk(v: object) -> None:
        nonlocal total
        if isinstance(v, torch.Tensor):
            if hasattr(v, "to_local"):
                total += v.to_local().numel() * v.element_size()
            elif rank == 0:
                total += v.numel() * v.element_size()
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    walk(state)
    return total


def bump(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
            for t in opt.state[p].values():
                if t.is_floating_point() and t.dim():
                    t.add_(1.0)


def worker(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    from waypoint.checkpoint import CheckpointManager

    sharded = "RANK" in os.environ
    if sharded:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if sharded else 0
    model, opt = build(args.size_mib, sharded)
    root = Path(args.dir) / ("sharded" if sharded else "single")
    manager = CheckpointManager(root) if rank == 0 else None
    if sharded:
        dist.barrier()  # rank 0 holds the writer's lease: the others write their shards through a read-only view
    manager = manager or CheckpointManager(root, read_only=True)
    saves, restores = [], []
    for step in range(1, args.repeats + 1):
        bump(model, opt)
        state = {"model": model.state_dict(), "optim": opt.state_dict()}
        if sharded:
            dist.barrier()
        t = time.perf_counter()
        if sharded:
            manager.save_sharded(state, step)
            dist.barrier()
        else:
            manager.save(state, step=step)
        saves.append(time.perf_counter() - t)
        name = f"step_{step:09d}"
        t = time.perf_counter()
        if sharded:
            manager.restore_sharded({"model": model.state_dict(), "optim": opt.state_dict()}, name)
            dist.barrier()
        else:
            manager.restore(name)
        restores.append(time.perf_counter() - t)
    row = {
        "rank": rank,
        "world_size": dist.get_world_size() if sharded else 1,
        "bytes": local_bytes({"model": model.state_dict(), "optim": opt.state_dict()}, rank),
        "save_s": statistics.median(saves),
        "restore_s": statistics.median(restores),
    }
    if manager is not None:
        manager.close()
    Path(args.out_rows).joinpath(f"{'sharded' if sharded else 'single'}-{rank}.json").write_text(json.dumps(row))
    if sharded:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results" / "sharded_io.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--out-rows", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        common = [str(Path(__file__).resolve()), "--worker", "--dir", tmp, "--out-rows", tmp]
        common += ["--size-mib", str(args.size_mib), "--repeats", str(args.repeats)]
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        for cmd in ([sys.executable, *common], [*torchrun, *common]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        rows = [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("*.json"))]
    single = next(r for r in rows if r["world_size"] == 1)
    ranks = sorted((r for r in rows if r["world_size"] == 2), key=lambda r: r["rank"])
    sharded_save = max(r["save_s"] for r in ranks)
    sharded_restore = max(r["restore_s"] for r in ranks)
    mib = 1 << 20
    print(f"state {single['bytes'] / mib:.0f} MiB (fp32 weights + AdamW moments), median of {args.repeats}")
    print(f"{'variant':<28}{'MiB written per rank':>22}{'save s':>9}{'restore s':>11}{'save vs single':>16}")
    one = f"{single['bytes'] / mib:>22.1f}{single['save_s']:>9.3f}{single['restore_s']:>11.3f}{1:>15.2f}x"
    print(f"{'1 process, manager.save':<28}{one}")
    per_rank = " / ".join(f"{r['bytes'] / mib:.1f}" for r in ranks)
    ratio = sharded_save / single["save_s"]
    print(f"{'2 ranks, FSDP2 + DCP':<28}{per_rank:>22}{sharded_save:>9.3f}{sharded_restore:>11.3f}{ratio:>15.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "size_mib": args.size_mib,
                "repeats": args.repeats,
                "single": single,
                "sharded": ranks,
                "sharded_save_s": sharded_save,
                "sharded_restore_s": sharded_restore,
                "save_time_vs_single": ratio,
                "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
