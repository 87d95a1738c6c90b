"""Save and restore of one state to a local S3 server (moto, on 127.0.0.1) vs the local disk.

    python bench/object_store_io.py [--size-mib 256] [--repeats 3] [--out bench/results/object_store_io.json]

Starts ``python -m moto.server`` on a free port (needs ``pip install -e '.[dev]'``: moto[server], s3fs), then for
each target saves the state into a fresh store (a full save: every tensor hashed and written), saves it again
with one tensor changed (an incremental save), restores it verified, and prints a table of the medians.
moto keeps objects in its own memory, so the S3 figures measure the protocol (HTTP, multipart upload,
checksums) on this machine, not a network or a real bucket's throughput.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=float, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=REPO / "bench" / "results" / "tmp")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "object_store_io.json")
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"size_mib": args.size_mib, "repeats": args.repeats, "runs": runs, "medians": medians}, indent=1)
    )
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
