"""The rows of bench/checkpoint_io.py: each figure with its floor, peer, target and whether it is met.

A row is ``{"key", "figure", "unit", "value", "reference", "reference_name", "floor", "floor_name", "peer",
"peer_name", "ratio", "target", "met"}``: ``ratio`` is what the target judges (``value`` against ``reference``,
as the figure says); ``floor`` is what this machine allows for the same operation, measured in the same run;
``peer`` what the usual tool takes (None where it has none). ``target`` is ``"<= 1.3"`` or ``">= 0.8"`` (None:
measured, not judged); ``met`` is None without a target.
"""

from __future__ import annotations

import statistics
from typing import Any

MiB, GiB = 1 << 20, 1 << 30


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def paired(a: list[float], b: list[float]) -> float:
    """The median of per-repetition ratios (each pair measured back to back)."""
    return med([x / y for x, y in zip(a, b)])


def row(key: str, figure: str, unit: str, value: float, ratio: float, target: str | None, **extra: Any) -> dict[str, Any]:
    met = None
    if target is not None:
        bound = float(target[3:])
        met = ratio <= bound if target.startswith("<=") else ratio >= bound
    base = dict.fromkeys(("reference", "reference_name", "floor", "floor_name", "peer", "peer_name"))
    head = {"key": key, "figure": figure, "unit": unit, "value": value}
    return {**head, **base, **extra, "ratio": ratio, "target": target, "met": met}


#: the targeted rows first, in this order; the measured ones after them
TARGETED = (
    "save_vs_floor",
    "save_vs_disk",
    "save_vs_torch",
    "incremental_time",
    "incremental_bytes",
    "rss_save",
    "restore_vs_torch",
    "async_blocked_vs_copy",
    "s3_save_vs_raw",
    "s3_restore_vs_raw",
    "restore_mmap_vs_torch",
    "parity_time",
    "parity_bytes",
)


def build(s: dict[str, Any], env: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row, from the samples of one run (the S3 rows only when they ran)."""
    rows = [
        *save_rows(s["full"], env),
        *parity_rows(s["full"]),
        *incremental_rows(s["incremental"], s["full"], env),
        *fresh_rows(s["fresh"], env),
        *async_rows(s["async"], s["incremental"]),
        *s3_rows(s["s3"]),
    ]
    rank = {k: i for i, k in enumerate(TARGETED)}
    return sorted(rows, key=lambda r: rank.get(r["key"], len(rank)))


def save_rows(f: dict[str, list[float]], env: dict[str, Any]) -> list[dict[str, Any]]:
    gib, n = env["state_bytes"] / GiB, env["threads"]
    sv, disk, torch_s = med(f["waypoint"]), med(f["disk-direct"]), med(f["torch"])
    cpu = (med(f["xxh3"]) + med(f["blake3"])) / n
    floor = max(disk, cpu)
    disk_name = f"disk O_DIRECT write+fsync (page cache: {gib / med(f['disk-buffered']):.2f} GiB/s)"
    floor_name = f"max(disk O_DIRECT write {disk:.3f} s, (XXH3 {med(f['xxh3']):.3f} + BLAKE3 {med(f['blake3']):.3f} s) / {n})"
    peers = {"peer": torch_s, "peer_name": "torch.save+fsync"}
    bw = {"floor": gib / disk, "floor_name": disk_name, "peer": gib / torch_s, "peer_name": "torch.save+fsync"}
    return [
        row("save_vs_floor", "full save (1st of a store): wall / floor", "s", sv, sv / floor, "<= 1.3", floor=floor,
            floor_name=floor_name, reference=floor, reference_name="the floor", **peers),
        row("save_vs_disk", "full save bandwidth / disk O_DIRECT write", "GiB/s", gib / sv, disk / sv, ">= 0.8",
            reference=gib / disk, reference_name="disk O_DIRECT write", **bw),
        row("save_vs_torch", "full save speed / torch.save+fsync", "GiB/s", gib / sv, torch_s / sv, ">= 1.5",
            reference=gib / torch_s, reference_name="torch.save+fsync", **bw),
        row("save_vs_dcp", "full save speed / DCP save (one process)", "GiB/s", gib / sv, med(f["dcp"]) / sv, None,
            reference=gib / med(f["dcp"]), reference_name="torch.distributed.checkpoint.save", **bw),
        row("save_zstd", f"full save, compression=zstd (stores {f['zstd_stored_fraction'][0]:.2f}x): time / none", "s",
            med(f["waypoint-zstd"]), med(f["waypoint-zstd"]) / sv, None, reference=sv, reference_name="compression=none"),
    ]  # fmt: skip


def parity_rows(f: dict[str, list[float]]) -> list[dict[str, Any]]:
    """What ``checkpoint.parity=true`` costs a full save: extra time and bytes (targets of on-by-default)."""
    sv, with_parity, share = med(f["waypoint"]), med(f["waypoint-parity"]), f["parity_bytes_fraction"][0]
    return [
        row("parity_time", "full save with parity: time / without", "s", with_parity,
            paired(f["waypoint-parity"], f["waypoint"]), "<= 1.05",
            reference=sv, reference_name="full save without parity", floor=sv, floor_name="the save without parity"),
        row("parity_bytes", "parity bytes / pack bytes", "frac", share, share, "<= 0.15", reference=1.0,
            reference_name="the packs' bytes", floor=2 / 16, floor_name="2 parity stripes per 16 data stripes"),
    ]  # fmt: skip


def incremental_rows(inc: dict[str, list[float]], f: dict[str, list[float]], env: dict[str, Any]) -> list[dict[str, Any]]:
    frac, n = env["incremental_changed"]["bytes_fraction"], env["threads"]
    full, second = med(inc["full_s"]), med(inc["second_s"])
    floor = max(med(f["disk-direct"]) * frac, (med(f["xxh3"]) + med(f["blake3"]) * frac) / n)
    torch_s, torch_mib = med(f["torch"]), env["state_bytes"] / MiB
    return [
        row("incremental_time", "75%-unchanged save time / all-changed save", "s", second, paired(inc["second_s"], inc["full_s"]),
            "<= 0.30", reference=full, reference_name="all-changed save", floor=floor,
            floor_name=f"max(disk write of the {frac:.0%} changed, (XXH3 of all + BLAKE3 of the changed) / {n})",
            peer=torch_s, peer_name="torch.save+fsync (writes everything)"),
        row("incremental_bytes", "75%-unchanged save bytes / all-changed save", "MiB", med(inc["second_bytes"]) / MiB,
            paired(inc["second_bytes"], inc["full_bytes"]), "<= 0.26", reference=med(inc["full_bytes"]) / MiB,
            reference_name="all-changed save", floor=frac * env["state_bytes"] / MiB, floor_name="the changed tensors' bytes",
            peer=torch_mib, peer_name="torch.save (writes everything)"),
    ]  # fmt: skip


def fresh_rows(fresh: dict[str, list[dict[str, Any]]], env: dict[str, Any]) -> list[dict[str, Any]]:
    gib, state_mib = env["state_bytes"] / GiB, env["state_bytes"] / MiB
    t = {k: med([x["seconds"] for x in v]) for k, v in fresh.items()}
    rss = {k: med([x["peak_above_baseline"] for x in v]) for k, v in fresh.items()}
    wp, tl = t["restore-waypoint"], t["restore-torch"]
    read = {"floor": gib / t["read-floor"], "floor_name": "read of the pack from the page cache into fresh memory, one thread"}
    return [
        row("rss_save", "peak RSS above the state during a save / state bytes", "MiB", rss["save-waypoint"] / MiB,
            rss["save-waypoint"] / env["state_bytes"], "<= 0.10", reference=state_mib, reference_name="state bytes",
            floor=0.0, floor_name="nothing: the state is written from its own memory",
            peer=rss["save-torch"] / MiB, peer_name="torch.save"),
        row("restore_vs_torch", "verified restore speed / torch.load(weights_only=True)", "GiB/s", gib / wp, tl / wp,
            ">= 1.2", reference=gib / tl, reference_name="torch.load", peer=gib / tl, peer_name="torch.load", **read),
        row("restore_vs_dcp", "verified restore speed / DCP load (into fresh tensors)", "GiB/s", gib / wp,
            t["restore-dcp"] / wp, None, reference=gib / t["restore-dcp"], reference_name="DCP load",
            peer=gib / tl, peer_name="torch.load", **read),
        row("restore_mmap_vs_torch", "restore without a copy (mmap=True, verify=False) / torch.load", "GiB/s",
            gib / t["restore-waypoint-mmap"], tl / t["restore-waypoint-mmap"], ">= 2.0", reference=gib / tl,
            reference_name="torch.load", peer=gib / tl, peer_name="torch.load", **read),
    ]  # fmt: skip


def async_rows(a: dict[str, list[float]], inc: dict[str, list[float]]) -> list[dict[str, Any]]:
    blocked, copy = med(a["blocked_s"]), med(a["copy_s"])
    return [
        row("async_blocked_vs_copy", "async save, steady state: caller blocked / copying the changed bytes", "s", blocked,
            paired(a["blocked_s"], a["copy_s"]), "<= 1.2", reference=copy, reference_name="copy into reused memory",
            floor=copy, floor_name="copy of the changed tensors into memory already touched",
            peer=med(inc["full_s"]), peer_name="blocking save (all changed)"),
    ]  # fmt: skip


def s3_rows(s3: dict[str, list[float]] | None) -> list[dict[str, Any]]:
    if s3 is None:
        return []
    gib = s3["bytes"][0] / GiB
    put, get = med(s3["put_s"]), med(s3["get_s"])
    return [
        row("s3_save_vs_raw", "save to S3 (moto) speed / raw s3fs put_file of the same bytes", "GiB/s",
            gib / med(s3["save_s"]), paired(s3["put_s"], s3["save_s"]), ">= 0.7", reference=gib / put,
            reference_name="s3fs put_file", floor=gib / put, floor_name="raw s3fs put_file of the pack"),
        row("s3_restore_vs_raw", "verified restore from S3 (moto) speed / raw s3fs cat_file", "GiB/s",
            gib / med(s3["restore_s"]), paired(s3["get_s"], s3["restore_s"]), ">= 0.7", reference=gib / get,
            reference_name="s3fs cat_file", floor=gib / get, floor_name="raw s3fs cat_file of the pack"),
    ]  # fmt: skip


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}" if abs(x) < 100 else f"{x:.0f}"


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The printed table: one line per row (figure, floor, peer, ratio, target, met), then what each floor and peer is."""
    head = f"{'key':24s} {'unit':5s} {'value':>8s} {'floor':>8s} {'peer':>8s} {'ratio':>7s} {'target':>8s} {'met':4s} figure"
    lines = [head, "-" * len(head)]
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        lines.append(
            f"{r['key']:24s} {r['unit']:5s} {_num(r['value']):>8s} {_num(r['floor']):>8s} {_num(r['peer']):>8s} "
            f"{r['ratio']:6.2f}x {r['target'] or '':>8s} {met:4s} {r['figure']}"
        )
    lines += ["", "floors and peers:"]
    for r in rows:
        lines.append(f"  {r['key']}: floor = {r['floor_name'] or '-'}; peer = {r['peer_name'] or '-'}")
    return lines
