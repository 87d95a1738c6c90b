"""What a command does to its run dir: a refused one changes nothing; train.log tells the story; signals at start-up."""

from __future__ import annotations

import hashlib
import re
import signal
import time
from pathlib import Path

import pytest
from trainkit import committed, run_train, start_train, wait_for

from waypoint.errors import EXIT_OK, EXIT_PREEMPTED, EXIT_USAGE

RUN = [
    "model=universeg",
    "trainer.max_steps=8",
    "checkpoint.every_n_steps=2",
    "checkpoint.keep_last=1",
    "checkpoint.keep_evolution=null",  # a run this short would keep every checkpoint as an evolution snapshot
    "trainer.val_every_n_steps=4",
]


def snapshot(run_dir: Path) -> dict[str, str]:
    """Every file under the run dir (LOCK, .hydra/, train.log, checkpoints) by content hash."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run_dir.rglob("*")) if p.is_file()
    }


RESULT = re.compile(
    r"^result: UniverSeg val/dice best [0-9.]+, final [0-9.]+ \(baselines: mean_mask_dice [0-9.]+, threshold_dice [0-9.]+\); "
    r"(.+); run (.+); best checkpoint (step_\d{9})$"
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    return run_dir, run_train(run_dir, *RUN).stderr


def test_the_last_line_of_a_run_is_its_result_beside_the_baselines(finished: tuple[Path, str]) -> None:
    run_dir, stderr = finished
    found = RESULT.match(stderr.strip().splitlines()[-1])
    assert found, stderr[-1500:]
    assert re.fullmatch(r"8 steps in [0-9.]+s", found[1]) and found[2] == str(run_dir)
    assert (run_dir / "checkpoints" / found[3] / "manifest.json").exists()


def test_train_log_tells_the_runs_story(finished: tuple[Path, str]) -> None:
    log = (finished[0] / "train.log").read_text()
    assert "seed: 0" in log and "model:" in log  # the config summary
    assert "starting universeg" in log
    assert re.search(r"epoch 1/1 \(step 8\): means over 8 steps: train/loss [0-9.]+, train/lr [0-9.e-]+, .*train/dice ", log)
    assert "validation at step 4 (epoch " in log and "val/dice " in log
    assert "saved step_000000002 (step 2): " in log and "async" in log
    assert "saved step_000000008 (step 8, tags end): " in log and "blocking" in log
    assert "retention deleted step_" in log
    assert RESULT.match(log.strip().splitlines()[-2].split("] - ", 1)[1])  # the last line is the exit code (debug)


def test_a_finished_run_started_again_says_so_in_train_log_and_ends_with_its_result(finished: tuple[Path, str]) -> None:
    run_dir = finished[0]
    before = (run_dir / "train.log").read_text()
    proc = run_train(run_dir, *RUN)
    added = (run_dir / "train.log").read_text()[len(before) :]
    assert "already finished: step_000000008 is the end of this run" in added and RESULT.match(
        proc.stderr.strip().splitlines()[-1]
    )
    assert "already finished" in RESULT.match(proc.stderr.strip().splitlines()[-1])[1]


@pytest.mark.parametrize("overrides, says", [(("seed=1",), "-seed: 0\n+seed: 1"), (("resume=never",), "resume=never but")])
def test_a_refused_command_changes_nothing_in_the_run_dir(
    overrides: tuple[str, ...], says: str, finished: tuple[Path, str]
) -> None:
    finished = finished[0]
    before = snapshot(finished)
    proc = run_train(finished, *RUN, *overrides, "trainer.max_steps=12", check=False)
    assert proc.returncode == EXIT_USAGE, proc.stderr[-2000:]
    assert says in proc.stderr
    assert snapshot(finished) == before


@pytest.mark.slow  # ~20 s: a live run must be started and held; the config-check refusals above stay in make test
def test_a_command_refused_by_the_writer_lock_leaves_the_live_runs_files_alone(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    live = start_train(run_dir, "model=universeg", "trainer.max_epochs=40", "checkpoint.every_n_steps=2")
    try:
        assert wait_for(lambda: bool(committed(run_dir)), live), "the live run ended before its first checkpoint"
        hydra = {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()}
        proc = run_train(
            run_dir,
            "model=universeg",
            "trainer.max_epochs=40",
            "checkpoint.every_n_steps=2",
            "trainer.log_every_n_steps=1",
            check=False,
        )
        assert proc.returncode == EXIT_USAGE and "already being written by pid" in proc.stderr, proc.stderr[-2000:]
        assert {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()} == hydra
        assert "already being written" not in (run_dir / "train.log").read_text()
    finally:
        live.kill()
        live.wait()


def test_sigterm_before_the_loop_starts_exits_75_with_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start_train(run_dir, *RUN)
    time.sleep(0.5)  # still importing
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, out[-2000:]
    assert "SIGTERM received before training started" in out and "run the same command again to resume" in out
    assert not committed(run_dir)


def test_sigterm_while_starting_a_finished_run_exits_0(finished: tuple[Path, str]) -> None:
    proc = start_train(finished[0], *RUN)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_OK, out[-2000:]
    assert "already finished" in out and "SIGTERM received" in out


def test_sigterm_right_after_done_exits_0(tmp_path: Path) -> None:
    proc = start_train(tmp_path / "run", *RUN)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("result:"):
            proc.send_signal(signal.SIGTERM)  # the process is closing its files and exiting
            break
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_OK, out[-2000:]
