"""What parity per pack costs: save time with and without it, and its bytes (the rows ``parity_time`` and
``parity_bytes``; targets <= 0.05 of a full save's time and <= 0.15 of its bytes decide whether
``checkpoint.parity`` is on by default).

    python bench/parity.py [--size-mib 1024] [--repeats 3] [--out bench/results/parity.json]

Each repeat saves the same fresh state into two new stores, without and with parity, alternating which goes first;
the figures are medians, and the ratios are taken within a repeat.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from _io_helpers import make_state  # noqa: E402

from waypoint.checkpoint import CheckpointManager  # noqa: E402


def save_once(root: Path, state: dict, parity: bool) -> tuple[float, int, int]:
    """(seconds, physical bytes, parity bytes) of one full save into a new store."""
    with CheckpointManager(root, parity=parity, snapshot_blocking=False) as mgr:
        t = time.perf_counter()
        mgr.save(state, step=1)
        return time.perf_counter() - t, mgr.physical_bytes(), mgr.parity_bytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=float, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=REPO / "bench" / "results" / "tmp")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "parity.json")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    state = make_state(args.size_mib)
    times, sizes = [], []
    for r in range(args.repeats):
        work = Path(tempfile.mkdtemp(prefix="parity-", dir=args.dir))
        try:
            order = (False, True) if r % 2 == 0 else (True, False)
            got = {p: save_once(work / str(p), state, p) for p in order}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        times.append((got[True][0] - got[False][0]) / got[False][0])
        sizes.append(got[True][2] / got[False][1])
        print(
            f"#{r}: save {got[False][0]:.2f}s, with parity {got[True][0]:.2f}s; parity {got[True][2] >> 20} MiB", file=sys.stderr
        )
    rows = [
        {"key": "parity_time", "ratio": statistics.median(times), "target": 0.05},
        {"key": "parity_bytes", "ratio": statistics.median(sizes), "target": 0.15},
    ]
    for row in rows:
        row["met"] = row["ratio"] <= row["target"]
    print(f"| {args.size_mib:g} MiB, median of {args.repeats} | ratio | target | met |\n|---|---|---|---|")
    what = {"parity_time": "extra save time with parity / full save", "parity_bytes": "parity bytes / store bytes"}
    for row in rows:
        met = "met" if row["met"] else "MISSED"
        print(f"| {what[row['key']]} ({row['key']}) | {row['ratio']:.3f} | <= {row['target']} | {met} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"size_mib": args.size_mib, "repeats": args.repeats, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
