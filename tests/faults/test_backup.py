"""`waypoint backup`: verified before it is copied, repaired at the destination by content, never into itself."""

from __future__ import annotations

import json

import pytest
from faultkit import flip_bit, own_packs

from waypoint.checkpoint import CheckpointManager
from waypoint.cli import main

OLD, NEW = "step_000000001", "step_000000002"


@pytest.fixture
def run(tmp_path, two_step_store):
    """A run directory whose checkpoints/ is the two-step store, with a metrics file."""
    root, s1, s2 = two_step_store
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    root.rename(run_dir / "checkpoints")
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    return run_dir


def backup(capsys, *args):
    code = main(["backup", *map(str, args), "--json"])
    captured = capsys.readouterr()
    backup.err = captured.err
    return code, (json.loads(captured.out) if captured.out.strip() else None)


def assert_copy_verifies(dest, names):
    with CheckpointManager(dest / "checkpoints", read_only=True) as mgr:
        assert mgr.verify() == {n: [] for n in names}


def test_backup_accepts_the_checkpoints_directory_itself(run, tmp_path, capsys):
    code, doc = backup(capsys, run / "checkpoints", tmp_path / "dest")
    assert code == 0 and doc["damaged"] == {}
    assert_copy_verifies(tmp_path / "dest", [OLD, NEW])
    assert (tmp_path / "dest" / "metrics.jsonl").exists()


def test_a_damaged_source_pack_is_reported_exit_1_and_not_copied(run, tmp_path, capsys):
    (pack,) = own_packs(run / "checkpoints", NEW)
    flip_bit(run / "checkpoints" / "packs" / pack, -3)  # tensor data: size and header still match
    code, doc = backup(capsys, run, tmp_path / "dest")
    assert code == 1
    assert f"checkpoints/packs/{pack}" in doc["damaged"] and f"checkpoints/{NEW}/manifest.json" in doc["damaged"]
    assert not (tmp_path / "dest" / "checkpoints" / "packs" / pack).exists()
    assert not (tmp_path / "dest" / "checkpoints" / NEW).exists()  # never a copied checkpoint with bad data
    assert_copy_verifies(tmp_path / "dest", [OLD])


def test_a_same_size_damaged_copy_at_the_destination_is_repaired(run, tmp_path, capsys):
    dest = tmp_path / "dest"
    assert backup(capsys, run, dest)[0] == 0
    (pack,) = own_packs(run / "checkpoints", NEW)
    flip_bit(dest / "checkpoints" / "packs" / pack, -3)
    with CheckpointManager(dest / "checkpoints", read_only=True) as mgr:
        assert mgr.verify()[NEW]
    code, doc = backup(capsys, run, dest)
    assert code == 0 and doc["repaired"] == [f"checkpoints/packs/{pack}"]
    assert_copy_verifies(dest, [OLD, NEW])
    code, doc = backup(capsys, run, dest)
    assert code == 0 and doc["copied"] == []


def test_a_good_copy_at_the_destination_is_kept_when_the_source_goes_bad(run, tmp_path, capsys):
    dest = tmp_path / "dest"
    assert backup(capsys, run, dest)[0] == 0
    (pack,) = own_packs(run / "checkpoints", NEW)
    flip_bit(run / "checkpoints" / "packs" / pack, -3)
    assert backup(capsys, run, dest)[0] == 1
    assert_copy_verifies(dest, [OLD, NEW])


@pytest.mark.parametrize("where", ["run/backup", "run/checkpoints/b", "run"])
def test_a_destination_inside_the_source_is_refused(run, tmp_path, capsys, where):
    code, _ = backup(capsys, run, tmp_path / where)
    assert code == 2
    err = backup.err
    assert "inside" in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "backup").exists() and not (run / "checkpoints" / "b").exists()


def test_backups_during_a_live_writer_report_no_damage_and_every_copy_verifies(tmp_path, capsys):
    import subprocess
    import sys

    from test_readers_during_a_live_writer import WRITER

    root = tmp_path / "run" / "checkpoints"
    with CheckpointManager(root) as mgr:
        mgr.save({"seed": __import__("torch").zeros(1)}, step=0)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), "8"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    rounds, reports = 0, []
    try:
        while writer.poll() is None:
            dest = tmp_path / "dest"
            code, doc = backup(capsys, tmp_path / "run", dest)
            reports.append((code, doc and doc["damaged"], backup.err[-300:]))
            with CheckpointManager(dest / "checkpoints", read_only=True) as copy:
                bad = {n: p for n, p in copy.verify().items() if p}
                assert not bad, (bad, doc)
            rounds += 1
    finally:
        writer.communicate(timeout=60)
    assert rounds >= 3
    assert [r for r in reports if r[:2] != (0, {})] == []
