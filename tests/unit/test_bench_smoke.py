"""bench/checkpoint_io.py runs end to end on a small state and writes every figure (never judges timings)."""

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KEYS = [
    "save_vs_torch",
    "save_vs_disk",
    "save_zstd",
    "save_steady_vs_disk",
    "restore_vs_torch",
    "restore_noverify_vs_torch",
    "restore_mmap_vs_torch",
    "restore_mmap_verified_vs_torch",
    "restore_mmap_vs_torch_mmap",
    "save_first_nocopy",
    "save_steady",
    "save_steady_nocopy",
    "incremental_bytes",
    "incremental_time",
    "incremental_time_nocopy",
    "async_blocked_first",
    "async_blocked",
    "async_durable",
    "rss_save",
    "rss_restore",
]
WITH_TARGET = {
    "save_vs_torch",
    "save_vs_disk",
    "restore_vs_torch",
    "restore_mmap_vs_torch",
    "incremental_bytes",
    "incremental_time",
    "async_blocked",
    "rss_save",
    "rss_restore",
}


def test_checkpoint_io_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "checkpoint_io.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "checkpoint_io.py"),
            "--size-mib",
            "16",
            "--repeats",
            "1",
            "--dir",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    rows = {r["key"]: r for r in doc["rows"]}
    assert list(rows) == KEYS
    for key, r in rows.items():
        for field in ("waypoint", "reference", "ratio"):
            assert isinstance(r[field], (int, float)) and math.isfinite(r[field]) and r[field] > 0, (key, field, r)
        assert (r["target"] is not None) == (key in WITH_TARGET), key
        assert r["met"] in ((True, False) if key in WITH_TARGET else (None,)), key
    env = doc["env"]
    assert env["restored_state_equal"] is True
    assert env["repeats"] == 1 and env["n_tensors"] == 200 and 15 << 20 < env["state_bytes"] < 17 << 20
    assert 0.2 < env["incremental_changed"]["tensor_fraction"] <= 0.25
    assert env["page_cache"] == "warm" and env["fs"]["fstype"]
    samples = doc["samples"]
    assert all(len(v) == 1 for v in samples["full_saves_s"].values())
    for kind, runs in samples["fresh_process"].items():
        (run,) = runs
        # The baseline is taken in a fresh process right before the operation, so nothing earlier peaked above it.
        assert 0 < run["baseline_rss"] and run["maxrss_before"] <= run["baseline_rss"] + (8 << 20), (kind, run)
    assert doc["table"] and "save throughput" in proc.stdout
    assert not list((tmp_path / "work").iterdir()), "the benchmark left its work dir behind"
