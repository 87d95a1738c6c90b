"""How often a run validates changes what it measures, not what it trains (so it is left out of the run name)."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainkit import metrics_rows, run_train


def train_curve(run_dir: Path) -> list[tuple[int, dict]]:
    rows = [r for r in metrics_rows(run_dir) if "train/loss" in r]
    return [(r["step"], {k: v for k, v in r.items() if k.startswith("train/") and "time" not in k}) for r in rows]


@pytest.mark.parametrize("model", ["dino", pytest.param("universeg", marks=pytest.mark.slow)])
def test_validating_every_epoch_or_every_other_trains_the_same_run(tmp_path: Path, model: str) -> None:
    every, other = tmp_path / "every", tmp_path / "other"
    run_train(every, f"model={model}", "trainer.max_epochs=2", "trainer.val_every_n_epochs=1")
    run_train(other, f"model={model}", "trainer.max_epochs=2", "trainer.val_every_n_epochs=2")
    assert len(train_curve(every)) > 1
    assert train_curve(every) == train_curve(other)
