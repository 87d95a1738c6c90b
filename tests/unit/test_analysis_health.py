"""Report notes from metrics.jsonl rows: collapse flagged by the task, baselines beside the monitored metric."""

from __future__ import annotations

from waypoint.analysis.health import collapse_note, family_notes, verdicts
from waypoint.analysis.series import baselines, series


def test_a_run_that_stayed_collapsed_is_marked() -> None:
    rows = [{"step": 10, "train/collapsed": 0.0}, {"step": 20, "train/collapsed": 1.0}, {"step": 30, "train/collapsed": 1.0}]
    note = collapse_note(rows)
    assert note is not None and "COLLAPSE" in note and "20..30" in note and "still collapsed" in note


def test_a_recovered_collapse_says_so() -> None:
    rows = [{"step": 10, "train/collapsed": 1.0}, {"step": 20, "train/collapsed": 0.0}]
    assert "recovered" in collapse_note(rows)


def test_a_healthy_run_has_no_collapse_note() -> None:
    assert collapse_note([{"step": 10, "train/collapsed": 0.0}, {"step": 20, "train/loss": 1.0}]) is None


def test_baselines_stand_beside_the_final_metric() -> None:
    rows = [
        {"step": 0, "val/knn_top1": 0.73, "val/knn_top1_raw_pixels": 0.961, "val/knn_top1_untrained": 0.73},
        {"step": 880, "val/knn_top1": 0.95},
    ]
    assert baselines(series(rows), "val/knn_top1") == {"raw_pixels": 0.961, "untrained": 0.73}


def test_a_metric_without_baselines_has_none() -> None:
    assert baselines(series([{"step": 5, "val/dice": 0.7}]), "val/dice") == {}


def test_a_tasks_val_baseline_metrics_stand_beside_its_monitored_metric() -> None:
    rows = [
        {"step": 0, "val/dice": 0.14, "val/baseline_mean_mask_dice": 0.081, "val/baseline_threshold_dice": 0.536},
        {"step": 8, "val/dice": 0.77, "val/baseline_mean_mask_dice": 0.081, "val/baseline_threshold_dice": 0.536},
    ]
    assert baselines(series(rows), "val/dice") == {"mean_mask_dice": 0.081, "threshold_dice": 0.536}


def _run(family: str, rows: list[dict], monitor: str, mode: str = "max"):
    from pathlib import Path

    from waypoint.analysis.family import FAMILIES
    from waypoint.analysis.runinfo import RunInfo

    return RunInfo(path=Path("run"), family=FAMILIES[family], monitor=monitor, mode=mode, rows=rows)


def test_the_final_value_is_said_to_beat_or_trail_each_baseline_in_the_metrics_direction() -> None:
    assert verdicts(0.8, {"threshold_dice": 0.54, "oracle": 0.9}, "max") == (
        "beats threshold_dice (0.54) by 0.26, trails oracle (0.9) by 0.1"
    )
    assert verdicts(2.0, {"unigram_bpb": 4.3}, "min") == "beats unigram_bpb (4.3) by 2.3"


def test_stackwise_notes_give_the_bpb_at_the_end_of_each_stacks_phase() -> None:
    rows = [
        {"step": 0, "val/bpb": 8.0, "val/stacks": 1.0, "val/baseline_unigram_bpb": 4.3},
        {"step": 50, "val/bpb": 3.1, "val/stacks": 1.0},
        {"step": 100, "val/bpb": 2.6, "val/stacks": 2.0},
    ]
    run = _run("stackwise", rows, "val/bpb", "min")
    notes = family_notes(run, series(rows))
    assert "Final val/bpb 2.6 beats unigram_bpb (4.3) by 1.7." in notes
    assert "val/bpb at the end of each stack's phase: 1 stack 3.1, 2 stacks 2.6 (baselines: unigram_bpb 4.3)." in notes


def test_dino_notes_say_when_no_collapse_was_detected_and_how_the_teacher_entropy_moved() -> None:
    rows = [
        {"step": 2, "train/collapsed": 0.0, "train/teacher_entropy": 5.2},
        {"step": 4, "train/collapsed": 0.0, "train/teacher_entropy": 1.44},
    ]
    notes = family_notes(_run("dino", rows, "val/knn_top1"), series(rows))
    assert "No collapse: train/collapsed stayed 0 over 2 logged steps." in notes
    assert "Teacher entropy 5.2 → 1.44 (lowest 1.44)." in notes
