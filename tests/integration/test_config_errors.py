"""A bad configuration fails at start: exit 2, one sentence naming the key, nothing written. A bug is not a bad config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from trainkit import REPO, run_train, train_cmd

from waypoint.errors import EXIT_FAILED as EXIT_ERROR
from waypoint.errors import EXIT_USAGE

FORKS = Path(__file__).resolve().parent / "train_forks.py"  # one pre-imported interpreter, a fork per command

#: (override, the key the sentence must name); each is refused before anything is trained or written
BAD = [
    ("model=unknown", "model=unknown"),
    ("trainer.max_epochz=3", "trainer.max_epochz"),
    ("trainer.max_epochs=abc", "trainer.max_epochs"),
    ("model.encoder_blockz=[8]", "encoder_blockz"),
    ("data.batch_size=big", "data.batch_size"),
    ("checkpoint.keep_lastt=2", "keep_lastt"),
    ("data.batch_size=0", "data.batch_size"),
    ("hardware.num_threads=-1", "hardware.num_threads"),
    ("trainer.max_steps=-5", "trainer.max_steps"),
    ("checkpoint.every_n_steps=-3", "checkpoint.every_n_steps"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val"),
    ("checkpoint.milestone_steps=[-1]", "checkpoint.milestone_steps"),
    ("seed=-1", "seed"),
    ("checkpoint.compression=lz4", "checkpoint.compression"),
    ("+nope=1", "nope"),  # Hydra appends +keys even to a structured config: no schema declares it
    ("+trainer.max_epochz=3", "trainer.max_epochz"),
    ("checkpoint.monitor=val/baseline_threshold_dice", "checkpoint.mode"),  # a custom metric: is higher better?
]


def test_every_bad_value_exits_2_with_one_sentence_naming_the_key(tmp_path: Path) -> None:
    commands = [train_cmd(tmp_path / f"run{i}", "model=universeg", override)[2:] for i, (override, _key) in enumerate(BAD)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(FORKS), str(REPO / "train.py")],
        input=json.dumps(commands),
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for i, ((override, key), result) in enumerate(zip(BAD, json.loads(proc.stdout))):
        err = result["stderr"]
        assert result["code"] == EXIT_USAGE, f"{override}: exit {result['code']}\n{err[-2000:]}"
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], f"{override}: {err[-2000:]}"
        run_dir = tmp_path / f"run{i}"
        assert not run_dir.exists() or not any(run_dir.iterdir()), f"{override} wrote {list(run_dir.iterdir())}"


def test_help_lists_as_options_only_the_configs_of_each_group() -> None:
    proc = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    groups = proc.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = dict(line.split(": ", 1) for line in groups.splitlines() if ": " in line)
    assert set(listed) >= {"model", "data", "trainer", "checkpoint", "hardware", "logger", "experiment"}
    for group, options in listed.items():
        assert sorted(options.split(", ")) == sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml")), group


def test_a_missing_data_folder_is_one_clear_sentence(tmp_path: Path) -> None:
    proc = run_train(tmp_path / "run", "model=universeg", "data=segfolder", f"data.root={tmp_path / 'nope'}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_an_error_that_is_not_a_bad_config_exits_1_with_its_traceback_in_train_log(tmp_path: Path) -> None:
    # a model target that builds something that is not a task: the run fails inside our code, not in the config check
    proc = run_train(tmp_path / "run", "model=universeg", "model._target_=builtins.dict", check=False)
    assert proc.returncode == EXIT_ERROR, proc.stderr[-2000:]
    assert "error: unexpected AttributeError before training started" in proc.stderr and "Traceback" not in proc.stderr
    log = (tmp_path / "run" / "train.log").read_text()
    assert "Traceback (most recent call last)" in log and "AttributeError" in log
