"""index.json is derived: damage to it is never an integrity failure, and reopening rebuilds it."""

from __future__ import annotations

import json
import os

import pytest
import torch
from faultkit import flip_bit, manifest, truncate

from waypoint.checkpoint import CheckpointManager
from waypoint.checkpoint import manifest as mf

NAMES = ["step_000000001", "step_000000002", "step_000000003"]


@pytest.fixture
def three(tmp_path):
    root = tmp_path / "ck"
    with CheckpointManager(root) as mgr:
        for s in (1, 2, 3):
            mgr.save({"w": torch.full((8,), float(s)), "step": s}, step=s, metrics={"loss": 1.0 / s})
    return root


def index_names(root):
    rows = mf.parse_index((root / "index.json").read_bytes())
    return None if rows is None else sorted(r["name"] for r in rows)


GARBLE = {
    "deleted": lambda p: p.unlink(),
    "emptied": lambda p: truncate(p, 0),
    "truncated": lambda p: truncate(p, p.stat().st_size // 2),
    "bit flipped into invalid JSON": lambda p: flip_bit(p, 0, 0),  # '{' -> 'z'
    "random bytes": lambda p: p.write_bytes(os.urandom(300)),
    "valid JSON of another shape": lambda p: p.write_text('{"checkpoints": 5}'),
    "lists a checkpoint that does not exist": lambda p: p.write_text(
        json.dumps({"format": "waypoint-index-1", "checkpoints": [{"name": "step_000000099", "step": 99}]})
    ),
}


@pytest.mark.parametrize("kind", list(GARBLE))
def test_damaged_index_is_not_an_integrity_failure(three, kind):
    GARBLE[kind](three / "index.json")
    with CheckpointManager(three, read_only=True) as mgr:
        assert mgr.verify() == {n: [] for n in NAMES}
        assert [i.name for i in mgr.list()] == NAMES
        assert mgr.restore("latest")["step"] == 3


@pytest.mark.filterwarnings("ignore:.*index.json was damaged")
@pytest.mark.parametrize("kind", list(GARBLE))
def test_reopening_rebuilds_a_deleted_or_garbled_index_with_every_checkpoint(three, kind):
    GARBLE[kind](three / "index.json")
    with CheckpointManager(three) as mgr:
        assert [i.name for i in mgr.list()] == NAMES
    assert index_names(three) == NAMES


def test_reopening_a_garbled_index_says_it_was_rebuilt(three):
    (three / "index.json").write_bytes(b"\x00garbage\xff")
    with pytest.warns(UserWarning, match="index.json was damaged; rebuilt it from 3 manifests"):
        CheckpointManager(three).close()


def test_reopening_repairs_an_index_whose_damage_still_parses(three):
    """A flipped digit (step 2 -> 3) keeps the index valid JSON with the right names; the rebuilt index
    must still agree with the manifests, which are the source of truth."""
    path = three / "index.json"
    raw = path.read_bytes()
    row = raw.index(b'"name": "step_000000002"')
    pos = raw.index(b'"step": 2', row) + len(b'"step": ')
    flip_bit(path, pos, 0)
    assert mf.parse_index(path.read_bytes()) is not None, "fixture: the damaged index must still parse"
    CheckpointManager(three).close()
    rows = {r["name"]: r for r in mf.parse_index(path.read_bytes())}
    for name in NAMES:
        m = manifest(three / name)
        assert (rows[name]["step"], rows[name]["digest"]) == (m["step"], m["digest"]), f"index row of {name} is wrong"
