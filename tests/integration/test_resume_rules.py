"""What the same command does with a run dir that already holds checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trainkit import committed, final_digest, run_train, waypoint

from waypoint.errors import EXIT_USAGE

RUN = ["model=universeg", "trainer.max_epochs=2", "checkpoint.every_n_steps=4", "checkpoint.keep_last=10"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished smoke run (16 steps, checkpoints every 4)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run_train(run_dir, *RUN)
    return run_dir


def test_the_same_command_on_a_finished_run_does_nothing_in_seconds(finished: Path) -> None:
    before = [p.name for p in committed(finished)]
    proc = run_train(finished, *RUN)
    assert "already finished" in proc.stderr
    assert [p.name for p in committed(finished)] == before


def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning_and_the_run_ends_the_same(finished: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    newest = committed(run_dir)[-1]
    for name in ("state.json", "state.json.copy"):  # beyond what its spare copy can repair
        state = newest / name
        data = bytearray(state.read_bytes())
        data[len(data) // 2] ^= 0x01
        state.write_bytes(bytes(data))
    proc = run_train(run_dir, *RUN)
    assert "warning" in proc.stderr and newest.name in proc.stderr, proc.stderr[-2000:]
    assert "resuming from" in proc.stderr
    log = (run_dir / "train.log").read_text()
    assert f"skipping damaged checkpoint {newest.name}" in log and "resuming from" in log
    good = json.loads((committed(finished)[-1] / "manifest.json").read_text())["digest"]
    redone = [p for p in committed(run_dir) if p.name.startswith("step_000000016.")]
    assert redone, "the end checkpoint was not written again beside the damaged one"
    doc = json.loads((redone[-1] / "manifest.json").read_text())
    assert doc["digest"] == good and "end" in doc["tags"]
    assert waypoint("verify", str(run_dir)).returncode == 1  # the damaged one is still there, and still named


def test_a_damaged_state_file_is_repaired_from_its_spare_copy_and_the_run_is_already_finished(
    finished: Path, tmp_path: Path
) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    newest = committed(run_dir)[-1]
    (newest / "state.json").write_bytes(b"{}")
    run_train(run_dir, *RUN)
    log = (run_dir / "train.log").read_text()
    assert f"repaired {newest.name}: state.json rebuilt from its spare copy" in log, log[-1500:]
    assert waypoint("verify", str(run_dir)).returncode == 0


def test_a_damaged_pack_is_written_again_by_the_resumed_run(finished: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    docs = [json.loads((p / "manifest.json").read_text()) for p in committed(run_dir)]
    own = sorted(set(docs[-1]["packs"]) - set().union(*(d["packs"] for d in docs[:-1])))
    assert own, "the newest checkpoint has no pack of its own"
    pack = run_dir / "checkpoints" / "packs" / own[0]
    data = bytearray(pack.read_bytes())
    data[-10] ^= 0xFF  # inside the last tensor's bytes
    pack.write_bytes(bytes(data))
    run_train(run_dir, *RUN)
    report = json.loads(waypoint("verify", str(run_dir), "--json").stdout)
    assert list(report["damaged"]) == [docs[-1]["name"]], report
    redone = json.loads((committed(run_dir)[-1] / "manifest.json").read_text())
    assert redone["name"].startswith("step_000000016.") and redone["digest"] == docs[-1]["digest"]


def test_a_changed_model_config_is_refused_with_a_diff(finished: Path) -> None:
    before = [p.name for p in committed(finished)]
    proc = run_train(finished, *RUN, "model.lr=0.5", check=False)
    assert proc.returncode == EXIT_USAGE
    assert "resume.allow_config_change=true" in proc.stderr and "+  lr: 0.5" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert [p.name for p in committed(finished)] == before


def test_resume_never_refuses_a_run_dir_with_checkpoints(finished: Path) -> None:
    proc = run_train(finished, *RUN, "resume=never", check=False)
    assert proc.returncode == EXIT_USAGE
    assert "resume=never" in proc.stderr and "hydra.run.dir" in proc.stderr


def test_resume_from_a_selector_continues_from_that_checkpoint(finished: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    proc = run_train(run_dir, *RUN, "resume=step:8")
    assert "resuming from step_000000008" in proc.stderr
    assert final_digest(run_dir)[1] == final_digest(finished)[1]
