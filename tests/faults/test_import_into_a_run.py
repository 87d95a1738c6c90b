"""A foreign checkpoint imported (with --force) into a training run never poisons `resume=auto`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from trainkit import committed, run_train  # noqa: E402

RUN = ["model=universeg", "trainer.max_epochs=1"]


@pytest.mark.slow
def test_the_same_command_still_resumes_its_own_checkpoint_after_an_import(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_train(run_dir, *RUN)
    own = committed(run_dir)[-1].name
    torch.save({"global_step": 10**6, "state_dict": {"w": torch.zeros(3)}}, tmp_path / "foreign.ckpt")
    cli = [sys.executable, "-m", "waypoint", "import", str(tmp_path / "foreign.ckpt"), str(run_dir)]
    refused = subprocess.run(cli, capture_output=True, text=True)
    assert refused.returncode == 2 and "--force" in refused.stderr
    subprocess.run([*cli, "--force"], check=True, capture_output=True)
    again = run_train(run_dir, *RUN, "trainer.max_epochs=2")
    assert f"resuming from {own}" in again.stderr or own in again.stderr
