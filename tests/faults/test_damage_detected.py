"""A flipped bit or a truncation in any stored file is found by verify and skipped by restore("latest").

The ``two_step_store`` fixture (conftest.py) holds step 1 {shared, own} and step 2 {shared, own'}:
``shared`` is deduplicated into step 1's pack, so step 2's own pack holds only its new tensor and
damage to it belongs to step 2 alone, while damage to step 1's pack hits both checkpoints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from faultkit import assert_state_equal, flip_bit, own_packs, pack_data_offset, pack_of, tensor_id, truncate

from waypoint.checkpoint import CheckpointError, CheckpointManager, CheckpointStore, NoCheckpointError

OLD, NEW = "step_000000001", "step_000000002"


def only_pack_of(root: Path, name: str) -> Path:
    (pack,) = own_packs(root, name)
    return root / "packs" / pack


def _data_start(pack: Path) -> int:
    return 8 + int.from_bytes(pack.read_bytes()[:8], "little")


def _in_manifest(root: Path, name: str, needle: str, skip: int = 0) -> int:
    raw = (root / name / "manifest.json").read_bytes()
    pos = raw.index(needle.encode())
    return pos + len(needle) + skip


# Each damage hits only files that belong to checkpoint ``name`` (its own pack, its manifest, its state).
DAMAGE = {
    "pack data: one bit flipped": lambda root, name: flip_bit(
        only_pack_of(root, name), pack_data_offset(only_pack_of(root, name), tensor_id(root, name, "own")) + 101, 3
    ),
    "pack data: last byte flipped": lambda root, name: flip_bit(only_pack_of(root, name), -1, 7),
    "pack header: bit flipped in its JSON": lambda root, name: flip_bit(only_pack_of(root, name), 20, 1),
    "pack header: bit flipped in its padding": lambda root, name: flip_bit(
        only_pack_of(root, name), _data_start(only_pack_of(root, name)) - 1, 0
    ),
    "pack header: length prefix flipped": lambda root, name: flip_bit(only_pack_of(root, name), 0, 4),
    "pack: truncated by one byte": lambda root, name: truncate(only_pack_of(root, name), -1),
    "pack: truncated to its header": lambda root, name: truncate(only_pack_of(root, name), _data_start(only_pack_of(root, name))),
    "pack: emptied": lambda root, name: truncate(only_pack_of(root, name), 0),
    "pack: deleted": lambda root, name: only_pack_of(root, name).unlink(),
    "manifest.json: bit flipped in the digest": lambda root, name: flip_bit(
        root / name / "manifest.json", _in_manifest(root, name, '"digest": "', 10), 0
    ),
    "manifest.json: bit flipped in the step": lambda root, name: flip_bit(
        root / name / "manifest.json", _in_manifest(root, name, '"step": '), 0
    ),
    "manifest.json: truncated": lambda root, name: truncate(root / name / "manifest.json", -20),
    "manifest.json: emptied": lambda root, name: truncate(root / name / "manifest.json", 0),
    "manifest.json: deleted": lambda root, name: (root / name / "manifest.json").unlink(),
    "state.json: one bit flipped": lambda root, name: flip_bit(
        root / name / "state.json", (root / name / "state.json").stat().st_size // 2, 2
    ),
    "state.json: truncated by one byte": lambda root, name: truncate(root / name / "state.json", -1),
    "state.json: deleted": lambda root, name: (root / name / "state.json").unlink(),
    # Not a regular file where one belongs: refused, never read (a FIFO would block a naive open forever).
    "pack: replaced by a directory": lambda root, name: _replace(only_pack_of(root, name), os.mkdir),
    "pack: replaced by a FIFO": lambda root, name: _replace(only_pack_of(root, name), os.mkfifo),
    "manifest.json: replaced by a FIFO": lambda root, name: _replace(root / name / "manifest.json", os.mkfifo),
    "state.json: replaced by a FIFO": lambda root, name: _replace(root / name / "state.json", os.mkfifo),
}


def _replace(path: Path, make) -> None:
    path.unlink()
    make(path)


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_verify_names_exactly_the_checkpoint_whose_file_was_damaged(two_step_store, kind):
    root, _, _ = two_step_store
    DAMAGE[kind](root, NEW)
    with CheckpointManager(root, read_only=True) as mgr:
        report = mgr.verify()
    assert report[OLD] == []
    assert report[NEW], f"{kind} in {NEW} went unnoticed"
    assert all(isinstance(p, str) and p for p in report[NEW])


#: damage a writable open repairs from the checkpoint's spare copies (manifest.json.copy, state.json.copy)
REPAIRABLE = [k for k in DAMAGE if k.startswith(("manifest.json", "state.json"))]


@pytest.mark.parametrize("kind", [k for k in DAMAGE if k not in REPAIRABLE])
def test_restore_latest_falls_back_to_the_newest_intact_checkpoint_with_a_warning(two_step_store, kind):
    root, s1, _ = two_step_store
    DAMAGE[kind](root, NEW)
    with CheckpointManager(root) as mgr:  # what an auto-resuming run opens
        with pytest.warns(UserWarning, match=NEW):
            state, info = mgr.restore_with_info("latest")
    assert info.name == OLD
    assert_state_equal(state, s1)


@pytest.mark.parametrize("kind", REPAIRABLE)
def test_restore_latest_repairs_a_damaged_manifest_or_state_from_its_spare_copy(two_step_store, kind, caplog):
    root, _, s2 = two_step_store
    DAMAGE[kind](root, NEW)
    with CheckpointManager(root) as mgr, caplog.at_level("INFO", logger="waypoint.checkpoint.manager"):
        state, info = mgr.restore_with_info("latest")
        assert mgr.verify() == {OLD: [], NEW: []}
    assert info.name == NEW and f"repaired {NEW}" in caplog.text
    assert_state_equal(state, s2)


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_restoring_the_damaged_checkpoint_by_name_is_refused(two_step_store, kind):
    root, _, _ = two_step_store
    DAMAGE[kind](root, NEW)
    with CheckpointManager(root, read_only=True) as mgr:
        with pytest.raises(CheckpointError, match=NEW):
            mgr.restore("step:2")


# ----------------------------------------------------------------------------- shared (deduplicated) packs
SHARED_DAMAGE = {
    "data of the shared tensor flipped": lambda root: flip_bit(
        pack_of(root, OLD, "shared"), pack_data_offset(pack_of(root, OLD, "shared"), tensor_id(root, OLD, "shared")) + 7, 5
    ),
    "shared pack header flipped": lambda root: flip_bit(pack_of(root, OLD, "shared"), 30, 2),
    "shared pack truncated": lambda root: truncate(pack_of(root, OLD, "shared"), -1),
}


@pytest.mark.parametrize("kind", list(SHARED_DAMAGE))
def test_damage_in_a_shared_pack_is_reported_for_every_checkpoint_that_uses_it(two_step_store, kind):
    root, _, _ = two_step_store
    assert pack_of(root, OLD, "shared") == pack_of(root, NEW, "shared"), "fixture: 'shared' must be deduplicated"
    SHARED_DAMAGE[kind](root)
    with CheckpointManager(root, read_only=True) as mgr:
        report = mgr.verify()
    assert report[OLD] and report[NEW], report


def test_restore_latest_with_every_checkpoint_damaged_is_one_clear_error_after_warning_for_each(two_step_store):
    root, _, _ = two_step_store
    SHARED_DAMAGE["data of the shared tensor flipped"](root)
    with CheckpointManager(root) as mgr:
        with pytest.warns(UserWarning) as caught, pytest.raises(NoCheckpointError, match="verifies"):
            mgr.restore("latest")
    messages = " ".join(str(w.message) for w in caught)
    assert OLD in messages and NEW in messages


# ----------------------------------------------------------------------------- every bit position
def test_every_single_bit_flip_in_a_manifest_is_detected_unless_it_means_the_same(two_step_store):
    root, _, _ = two_step_store
    path = root / NEW / "manifest.json"
    original = path.read_bytes()
    meaning = json.loads(original)
    store = CheckpointStore(root, writable=False)
    missed = []
    try:
        for pos in range(len(original)):
            damaged = bytearray(original)
            damaged[pos] ^= 1 << (pos % 8)
            path.write_bytes(bytes(damaged))
            if not store.verify(NEW):
                try:
                    same = json.loads(bytes(damaged)) == meaning  # e.g. 1e-05 -> 1E-05
                except ValueError:
                    same = False
                if not same:
                    missed.append(pos)
    finally:
        path.write_bytes(original)
        store.close()
    assert missed == [], f"undetected flips at byte offsets {missed[:10]}"


def test_every_single_bit_flip_in_a_pack_header_is_detected(two_step_store):
    root, _, _ = two_step_store
    pack = only_pack_of(root, NEW)
    original = pack.read_bytes()
    store = CheckpointStore(root, writable=False)
    missed = []
    try:
        for pos in range(_data_start(pack)):
            damaged = bytearray(original)
            damaged[pos] ^= 1 << (pos % 8)
            pack.write_bytes(bytes(damaged))
            if not store.verify(NEW):
                missed.append(pos)
    finally:
        pack.write_bytes(original)
        store.close()
    assert missed == [], f"undetected flips at byte offsets {missed[:10]}"


# ----------------------------------------------------------------------------- the CLI
def test_cli_verify_exits_1_naming_the_damaged_checkpoint_and_0_when_intact(two_step_store):
    root, _, _ = two_step_store
    ok = subprocess.run([sys.executable, "-m", "waypoint", "verify", str(root)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    DAMAGE["pack data: one bit flipped"](root, NEW)
    bad = subprocess.run([sys.executable, "-m", "waypoint", "verify", str(root)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert NEW in bad.stdout and f"DAMAGED  {OLD}" not in bad.stdout


# ----------------------------------------------------------------------------- gc must not trust damage
def test_opening_a_store_never_collects_the_packs_of_a_checkpoint_whose_manifest_is_damaged(two_step_store):
    """A bit flip inside a pack name in the manifest's ``packs`` table leaves valid JSON that fails its
    checksum; the writable open's garbage collection must not take the damaged manifest's word for
    which packs are unused (the tensor bytes are intact and recoverable)."""
    root, _, _ = two_step_store
    pack = only_pack_of(root, NEW)
    raw = (root / NEW / "manifest.json").read_bytes()
    in_table = raw.index(b'"packs": {')
    pos = raw.index(pack.name.encode(), in_table) + 3  # a hex digit of the pack's name, as a key of "packs"
    flip_bit(root / NEW / "manifest.json", pos, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        CheckpointManager(root).close()
    assert pack.exists(), "the writable open deleted the pack of a checkpoint whose manifest is merely damaged"


# ----------------------------------------------------------------------------- what restore says, and when
def test_tag_latest_falls_back_like_latest(two_step_store):
    root, s1, _ = two_step_store
    DAMAGE["pack data: one bit flipped"](root, NEW)
    with CheckpointManager(root) as mgr:
        with pytest.warns(UserWarning, match=NEW):
            state, info = mgr.restore_with_info("tag:latest")
    assert info.name == OLD
    assert_state_equal(state, s1)


def test_restore_latest_warns_only_about_checkpoints_it_skips(two_step_store):
    """An older checkpoint with a damaged manifest is verify's business; resuming from the intact newest
    one skips nothing and says nothing."""
    root, _, s2 = two_step_store
    DAMAGE["manifest.json: truncated"](root, OLD)
    with CheckpointManager(root, read_only=True) as mgr:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            state, info = mgr.restore_with_info("latest")
        assert mgr.verify()[OLD], "the damaged older checkpoint must still be reported by verify"
    assert info.name == NEW
    assert_state_equal(state, s2)


def test_a_tensor_written_again_into_a_new_pack_is_verified_in_each_pack(two_step_store):
    """Once a damaged tensor is found, the next save writes it again into a new pack. verify must check
    every pack that holds a copy: an intact copy in one pack says nothing about the copy in another."""
    root, _, s2 = two_step_store
    shared_pack = pack_of(root, OLD, "shared")
    original = shared_pack.read_bytes()
    SHARED_DAMAGE["data of the shared tensor flipped"](root)
    with CheckpointManager(root) as mgr:
        assert mgr.verify()[OLD], "fixture: the damage must be found"
        mgr.save(dict(s2, step=3), step=3)  # 'shared' is written again, into step 3's own pack
    third = "step_000000003"
    assert pack_of(root, third, "shared") != shared_pack, "fixture: the damaged tensor must be written again"
    shared_pack.write_bytes(original)  # the old copy is intact again; now damage the new one
    new_copy = pack_of(root, third, "shared")
    flip_bit(new_copy, pack_data_offset(new_copy, tensor_id(root, third, "shared")) + 7, 5)
    with CheckpointManager(root, read_only=True) as mgr:
        report = mgr.verify()
    assert report[OLD] == [] and report[NEW] == []
    assert report[third], "the damaged second copy went unnoticed because the first copy verified"
