"""hardware=gpu without a GPU falls back to the CPU with one clear message; bf16 autocast runs on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from trainkit import final_digest, run_train


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU; the fallback is not exercised")
def test_hardware_gpu_without_cuda_falls_back_to_the_cpu_and_says_so(tmp_path: Path) -> None:
    proc = run_train(tmp_path / "run", "model=universeg", "hardware=gpu")
    assert "no GPU is visible; running on the CPU" in proc.stderr
    final_digest(tmp_path / "run")


def test_bf16_autocast_trains_on_the_cpu(tmp_path: Path) -> None:
    proc = run_train(tmp_path / "run", "model=universeg", "hardware.precision=bf16")
    assert proc.stderr.strip().splitlines()[-1].startswith("result: UniverSeg val/dice best ")
