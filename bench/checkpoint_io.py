#!/usr/bin/env python
"""Checkpoint I/O at this machine's floor: every save and restore figure beside the floor measured for it in the
same run, its peer (torch.save / torch.load, DCP) and its target.

One run builds one synthetic fp32 state (~200 tensors of mixed sizes, ``--size-mib``, default 1024) and works in a
temporary directory on the repository's filesystem (``bench/results/tmp``; ``--dir`` to choose another). Every
figure is the median of ``--repeats`` runs (default 3); within a repetition the operations compared run back to
back in rotating order, so a ratio compares like conditions. The floors, measured in the same run:

- the disk: the state's byte count written sequentially in 64 MiB writes + fsync, with O_DIRECT and through the
  page cache (the store writes big packs with O_DIRECT; the table shows both), and read back with O_DIRECT;
- the CPU: one thread reading the state once with XXH3-128 (change detection) and once with BLAKE3 (the content
  ids of what a save writes); a save's CPU floor is their sum divided by the store's hashing threads;
- memory: copying the state into memory already touched (what an async save must do before returning), and
  reading the pack files from the page cache into fresh memory (what any warm restore pays);
- object storage: raw s3fs ``put_file`` / ``cat_file`` of the very pack bytes to a moto S3 server this bench
  starts on 127.0.0.1 (moto keeps objects in memory: the figures measure the protocol on this machine).

Rows (``bench/results/checkpoint_io.json``: ``key``, ``value``, ``floor``, ``peer``, ``ratio``, ``target``, ``met``):
save_vs_floor, save_vs_disk, save_vs_torch, incremental_time, incremental_bytes, rss_save, restore_vs_torch,
async_blocked_vs_copy, s3_save_vs_raw, s3_restore_vs_raw (targeted), and save_vs_dcp, save_zstd,
restore_vs_dcp, restore_mmap_vs_torch (measured). docs/benchmarks.md explains each. Restores run in fresh
processes with the files in the page cache (both sides); peak RSS is taken in fresh processes too.

Timings depend on what else the machine runs: the load average and the CPU other processes took are printed
and saved. Nothing here asserts timings. Usage: ``.venv/bin/python bench/checkpoint_io.py [--size-mib 1024]
[--repeats 3] [--s3-size-mib N] [--no-s3] [--dir DIR] [--out bench/results/checkpoint_io.json] [--keep]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _io_helpers as h  # noqa: E402
import _io_rows  # noqa: E402
from _io_helpers import REPO, GiB  # noqa: E402

from waypoint.checkpoint import CheckpointManager  # noqa: E402

HELPERS = Path(h.__file__).resolve()


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


def rotated(items: list[str], r: int) -> list[str]:
    return items[r % len(items) :] + items[: r % len(items)]


def settle() -> None:
    """Flush dirty pages of earlier steps so they do not slow the next timed one."""
    os.sync()


# Linux carries the high-water RSS of the process that forked a child across exec into the child's
# ru_maxrss, so RSS is measured in children spawned by a lean ``python -S`` (~10 MiB), never by this big process.
SPAWNER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def run_child(kind: str, path: Path, size_mib: float) -> dict[str, Any]:
    """Run one ``_io_helpers.child`` measurement in a new interpreter; its JSON result."""
    proc = subprocess.run(
        [sys.executable, "-S", "-c", SPAWNER, sys.executable, str(HELPERS), "one", kind, str(path), str(size_mib)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class Zygote:
    """``_io_helpers.py serve``: runs each timed restore in a fresh process forked from one that imported everything
    (fresh memory and allocator; the peak RSS of such a child leaves out the libraries' pages it touches first, so
    RSS is measured with ``run_child``)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPERS), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def run(self, kind: str, path: Path, size_mib: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{kind}\t{path}\t{size_mib}\n")
        self.proc.stdin.flush()
        got = json.loads(self.proc.stdout.readline() or '{"error": "the zygote exited"}')
        if "error" in got:
            raise RuntimeError(f"fresh-process measurement failed: {got['error']}")
        return got

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)


def threads_used() -> int:
    """The hashing threads a save uses here (the store's pool, at most one per core)."""
    with CheckpointManager(Path(tempfile.mkdtemp()) / "probe") as m:
        workers = m.store.pool._max_workers
        shutil.rmtree(m.root, ignore_errors=True)
    return max(1, min(workers, os.cpu_count() or 1))


# ---------------------------------------------------------------------------- phases
def full_saves(state: Any, nbytes: int, work: Path, repeats: int) -> dict[str, list[float]]:
    """The floors (disk, hashing) and full saves: Waypoint's first save of a store, torch.save + fsync, DCP. Leaves
    state.pt, dcp/ and wp-full/ behind for the restores."""
    h.disk_write(work / "read.bin", nbytes, direct=True)  # what the O_DIRECT read floor reads
    disk, wp = work / "disk.bin", work / "wp-full"
    paths = {"disk-direct": disk, "disk-buffered": disk, "torch": work / "state.pt", "dcp": work / "dcp", "waypoint": wp}
    paths["waypoint-zstd"], paths["waypoint-parity"] = work / "wp-zstd", work / "wp-parity"
    ops = {
        "disk-direct": lambda: h.disk_write(disk, nbytes, direct=True),
        "disk-buffered": lambda: h.disk_write(disk, nbytes),
        "disk-read": lambda: h.disk_read(work / "read.bin"),
        "xxh3": lambda: h.xxh3_pass(state),
        "blake3": lambda: h.blake3_pass(state),
        "torch": lambda: h.torch_save(paths["torch"], state),
        "dcp": lambda: h.dcp_save(paths["dcp"], state),
        "waypoint": lambda: h.waypoint_save(paths["waypoint"], state),
        "waypoint-zstd": lambda: h.waypoint_save(paths["waypoint-zstd"], state, "zstd"),
        "waypoint-parity": lambda: h.waypoint_save(paths["waypoint-parity"], state, parity=True),
    }
    out: dict[str, list[float]] = {k: [] for k in ops}
    for r in range(repeats):
        for name in rotated(list(ops), r):
            if name in paths:
                h.remove(paths[name])
            settle()
            out[name].append(ops[name]())
            log(f"  rep {r}: {name:13s} {out[name][-1]:7.3f} s  {nbytes / GiB / out[name][-1]:6.2f} GiB/s")
    h.remove(disk)
    h.remove(work / "read.bin")
    out["zstd_stored_fraction"] = [h.dir_bytes(paths["waypoint-zstd"] / "packs") / h.dir_bytes(paths["waypoint"] / "packs")]
    h.remove(paths["waypoint-zstd"])
    packs = list((paths["waypoint-parity"] / "packs").iterdir())
    parity = sum(p.stat().st_size for p in packs if p.name.endswith(".parity"))
    out["parity_bytes_fraction"] = [parity / sum(p.stat().st_size for p in packs if not p.name.endswith(".parity"))]
    h.remove(paths["waypoint-parity"])
    return out


def incremental_saves(state: Any, work: Path, repeats: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Into one new store, blocking saves: the first, one with every tensor changed (what an epoch of training does),
    then one with 75% of the tensors unchanged: time and bytes the store grew."""
    out: dict[str, list[float]] = {k: [] for k in ("first_s", "full_s", "second_s", "full_bytes", "second_bytes")}
    changed: dict[str, float] = {}
    for r in range(repeats):
        full = h.all_changed(state, r)
        second, changed = h.with_quarter_changed(full, r)
        root = work / "wp-inc"
        with CheckpointManager(root) as mgr:
            timed = []
            for step, current in enumerate((state, full, second), 1):
                before = h.dir_bytes(root)
                settle()
                t0 = time.perf_counter()
                mgr.save(current, step=step)
                timed.append((time.perf_counter() - t0, h.dir_bytes(root) - before))
        shutil.rmtree(root)
        out["first_s"].append(timed[0][0])
        out["full_s"].append(timed[1][0])
        out["second_s"].append(timed[2][0])
        out["full_bytes"].append(timed[1][1])
        out["second_bytes"].append(timed[2][1])
        del second, full
        log(
            f"  rep {r}: first {timed[0][0]:.3f} s, all changed {timed[1][0]:.3f} s, 75% unchanged {timed[2][0]:.3f} s "
            f"(wrote {timed[2][1] / 2**20:.1f} of {timed[1][1] / 2**20:.1f} MiB)"
        )
    return out, changed


def async_saves(state: Any, work: Path, repeats: int, steady: int = 3) -> dict[str, list[float]]:
    """``save(blocking=False)`` into a new store: how long the caller is blocked for the first save and for ``steady``
    later ones (every tensor changed since the save before), each beside the copy floor: copying the same tensors
    into memory already touched, right before it."""
    keys = ("first_blocked_s", "blocked_s", "copy_s", "durable_s")
    out: dict[str, list[float]] = {k: [] for k in keys}
    bufs = [torch.empty_like(t) for t in state["model"].values()]
    h.copy_into(bufs, state)  # touched once, untimed
    for r in range(repeats):
        root = work / "wp-async"
        with CheckpointManager(root) as mgr:
            for i in range(1 + steady):
                current = state if i == 0 else h.all_changed(state, 10 * r + i)
                if i:
                    out["copy_s"].append(h.copy_into(bufs, current))
                t0 = time.perf_counter()
                mgr.save(current, step=1 + i, blocking=False)
                out["blocked_s" if i else "first_blocked_s"].append(time.perf_counter() - t0)
                mgr.wait()
                if i:
                    out["durable_s"].append(time.perf_counter() - t0)
                del current
        shutil.rmtree(root)
        log(
            f"  rep {r}: first save blocked {out['first_blocked_s'][-1]:.3f} s; later saves blocked "
            + ", ".join(f"{b:.3f}" for b in out["blocked_s"][-steady:])
            + " s; copy floor "
            + ", ".join(f"{c:.3f}" for c in out["copy_s"][-steady:])
            + " s"
        )
    return out


FRESH = {
    "restore-waypoint": "wp-full",
    "restore-waypoint-mmap": "wp-full",
    "read-floor": "wp-full",
    "restore-torch": "state.pt",
    "restore-dcp": "dcp",
}


def fresh_process_runs(work: Path, size_mib: float, repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Restores and the read floor (warm page cache) and saves, each in a fresh process: time and peak RSS."""
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in [*FRESH, "save-waypoint", "save-torch"]}
    zygote = Zygote()
    try:
        for r in range(repeats):
            for kind in rotated(list(FRESH), r):
                h.warm_cache(work / FRESH[kind])
                out[kind].append(zygote.run(kind, work / FRESH[kind], size_mib))
            for kind, target in (("save-waypoint", work / "rss-wp"), ("save-torch", work / "rss.pt")):
                settle()
                out[kind].append(run_child(kind, target, size_mib))
                h.remove(target)
            done = [f"{k} {v[-1]['seconds']:.3f} s / +{v[-1]['peak_above_baseline'] / 2**20:.0f} MiB" for k, v in out.items()]
            log(f"  rep {r}: " + ", ".join(done))
    finally:
        zygote.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=float, default=1024, help="state size in MiB (default 1024)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure; medians are reported (default 3)")
    ap.add_argument("--s3-size-mib", type=float, default=None, help="state size of the S3 rows (default: --size-mib)")
    ap.add_argument("--no-s3", action="store_true", help="leave out the S3 rows (no moto server)")
    ap.add_argument("--dir", type=Path, default=REPO / "bench" / "results" / "tmp", help="parent of the work dir")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "checkpoint_io.json")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    args = ap.parse_args()
    if args.repeats < 1 or args.size_mib < 4:
        ap.error("--repeats must be >= 1 and --size-mib >= 4")
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="checkpoint-io-", dir=args.dir))
    env = {"fs": h.fs_info(work), "loadavg_start": os.getloadavg(), "cpu": h.CpuLoad(), "t0": time.perf_counter()}
    try:
        samples = run_phases(args, work, env)
        rows = _io_rows.build(samples, env)
        report(args, work, env, samples, rows)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run_phases(args: argparse.Namespace, work: Path, env: dict[str, Any]) -> dict[str, Any]:
    """Every phase in turn; the samples each produced."""
    fs = env["fs"]
    log(f"[bench] building a {args.size_mib:g} MiB state in {work} ({fs['fstype']} on {fs['device']})")
    state = h.make_state(args.size_mib)
    nbytes = h.state_bytes(state)
    if fs["free_gib"] * GiB < 5 * nbytes:
        raise SystemExit(f"not enough free space under {work} (need ~{5 * nbytes / GiB:.1f} GiB)")
    env.update(state_bytes=nbytes, n_tensors=len(state["model"]), threads=threads_used())
    with CheckpointManager(work / "warmup") as m:  # untimed warm-up of code paths and thread pools
        m.save({"x": torch.zeros(4096)}, step=0)
        m.restore()
    h.remove(work / "warmup")
    s: dict[str, Any] = {}
    log("[bench] floors and full saves")
    s["full"] = full_saves(state, nbytes, work, args.repeats)
    with CheckpointManager(work / "wp-full", read_only=True) as m:
        back = m.restore()
    env["restored_state_equal"] = all(torch.equal(back["model"][k], t) for k, t in state["model"].items())
    del back
    log("[bench] 75%-unchanged saves")
    s["incremental"], env["incremental_changed"] = incremental_saves(state, work, args.repeats)
    log("[bench] async saves")
    s["async"] = async_saves(state, work, args.repeats)
    s["s3"] = None
    if not args.no_s3:
        log("[bench] S3 (moto on 127.0.0.1)")
        import _io_s3

        s3_state = state if args.s3_size_mib in (None, args.size_mib) else h.make_state(args.s3_size_mib)
        s["s3"] = _io_s3.runs(s3_state, work, args.repeats, log)
        del s3_state
    del state
    log("[bench] fresh processes: restores (warm page cache) and peak RSS")
    s["fresh"] = fresh_process_runs(work, args.size_mib, args.repeats)
    return s


def report(args: argparse.Namespace, work: Path, env: dict[str, Any], samples: dict[str, Any], rows: list[dict]) -> None:
    other = env["cpu"].other_cores()
    load = (env["loadavg_start"][0], os.getloadavg()[0])
    head = [
        f"Checkpoint I/O: {env['n_tensors']} fp32 tensors, {env['state_bytes'] / GiB:.3f} GiB; medians of {args.repeats} "
        f"runs; {os.cpu_count()} CPUs ({env['threads']} hashing threads); load average {load[0]:.2f} at the start, "
        f"{load[1]:.2f} at the end; other processes used {other:.2f} cores on average",
        f"work dir {work} ({env['fs']['fstype']} on {env['fs']['device']}); restores read a WARM page cache, each in a "
        f"fresh process; restored state equals saved: {env['restored_state_equal']}",
        "",
    ]
    lines = head + _io_rows.table(rows)
    print("\n".join(lines))
    doc = {
        "env": {
            **{k: v for k, v in env.items() if k not in ("cpu", "t0", "loadavg_start")},
            "repeats": args.repeats,
            "cpu_count": os.cpu_count(),
            "other_processes_cores": round(other, 3),
            "loadavg_start_end": list(load),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "kernel": platform.release(),
            "page_cache": "warm",
            "seconds_total": round(time.perf_counter() - env["t0"], 1),
        },
        "rows": rows,
        "table": lines,
        "samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    log(f"[bench] wrote {args.out} in {time.perf_counter() - env['t0']:.0f} s")


if __name__ == "__main__":
    main()
