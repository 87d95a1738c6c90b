#!/usr/bin/env python
"""Compression of real training state: ratio and speed of byte-grouping + zstd.

Reads the newest checkpoint of real training runs (``--run NAME=RUN_DIR``, repeatable). Without ``--run``
it first trains two short runs into ``--dir``: DINO fp32 (``model=dino trainer.max_epochs=3``) and
Stack-Wise with bf16 stacks (``model=stackwise model.stack_precisions=[full,half,half]
trainer.max_epochs=1``), a few minutes on 2 cores.

Per group of tensors (weights by dtype, Adam's ``exp_avg`` and ``exp_avg_sq``; tensors of at least
``compress.MIN_BYTES``) it reports the stored/raw ratio of plain zstd and of byte-grouped zstd (levels 1
and 3), and the single-thread compress and decompress speed of byte-grouped zstd-1 (the codec
``checkpoint.compression=zstd`` uses), medians of ``--repeats``. With an older checkpoint of the same run
it also reports XOR-with-the-previous-version deltas (byte-grouped, zstd-1), the backup-delta idea of
Check-N-Run. End to end it times a blocking save of each run's whole state into a fresh store with
``compression=none`` and ``zstd`` (and a verified restore of each), in alternating order, medians of
``--repeats``, and the bytes each store holds. Writes ``bench/results/compression.json``; asserts nothing.

Usage: ``.venv/bin/python bench/compression.py [--run dino=outputs/...] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import zstandard

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from waypoint.checkpoint import CheckpointManager, codec, compress  # noqa: E402

MiB = 1 << 20
TRAIN = {
    "dino": ["model=dino", "trainer.max_epochs=3"],
    "stackwise_bf16": ["model=stackwise", "model.stack_precisions=[full,half,half]", "trainer.max_epochs=1"],
}


def train(name: str, run_dir: Path) -> None:
    cmd = [sys.executable, str(REPO / "train.py"), *TRAIN[name], "trainer.progress_bar=false", f"hydra.run.dir={run_dir}"]
    print(f"[compression] training {name}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)


def group_of(key: str, t: torch.Tensor) -> Optional[str]:
    if not t.is_floating_point() or t.numel() * t.element_size() < compress.MIN_BYTES:
        return None
    dtype = str(t.dtype).removeprefix("torch.")
    if key.endswith("exp_avg_sq"):
        return f"optimizer exp_avg_sq ({dtype})"
    if key.endswith("exp_avg"):
        return f"optimizer exp_avg ({dtype})"
    if "optim" in key:
        return None
    return f"weights ({dtype})"


def raw(t: torch.Tensor) -> memoryview:
    return memoryview(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy())


def timed(fn, repeats: int) -> tuple[Any, float]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def measure_group(tensors: list[torch.Tensor], previous: list[Optional[torch.Tensor]], repeats: int) -> dict[str, Any]:
    """Ratios and speeds over one group's tensors (each compressed on its own, as a save does)."""
    views = [raw(t) for t in tensors]
    sizes = [t.element_size() for t in tensors]
    total = sum(len(v) for v in views)
    z1, z3 = zstandard.ZstdCompressor(level=1), zstandard.ZstdCompressor(level=3)
    plain = sum(len(z1.compress(v)) for v in views)
    grouped3 = sum(len(z3.compress(compress.group_bytes(v, k))) for v, k in zip(views, sizes))
    blobs, enc_s = timed(lambda: [z1.compress(compress.group_bytes(v, k)) for v, k in zip(views, sizes)], repeats)
    outs = [bytearray(len(v)) for v in views]

    def decode_all() -> None:
        for b, k, o in zip(blobs, sizes, outs):
            compress.decode(b, k, memoryview(o))

    _, dec_s = timed(decode_all, repeats)
    assert all(bytes(o) == bytes(v) for o, v in zip(outs, views)), "round trip failed"
    row: dict[str, Any] = {
        "tensors": len(tensors),
        "raw_mib": total / MiB,
        "ratio_zstd1_plain": plain / total,
        "ratio_zstd1_bytegroup": sum(len(b) for b in blobs) / total,
        "ratio_zstd3_bytegroup": grouped3 / total,
        "compress_mb_s": total / 1e6 / enc_s,
        "decompress_mb_s": total / 1e6 / dec_s,
    }
    pairs = [(t, p) for t, p in zip(tensors, previous) if p is not None and p.shape == t.shape and p.dtype == t.dtype]
    if pairs:
        xor_bytes, xor_total = 0, 0
        for t, p in pairs:
            a = np.frombuffer(raw(t), dtype=np.uint8)
            b = np.frombuffer(raw(p), dtype=np.uint8)
            xor_bytes += len(z1.compress(compress.group_bytes(memoryview(np.bitwise_xor(a, b)), t.element_size())))
            xor_total += len(a)
        row["ratio_xor_prev_zstd1_bytegroup"] = xor_bytes / xor_total
    return row


def end_to_end(state: Any, work: Path, repeats: int) -> dict[str, Any]:
    """Blocking first save into a fresh store and a verified restore, none vs zstd, alternating order."""
    out: dict[str, list[float]] = {f"{w}_{c}": [] for w in ("save_s", "restore_s") for c in ("none", "zstd")}
    stored: dict[str, int] = {}
    for r in range(repeats):
        for comp in ("none", "zstd") if r % 2 == 0 else ("zstd", "none"):
            root = work / f"e2e-{comp}"
            shutil.rmtree(root, ignore_errors=True)
            os.sync()
            with CheckpointManager(root, compression=comp) as mgr:
                t0 = time.perf_counter()
                mgr.save(state, step=1)
                out[f"save_s_{comp}"].append(time.perf_counter() - t0)
            stored[comp] = sum(p.stat().st_size for p in (root / "packs").iterdir())
            with CheckpointManager(root, read_only=True) as mgr:
                t0 = time.perf_counter()
                mgr.restore("latest")
                out[f"restore_s_{comp}"].append(time.perf_counter() - t0)
            shutil.rmtree(root)
    med = {k: statistics.median(v) for k, v in out.items()}
    return {
        **med,
        "samples": out,
        "pack_bytes_none": stored["none"],
        "pack_bytes_zstd": stored["zstd"],
        "ratio": stored["zstd"] / stored["none"],
        "save_time_ratio": med["save_s_zstd"] / med["save_s_none"],
        "restore_time_ratio": med["restore_s_zstd"] / med["restore_s_none"],
    }


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", default=[], help="NAME=RUN_DIR of a finished run (repeatable)")
    ap.add_argument("--dir", type=Path, default=REPO / "bench" / "results" / "compression_runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "compression.json")
    args = ap.parse_args(argv)
    runs = dict(r.split("=", 1) for r in args.run)
    if not runs:
        for name in TRAIN:
            run_dir = args.dir / name
            if not (run_dir / "checkpoints").is_dir():
                train(name, run_dir)
            runs[name] = str(run_dir)
    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="compression-", dir=args.out.parent))  # the filesystem the store benches use
    try:
        for name, run_dir in runs.items():
            with CheckpointManager(Path(run_dir) / "checkpoints", read_only=True) as mgr:
                infos = mgr.list()
                state = mgr.restore(infos[-1].name)
                prev_state = mgr.restore(infos[-2].name) if len(infos) > 1 else None
                names = [i.name for i in infos[-2:]]
            flat, _ = codec.encode(state)
            prev_flat = codec.encode(prev_state)[0] if prev_state is not None else {}
            groups: dict[str, list[str]] = {}
            for key, t in flat.items():
                g = group_of(key, t)
                if g:
                    groups.setdefault(g, []).append(key)
            rows = {
                g: measure_group([flat[k] for k in keys], [prev_flat.get(k) for k in keys], args.repeats)
                for g, keys in sorted(groups.items())
            }
            results[name] = {
                "run_dir": run_dir,
                "checkpoints": names,
                "groups": rows,
                "end_to_end": end_to_end(state, work, args.repeats),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc = {"codec": compress.CODEC, "level": compress.LEVEL, "cpus": os.cpu_count(), "repeats": args.repeats, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    print(f"Compression of real training state: byte-grouped zstd (stored/raw, lower is better); medians of {args.repeats}")
    print(
        "| run | tensors | raw MiB | zstd-1 plain | grouped zstd-1 | grouped zstd-3 | XOR prev + grouped zstd-1 "
        "| compress MB/s | decompress MB/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, res in results.items():
        for g, r in res["groups"].items():
            xor = r.get("ratio_xor_prev_zstd1_bytegroup")
            print(
                f"| {name} | {g} ({r['tensors']}) | {r['raw_mib']:.1f} | {r['ratio_zstd1_plain']:.3f} | "
                f"{r['ratio_zstd1_bytegroup']:.3f} | {r['ratio_zstd3_bytegroup']:.3f} | "
                f"{'-' if xor is None else f'{xor:.3f}'} | {r['compress_mb_s']:.0f} | {r['decompress_mb_s']:.0f} |"
            )
    print()
    print("| run | pack MiB none / zstd | ratio | save s none / zstd | save time ratio | verified restore s none / zstd |")
    print("|---|---|---|---|---|---|")
    for name, res in results.items():
        e = res["end_to_end"]
        print(
            f"| {name} | {e['pack_bytes_none'] / MiB:.1f} / {e['pack_bytes_zstd'] / MiB:.1f} | {e['ratio']:.3f} | "
            f"{e['save_s_none']:.3f} / {e['save_s_zstd']:.3f} | {e['save_time_ratio']:.2f}x | "
            f"{e['restore_s_none']:.3f} / {e['restore_s_zstd']:.3f} |"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
