"""`waypoint rm`: a whole run (asking first, never while written), or one checkpoint (pinned, best, latest need --force)."""

import io
import json

import pytest
import torch

from waypoint.checkpoint import CheckpointManager, KeepLast, RetentionPolicy
from waypoint.cli import main


@pytest.fixture
def run_dir(tmp_path):
    """Four checkpoints at steps 10..40; step 20 is best (acc 0.9), step 40 is latest; each step changes a layer."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 4))
    with CheckpointManager(tmp_path / "run" / "checkpoints", RetentionPolicy((KeepLast(10),)), monitor="acc") as mgr:
        for i, acc in enumerate((0.1, 0.9, 0.4, 0.5), start=1):
            with torch.no_grad():
                net[1].weight.mul_(1.1)
            mgr.save({"net": net.state_dict(), "step": 10 * i}, 10 * i, epoch=i, metrics={"acc": acc})
    return tmp_path / "run"


def names(run_dir):
    with CheckpointManager(run_dir / "checkpoints", read_only=True) as mgr:
        return [i.name for i in mgr.list()]


def test_rm_deletes_one_checkpoint_and_frees_its_own_tensors(run_dir, capsys):
    capsys.readouterr()
    assert main(["rm", f"{run_dir}@step:30", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["deleted"] == "step_000000030" and doc["freed_bytes"] > 0 and doc["packs_removed"]
    assert names(run_dir) == ["step_000000010", "step_000000020", "step_000000040"]
    assert main(["verify", str(run_dir)]) == 0


@pytest.mark.parametrize("selector, why", [("best", "best"), ("latest", "latest"), ("step:10", "pinned")])
def test_rm_refuses_pinned_best_and_latest_without_force(run_dir, capsys, selector, why):
    assert main(["pin", f"{run_dir}@step:10"]) == 0
    capsys.readouterr()
    assert main(["rm", f"{run_dir}@{selector}"]) == 2  # refused as asked: a usage error
    err = capsys.readouterr().err
    assert why in err and "--force" in err
    assert len(names(run_dir)) == 4


def test_rm_force_deletes_the_best(run_dir, capsys):
    assert main(["rm", f"{run_dir}@best", "--force"]) == 0
    assert "step_000000020" not in names(run_dir)
    assert main(["verify", str(run_dir)]) == 0


def test_rm_dry_run_deletes_nothing(run_dir, capsys):
    capsys.readouterr()
    assert main(["rm", f"{run_dir}@step:30", "--dry-run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dry_run"] and doc["freed_bytes"] > 0 and len(names(run_dir)) == 4


def test_rm_unknown_ref_is_a_usage_error(run_dir, tmp_path):
    assert main(["rm", f"{run_dir}@step:999"]) == 2
    assert main(["rm", str(tmp_path / "nowhere")]) == 2


def test_rm_of_a_run_dir_deletes_the_whole_run_after_asking(run_dir, monkeypatch, capsys):
    (run_dir / "train.log").write_text("a log\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert main(["rm", str(run_dir)]) == 0
    assert "nothing deleted" in capsys.readouterr().out and len(names(run_dir)) == 4
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert main(["rm", str(run_dir)]) == 0
    assert "deleted" in capsys.readouterr().out and not run_dir.exists()


def test_rm_of_a_run_without_a_terminal_to_ask_needs_yes(run_dir, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["rm", str(run_dir)]) == 2
    assert "--yes" in capsys.readouterr().err and len(names(run_dir)) == 4
    assert main(["rm", str(run_dir), "--yes", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["checkpoints"] == 4 and doc["freed_bytes"] > 0 and not run_dir.exists()


def test_rm_of_a_run_that_a_writer_holds_is_refused(run_dir, capsys):
    with CheckpointManager(run_dir / "checkpoints"):  # a training process holds the run
        assert main(["rm", str(run_dir), "--yes"]) == 2
    assert "being written by pid" in capsys.readouterr().err and len(names(run_dir)) == 4


def test_rm_of_a_directory_that_is_not_a_run_deletes_nothing(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    assert main(["rm", str(tmp_path / "notes"), "--yes"]) == 2
    assert "not a run directory" in capsys.readouterr().err and (tmp_path / "notes").is_dir()
