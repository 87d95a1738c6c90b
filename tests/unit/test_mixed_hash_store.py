"""A store written with SHA-256 content ids (format 1) stays readable, verifiable and resumable once the
code writes BLAKE3 ids (format 2), and damage in either kind of checkpoint is found.

The format-1 store is a fixture written by the format-1 code itself (tests/fixtures/make_sha256_store.py).
"""

import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch

from waypoint.checkpoint import CheckpointError, CheckpointManager, KeepLast, RetentionPolicy
from waypoint.checkpoint import manifest as mf

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_sha256_store import fixture_state  # noqa: E402

OLD = ("step_000000001", "step_000000002")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the format-1 store (step 1 and 2, SHA-256 ids)."""
    dst = tmp_path / "ck"
    shutil.copytree(FIXTURES / "sha256_store", dst)
    return dst


def manifest(root: Path, name: str) -> dict:
    return json.loads((root / name / "manifest.json").read_bytes())


def assert_same(got, want) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        if isinstance(v, dict):
            assert_same(got[k], v)
        elif isinstance(v, torch.Tensor):
            assert got[k].dtype == v.dtype and torch.equal(got[k].view(torch.uint8), v.view(torch.uint8)), k
        else:
            assert got[k] == v, k


def flip_tensor_bit(root: Path, name: str, key: str) -> None:
    t = manifest(root, name)["tensors"][key]
    pack = root / "packs" / t["pack"]
    raw = bytearray(pack.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    raw[8 + header_len + json.loads(raw[8 : 8 + header_len])[t["id"]]["data_offsets"][0]] ^= 1
    pack.write_bytes(bytes(raw))


def test_the_fixture_is_format_1_with_sha256_ids(root):
    for name in OLD:
        m = manifest(root, name)
        assert m["format"] == "waypoint-checkpoint-1" and "content_hash" not in m
        assert all(len(t["id"]) == 64 and ":" not in t["id"] for t in m["tensors"].values())


def test_a_sha256_store_verifies_and_restores_with_the_blake3_code(root):
    with CheckpointManager(root, read_only=True) as mgr:
        assert mgr.verify() == {name: [] for name in OLD}
        for step in (1, 2):
            assert_same(mgr.restore(f"step:{step}"), fixture_state(step))


def test_a_save_into_a_sha256_store_writes_blake3_ids_and_dedups_only_against_blake3(root):
    with CheckpointManager(root) as mgr:
        mgr.restore("latest")  # resume from the SHA-256 checkpoint...
        info = mgr.save(fixture_state(3), step=3)  # ...and save: "frozen" is unchanged since step 1
        m = manifest(root, info.name)
        assert m["format"] == mf.FORMAT and m["content_hash"] == "blake3"
        assert all(t["id"].startswith("b3:") for t in m["tensors"].values())
        old_packs = set(manifest(root, OLD[1])["packs"])
        assert m["tensors"]["frozen/w"]["pack"] not in old_packs, "a SHA-256 id can never prove a BLAKE3 id equal"
        again = mgr.save(fixture_state(4), step=4)
        assert manifest(root, again.name)["tensors"]["frozen/w"]["id"] == m["tensors"]["frozen/w"]["id"]
        assert manifest(root, again.name)["tensors"]["frozen/w"]["pack"] == m["tensors"]["frozen/w"]["pack"]
        assert mgr.verify() == {name: [] for name in (*OLD, info.name, again.name)}
    with CheckpointManager(root, read_only=True) as mgr:  # a fresh process resumes from any of them
        for step in (1, 2, 3, 4):
            assert_same(mgr.restore(f"step:{step}"), fixture_state(step))


@pytest.mark.parametrize("damaged", ["sha256", "blake3"])
def test_damage_in_either_kind_of_checkpoint_is_detected(root, damaged):
    with CheckpointManager(root) as mgr:
        new = mgr.save(fixture_state(3), step=3).name
    victim = OLD[1] if damaged == "sha256" else new
    flip_tensor_bit(root, victim, "live")
    with CheckpointManager(root) as mgr:
        report = mgr.verify()
        assert report[victim] and "does not match its " + {"sha256": "SHA-256", "blake3": "BLAKE3"}[damaged] in report[victim][0]
        assert all(not problems for name, problems in report.items() if name != victim)
        with pytest.raises(CheckpointError, match=f"checkpoint {victim} is damaged"):
            mgr.restore(victim)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            _state, info = mgr.restore_with_info("latest")  # step 3, or step 2 when step 3 is the damaged one
        assert info.name == (new if damaged == "sha256" else OLD[1])


def test_a_manifest_whose_ids_are_not_of_its_named_hash_is_refused(root):
    with CheckpointManager(root) as mgr:
        new = mgr.save(fixture_state(3), step=3).name
    m = manifest(root, new)
    m["tensors"]["live"]["id"] = manifest(root, OLD[1])["tensors"]["live"]["id"]  # a SHA-256 id in a BLAKE3 manifest
    (root / new / "manifest.json").write_bytes(mf.seal(m))
    with CheckpointManager(root, read_only=True) as mgr:
        info = {i.name: i for i in mgr.list()}[new]
        assert not info.valid and "not blake3 ids" in info.problem


def test_repacking_a_mixed_store_keeps_each_checkpoints_ids_and_hash(root):
    before = manifest(root, OLD[1])["tensors"]
    with CheckpointManager(root, RetentionPolicy((KeepLast(2),))) as mgr:
        mgr.save(fixture_state(3), step=3)  # retention deletes step 1; its pack is mostly dead: repacked
        assert [i.step for i in mgr.list()] == [2, 3]
        after = manifest(root, OLD[1])["tensors"]
        assert after["frozen/w"]["pack"] != before["frozen/w"]["pack"], "step 1's pack was not repacked"
        assert {k: t["id"] for k, t in after.items()} == {k: t["id"] for k, t in before.items()}
        assert mgr.verify() == {OLD[1]: [], "step_000000003": []}
        assert manifest(root, OLD[1])["format"] == "waypoint-checkpoint-1"
    with CheckpointManager(root, read_only=True) as mgr:
        assert mgr.verify() == {OLD[1]: [], "step_000000003": []}
        assert_same(mgr.restore("step:2"), fixture_state(2))
