"""A misspelt key or a wrong type fails at start, naming the key, before anything is written."""
from __future__ import annotations

from pathlib import Path

import pytest

from trainkit import run_train


@pytest.mark.parametrize("override, key", [("trainer.max_epochz=3", "max_epochz"), ("trainer.max_epochs=abc", "trainer.max_epochs"),
                                           ("model.encoder_blockz=[8]", "encoder_blockz"), ("data.batch_size=big", "data.batch_size"),
                                           ("checkpoint.keep_lastt=2", "keep_lastt")])
def test_a_bad_key_or_type_fails_at_start_naming_the_key(override: str, key: str, tmp_path: Path) -> None:
    proc = run_train(tmp_path / "run", "model=universeg", override, check=False)
    assert proc.returncode != 0
    assert key in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_missing_data_folder_is_one_clear_sentence(tmp_path: Path) -> None:
    proc = run_train(tmp_path / "run", "model=universeg", "data=segfolder", f"data.root={tmp_path / 'nope'}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
