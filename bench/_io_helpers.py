"""Helpers of bench/checkpoint_io.py: the synthetic state, the reference operations, page-cache warming,
CPU-load accounting, and the fresh-process measurements (peak RSS and restore time).

Run as a script it is one such fresh process: ``_io_helpers.py KIND PATH SIZE_MIB`` performs one
operation and prints a JSON line ``{"seconds", "baseline_rss", "maxrss_before", "peak_rss", ...}``.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import json
import mmap
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from waypoint.checkpoint import CheckpointManager  # noqa: E402

MiB, GiB = 1 << 20, 1 << 30
_CHUNK = 64 << 20


# ---------------------------------------------------------------------------- the state
def make_state(size_mib: float, n: int = 200, seed: int = 0) -> dict[str, Any]:
    """A model-like state: ``n`` random fp32 tensors summing to ~``size_mib`` MiB, plus a few scalars.

    A third are small 1-D tensors (biases, norms: 1-32 KiB); the rest are 2-D with log-uniform sizes
    spanning ~4 orders of magnitude, as in a real network.
    """
    rng = np.random.default_rng(seed)
    small = rng.random(n) < 1 / 3
    weights = np.where(small, 0.0, np.exp(rng.uniform(0.0, np.log(1e4), n)))
    small_numels = rng.integers(256, 8192, n) * small
    big_total = size_mib * MiB / 4 - small_numels.sum()
    numels = np.where(small, small_numels, weights / weights.sum() * big_total).astype(np.int64)
    gen = torch.Generator().manual_seed(seed)
    model = {}
    for i, numel in enumerate(numels):
        cols = 1 if small[i] else (1024 if numel >= 1 << 16 else 64)
        shape = (int(numel),) if cols == 1 else (max(1, int(numel) // cols), cols)
        model[f"layers.{i:03d}.{'bias' if cols == 1 else 'weight'}"] = torch.randn(shape, generator=gen)
    return {"model": model, "step": 1000, "epoch": 3, "lr": 1e-4}


def state_bytes(state: dict[str, Any]) -> int:
    return sum(t.numel() * t.element_size() for t in state["model"].values())


def with_quarter_changed(state: dict[str, Any], salt: int) -> tuple[dict[str, Any], dict[str, float]]:
    """A copy of ``state`` in which every 4th tensor (in size order, so ~25% of the bytes too) holds new
    values; the other 75% are the very same tensors. Returns the copy and what changed."""
    order = sorted(state["model"], key=lambda k: state["model"][k].numel())
    changed = set(order[salt % 4 :: 4])
    model = {k: (t + (1.0 + salt) if k in changed else t) for k, t in state["model"].items()}
    nbytes = sum(model[k].numel() * 4 for k in changed)
    return {**state, "model": model}, {
        "tensors": len(changed),
        "tensor_fraction": len(changed) / len(order),
        "bytes_fraction": nbytes / state_bytes(state),
    }


def all_changed(state: dict[str, Any], salt: int) -> dict[str, Any]:
    """A copy of ``state`` in which every tensor holds new values (what an epoch of training does)."""
    return {**state, "model": {k: t + (1.0 + salt) for k, t in state["model"].items()}}


# ---------------------------------------------------------------------------- files and disk
def dir_bytes(path: Path) -> int:
    """Apparent size of every file under ``path``."""
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(path) for f in fs)


def remove(path: Path) -> None:
    """Delete a file or a directory tree if it exists."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_write(path: Path, nbytes: int, direct: bool = False) -> float:
    """Seconds to write ``nbytes`` of random data sequentially (64 MiB writes from one reused buffer) to
    a new file and fsync it: the disk's durable sequential write bandwidth, like ``dd conv=fsync``
    (``direct``: with O_DIRECT, like ``dd oflag=direct conv=fsync``; NaN where unsupported)."""
    buf = mmap.mmap(-1, _CHUNK)  # page-aligned, as O_DIRECT needs
    buf.write(os.urandom(_CHUNK))
    view = memoryview(buf)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        if direct:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | getattr(os, "O_DIRECT", 0))
        left = nbytes
        while left > 0:  # whole 4 KiB blocks (O_DIRECT): may write up to 4 KiB more than nbytes
            left -= os.write(fd, view[: -(-min(left, _CHUNK) // 4096) * 4096])
        os.fsync(fd)
    except OSError as exc:
        if direct and exc.errno == errno.EINVAL:  # the filesystem does not do O_DIRECT
            return float("nan")
        raise
    finally:
        os.close(fd)
        view.release()
    return time.perf_counter() - t0


def torch_save(path: Path, state: Any) -> float:
    """Seconds for ``torch.save(state, path)`` followed by an fsync of the file."""
    t0 = time.perf_counter()
    torch.save(state, path)
    fsync_file(path)
    return time.perf_counter() - t0


def waypoint_save(root: Path, state: Any, compression: str = "none") -> float:
    """Seconds for a blocking ``CheckpointManager.save`` into a new store (opened before the clock starts)."""
    with CheckpointManager(root, compression=compression) as mgr:
        t0 = time.perf_counter()
        mgr.save(state, step=1)
        return time.perf_counter() - t0


def warm_cache(path: Path) -> int:
    """Read every file under ``path`` once, untimed, so that the timed read finds it in the page cache."""
    files = [path] if path.is_file() else [Path(d) / f for d, _, fs in os.walk(path) for f in fs]
    total = 0
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while chunk := fh.read(_CHUNK):
                total += len(chunk)
    return total


def fs_info(path: Path) -> dict[str, Any]:
    """Mount point, type and device of the filesystem holding ``path``."""
    real, best = os.path.realpath(path), ("", "?", "?")
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                best = (mnt, fstype, dev)
    st = os.statvfs(path)
    return {
        "dir": real,
        "mount": best[0],
        "fstype": best[1],
        "device": best[2],
        "free_gib": round(st.f_bavail * st.f_frsize / GiB, 1),
    }


class CpuLoad:
    """CPU used by *other* processes while the benchmark runs (cores, averaged), from /proc/stat."""

    def __init__(self) -> None:
        self.start = (self._busy_s(), self._own_s(), time.monotonic())

    @staticmethod
    def _busy_s() -> float:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_s() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def other_cores(self) -> float:
        busy, own, t = self._busy_s(), self._own_s(), time.monotonic()
        return max(0.0, ((busy - self.start[0]) - (own - self.start[1])) / (t - self.start[2]))


# ---------------------------------------------------------------------------- fresh-process measurements
def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def child(kind: str, path: Path, size_mib: float) -> dict[str, Any]:
    """One operation in this (fresh) process; RSS figures are taken around exactly that operation."""
    mgr = None
    if kind.startswith("save"):
        state = make_state(size_mib)
        if kind == "save-waypoint":
            mgr = CheckpointManager(path)
    else:
        state = None
        if kind.startswith("restore-waypoint"):
            mgr = CheckpointManager(path, read_only=True)
    gc.collect()
    baseline, before = rss_bytes(), max_rss_bytes()
    t0 = time.perf_counter()
    if kind == "save-waypoint":
        mgr.save(state, step=1)
    elif kind == "save-torch":
        torch.save(state, path)
        fsync_file(path)
    elif kind in ("restore-waypoint", "restore-waypoint-noverify"):
        out = mgr.restore("latest", verify=kind == "restore-waypoint")
    elif kind in ("restore-waypoint-mmap", "restore-waypoint-mmap-verified"):
        out = mgr.restore("latest", verify=kind == "restore-waypoint-mmap-verified", mmap=True)
    elif kind == "restore-torch-mmap":
        out = torch.load(path, weights_only=True, mmap=True)
    elif kind == "restore-torch":
        out = torch.load(path, weights_only=True)
    else:
        raise SystemExit(f"unknown kind {kind}")
    seconds = time.perf_counter() - t0
    peak = max_rss_bytes()
    if mgr is not None:
        mgr.close()
    nbytes = state_bytes(state if state is not None else out)
    return {
        "kind": kind,
        "seconds": seconds,
        "state_bytes": nbytes,
        "baseline_rss": baseline,
        "maxrss_before": before,
        "peak_rss": peak,
        "peak_above_baseline": peak - baseline,
    }


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]))))
