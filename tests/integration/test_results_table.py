"""bench/results.py regenerates the README's results table; its smoke version runs here so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_results_script_writes_json_and_a_table_with_every_family_and_its_baselines(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "results.py"), "--smoke", "--dir", str(tmp_path / "runs"), "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    rows = {r["name"]: r for r in doc["results"]}
    assert set(rows) == {"dino", "universeg", "stackwise (progressive)", "stackwise (end-to-end baseline)"}
    for row in rows.values():
        assert row["exit_code"] == 0 and row["steps"] > 0 and row["untrained"] is not None
    assert set(rows["universeg"]["baselines"]) == {"val/baseline_mean_mask_dice", "val/baseline_threshold_dice"}
    assert "val/baseline_unigram_bpb" in rows["stackwise (end-to-end baseline)"]["baselines"]
    table = (tmp_path / "results.md").read_text()
    assert table.count("\n| ") == 5 and "stackwise (end-to-end baseline)" in table
