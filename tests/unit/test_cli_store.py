"""`waypoint ls/verify/du` on a store written through the API."""

import json
import subprocess
import sys

import pytest
import torch

from waypoint.checkpoint import CheckpointManager
from waypoint.cli import main


@pytest.fixture
def run_dir(tmp_path):
    frozen = torch.randn(200, 200)
    with CheckpointManager(tmp_path / "run" / "checkpoints", monitor="acc", mode="max") as mgr:
        for step, acc in ((10, 0.5), (20, 0.8), (30, 0.6)):
            mgr.save({"frozen": frozen, "live": torch.randn(50, 50), "step": step}, step, epoch=step // 10, metrics={"acc": acc})
    return tmp_path / "run"


def test_ls_json_lists_each_checkpoint_with_documented_fields(run_dir, capsys):
    assert main(["ls", str(run_dir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["step"] for r in rows] == [10, 20, 30]
    assert set(rows[0]) >= {"name", "step", "epoch", "tags", "metrics", "digest", "logical_bytes", "created_at", "valid"}
    assert "best" in rows[1]["tags"] and "latest" in rows[2]["tags"]


def test_ls_accepts_the_checkpoints_directory_itself(run_dir, capsys):
    assert main(["ls", str(run_dir / "checkpoints")]) == 0
    assert "step_000000030" in capsys.readouterr().out


def test_verify_exits_zero_when_everything_verifies(run_dir, capsys):
    assert main(["verify", str(run_dir)]) == 0
    assert "3 of 3 checkpoints verify" in capsys.readouterr().out


def test_verify_exits_one_naming_the_damaged_checkpoint(run_dir, capsys):
    state = run_dir / "checkpoints" / "step_000000020" / "state.json"
    state.write_text(state.read_text().replace("20", "21"))
    assert main(["verify", str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED  step_000000020" in out and "ok       step_000000030" in out


def test_du_shows_deduplication(run_dir, capsys):
    assert main(["du", str(run_dir), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["checkpoints"] == 3
    assert doc["physical_bytes"] < 0.6 * doc["logical_bytes"]


def test_missing_run_dir_is_a_usage_error_in_one_sentence(tmp_path, capsys):
    assert main(["ls", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err


def test_console_script_runs_as_module(run_dir):
    proc = subprocess.run([sys.executable, "-m", "waypoint", "du", str(run_dir)], capture_output=True, text=True)
    assert proc.returncode == 0 and "3 checkpoints" in proc.stdout


def test_import_of_a_file_recording_a_negative_step_is_refused_and_writes_no_checkpoint(tmp_path, capsys):
    src = tmp_path / "neg.pth"
    torch.save({"step": -5, "w": torch.ones(1)}, src)
    assert main(["import", str(src), str(tmp_path / "run")]) == 2  # unusable input
    err = capsys.readouterr().err
    assert "cannot be negative" in err and "--step" in err and err.count("\n") == 1
    assert not list((tmp_path / "run" / "checkpoints").glob("step_*"))


def test_import_with_a_negative_step_option_is_a_usage_error(tmp_path, capsys):
    src = tmp_path / "ok.pth"
    torch.save({"w": torch.ones(1)}, src)
    assert main(["import", str(src), str(tmp_path / "run"), "--step", "-1"]) == 2
    assert "negative" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_show_on_an_empty_store_is_one_sentence(tmp_path, capsys):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    assert main(["show", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("waypoint: no checkpoint") and err.count("\n") == 1


def test_an_imported_checkpoint_is_never_latest_unless_named(tmp_path, capsys):
    run = tmp_path / "run"
    with CheckpointManager(run / "checkpoints") as mgr:
        mgr.save({"own": torch.ones(2), "step": 10}, step=10)
    torch.save({"global_step": 999, "state_dict": {"w": torch.zeros(3)}}, tmp_path / "foreign.ckpt")
    assert main(["import", str(tmp_path / "foreign.ckpt"), str(run), "--force"]) == 0
    with CheckpointManager(run / "checkpoints", read_only=True) as mgr:
        assert mgr.latest().step == 10
        assert mgr.restore("latest")["step"] == 10
        assert torch.equal(mgr.restore("tag:imported")["state_dict"]["w"], torch.zeros(3))


def test_import_into_a_run_with_training_checkpoints_needs_force_and_changes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    with CheckpointManager(run / "checkpoints") as mgr:
        mgr.save({"own": torch.ones(2)}, step=10)
    before = sorted(p.name for p in (run / "checkpoints").rglob("*"))
    torch.save({"w": torch.zeros(3)}, tmp_path / "foreign.pth")
    assert main(["import", str(tmp_path / "foreign.pth"), str(run)]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and err.count("\n") == 1
    assert sorted(p.name for p in (run / "checkpoints").rglob("*")) == before


def test_latest_of_a_run_holding_only_an_import_says_how_to_name_it(tmp_path, capsys):
    torch.save({"w": torch.zeros(3)}, tmp_path / "foreign.pth")
    assert main(["import", str(tmp_path / "foreign.pth"), str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["show", str(tmp_path / "run")]) == 2
    assert "tag:imported" in capsys.readouterr().err
    assert main(["show", f"{tmp_path / 'run'}@tag:imported"]) == 0
