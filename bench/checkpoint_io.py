#!/usr/bin/env python
"""Checkpoint I/O benchmark: Waypoint's CheckpointManager vs torch.save / torch.load and the raw disk.

One run measures everything on one synthetic fp32 state (~200 tensors of mixed sizes, ``--size-mib``,
default 1024) in a temporary directory on the repository's filesystem (``bench/results/tmp``; ``--dir``
to choose another). Every figure is the median of ``--repeats`` runs (default 3); the competing variants
of one repetition run back to back in rotating order so a ratio compares like conditions.

- save: a blocking ``save`` into a new store, the store's first (store opened before the clock starts;
  the time covers the private copy the store keeps of the state, hashing, writing, fsync of the pack,
  manifest, state.json and index, renames and directory fsyncs) vs ``torch.save(state, path)`` + fsync,
  and vs the disk: the same byte count written sequentially in 64 MiB writes + fsync, buffered
  (``dd conv=fsync``) and O_DIRECT (``dd oflag=direct conv=fsync``); the O_DIRECT figure is the disk's
  (buffered where the filesystem refuses O_DIRECT). Targets (issue #12): >= 1.5x torch.save, >= 0.8x the
  disk. The all-changed 2nd save (below) against the disk is shown too, and a 1st save with
  ``compression="zstd"`` (synthetic random weights barely compress: this row shows its speed; see
  ``bench/compression.py`` for ratios on real trained state).
- restore: ``restore("latest")`` (verified: every tensor re-hashed, the default) vs
  ``torch.load(weights_only=True)``, each timed inside a fresh process (a resume is a fresh process; it
  also keeps allocator reuse from favouring either side) with the files in the page cache (WARM for
  both: every file is read once, untimed, just before each timed restore; caches cannot be dropped
  without root). Target >= 1.0x. ``verify=False`` is shown too, and the restore that does not copy,
  ``restore(mmap=True, verify=False)`` (tensors backed by the pack files' pages, read when touched),
  target >= 2.0x; beside it ``mmap=True`` verified and, for reference, ``torch.load(mmap=True)``.
- steady state and incremental: into one new store, the first save, a second with every tensor changed
  (what an epoch of training does; the store's copies of the last save are compared and reused), then a
  third with 25% of the tensors (every 4th by size, ~25% of the bytes) changed and 75% unchanged: bytes
  the store grew and time of the third against the second. Targets <= 0.26x bytes, <= 0.30x time. The
  same three saves with ``snapshot_blocking=False`` (no retained copy, so every tensor is hashed) show
  what the retained copy costs and buys.
- async: how long ``save(..., blocking=False)`` blocks the caller, for the first save of a store (fresh
  copies) and for the three saves after it (every tensor changed, the copies reused: the steady state
  of a training run; median over all of them), against the blocking all-changed save above. Target for the steady state <= 0.10x.
  Also shown: time until the background save is durable.
- peak RSS: in a fresh process per measurement, ``ru_maxrss`` after the operation minus the RSS just
  before it. Baseline for a save: interpreter + imports + the state already built (+ the open store);
  for a restore: interpreter + imports (+ the open read-only store), before anything is read. So the
  figure is the extra memory the operation needs; a restore's includes the restored state itself.
  Target <= 1.1x the state size. torch.save / torch.load are measured the same way for reference.

Timings depend on what else the machine runs: the CPU time other processes took during the run is
printed and saved. Nothing here asserts timings. Usage: ``.venv/bin/python bench/checkpoint_io.py [--size-mib 1024]
[--repeats 3] [--dir DIR] [--out bench/results/checkpoint_io.json] [--keep]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _io_helpers as h  # noqa: E402
from _io_helpers import REPO, GiB, MiB  # noqa: E402

from waypoint.checkpoint import CheckpointManager  # noqa: E402

HELPERS = Path(h.__file__).resolve()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rotated(items: list[str], r: int) -> list[str]:
    return items[r % len(items) :] + items[: r % len(items)]


def settle() -> None:
    """Flush dirty pages of earlier steps so they do not slow the next timed one."""
    os.sync()


# Linux carries the high-water RSS of the process that forked a child across exec into the child's
# ru_maxrss, so children are spawned by a lean ``python -S`` (~10 MiB), never by this big process.
SPAWNER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def run_child(kind: str, path: Path, size_mib: float) -> dict[str, Any]:
    """Run one ``_io_helpers.child`` measurement in a fresh process; its JSON result."""
    proc = subprocess.run(
        [sys.executable, "-S", "-c", SPAWNER, sys.executable, str(HELPERS), kind, str(path), str(size_mib)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- phases
def full_saves(state: Any, nbytes: int, work: Path, repeats: int) -> dict[str, list[float]]:
    """Blocking saves: the disk (buffered and O_DIRECT), torch.save + fsync, Waypoint. Leaves state.pt
    and wp-full/ behind for the restores."""
    targets = {
        "disk": work / "disk.bin",
        "disk-direct": work / "disk.bin",
        "torch": work / "state.pt",
        "waypoint": work / "wp-full",
        "waypoint-zstd": work / "wp-zstd",
    }
    ops: dict[str, Callable[[], float]] = {
        "disk": lambda: h.disk_write(targets["disk"], nbytes),
        "disk-direct": lambda: h.disk_write(targets["disk"], nbytes, direct=True),
        "torch": lambda: h.torch_save(targets["torch"], state),
        "waypoint": lambda: h.waypoint_save(targets["waypoint"], state),
        "waypoint-zstd": lambda: h.waypoint_save(targets["waypoint-zstd"], state, "zstd"),
    }
    out: dict[str, list[float]] = {k: [] for k in ops}
    for r in range(repeats):
        for name in rotated(list(ops), r):
            h.remove(targets[name])
            settle()
            out[name].append(ops[name]())
            log(f"  rep {r}: {name:11s} save {out[name][-1]:7.3f} s  {nbytes / GiB / out[name][-1]:6.2f} GiB/s")
    h.remove(targets["disk"])
    out["zstd_stored_fraction"] = [h.dir_bytes(targets["waypoint-zstd"] / "packs") / h.dir_bytes(targets["waypoint"] / "packs")]
    h.remove(targets["waypoint-zstd"])
    return out


def incremental_saves(state: Any, work: Path, repeats: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Into one new store, blocking saves: the first (fresh copies), one with every tensor changed (steady
    state: the copies of the last save are compared and reused), then one with 75% of the tensors
    unchanged. The same again with ``snapshot_blocking=False`` (no retained copy: every tensor hashed)."""
    out: dict[str, list[float]] = {
        k: []
        for k in (
            "first_s",
            "full_s",
            "second_s",
            "full_bytes",
            "second_bytes",
            "nocopy_first_s",
            "nocopy_full_s",
            "nocopy_second_s",
            "copy_bytes",
        )
    }
    changed: dict[str, float] = {}
    for r in range(repeats):
        full = h.all_changed(state, r)
        second, changed = h.with_quarter_changed(full, r)
        for copy in rotated([True, False], r):
            root = work / "wp-inc"
            with CheckpointManager(root, snapshot_blocking=copy) as mgr:
                settle()
                t0 = time.perf_counter()
                mgr.save(state, step=1)
                first_s = time.perf_counter() - t0
                before = h.dir_bytes(root)
                settle()
                t0 = time.perf_counter()
                mgr.save(full, step=2)
                full_s = time.perf_counter() - t0
                full_bytes = h.dir_bytes(root) - before
                settle()
                t0 = time.perf_counter()
                mgr.save(second, step=3)
                second_s = time.perf_counter() - t0
                second_bytes = h.dir_bytes(root) - before - full_bytes
                held = mgr.snapshots.nbytes
            shutil.rmtree(root)
            if copy:
                out["first_s"].append(first_s)
                out["full_s"].append(full_s)
                out["second_s"].append(second_s)
                out["full_bytes"].append(full_bytes)
                out["second_bytes"].append(second_bytes)
                out["copy_bytes"].append(held)
            else:
                out["nocopy_first_s"].append(first_s)
                out["nocopy_full_s"].append(full_s)
                out["nocopy_second_s"].append(second_s)
        del second, full
        log(
            f"  rep {r}: first {out['first_s'][-1]:.3f} s, all-changed {out['full_s'][-1]:.3f} s, 75%-unchanged "
            f"{out['second_s'][-1]:.3f} s (store grew {out['second_bytes'][-1] / MiB:.1f} of "
            f"{out['full_bytes'][-1] / MiB:.1f} MiB); without a retained copy: all-changed "
            f"{out['nocopy_full_s'][-1]:.3f} s, 75%-unchanged {out['nocopy_second_s'][-1]:.3f} s"
        )
    return out, changed


def async_saves(state: Any, work: Path, repeats: int, steady: int = 3) -> dict[str, list[float]]:
    """``save(blocking=False)`` into a new store: seconds until it returns, and until the background save is
    durable, for the first save (fresh copies) and for ``steady`` later ones (every tensor changed since the
    save before, as after an epoch of training; the copies of the previous save reused)."""
    out: dict[str, list[float]] = {k: [] for k in ("blocked_s", "durable_s", "steady_blocked_s", "steady_durable_s")}
    for r in range(repeats):
        root = work / "wp-async"
        with CheckpointManager(root) as mgr:
            for i in range(1 + steady):
                current = state if i == 0 else h.all_changed(state, 10 * r + i)
                settle()
                t0 = time.perf_counter()
                mgr.save(current, step=1 + i, blocking=False)
                blocked = time.perf_counter() - t0
                mgr.wait()
                durable = time.perf_counter() - t0
                out["blocked_s" if i == 0 else "steady_blocked_s"].append(blocked)
                out["durable_s" if i == 0 else "steady_durable_s"].append(durable)
                del current
        shutil.rmtree(root)
        log(
            f"  rep {r}: first save: caller blocked {out['blocked_s'][-1]:.3f} s, durable after "
            f"{out['durable_s'][-1]:.3f} s; later saves: blocked "
            + ", ".join(f"{x:.3f}" for x in out["steady_blocked_s"][-steady:])
            + " s, durable after "
            + ", ".join(f"{x:.3f}" for x in out["steady_durable_s"][-steady:])
            + " s"
        )
    return out


def fresh_process_runs(work: Path, size_mib: float, repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Restores (warm page cache) and saves, each in a fresh process: time and peak RSS."""
    restores = {
        "restore-waypoint": work / "wp-full",
        "restore-waypoint-noverify": work / "wp-full",
        "restore-waypoint-mmap": work / "wp-full",
        "restore-waypoint-mmap-verified": work / "wp-full",
        "restore-torch": work / "state.pt",
        "restore-torch-mmap": work / "state.pt",
    }
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in [*restores, "save-waypoint", "save-torch"]}
    for r in range(repeats):
        for kind in rotated(list(restores), r):
            h.warm_cache(restores[kind])
            out[kind].append(run_child(kind, restores[kind], size_mib))
        for kind, target in (("save-waypoint", work / "rss-wp"), ("save-torch", work / "rss.pt")):
            settle()
            out[kind].append(run_child(kind, target, size_mib))
            h.remove(target)
        log(
            f"  rep {r}: "
            + ", ".join(f"{k} {v[-1]['seconds']:.3f} s / +{v[-1]['peak_above_baseline'] / MiB:.0f} MiB" for k, v in out.items())
        )
    return out


# ---------------------------------------------------------------------------- report
def build_rows(nbytes: int, full: dict, inc: dict | None, asy: dict | None, fresh: dict | None) -> list[dict[str, Any]]:
    """The table: one row per figure, with its reference, ratio, target and whether the target is met
    (only the save rows when the other phases did not run)."""
    med, gib = statistics.median, nbytes / GiB
    sv, ts = med(full["waypoint"]), med(full["torch"])
    dk, disk_name = med(full["disk-direct"]), "disk O_DIRECT write+fsync"
    if dk != dk:  # NaN: the filesystem refuses O_DIRECT
        dk, disk_name = med(full["disk"]), "disk seq write+fsync"
    rs = {k: med([x["seconds"] for x in v]) for k, v in (fresh or {}).items()}
    rss = {k: med([x["peak_above_baseline"] for x in v]) for k, v in (fresh or {}).items()}
    rows: list[dict[str, Any]] = []

    def row(
        key: str, name: str, unit: str, wp: float, ref_name: str, ref: float, ratio: float, target: str | None = None
    ) -> None:
        met = None if target is None else (ratio >= float(target[3:-1]) if target[0] == ">" else ratio <= float(target[3:-1]))
        rows.append(
            {
                "key": key,
                "figure": name,
                "unit": unit,
                "waypoint": wp,
                "reference_name": ref_name,
                "reference": ref,
                "ratio": ratio,
                "target": target,
                "met": met,
            }
        )

    row(
        "save_vs_torch",
        "save throughput (1st save of a store)",
        "GiB/s",
        gib / sv,
        "torch.save+fsync",
        gib / ts,
        ts / sv,
        ">= 1.5x",
    )
    row("save_vs_disk", "save throughput (1st save of a store)", "GiB/s", gib / sv, disk_name, gib / dk, dk / sv, ">= 0.8x")
    row(
        "save_zstd",
        f"1st save, compression=zstd (stores {full['zstd_stored_fraction'][0]:.2f}x)",
        "s",
        med(full["waypoint-zstd"]),
        "compression=none",
        sv,
        med(full["waypoint-zstd"]) / sv,
    )
    if inc is None:  # --saves-only
        return rows
    row(
        "save_steady_vs_disk",
        "save throughput (all changed, 2nd save)",
        "GiB/s",
        gib / med(inc["full_s"]),
        disk_name,
        gib / dk,
        dk / med(inc["full_s"]),
    )
    tl = rs["restore-torch"]
    row(
        "restore_vs_torch",
        "restore throughput (verified, default)",
        "GiB/s",
        gib / rs["restore-waypoint"],
        "torch.load",
        gib / tl,
        tl / rs["restore-waypoint"],
        ">= 1.0x",
    )
    row(
        "restore_noverify_vs_torch",
        "restore throughput (verify=False)",
        "GiB/s",
        gib / rs["restore-waypoint-noverify"],
        "torch.load",
        gib / tl,
        tl / rs["restore-waypoint-noverify"],
    )
    row(
        "restore_mmap_vs_torch",
        "restore, no copy (mmap=True, verify=False)",
        "GiB/s",
        gib / rs["restore-waypoint-mmap"],
        "torch.load",
        gib / tl,
        tl / rs["restore-waypoint-mmap"],
        ">= 2.0x",
    )
    row(
        "restore_mmap_verified_vs_torch",
        "restore, no copy, verified (mmap=True)",
        "GiB/s",
        gib / rs["restore-waypoint-mmap-verified"],
        "torch.load",
        gib / tl,
        tl / rs["restore-waypoint-mmap-verified"],
    )
    row(
        "restore_mmap_vs_torch_mmap",
        "restore, no copy (mmap=True, verify=False)",
        "GiB/s",
        gib / rs["restore-waypoint-mmap"],
        "torch.load(mmap=True)",
        gib / rs["restore-torch-mmap"],
        rs["restore-torch-mmap"] / rs["restore-waypoint-mmap"],
    )
    steady = med(inc["full_s"])
    row(
        "save_first_nocopy",
        "1st save of a store, no retained copy",
        "s",
        med(inc["nocopy_first_s"]),
        "with copy",
        med(inc["first_s"]),
        med([a / b for a, b in zip(inc["nocopy_first_s"], inc["first_s"])]),
    )
    row(
        "save_steady",
        "save, all changed (2nd save of a store)",
        "s",
        steady,
        "1st save",
        med(inc["first_s"]),
        med([a / b for a, b in zip(inc["full_s"], inc["first_s"])]),
    )
    row(
        "save_steady_nocopy",
        "  same, no retained copy",
        "s",
        med(inc["nocopy_full_s"]),
        "with copy",
        steady,
        med([a / b for a, b in zip(inc["nocopy_full_s"], inc["full_s"])]),
    )
    row(
        "incremental_bytes",
        "75%-unchanged save: bytes written",
        "MiB",
        med(inc["second_bytes"]) / MiB,
        "all-changed save",
        med(inc["full_bytes"]) / MiB,
        med([a / b for a, b in zip(inc["second_bytes"], inc["full_bytes"])]),
        "<= 0.26x",
    )
    row(
        "incremental_time",
        "75%-unchanged save: time",
        "s",
        med(inc["second_s"]),
        "all-changed save",
        steady,
        med([a / b for a, b in zip(inc["second_s"], inc["full_s"])]),
        "<= 0.30x",
    )
    row(
        "incremental_time_nocopy",
        "  same, no retained copy",
        "s",
        med(inc["nocopy_second_s"]),
        "all-changed, no copy",
        med(inc["nocopy_full_s"]),
        med([a / b for a, b in zip(inc["nocopy_second_s"], inc["nocopy_full_s"])]),
    )
    row(
        "async_blocked_first",
        "async save: caller blocked, 1st save",
        "s",
        med(asy["blocked_s"]),
        "blocking 1st save",
        sv,
        med(asy["blocked_s"]) / sv,
    )
    row(
        "async_blocked",
        "async save: caller blocked, later saves",
        "s",
        med(asy["steady_blocked_s"]),
        "blocking all-changed save",
        steady,
        med(asy["steady_blocked_s"]) / steady,
        "<= 0.10x",
    )
    row(
        "async_durable",
        "async save: until durable, later saves",
        "s",
        med(asy["steady_durable_s"]),
        "blocking all-changed save",
        steady,
        med(asy["steady_durable_s"]) / steady,
    )
    for key, kind, ref, label in (
        ("rss_save", "save-waypoint", "save-torch", "peak RSS above baseline: save"),
        ("rss_restore", "restore-waypoint", "restore-torch", "peak RSS above baseline: restore"),
    ):
        row(
            key,
            label,
            "MiB",
            rss[kind] / MiB,
            f"state size ({ref}: {rss[ref] / MiB:.0f} MiB)",
            nbytes / MiB,
            rss[kind] / nbytes,
            "<= 1.1x",
        )
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    head = f"{'figure':42s} {'waypoint':>10s} {'reference':>10s}  {'ratio':>6s}  {'target':8s} {'met':4s} reference"
    lines = [head, "-" * (len(head) + 20)]
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        lines.append(
            f"{r['figure']:42s} {r['waypoint']:10.3f} {r['reference']:10.3f}  {r['ratio']:5.2f}x  "
            f"{r['target'] or '':8s} {met:4s} {r['unit']}; vs {r['reference_name']}"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=float, default=1024, help="state size in MiB (default 1024)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure; medians are reported (default 3)")
    ap.add_argument(
        "--dir",
        type=Path,
        default=REPO / "bench" / "results" / "tmp",
        help="parent of the temporary work dir (default: bench/results/tmp, the repo's filesystem)",
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "checkpoint_io.json")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument(
        "--saves-only", action="store_true", help="only the blocking full saves (the item-3 figures; e.g. at --size-mib 4096)"
    )
    args = ap.parse_args()
    if args.repeats < 1 or args.size_mib < 4:
        ap.error("--repeats must be >= 1 and --size-mib >= 4")
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="checkpoint-io-", dir=args.dir))
    fs, load, t_start = h.fs_info(work), h.CpuLoad(), time.perf_counter()
    loadavg_start = os.getloadavg()[0]
    try:
        log(f"[bench] building a {args.size_mib:g} MiB state in {work} ({fs['fstype']} on {fs['device']})")
        state = h.make_state(args.size_mib)
        nbytes = h.state_bytes(state)
        sizes = sorted(t.numel() * 4 for t in state["model"].values())
        if fs["free_gib"] * GiB < 4 * nbytes:
            raise SystemExit(f"not enough free space under {work} (need ~{4 * nbytes / GiB:.1f} GiB)")
        with CheckpointManager(work / "warmup") as m:  # untimed warm-up of code paths and thread pools
            m.save({"x": torch.zeros(4096)}, step=0)
            m.restore()
        h.torch_save(work / "warmup.pt", {"x": torch.zeros(4096)})
        torch.load(work / "warmup.pt", weights_only=True)
        log("[bench] blocking saves")
        full = full_saves(state, nbytes, work, args.repeats)
        if args.saves_only:
            del state
            inc = asy = fresh = None
            changed, equal = {}, None
        else:
            box = [state]
            del state  # later_phases frees it before the fresh-process phase
            inc, changed, asy, fresh, equal = later_phases(box, work, args)
        rows = build_rows(nbytes, full, inc, asy, fresh)
        _report(args, work, fs, load, t_start, loadavg_start, nbytes, sizes, rows, equal, changed, full, inc, asy, fresh)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def later_phases(box: list[Any], work: Path, args: argparse.Namespace) -> tuple:
    """Restore check, 75%-unchanged saves, async saves, fresh-process restores and RSS (``box`` holds the state)."""
    state = box.pop()
    log("[bench] restore check (untimed)")
    with CheckpointManager(work / "wp-full", read_only=True) as m:
        back = m.restore()
    equal = back["step"] == state["step"] and all(torch.equal(back["model"][k], t) for k, t in state["model"].items())
    del back
    log("[bench] 75%-unchanged saves")
    inc, changed = incremental_saves(state, work, args.repeats)
    log("[bench] async saves")
    asy = async_saves(state, work, args.repeats)
    del state
    log("[bench] fresh processes: restores (warm page cache) and peak RSS")
    fresh = fresh_process_runs(work, args.size_mib, args.repeats)
    return inc, changed, asy, fresh, equal


def _report(args, work, fs, load, t_start, loadavg_start, nbytes, sizes, rows, equal, changed, full, inc, asy, fresh) -> None:
    other = load.other_cores()
    lines = [
        f"Checkpoint I/O: {len(sizes)} fp32 tensors, {nbytes / GiB:.3f} GiB (tensors {sizes[0] / 1024:.0f} KiB"
        f" .. {sizes[-1] / MiB:.0f} MiB, median {sizes[len(sizes) // 2] / 1024:.0f} KiB); medians of "
        f"{args.repeats} runs{'; blocking full saves only (--saves-only)' if args.saves_only else ''}",
        f"work dir {work} ({fs['fstype']} on {fs['device']}, mount {fs['mount']}); restores read WARM "
        "page cache (both sides), each in a fresh process",
        f"{os.cpu_count()} CPUs; other processes used {other:.2f} cores on average during the run; "
        f"restored state equals saved: {equal}",
        "",
        *table(rows),
    ]
    print("\n".join(lines))
    doc = {
        "env": {
            "fs": fs,
            "state_bytes": nbytes,
            "n_tensors": len(sizes),
            "tensor_bytes_min_median_max": [sizes[0], sizes[len(sizes) // 2], sizes[-1]],
            "repeats": args.repeats,
            "saves_only": args.saves_only,
            "cpu_count": os.cpu_count(),
            "other_processes_cores": round(other, 3),
            "loadavg_start_end": [loadavg_start, os.getloadavg()[0]],
            "torch": torch.__version__,
            "python": platform.python_version(),
            "kernel": platform.release(),
            "page_cache": "warm",
            "restored_state_equal": equal,
            "incremental_changed": changed,
            "seconds_total": round(time.perf_counter() - t_start, 1),
        },
        "rows": rows,
        "table": lines,
        "samples": {"full_saves_s": full, "incremental": inc, "async": asy, "fresh_process": fresh},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    log(f"[bench] wrote {args.out} in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
