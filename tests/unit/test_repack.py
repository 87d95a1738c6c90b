"""Repacking: deleting checkpoints gives their bytes back even when surviving checkpoints share their packs."""

import json
import warnings
from pathlib import Path

import pytest
import torch

from waypoint.checkpoint import CheckpointManager, KeepLast, RetentionPolicy


def progressive_state(step: int) -> dict:
    """A Stack-Wise-like state: ``stack0`` frozen after step 1, ``moments`` new every step and 4x bigger."""
    g = torch.Generator().manual_seed(step)
    return {
        "stack0": torch.arange(64 * 256, dtype=torch.float32).reshape(64, 256),
        "moments": torch.randn(256, 256, generator=g),
        "step": step,
    }


def tensor_bytes(root) -> int:
    return sum(p.stat().st_size for p in (root / "packs").iterdir())


def packs_named(root) -> set[str]:
    names = set()
    for d in root.glob("step_*"):
        names |= set(json.loads((d / "manifest.json").read_text())["packs"])
    return names


def test_deleting_a_checkpoint_frees_its_dead_tensors_in_a_pack_others_still_use(tmp_path):
    root = tmp_path / "ck"
    with CheckpointManager(root, RetentionPolicy((KeepLast(1),))) as mgr:
        mgr.save(progressive_state(1), step=1)  # pack 1 = stack0 (64 KiB) + moments of step 1 (256 KiB)
        mgr.save(progressive_state(2), step=2)  # step 1 is deleted; only stack0 in pack 1 is still used
        assert [i.step for i in mgr.list()] == [2]
        live = mgr.list()[0].logical_bytes
        assert tensor_bytes(root) <= live + 8192, "dead moments of step 1 must not stay on disk"
        assert {p.name for p in (root / "packs").iterdir()} == packs_named(root)


def test_every_surviving_checkpoint_restores_exactly_after_repacks(tmp_path):
    root = tmp_path / "ck"
    with CheckpointManager(root, RetentionPolicy((KeepLast(3),))) as mgr:
        for step in range(1, 9):
            mgr.save(progressive_state(step), step=step, blocking=step % 2 == 0)
        mgr.wait()
        assert mgr.verify() == {f"step_{s:09d}": [] for s in (6, 7, 8)}
        for step in (6, 7, 8):
            got = mgr.restore(f"step:{step}")
            want = progressive_state(step)
            assert torch.equal(got["stack0"], want["stack0"]) and torch.equal(got["moments"], want["moments"])
    with CheckpointManager(root) as again:  # a fresh open rebuilds its tables from the rewritten manifests
        assert again.verify() == {f"step_{s:09d}": [] for s in (6, 7, 8)}


def flip_tensor_bit(pack, tensor_id: str) -> None:
    raw = bytearray(pack.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    begin = json.loads(raw[8 : 8 + header_len])[tensor_id]["data_offsets"][0]
    raw[8 + header_len + begin] ^= 1
    pack.write_bytes(bytes(raw))


def test_a_pack_whose_live_tensor_is_damaged_is_left_for_verify_to_report(tmp_path):
    root = tmp_path / "ck"
    with CheckpointManager(root) as mgr:
        mgr.save(progressive_state(1), step=1)
        mgr.save(progressive_state(2), step=2)
    stack0 = json.loads((root / "step_000000001" / "manifest.json").read_text())["tensors"]["stack0"]
    pack = root / "packs" / stack0["pack"]
    flip_tensor_bit(pack, stack0["id"])
    with CheckpointManager(root) as mgr, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mgr.gc(keep_last=1)
        assert pack.exists(), "a pack that does not verify must not be rewritten or deleted"
        assert any("did not verify, so it was not repacked" in str(w.message) for w in caught)
        assert mgr.verify()["step_000000002"], "verify still names the damage"


def test_gc_dry_run_predicts_the_bytes_a_real_gc_frees(tmp_path):
    root = tmp_path / "ck"
    with CheckpointManager(root) as mgr:
        for step in (1, 2, 3):
            mgr.save({"w": torch.full((4096,), float(step))}, step=step)
        planned = mgr.gc(keep_last=1, dry_run=True)
        done = mgr.gc(keep_last=1)
    assert planned["deleted"] == done["deleted"] == ["step_000000001", "step_000000002"]
    assert planned["freed_bytes"] > 2 * 4096 * 4
    assert planned["freed_bytes"] <= done["freed_bytes"] <= planned["freed_bytes"] + 1024  # + the shorter index.json


@pytest.mark.parametrize("keep", [1, 2])
def test_physical_bytes_stay_near_the_live_checkpoints_under_retention(tmp_path, keep):
    root = tmp_path / "ck"
    with CheckpointManager(root, RetentionPolicy((KeepLast(keep),))) as mgr:
        for step in range(1, 12):
            mgr.save(progressive_state(step), step=step)
        unique = {}
        for info in mgr.list():
            manifest = json.loads((Path(info.path) / "manifest.json").read_text())
            unique.update({t["id"]: t["nbytes"] for t in manifest["tensors"].values()})
    assert tensor_bytes(root) <= sum(unique.values()) * 1.1 + 8192 * keep


def test_an_interrupted_repack_loses_nothing_and_the_next_pass_finishes_it_without_duplicates(tmp_path, monkeypatch):
    import errno

    root = tmp_path / "ck"
    calls = []

    with CheckpointManager(root, RetentionPolicy((KeepLast(3),))) as mgr:
        real = mgr.store.backend.replace

        def full_disk_on_second_manifest(key, data):  # the disk fills while repack rewrites manifests
            if key.endswith("manifest.json"):
                calls.append(key)
                if len(calls) == 2:
                    raise OSError(errno.ENOSPC, "No space left on device")
            real(key, data)

        for step in (1, 2, 3):
            mgr.save(progressive_state(step), step=step)
        monkeypatch.setattr(mgr.store.backend, "replace", full_disk_on_second_manifest)
        with pytest.warns(UserWarning, match="retention could not finish"):
            mgr.save(progressive_state(4), step=4)  # deletes step 1; its pack's stack0 moves, then the disk fills
        monkeypatch.setattr(mgr.store.backend, "replace", real)
    stack0_packs = {json.loads((d / "manifest.json").read_text())["tensors"]["stack0"]["pack"] for d in root.glob("step_*")}
    assert len(stack0_packs) == 2, "the repack stopped half way: some manifests name the new pack, some the old"
    with CheckpointManager(root) as mgr:
        assert mgr.verify() == {f"step_{s:09d}": [] for s in (2, 3, 4)}
        for step in (2, 3, 4):
            assert torch.equal(mgr.restore(f"step:{step}")["moments"], progressive_state(step)["moments"])
        mgr.gc()
    stack0_packs = {json.loads((d / "manifest.json").read_text())["tensors"]["stack0"]["pack"] for d in root.glob("step_*")}
    assert len(stack0_packs) == 1 and len(list((root / "packs").iterdir())) == 4, "one copy of stack0, one pack per save"
