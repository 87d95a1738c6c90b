"""Helpers of bench/checkpoint_io.py: the synthetic state, the floors (the disk, hashing, copying), the peers
(torch.save / torch.load, DCP), page-cache warming, CPU-load accounting, and the fresh-process measurements
(peak RSS and restore time).

Run as a script it performs measurements in fresh processes, each printing a JSON line ``{"seconds",
"baseline_rss", "maxrss_before", "peak_rss", ...}``: ``_io_helpers.py one KIND PATH SIZE_MIB`` is one operation in
this new interpreter (what RSS is measured with); ``_io_helpers.py serve`` is a zygote that imports torch and
Waypoint once, then for each line ``KIND<TAB>PATH<TAB>SIZE_MIB`` on stdin forks a process that performs it (fresh
memory and allocator without paying for the imports each time; its RSS figures leave out the shared libraries'
pages, which a forked process maps again as it first touches them).
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
import warnings
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import torch
import torch.distributed.checkpoint as dcp
import xxhash

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from waypoint.checkpoint import CheckpointManager  # noqa: E402

MiB, GiB = 1 << 20, 1 << 30
# DCP in one process says "torch.distributed is disabled, unavailable or uninitialized, assuming ..." on every call
warnings.filterwarnings("ignore", message="torch.distributed is disabled")
_CHUNK = 64 << 20


# ---------------------------------------------------------------------------- the state
def state_shapes(size_mib: float, n: int = 200, seed: int = 0) -> dict[str, tuple[int, ...]]:
    """The names and shapes of ``make_state``'s tensors (nothing allocated)."""
    rng = np.random.default_rng(seed)
    small = rng.random(n) < 1 / 3
    weights = np.where(small, 0.0, np.exp(rng.uniform(0.0, np.log(1e4), n)))
    small_numels = rng.integers(256, 8192, n) * small
    big_total = size_mib * MiB / 4 - small_numels.sum()
    numels = np.where(small, small_numels, weights / weights.sum() * big_total).astype(np.int64)
    shapes = {}
    for i, numel in enumerate(numels):
        cols = 1 if small[i] else (1024 if numel >= 1 << 16 else 64)
        shape = (int(numel),) if cols == 1 else (max(1, int(numel) // cols), cols)
        shapes[f"layers.{i:03d}.{'bias' if cols == 1 else 'weight'}"] = shape
    return shapes


def make_state(size_mib: float, n: int = 200, seed: int = 0) -> dict[str, Any]:
    """A model-like state: ``n`` random fp32 tensors summing to ~``size_mib`` MiB, plus a few scalars.

    A third are small 1-D tensors (biases, norms: 1-32 KiB); the rest are 2-D with log-uniform sizes
    spanning ~4 orders of magnitude, as in a real network.
    """
    gen = torch.Generator().manual_seed(seed)
    model = {name: torch.randn(shape, generator=gen) for name, shape in state_shapes(size_mib, n, seed).items()}
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


def disk_read(path: Path) -> float:
    """Seconds to read a file sequentially with O_DIRECT (64 MiB reads into one reused buffer): the disk's own
    read bandwidth, what a restore from a cold page cache cannot beat (NaN where O_DIRECT is refused)."""
    buf = mmap.mmap(-1, _CHUNK)
    t0 = time.perf_counter()
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
    except OSError:
        return float("nan")
    try:
        offset = 0
        while n := os.preadv(fd, [buf], offset):
            offset += n
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return float("nan")
        raise
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def raw_views(state: dict[str, Any]) -> list[memoryview]:
    return [memoryview(t.reshape(-1).view(torch.uint8).numpy()) for t in state["model"].values()]


def xxh3_pass(state: dict[str, Any]) -> float:
    """Seconds for one thread to read every tensor once with XXH3-128 (change detection's floor)."""
    views = raw_views(state)
    t0 = time.perf_counter()
    for v in views:
        xxhash.xxh3_128_hexdigest(v)
    return time.perf_counter() - t0


def blake3_pass(state: dict[str, Any]) -> float:
    """Seconds for one thread to BLAKE3 every tensor (the content ids of a save that writes everything)."""
    views = raw_views(state)
    t0 = time.perf_counter()
    for v in views:
        blake3.blake3(v, max_threads=1).digest()
    return time.perf_counter() - t0


def copy_into(bufs: list[torch.Tensor], state: dict[str, Any]) -> float:
    """Seconds to copy every tensor of ``state`` into ``bufs`` (memory already touched), one ``copy_`` each."""
    t0 = time.perf_counter()
    for buf, t in zip(bufs, state["model"].values()):
        buf.copy_(t)
    return time.perf_counter() - t0


def dcp_save(path: Path, state: Any) -> float:
    """Seconds for ``torch.distributed.checkpoint.save`` of the model's tensors (one process, files fsynced)."""
    t0 = time.perf_counter()
    dcp.save(dict(state["model"]), checkpoint_id=str(path))
    return time.perf_counter() - t0


def torch_save(path: Path, state: Any) -> float:
    """Seconds for ``torch.save(state, path)`` followed by an fsync of the file."""
    t0 = time.perf_counter()
    torch.save(state, path)
    fsync_file(path)
    return time.perf_counter() - t0


def waypoint_save(root: Path, state: Any, compression: str = "none", parity: bool = False) -> float:
    """Seconds for a blocking ``CheckpointManager.save`` into a new store (opened before the clock starts)."""
    with CheckpointManager(root, compression=compression, parity=parity) as mgr:
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
def _tensors(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in _tensors(v)]
    return []


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def child(kind: str, path: Path, size_mib: float) -> dict[str, Any]:
    """One operation in this (fresh) process; RSS figures are taken around exactly that operation."""
    mgr = template = None
    if kind == "restore-dcp":
        template = state_shapes(size_mib)
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
    elif kind == "restore-dcp":
        out = {"model": dcp_load(path, template)}
    elif kind == "read-floor":
        out = {"model": read_into_fresh(path)}
    else:
        raise SystemExit(f"unknown kind {kind}")
    seconds = time.perf_counter() - t0
    peak = max_rss_bytes()
    if mgr is not None:
        mgr.close()
    nbytes = state_bytes(state) if state is not None else sum(t.numel() * t.element_size() for t in _tensors(out))
    return {
        "kind": kind,
        "seconds": seconds,
        "state_bytes": nbytes,
        "baseline_rss": baseline,
        "maxrss_before": before,
        "peak_rss": peak,
        "peak_above_baseline": peak - baseline,
    }


def dcp_load(path: Path, shapes: dict[str, Any]) -> dict[str, torch.Tensor]:
    """DCP's restore: allocate the tensors (DCP fills a template) and load into them."""
    out = {k: torch.empty(shape) for k, shape in shapes.items()}
    dcp.load(out, checkpoint_id=str(path))
    return out


def read_into_fresh(path: Path) -> dict[str, torch.Tensor]:
    """Every file under ``path`` read (from the page cache when warm) into fresh memory, one thread: the floor of a
    warm restore (what any reader pays to get the bytes into new tensors), before any checking."""
    out = {}
    for f in sorted(Path(d) / n for d, _, fs in os.walk(path) for n in fs):
        size = f.stat().st_size
        t = torch.empty(size, dtype=torch.uint8)
        fd = os.open(f, os.O_RDONLY)
        try:
            got = 0
            while got < size:
                got += os.preadv(fd, [memoryview(t.numpy())[got:]], got)
        finally:
            os.close(fd)
        out[str(f)] = t
    return out


def serve() -> None:
    """The zygote loop (see the module doc); a failed operation prints ``{"error": ...}``."""
    for line in sys.stdin:
        kind, path, size_mib = line.rstrip("\n").split("\t")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                out, code = json.dumps(child(kind, Path(path), float(size_mib))), 0
            except BaseException as exc:  # noqa: BLE001 - reported to the bench, which stops
                out, code = json.dumps({"error": f"{kind}: {exc!r}"}), 1
            os.write(w, out.encode())
            os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        os.waitpid(pid, 0)
        print(data.decode(), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve()
    else:
        print(json.dumps(child(sys.argv[2], Path(sys.argv[3]), float(sys.argv[4]))))
