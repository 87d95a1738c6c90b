"""Report notes from metrics.jsonl rows: collapse flagged by the task, baselines beside the monitored metric."""

from __future__ import annotations

from waypoint.analysis.health import baseline_lines, collapse_note


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
    assert baseline_lines(rows, "val/knn_top1") == ["Final val/knn_top1 0.95; baselines: raw_pixels 0.961, untrained 0.73."]


def test_no_baselines_no_line() -> None:
    assert baseline_lines([{"step": 5, "val/dice": 0.7}], "val/dice") == []


def test_a_tasks_val_baseline_metrics_stand_beside_its_monitored_metric() -> None:
    rows = [
        {"step": 0, "val/dice": 0.14, "val/baseline_mean_mask_dice": 0.081, "val/baseline_threshold_dice": 0.536},
        {"step": 8, "val/dice": 0.77, "val/baseline_mean_mask_dice": 0.081, "val/baseline_threshold_dice": 0.536},
    ]
    assert baseline_lines(rows, "val/dice") == ["Final val/dice 0.77; baselines: mean_mask_dice 0.081, threshold_dice 0.536."]
