"""The S3 rows of bench/checkpoint_io.py: a moto S3 server on 127.0.0.1 (started here, stopped after), and per
repetition, in rotating order, a raw s3fs ``put_file`` of a pack's bytes beside Waypoint's save of the same state
into a new store on the server, then a raw s3fs ``cat_file`` of those bytes beside a verified restore."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _io_helpers as h
import torch
from object_store_io import start_moto

from waypoint.checkpoint import CheckpointManager

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    # moto answers every request from one Python process; on a loaded 2-core machine a lease renewal queued behind a
    # GiB of part uploads can take longer than the default 30 s lease allows, which would end the save, not slow it
    "WAYPOINT_LEASE_TTL_S": "300",
}


def runs(state: dict[str, Any], work: Path, repeats: int, log: Callable[[str], None]) -> dict[str, list[float]]:
    """Seconds of each raw put/get and each save/restore, and the pack's size; the server runs only meanwhile."""
    os.environ.update(CREDENTIALS)
    proc, endpoint = start_moto()
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    try:
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True, endpoint_url=endpoint)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        fs.mkdir(bucket)
        h.waypoint_save(work / "s3-src", state)  # the bytes a save uploads: one pack
        (pack,) = (work / "s3-src" / "packs").iterdir()
        out: dict[str, list[float]] = {"bytes": [pack.stat().st_size], "put_s": [], "save_s": [], "get_s": [], "restore_s": []}
        for r in range(repeats):
            raw, url = f"{bucket}/raw-{r}", f"s3://{bucket}/wp-{r}"
            for op in (("put", "save"), ("save", "put"))[r % 2]:
                out[f"{op}_s"].append(_put(fs, pack, raw) if op == "put" else _save(url, state))
            for op in (("get", "restore"), ("restore", "get"))[r % 2]:
                out[f"{op}_s"].append(_get(fs, raw) if op == "get" else _restore(url, state, check=r == 0))
            fs.rm(raw)
            fs.rm(f"{bucket}/wp-{r}", recursive=True)
            log(
                f"  rep {r}: raw put {out['put_s'][-1]:.2f} s, save {out['save_s'][-1]:.2f} s, raw get "
                f"{out['get_s'][-1]:.2f} s, restore {out['restore_s'][-1]:.2f} s ({out['bytes'][0] / 2**20:.0f} MiB)"
            )
        h.remove(work / "s3-src")
        return out
    finally:
        proc.terminate()
        proc.wait(10)


def _put(fs: Any, pack: Path, key: str) -> float:
    t0 = time.perf_counter()
    fs.put_file(str(pack), key)
    return time.perf_counter() - t0


def _get(fs: Any, key: str) -> float:
    t0 = time.perf_counter()
    fs.cat_file(key)
    return time.perf_counter() - t0


def _save(url: str, state: dict[str, Any]) -> float:
    with CheckpointManager(url) as mgr:  # opened (lease taken) before the clock starts
        t0 = time.perf_counter()
        mgr.save(state, step=1)
        return time.perf_counter() - t0


def _restore(url: str, state: dict[str, Any], check: bool) -> float:
    with CheckpointManager(url, read_only=True) as mgr:
        t0 = time.perf_counter()
        got = mgr.restore()
        seconds = time.perf_counter() - t0
    if check and not all(torch.equal(got["model"][k], t) for k, t in state["model"].items()):
        raise SystemExit("the state restored from S3 differs from the one saved")
    return seconds
