"""bench/analyze_memory.py runs end to end on a tiny state and writes the fields the README quotes."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_analyze_memory_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "analyze_memory.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "analyze_memory.py"),
            "--state-mib",
            "2",
            "--counts",
            "3",
            "--repeats",
            "1",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["baseline_rss_bytes"] > 0 and doc["repeats"] == 1
    assert "growth_bytes_per_checkpoint" in doc and doc["table"]
    (row,) = doc["rows"]
    assert row["checkpoints"] == 3 and row["tensors"] > 40
    for field in (
        "state_bytes",
        "largest_tensor_bytes",
        "peak_rss_bytes",
        "above_baseline_bytes",
        "ratio_to_state",
        "wall_s",
        "cpu_s",
    ):
        assert isinstance(row[field], (int, float)), field
    assert row["state_bytes"] > 1 << 20 and row["peak_rss_bytes"] > 0
    (sample,) = row["samples"]
    assert 0 < sample["spawner_rss_bytes"] < sample["peak_rss_bytes"]
    assert not Path(doc["work_dir"]).exists(), "run dirs were not deleted"
