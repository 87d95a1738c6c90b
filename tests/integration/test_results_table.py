"""bench/results.py regenerates the results table; its smoke version runs here so it cannot rot."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def results_module():
    spec = importlib.util.spec_from_file_location("bench_results", REPO / "bench" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_script_writes_json_a_table_and_the_support_size_curve_with_every_family(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "results.py"),
            "--smoke",
            "--seeds",
            "1",
            "--jobs",
            "2",
            "--dir",
            str(tmp_path / "runs"),
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    rows = {(r["name"], r["metric"]): r for r in doc["results"]}
    assert {name for name, _ in rows} == {"dino", "universeg", "stackwise (progressive)", "stackwise (end-to-end baseline)"}
    assert ("dino", "val/linear_top1") in rows
    for row in rows.values():
        assert row["exit_codes"] == [0] and row["steps"] > 0 and row["untrained"] is not None
    assert set(rows["universeg", "val/dice"]["baselines"]) == {"val/baseline_mean_mask_dice", "val/baseline_threshold_dice"}
    assert set(rows["dino", "val/linear_top1"]["baselines"]) == {"val/linear_top1_raw_pixels", "val/linear_top1_untrained"}
    assert "val/baseline_unigram_bpb" in rows["stackwise (end-to-end baseline)", "val/bpb"]["baselines"]
    assert [r["support_size"] for r in doc["universeg_support_size"]] == [1, 2, 4, 8, 16]
    assert (tmp_path / "universeg_support_size.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "results.md").read_text()
    assert table.count("\n| ") == 6 + 6 and "stackwise (end-to-end baseline)" in table


def test_figures_over_seeds_are_mean_and_sample_standard_deviation():
    results = results_module()
    runs = [
        {"metric": "val/dice", "mode": "max", "untrained": 0.1, "final": f, "best": f, "steps": 8, "baselines": {"b": 0.5}}
        for f in (0.6, 0.8)
    ]
    row = results.aggregate(runs)
    assert row["final"]["mean"] == pytest.approx(0.7) and row["final"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert row["baselines"]["b"] == {"mean": 0.5, "std": 0.0, "values": [0.5, 0.5]}
    assert results.fmt(row["final"]) == "0.700 ± 0.141"


def test_a_failed_seed_is_left_out_of_the_spread_and_counted():
    results = results_module()
    ok = {"metric": "val/bpb", "mode": "min", "untrained": 8.0, "final": 2.0, "best": 2.0, "steps": 8, "baselines": {}}
    row = results.aggregate([ok, {"error": "exit 1: boom"}])
    assert row["seeds_ok"] == 1 and row["final"]["values"] == [2.0]


def test_the_results_bench_runs_dino_as_make_train_does():
    makefile = (REPO / "Makefile").read_text().splitlines()
    recipe = makefile[makefile.index(next(line for line in makefile if line.startswith("train:"))) + 1]
    make_train_args = recipe.split("train.py", 1)[1].split()
    _, overrides, _ = results_module().FAMILIES["dino"][0]
    assert [o for o in overrides if o != "model=dino"] == make_train_args
