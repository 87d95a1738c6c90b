"""restore(mmap=True): tensors backed by private mappings of the packs, equal to a copying restore; verified
unless verify=False, and writing to them never changes the store."""

import gc
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from waypoint.checkpoint import CheckpointManager


def state() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(64, 33, generator=g),
        "odd": torch.arange(3, dtype=torch.uint8),  # leaves the next tensor at an offset no element size divides
        "d": torch.randn(5, generator=g, dtype=torch.float64),
        "h": torch.randn(7, generator=g).to(torch.bfloat16),
        "empty": torch.empty(0, 4),
        "scalar": torch.tensor(2.5),
        "arr": np.arange(6, dtype=np.int32).reshape(2, 3),
        "step": 3,
    }


def flip_first_byte(root: Path, key: str) -> None:
    name = next(p.name for p in root.glob("step_*"))
    t = json.loads((root / name / "manifest.json").read_text())["tensors"][key]
    pack = root / "packs" / t["pack"]
    raw = bytearray(pack.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    raw[8 + n + json.loads(raw[8 : 8 + n])[t["id"]]["data_offsets"][0]] ^= 1
    pack.write_bytes(bytes(raw))


def same(a, b) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
    )


@pytest.mark.parametrize("verify", [True, False])
def test_an_mmap_restore_equals_a_copying_restore(tmp_path, verify):
    with CheckpointManager(tmp_path / "ck") as mgr:
        mgr.save(state(), step=1)
        want = mgr.restore("latest")
        got = mgr.restore("latest", mmap=True, verify=verify)
    gc.collect()  # the mappings outlive the store and every name that held them
    for key in ("w", "odd", "d", "h", "empty", "scalar"):
        assert same(got[key], want[key]), key
    assert np.array_equal(got["arr"], want["arr"]) and got["step"] == 3


def test_writing_to_an_mmap_restored_tensor_changes_neither_the_store_nor_another_restore(tmp_path):
    with CheckpointManager(tmp_path / "ck") as mgr:
        mgr.save(state(), step=1)
        first = mgr.restore("latest", mmap=True)
        first["w"].zero_()
        assert mgr.verify() == {"step_000000001": []}
        assert same(mgr.restore("latest", mmap=True)["w"], state()["w"])


def test_a_verified_mmap_restore_refuses_a_flipped_bit_and_an_unverified_one_returns_it(tmp_path):
    root = tmp_path / "ck"
    with CheckpointManager(root) as mgr:
        mgr.save(state(), step=1)
    flip_first_byte(root, "w")
    with CheckpointManager(root, read_only=True) as mgr:
        with pytest.raises(Exception, match="damaged|verifies"):
            mgr.restore("step:1", mmap=True)
        got = mgr.restore("step:1", mmap=True, verify=False)["w"]
    assert not same(got, state()["w"])
