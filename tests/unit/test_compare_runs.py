"""Comparing runs: grouped by the config keys that differ, seeds aggregated, baselines beside, names escaped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from waypoint.analysis.compare_runs import CompareError, build_comparison_report, differing_keys, grouping_keys, load_runs
from waypoint.analysis.report import build_run_report

TARGETS = {"universeg": "waypoint.tasks.universeg.UniverSegTask", "dino": "waypoint.tasks.dino.DinoTask"}


def write_run(path: Path, family: str, lr: float, seed: int, final: float, overrides: list[str] | None = None) -> Path:
    """A run directory as train.py leaves it (config, overrides, metrics), without checkpoints."""
    (path / ".hydra").mkdir(parents=True)
    config = {"model": {"_target_": TARGETS[family], "lr": lr}, "data": {"batch_size": 8, "num_workers": 0}, "seed": seed}
    config["checkpoint"] = {"keep_last": 3 + seed}  # steering: in the diff table, never a group
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (path / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(overrides or [f"model={family}", f"model.lr={lr}", f"seed={seed}"])
    )
    rows = [
        {"step": 0, "val/dice": 0.1, "val/baseline_threshold_dice": 0.54, "val/baseline_mean_mask_dice": 0.12},
        {"step": 10, "train/loss": 1.0, "train/lr": lr},
        {"step": 20, "val/dice": final + 0.01},
        {"step": 40, "train/loss": 0.5, "train/lr": lr / 10},
        {"step": 40, "val/dice": final},
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "multirun" / "universeg" / "model.lr=0.002,0.008,seed=0,1,2"
    finals = {(0.002, 0): 0.60, (0.002, 1): 0.64, (0.002, 2): 0.62, (0.008, 0): 0.70, (0.008, 1): 0.74, (0.008, 2): 0.72}
    for (lr, seed), final in finals.items():
        write_run(root / f"model.lr={lr},seed={seed}", "universeg", lr, seed, final)
    return root


def test_runs_are_grouped_by_the_keys_that_change_what_is_trained_and_seeds_are_aggregated(sweep: Path, tmp_path: Path) -> None:
    runs = load_runs([sweep])
    assert differing_keys(runs) == ["checkpoint.keep_last", "model.lr", "seed"]
    assert grouping_keys(differing_keys(runs)) == ["model.lr"]
    result = build_comparison_report([sweep], tmp_path / "cmp")
    groups = {g["label"]: g for g in result["summary"]["groups"]}
    assert set(groups) == {"model.lr=0.002", "model.lr=0.008"}
    assert groups["model.lr=0.008"]["final"] == [0.70, 0.74, 0.72]
    md = Path(result["markdown"]).read_text()
    assert "| model.lr=0.002 | 3 | 0, 1, 2 | 0.620 ± 0.020 (n=3) | 0.630 ± 0.020 (n=3) |" in md
    assert "mean_mask_dice 0.12, threshold_dice 0.54" in md
    assert "beats mean_mask_dice (0.12) by 0.6, beats threshold_dice (0.54) by 0.18" in md
    assert "| run | checkpoint.keep_last | model.lr | seed |" in md  # the config diff: every differing key
    for png in ("groups.png", "curves.png"):
        assert (tmp_path / "cmp" / png).stat().st_size > 5000


def test_runs_of_different_families_are_refused_in_one_sentence(sweep: Path, tmp_path: Path) -> None:
    dino = write_run(tmp_path / "outputs" / "dino" / "default", "dino", 0.005, 0, 0.9)
    with pytest.raises(CompareError, match=r"^runs of different families cannot be compared: .* is UniverSeg, .* is DINO"):
        load_runs([sweep, dino])


def test_a_path_that_is_no_run_is_refused_in_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompareError, match="holds no run"):
        load_runs([tmp_path / "empty"])
    with pytest.raises(CompareError, match="is not a directory"):
        load_runs([tmp_path / "missing"])


HOSTILE = "<img src=x onerror=alert(1)>,a=b"


def test_run_names_and_overrides_are_escaped_in_every_report(tmp_path: Path) -> None:
    a = write_run(tmp_path / HOSTILE, "universeg", 0.002, 0, 0.6, overrides=["model=universeg", f"+note={HOSTILE}"])
    b = write_run(tmp_path / "plain", "universeg", 0.004, 0, 0.7)
    pages = [Path(build_comparison_report([a, b], tmp_path / "cmp")["html"]), Path(build_run_report(a)["html"])]
    for page in pages:
        for text in (page.read_text(), page.with_suffix(".md").read_text()):
            assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
        assert len(re.findall(r"<img ", page.read_text())) == len(
            re.findall(r"<img [^>]*src='data:image/png;base64,", page.read_text())
        )


def test_a_run_report_is_titled_by_family_and_overrides_and_leads_with_the_metric_beside_its_baselines(tmp_path: Path) -> None:
    run = write_run(tmp_path / "model.lr=0.002,seed=1", "universeg", 0.002, 1, 0.61234567)
    md = Path(build_run_report(run)["markdown"]).read_text()
    assert md.startswith("# UniverSeg · model.lr=0.002, seed=1\n\n## Result\n")
    assert "val/dice: final 0.6123 (step 40), best 0.6223 (step 20); baselines: mean_mask_dice 0.12, threshold_dice 0.54." in md
    assert "Ranked by importance: val/dice, train/loss, train/lr." in md
    assert md.index("## Result") < md.index("## Key metrics") < md.index("## All metrics")
    for metric in ("val/dice", "train/loss", "train/lr", "val/baseline_threshold_dice", "val/baseline_mean_mask_dice"):
        assert f"| {metric} |" in md  # every metric stays reachable in the all-metrics table
