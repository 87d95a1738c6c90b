"""bench/overhead.py runs a family with and without checkpointing and reports both (never judges timings)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_overhead_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    cmd = [sys.executable, str(REPO / "bench" / "overhead.py"), "--smoke", "--repeats", "1", "--only", "stackwise"]
    proc = subprocess.run(
        [*cmd, "--dir", str(tmp_path / "runs"), "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())["results"]["stackwise"]
    assert res["ok"] and res["saves_per_run"] >= 1 and res["bytes_per_save_first"] > 0
    assert res["samples"]["disabled"][0]["saves"] == []
    assert "overhead" in res and "<= 2%" in proc.stdout
