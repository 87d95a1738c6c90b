"""Leftovers of interrupted saves (staging dirs, temp packs, trash, orphan packs) are never read as
checkpoints, and a writer's open removes them under the lock without following symlinks."""

from __future__ import annotations

import shutil

import pytest
import torch
from faultkit import debris, manifest, pack_files, referenced_packs

from waypoint.checkpoint import CheckpointManager

STAGING = ".staging-step_000000050-0123456789ab"


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "ck"
    with CheckpointManager(root) as mgr:
        mgr.save({"w": torch.full((16,), 1.0), "step": 1}, step=1)
        mgr.save({"w": torch.full((16,), 2.0), "step": 2}, step=2)
    return root


def plant_partial_staging(root):
    """What a kill between state.json and the end of manifest.json leaves: a half-written manifest."""
    staging = root / STAGING
    staging.mkdir()
    (staging / "state.json").write_text('{"step": 50}')
    raw = (root / "step_000000002" / "manifest.json").read_bytes().replace(b'"step": 2', b'"step": 50')
    (staging / "manifest.json").write_bytes(raw[: len(raw) // 2])
    return staging


def plant_complete_staging(root):
    """A staging dir whose files are all complete (killed between fsync and rename)."""
    staging = root / ".staging-step_000000003-abcdefabcdef"
    shutil.copytree(root / "step_000000002", staging)
    return staging


@pytest.mark.parametrize("plant", [plant_partial_staging, plant_complete_staging])
def test_staging_dirs_are_ignored_by_list_and_restore(store, plant):
    plant(store)
    with CheckpointManager(store, read_only=True) as reader:  # readers never clean up, and never look inside
        assert [i.name for i in reader.list()] == ["step_000000001", "step_000000002"]
        assert reader.restore("latest")["step"] == 2
        assert set(reader.verify()) == {"step_000000001", "step_000000002"}


@pytest.mark.parametrize("plant", [plant_partial_staging, plant_complete_staging])
def test_staging_dirs_are_removed_when_a_writer_opens_the_store(store, plant):
    staging = plant(store)
    CheckpointManager(store).close()
    assert not staging.exists()
    assert debris(store) == []


def test_temp_packs_trash_and_temp_index_files_are_removed_at_open(store):
    (store / "packs" / ".tmp-0123456789abcdef0123456789abcdef.safetensors").write_bytes(b"\x10" * 1000)
    trash = store / ".trash-step_000000001-0123456789ab"
    shutil.copytree(store / "step_000000001", trash)
    (store / ".tmp-index.json-0123456789ab").write_text('{"form')
    CheckpointManager(store).close()
    assert debris(store) == []
    with CheckpointManager(store, read_only=True) as reader:
        assert reader.verify() == {"step_000000001": [], "step_000000002": []}


def test_an_orphan_pack_is_removed_at_open_and_referenced_packs_are_kept(store):
    (orphan_src,) = set(manifest(store / "step_000000002")["packs"]) - set(manifest(store / "step_000000001")["packs"])
    orphan = store / "packs" / ("f" * 64 + ".safetensors")  # a pack committed by no manifest (killed before commit)
    shutil.copyfile(store / "packs" / orphan_src, orphan)
    CheckpointManager(store).close()
    assert not orphan.exists()
    assert pack_files(store) == referenced_packs(store)


def test_an_interrupted_tag_rewrite_leaves_no_temp_file_inside_the_checkpoint_after_reopening(store):
    """set_tags rewrites manifest.json through ``.tmp-manifest.json-<uuid>`` in the checkpoint dir; a
    kill before the rename leaves that file behind inside a committed checkpoint."""
    leftover = store / "step_000000002" / ".tmp-manifest.json-0123456789ab"
    leftover.write_bytes((store / "step_000000002" / "manifest.json").read_bytes()[:100])
    CheckpointManager(store).close()
    assert not leftover.exists(), "a temp file of an interrupted manifest rewrite survived the writer's open"


def test_leftovers_of_any_file_type_are_removed_at_open(store):
    """A temp name may be a directory (or anything else) after a crash or a stray tool: the writer's open
    removes it wherever temp files can appear, rather than failing to open the store."""
    for where in (store, store / "packs", store / "step_000000002"):
        junk = where / ".tmp-0123456789ab"
        junk.mkdir()
        (junk / "inner").write_text("x")
    CheckpointManager(store).close()
    assert debris(store) == []
    with CheckpointManager(store, read_only=True) as reader:
        assert reader.verify() == {"step_000000001": [], "step_000000002": []}


def test_a_staging_name_that_is_a_symlink_is_unlinked_without_touching_its_target(store, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    (store / ".staging-step_000000060-0123456789ab").symlink_to(victim, target_is_directory=True)
    (store / "packs" / ".tmp-feedfacefeedfacefeedfacefeedface.safetensors").symlink_to(victim / "precious.txt")
    CheckpointManager(store).close()
    assert (victim / "precious.txt").read_text() == "keep me"
    assert debris(store) == []
