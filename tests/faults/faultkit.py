"""Shared helpers of the fault tests: a deterministic training-like state, byte-level damage, and
inspection of a checkpoints root straight from the files (independent of the store's own code).

Imported by the tests (via conftest.py, which puts this folder on sys.path) and by the child
processes they start (save_zygote.py, child scripts).
"""

from __future__ import annotations

import functools
import json
import os
import random
from pathlib import Path
from typing import Any

import torch

MB = 1 << 20


# ------------------------------------------------------------------------------------------ states
@functools.lru_cache(maxsize=1)
def frozen_part() -> dict[str, torch.Tensor]:
    """Tensors that never change between steps (a frozen backbone): the dedup path."""
    g = torch.Generator().manual_seed(1234)
    return {"w1": torch.randn(256, 1024, generator=g), "w2": torch.randn(128, 1024, generator=g)}


def make_state(step: int) -> dict[str, Any]:
    """A ~4 MiB training-like state that is a pure function of ``step``.

    ``frozen`` never changes, ``slow`` changes every 4 steps, ``live`` every step; ``head.tied`` is the
    very same tensor object as ``live.w`` (an alias); the JSON part holds counters and a data cursor.
    """
    g_slow = torch.Generator().manual_seed(10_000 + step // 4)
    g_live = torch.Generator().manual_seed(step)
    live_w = torch.randn(512, 1024, generator=g_live)
    return {
        "frozen": frozen_part(),
        "slow": {"w": torch.randn(128, 1024, generator=g_slow)},
        "live": {"w": live_w, "count": torch.arange(64, dtype=torch.int64) + step},
        "head": {"tied": live_w},
        "step": step,
        "cursor": {"epoch": step // 10, "index": step % 10, "seed": 7},
        "lr": 0.1 / step,
    }


def assert_state_equal(got: Any, want: Any, path: str = "") -> None:
    """Exact equality of nested states; tensors compared byte for byte."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), f"{path}: not a tensor"
        assert got.dtype == want.dtype and got.shape == want.shape, f"{path}: dtype/shape differ"
        assert torch.equal(got.reshape(-1).view(torch.uint8), want.contiguous().reshape(-1).view(torch.uint8)), (
            f"{path}: bytes differ"
        )
    elif isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{path}: keys differ"
        for k in want:
            assert_state_equal(got[k], want[k], f"{path}/{k}")
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


# ------------------------------------------------------------------------------------------ damage
def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    """Flip one bit of the byte at ``offset`` (negative: from the end) in place."""
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        pos = offset if offset >= 0 else size + offset
        assert 0 <= pos < size, f"offset {offset} outside {path} ({size} bytes)"
        f.seek(pos)
        b = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([b ^ (1 << bit)]))


def truncate(path: Path, size: int) -> None:
    """Cut a file to ``size`` bytes (negative: that many bytes shorter)."""
    full = path.stat().st_size
    os.truncate(path, size if size >= 0 else full + size)


# ------------------------------------------------------------------------------------------ inspection
def manifest(ckpt_dir: Path) -> dict:
    """A checkpoint's manifest, parsed without any check."""
    return json.loads((ckpt_dir / "manifest.json").read_bytes())


def committed_dirs(root: Path) -> list[Path]:
    """Directories named like committed checkpoints (step_*), sorted by name."""
    return sorted(p for p in root.iterdir() if p.name.startswith("step_") and p.is_dir())


def pack_files(root: Path) -> set[str]:
    """Names of the pack files in packs/ (temporaries included)."""
    return {p.name for p in (root / "packs").iterdir()}


def referenced_packs(root: Path) -> set[str]:
    """Packs some committed manifest lists."""
    refs: set[str] = set()
    for d in committed_dirs(root):
        refs |= set(manifest(d)["packs"])
    return refs


def own_packs(root: Path, name: str) -> set[str]:
    """Packs that checkpoint ``name`` uses and no other committed checkpoint does."""
    mine = set(manifest(root / name)["packs"])
    others = set()
    for d in committed_dirs(root):
        if d.name != name:
            others |= set(manifest(d)["packs"])
    return mine - others


def debris(root: Path) -> list[str]:
    """Leftovers of interrupted writes anywhere under the root: staging/trash dirs and temp files."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            if n.startswith((".staging-", ".trash-", ".tmp-")):
                found.append(os.path.relpath(os.path.join(dirpath, n), root))
    return sorted(found)


def pack_data_offset(pack: Path, tensor_id: str) -> int:
    """File offset of the first data byte of tensor ``tensor_id`` in ``pack``."""
    raw = pack.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    return 8 + length + header[tensor_id]["data_offsets"][0]


def tensor_id(root: Path, name: str, key: str) -> str:
    """Content id of tensor ``key`` in checkpoint ``name``."""
    return manifest(root / name)["tensors"][key]["id"]


def pack_of(root: Path, name: str, key: str) -> Path:
    """The pack file that holds tensor ``key`` of checkpoint ``name``."""
    return root / "packs" / manifest(root / name)["tensors"][key]["pack"]


# ------------------------------------------------------------------------------------------ children
def save_forever(root: str, seed: int, compression: str = "none") -> None:
    """The body of a child that is SIGKILLed at a random moment: save, save, save...

    Continues from the newest checkpoint; half of the saves are non-blocking; every third step the
    previous checkpoint gets a tag (a manifest rewrite); keep-last-3 retention deletes, collects packs and
    repacks the packs whose data died (the ``frozen`` part outlives the pack of step 1).
    """
    from waypoint.checkpoint import CheckpointManager, KeepLast, RetentionPolicy

    rng = random.Random(seed)
    mgr = CheckpointManager(root, RetentionPolicy((KeepLast(3),)), compression=compression)
    latest = mgr.latest()
    step = latest.step if latest else 0
    while True:
        step += 1
        mgr.save(make_state(step), step=step, metrics={"loss": 1.0 / step}, blocking=rng.random() < 0.5)
        if step % 3 == 0:
            mgr.tag("latest", f"seen-{step % 2}")
