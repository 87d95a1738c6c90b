"""bench/object_store_io.py runs end to end on a small state (its own moto server) and writes its figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_object_store_bench_smoke(tmp_path: Path, s3_endpoint) -> None:  # s3_endpoint: skipped without moto
    out = tmp_path / "object_store_io.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "object_store_io.py"), "--size-mib", "4", "--repeats", "1",
         "--dir", str(tmp_path), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert set(doc["medians"]) == {"local disk", "S3 (moto, 127.0.0.1)"}
    assert "| S3 (moto, 127.0.0.1) |" in proc.stdout
    (row,) = doc["rows"]  # without --train: the ranged-restore target only
    assert row["key"] == "s3_restore_fetched" and row["fetched"] > 0 and row["met"] == (row["ratio"] <= 1.2)
