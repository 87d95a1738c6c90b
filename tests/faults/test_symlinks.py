"""Symlinks planted in the store are refused, never followed: nothing outside the store is read as data.

Each planted link points at a byte-identical copy of the file it replaces, kept outside the store:
content checks alone would accept it, so a refusal proves the store did not follow the link.
"""

from __future__ import annotations

import os
import shutil
import warnings

import pytest
from faultkit import assert_state_equal, own_packs

from waypoint.checkpoint import CheckpointError, CheckpointManager

OLD, NEW = "step_000000001", "step_000000002"


def replace_with_link_to_copy(path, outside):
    """Move ``path``'s bytes to ``outside`` and leave a symlink to them in its place."""
    outside.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, outside)
    path.unlink()
    path.symlink_to(outside)


def plant_pack_link(root, outside):
    (pack,) = own_packs(root, NEW)
    replace_with_link_to_copy(root / "packs" / pack, outside / pack)


def plant_state_link(root, outside):
    replace_with_link_to_copy(root / NEW / "state.json", outside / "state.json")


def plant_manifest_link(root, outside):
    replace_with_link_to_copy(root / NEW / "manifest.json", outside / "manifest.json")


PLANTS = {"pack": plant_pack_link, "state.json": plant_state_link, "manifest.json": plant_manifest_link}


@pytest.mark.parametrize("what", list(PLANTS))
def test_a_symlinked_file_makes_its_checkpoint_fail_verify(two_step_store, tmp_path, what):
    root, _, _ = two_step_store
    PLANTS[what](root, tmp_path / "outside")
    with CheckpointManager(root, read_only=True) as mgr:
        report = mgr.verify()
    assert report[OLD] == []
    assert report[NEW], f"a symlinked {what} was followed and accepted"


@pytest.mark.parametrize("what", list(PLANTS))
def test_restore_refuses_a_checkpoint_with_a_symlinked_file(two_step_store, tmp_path, what):
    root, _, _ = two_step_store
    PLANTS[what](root, tmp_path / "outside")
    with CheckpointManager(root, read_only=True) as mgr:
        with pytest.raises(CheckpointError, match=NEW):
            mgr.restore("step:2")


def test_restore_latest_skips_a_checkpoint_with_a_symlinked_pack_with_a_warning(two_step_store, tmp_path):
    root, s1, _ = two_step_store
    PLANTS["pack"](root, tmp_path / "outside")
    with CheckpointManager(root) as mgr:
        with pytest.warns(UserWarning, match=NEW):
            state, info = mgr.restore_with_info("latest")
    assert info.name == OLD
    assert_state_equal(state, s1)


@pytest.mark.parametrize("what", ["state.json", "manifest.json"])
def test_a_symlinked_manifest_or_state_is_replaced_by_its_spare_copy_and_the_target_left_alone(two_step_store, tmp_path, what):
    root, _, s2 = two_step_store
    PLANTS[what](root, tmp_path / "outside")
    before = (tmp_path / "outside" / what).read_bytes()
    with CheckpointManager(root) as mgr:
        state, info = mgr.restore_with_info("latest")
    assert info.name == NEW and not (root / NEW / what).is_symlink()
    assert_state_equal(state, s2)
    assert (tmp_path / "outside" / what).read_bytes() == before


def test_a_symlink_to_a_foreign_file_in_place_of_a_pack_is_reported_as_a_symlink(two_step_store, tmp_path):
    root, _, _ = two_step_store
    (pack,) = own_packs(root, NEW)
    secret = tmp_path / "secret.txt"
    secret.write_text("not tensor data")
    (root / "packs" / pack).unlink()
    (root / "packs" / pack).symlink_to(secret)
    with CheckpointManager(root, read_only=True) as mgr:
        (problem,) = mgr.verify()[NEW]
    assert "symbolic link" in problem


def test_a_symlinked_checkpoint_directory_is_not_a_checkpoint(two_step_store, tmp_path):
    root, _, _ = two_step_store
    outside = tmp_path / "outside" / "step_000000009"
    shutil.copytree(root / NEW, outside)
    (root / "step_000000009").symlink_to(outside, target_is_directory=True)
    with CheckpointManager(root) as mgr:
        assert [i.name for i in mgr.list()] == [OLD, NEW]
        assert mgr.restore_with_info("latest")[1].name == NEW
    assert (outside / "manifest.json").exists(), "the writer's open touched the link's target"


def test_garbage_collection_unlinks_a_planted_pack_symlink_not_its_target(two_step_store, tmp_path):
    root, _, _ = two_step_store
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(b"precious")
    link = root / "packs" / ("e" * 64 + ".safetensors")  # named like a pack that no manifest references
    link.symlink_to(victim)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CheckpointManager(root).close()
    assert not os.path.lexists(link)
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize("read_only", [False, True])
def test_a_symlinked_packs_directory_is_refused_and_its_target_left_alone(two_step_store, tmp_path, read_only):
    """packs/ pointing elsewhere would make garbage collection delete, and restore read, files outside
    the store: opening refuses it with one sentence."""
    root, _, _ = two_step_store
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(root / "packs", elsewhere)
    (elsewhere / ("d" * 64 + ".safetensors")).write_bytes(b"someone else's file, named like a pack")
    before = sorted(p.name for p in elsewhere.iterdir())
    shutil.rmtree(root / "packs")
    (root / "packs").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(CheckpointError, match="symbolic link"):
        CheckpointManager(root, read_only=read_only)
    assert sorted(p.name for p in elsewhere.iterdir()) == before


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_export_never_writes_through_a_planted_temporary_file_symlink(two_step_store, tmp_path, fmt):
    from waypoint.cli import main

    root, _, s2 = two_step_store
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "out" / f"model.{fmt}"
    out.parent.mkdir()
    for name in (f".tmp-{out.name}", f".tmp-{out.name}.tmp"):  # the old fixed temporary name, and a variant
        os.symlink(victim, out.parent / name)
    assert main(["export", f"{root}@latest", str(out), "--format", fmt]) == 0
    assert victim.read_text() == "precious"
    assert not out.is_symlink() and out.stat().st_size > 0
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, f".tmp-{out.name}", f".tmp-{out.name}.tmp"])


def test_export_onto_a_planted_output_symlink_is_refused_and_its_target_untouched(two_step_store, tmp_path, capsys):
    from waypoint.cli import main

    root, _, _ = two_step_store
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "model.pt"
    os.symlink(victim, out)
    os.unlink(victim)  # a dangling link: exists() says False, yet writing through it would create the target
    assert main(["export", f"{root}@latest", str(out), "--format", "pt"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert not victim.exists()
