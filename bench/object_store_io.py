"""Save and restore of one state to a local S3 server (moto, on 127.0.0.1) vs the local disk, and what the one
store does on object storage that a store of whole files could not.

    python bench/object_store_io.py [--size-mib 256] [--repeats 3] [--out bench/results/object_store_io.json]

Starts ``python -m moto.server`` on a free port (needs ``pip install -e '.[dev]'``: moto[server], s3fs), then for
each target saves the state into a fresh store (a full save: every tensor hashed and written), saves it again
with one tensor changed (an incremental save), restores it verified, and prints a table of the medians.
moto keeps objects in its own memory, so the S3 figures measure the protocol (HTTP, multipart upload,
checksums) on this machine, not a network or a real bucket's throughput.

Two targets follow, each printed with its target and met/missed (rows ``key``, ``ratio``, ``target``, ``met``):

- ``s3_restore_fetched``: ten checkpoints, each changing half of the tensors of the previous one (so packs are
  shared and partly dead); restoring the fifth fetches (bytes the backend read) / that checkpoint's own bytes <= 1.2.
- ``s3_physical_vs_local`` (``--train``): ``train.py model=universeg experiment=smoke trainer.max_epochs=6
  checkpoint.every_n_steps=3`` once with the checkpoints on local disk and once on S3: physical bytes on S3 /
  on local disk within 10% (repack and gc reclaim dead pack bytes on both).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from waypoint.checkpoint import CheckpointManager  # noqa: E402

MiB = 1 << 20


def make_state(size_mib: float, n: int = 16) -> dict[str, Any]:
    """``n`` random fp32 tensors summing to ``size_mib`` MiB, plus a step counter."""
    g = torch.Generator().manual_seed(0)
    per = int(size_mib * MiB / 4 / n)
    return {"weights": {f"w{i}": torch.randn(per, generator=g) for i in range(n)}, "step": 1}


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto's S3 server did not start")


def one_round(root: str, state: dict[str, Any]) -> dict[str, float]:
    t0 = time.perf_counter()
    with CheckpointManager(root) as mgr:
        t1 = time.perf_counter()
        mgr.save(state, step=1)
        t2 = time.perf_counter()
        state["weights"]["w0"] = state["weights"]["w0"] + 1  # one tensor of 16 changes
        mgr.save(state, step=2)
        t3 = time.perf_counter()
    with CheckpointManager(root, read_only=True) as reader:
        t4 = time.perf_counter()
        got = reader.restore()
        t5 = time.perf_counter()
    assert torch.equal(got["weights"]["w0"], state["weights"]["w0"])
    return {"open_s": t1 - t0, "save_full_s": t2 - t1, "save_incremental_s": t3 - t2, "restore_s": t5 - t4}


def restore_fetched(url: str, size_mib: float) -> dict[str, float]:
    """Ten checkpoints changing half of the tensors each; bytes fetched to restore the fifth / its own bytes."""
    state = make_state(size_mib)
    with CheckpointManager(url) as mgr:
        for step in range(1, 11):
            for i, key in enumerate(sorted(state["weights"])):
                if (i + step) % 2 == 0:
                    state["weights"][key] = state["weights"][key] + 1
            mgr.save(state, step=step)
    with CheckpointManager(url, read_only=True) as reader:
        own = reader.manifest("step:5").logical_bytes
        before = reader.store.backend.stats.bytes_read
        reader.restore("step:5")
        fetched = reader.store.backend.stats.bytes_read - before
    return {"fetched": fetched, "own": own, "ratio": fetched / own}


def physical_after_training(root: str, work: Path) -> int:
    """Physical bytes of the checkpoints of a UniverSeg smoke run whose checkpoint.root is ``root``."""
    run_dir = work / f"run-{uuid.uuid4().hex[:6]}"
    cmd = [sys.executable, str(REPO / "train.py"), "model=universeg", "experiment=smoke", "trainer.max_epochs=6"]
    cmd += ["checkpoint.every_n_steps=3", f"checkpoint.root={root}", f"hydra.run.dir={run_dir}", "trainer.progress_bar=false"]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=work)
    with CheckpointManager(f"{root}/{run_dir.name}/checkpoints", read_only=True) as reader:
        return reader.physical_bytes()


def target_rows(bucket: str, work: Path, size_mib: float, train: bool) -> list[dict[str, Any]]:
    got = restore_fetched(f"s3://{bucket}/ten", size_mib)
    rows = [{"key": "s3_restore_fetched", "ratio": got["ratio"], "target": 1.2, "met": got["ratio"] <= 1.2, **got}]
    if train:
        local, remote = physical_after_training(str(work / "local"), work), physical_after_training(f"s3://{bucket}/ck", work)
        ratio = remote / local
        rows.append(
            {
                "key": "s3_physical_vs_local",
                "ratio": ratio,
                "target": 1.1,
                "met": abs(ratio - 1) <= 0.1,
                "s3": remote,
                "local": local,
            }
        )
    return rows


def print_targets(rows: list[dict[str, Any]]) -> None:
    print("| target | figure | ratio | target | met |\n|---|---|---|---|---|")
    what = {
        "s3_restore_fetched": "bytes fetched to restore 1 of 10 checkpoints / its own bytes",
        "s3_physical_vs_local": "physical bytes on S3 / on local disk (UniverSeg smoke, 6 epochs)",
    }
    for r in rows:
        target = f"<= {r['target']}" if r["key"] == "s3_restore_fetched" else "within 10%"
        print(f"| {r['key']} | {what[r['key']]} | {r['ratio']:.3f} | {target} | {'met' if r['met'] else 'MISSED'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=float, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=REPO / "bench" / "results" / "tmp")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "object_store_io.json")
    ap.add_argument("--train", action="store_true", help="also train UniverSeg twice to compare physical bytes")
    args = ap.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    proc, endpoint = start_moto()
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    import s3fs

    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="object-store-io-", dir=args.dir))
    runs: dict[str, list[dict[str, float]]] = {"local disk": [], "S3 (moto, 127.0.0.1)": []}
    try:
        for r in range(args.repeats):
            for target in runs:
                root = str(work / f"local-{r}") if target == "local disk" else f"s3://{bucket}/run-{r}"
                runs[target].append(one_round(root, make_state(args.size_mib)))
                print(f"{target} #{r}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[target][-1].items()), file=sys.stderr)
        targets = target_rows(bucket, work, min(args.size_mib, 64), args.train)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        proc.terminate()
        proc.wait(10)
    keys = ["open_s", "save_full_s", "save_incremental_s", "restore_s"]
    medians = {t: {k: statistics.median(x[k] for x in rs) for k in keys} for t, rs in runs.items()}
    mib = args.size_mib
    lines = [
        f"| {args.size_mib:g} MiB state, median of {args.repeats} | open | full save "
        "| incremental save (1/16 changed) | restore (verified) |",
        "|---|---|---|---|---|",
    ]
    for t, m in medians.items():
        lines.append(
            f"| {t} | {m['open_s']:.2f} s | {m['save_full_s']:.2f} s ({mib / m['save_full_s']:.0f} MiB/s) | "
            f"{m['save_incremental_s']:.2f} s | {m['restore_s']:.2f} s ({mib / m['restore_s']:.0f} MiB/s) |"
        )
    print("\n".join(lines))
    print_targets(targets)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"size_mib": args.size_mib, "repeats": args.repeats, "runs": runs, "medians": medians, "rows": targets}
    args.out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
