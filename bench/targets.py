#!/usr/bin/env python
"""Every checkpoint target with its figure and met/missed, from the JSON the benches of one ``make bench`` wrote.

Reads ``bench/results/checkpoint_io.json`` (I/O, each figure beside its floor), ``overhead.json`` (training
overhead) and ``compression.json``, prints one table and writes ``bench/results/targets.json``. A missing input
is reported as missing, never guessed. Asserts nothing. docs/benchmarks.md explains every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

RESULTS = Path(__file__).resolve().parent / "results"

#: (item, checkpoint_io row key, what the target says)
IO_TARGETS = (
    ("io", "save_vs_floor", "full save wall <= 1.3x its floor (max of the disk's write time and the hashing CPU floor)"),
    ("io", "save_vs_disk", "full save >= 0.8x the disk's O_DIRECT write bandwidth"),
    ("io", "save_vs_torch", "full save >= 1.5x torch.save + fsync"),
    ("io", "incremental_time", "75%-unchanged save takes <= 0.30x the time of an all-changed save"),
    ("io", "incremental_bytes", "75%-unchanged save writes <= 0.26x the bytes of an all-changed save"),
    ("io", "rss_save", "peak RSS above the state during a save <= 0.10x the state"),
    ("io", "restore_vs_torch", "verified restore >= 1.2x torch.load(weights_only=True)"),
    ("io", "async_blocked_vs_copy", "async save, steady state: caller blocked <= 1.2x copying the changed bytes"),
    ("io", "s3_save_vs_raw", "save to S3 (moto) >= 0.7x a raw s3fs put of the same bytes"),
    ("io", "s3_restore_vs_raw", "restore from S3 (moto) >= 0.7x a raw s3fs get of the same bytes"),
    ("io", "restore_mmap_vs_torch", "non-copying restore (mmap=True, verify=False) >= 2.0x torch.load"),
    (
        "parity",
        "parity_time",
        "a full save with parity takes <= 1.05x the time without (else checkpoint.parity is off by default)",
    ),
    ("parity", "parity_bytes", "parity per pack adds <= 15% to the packs' bytes"),
)


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3f}"


def _load(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect(results: Path) -> list[dict[str, Any]]:
    io = _load(results / "checkpoint_io.json")
    by_key = {r["key"]: r for r in io["rows"]} if io else {}
    size = f"{io['env']['state_bytes'] / 2**30:.2f} GiB, medians of {io['env']['repeats']}" if io else ""
    return [
        *io_rows(by_key, size),
        *object_store_rows(_load(results / "object_store_io.json")),
        *overhead_rows(_load(results / "overhead.json")),
        *compression_rows(results, by_key, size),
    ]


#: (object_store_io row key, what the target says)
OBJECT_STORE_TARGETS = (
    ("s3_restore_fetched", "restoring 1 of 10 checkpoints from S3 fetches <= 1.2x its own bytes"),
    ("s3_physical_vs_local", "a UniverSeg run's physical bytes on S3 within 10% of the same run on local disk"),
)


def object_store_rows(doc: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
    by_key = {r["key"]: r for r in (doc or {}).get("rows", [])}
    rows: list[dict[str, Any]] = []
    for key, what in OBJECT_STORE_TARGETS:
        r = by_key.get(key)
        figure = None if r is None else f"{r['ratio']:.3f}x"
        note = "object_store_io.json missing (s3_physical_vs_local needs --train)" if r is None else key
        rows.append(
            {
                "item": "object store",
                "target": what,
                "figure": figure,
                "ratio": r and r["ratio"],
                "met": r and r["met"],
                "note": note,
            }
        )
    return rows


def io_rows(by_key: dict[str, Any], size: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for item, key, what in IO_TARGETS:
        r = by_key.get(key)
        if r is None:
            rows.append({"item": item, "target": what, "figure": None, "met": None, "note": "checkpoint_io.json missing"})
            continue
        rows.append(
            {
                "item": item,
                "target": what,
                "figure": f"{r['ratio']:.2f}x ({r['value']:.3f} vs {r['reference']:.3f} {r['unit']}; floor {_fmt(r['floor'])})",
                "ratio": r["ratio"],
                "met": r["met"],
                "note": size,
            }
        )
    return rows


def overhead_rows(ov: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for fam in ("dino", "stackwise"):
        r = (ov or {}).get("results", {}).get(fam)
        what = f"{fam}: wall-time overhead of saving every epoch (async) <= 2%"
        if not r or not r.get("ok"):
            rows.append(
                {"item": "overhead", "target": what, "figure": None, "met": None, "note": "overhead.json missing or failed"}
            )
            continue
        reps = len(r["samples"]["saving"])
        runs = r["samples"]["saving"]
        upper = sorted(sum(x["seconds"] for x in run["saves"]) / run["wall_s"] for run in runs)[len(runs) // 2]
        rows.append(
            {
                "item": "overhead",
                "target": what,
                "figure": f"{r['overhead'] * 100:+.1f}% ({r['wall_saving_s']:.1f} vs {r['wall_disabled_s']:.1f} s; "
                f"CPU {r['cpu_overhead'] * 100:+.1f}%; saves took {upper * 100:.1f}% of the wall time; "
                f"{r['saves_per_run']} saves, "
                f"{(r['bytes_per_save_median'] or 0) / 2**20:.1f} MiB each)",
                "ratio": r["overhead"],
                "met": r["overhead"] <= 0.02,
                "note": f"medians of {reps}; {r['command']}",
            }
        )
    return rows


def compression_rows(results: Path, by_key: dict[str, Any], size: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    co = _load(results / "compression.json")
    for name, r in ((co or {}).get("results") or {}).items():
        e = r["end_to_end"]
        rows.append(
            {
                "item": "compression",
                "target": f"{name}: byte-grouped zstd on real trained state (measured, no target)",
                "figure": f"stores {e['ratio']:.3f}x the bytes; save {e['save_time_ratio']:.2f}x, "
                f"verified restore {e['restore_time_ratio']:.2f}x the time of compression=none",
                "ratio": e["ratio"],
                "met": None,
                "note": f"{e['pack_bytes_none'] / 2**20:.1f} MiB state; per tensor group: compression.json",
            }
        )
    if not co:
        rows.append(
            {
                "item": "compression",
                "target": "compression measured",
                "figure": None,
                "met": None,
                "note": "compression.json missing",
            }
        )
    z = by_key.get("save_zstd")
    what = "checkpoint.compression default stays none unless zstd is faster end to end"
    if z is None:
        rows.append({"item": "compression", "target": what, "figure": None, "met": None, "note": "checkpoint_io.json missing"})
    else:
        rows.append(
            {
                "item": "compression",
                "target": what,
                "figure": f"a 1st save with zstd takes {z['ratio']:.2f}x the time of none ({size})",
                "ratio": z["ratio"],
                "met": z["ratio"] >= 1.0,  # the default is none: right while zstd is slower
                "note": "zstd slower: none stays the default" if z["ratio"] >= 1.0 else "zstd faster: make it the default",
            }
        )
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    rows = collect(args.results)
    print("Checkpoint targets")
    print("| item | target | figure | met |")
    print("|---|---|---|---|")
    for r in rows:
        met = "-" if r["met"] is None else ("met" if r["met"] else "**missed**")
        print(f"| {r['item']} | {r['target']} | {r['figure'] or 'not measured: ' + r['note']} | {met} |")
    (args.results / "targets.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.results / 'targets.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
