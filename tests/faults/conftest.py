"""Fixtures of the fault tests (real processes, real files; the store is never mocked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # faultkit is shared with the child processes; works under any import mode
    sys.path.insert(0, str(HERE))

from faultkit import make_state  # noqa: E402

from waypoint.checkpoint import CheckpointManager  # noqa: E402


def run_python(code: str, *args: str, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (faultkit importable); returns the completed process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=env, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"child failed with exit code {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def python():
    """``python(code, *args, check=True)``: run code in a fresh interpreter."""
    return run_python


@pytest.fixture(params=["none", "zstd"])
def two_step_store(tmp_path, request):
    """A store with step 1 and step 2 where step 2's new tensors live in a pack of its own.

    step 1 holds ``shared`` and ``old``; step 2 holds the same ``shared`` (deduplicated: it stays in
    step 1's pack) and a new ``new``. Returns (root, state1, state2). Once with raw packs, once with
    compressed ones (``compression="zstd"``: every tensor stored byte-grouped + zstd).
    """
    root = tmp_path / "ck"
    shared = torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    s1 = {"shared": shared, "own": torch.randn(32, 32, generator=torch.Generator().manual_seed(2)), "step": 1}
    s2 = {"shared": shared, "own": torch.randn(32, 32, generator=torch.Generator().manual_seed(3)), "step": 2}
    with CheckpointManager(root, compression=request.param) as mgr:
        mgr.save(s1, step=1)
        mgr.save(s2, step=2)
    if request.param == "zstd":  # the fixture means what it says: every tensor is stored compressed
        for pack in (root / "packs").iterdir():
            assert b'"dtype":"F32"' not in pack.read_bytes()[:4096], "a tensor was stored raw"
    return root, s1, s2


@pytest.fixture
def kill_state():
    """The deterministic state the SIGKILL children save at a step."""
    return make_state
