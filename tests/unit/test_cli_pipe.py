"""CLI output piped into a reader that stops early (`| head -1`) ends quietly, as Unix tools do."""

import subprocess
import sys

import torch

from waypoint.checkpoint import CheckpointManager


def test_ls_into_a_closed_pipe_ends_quietly(tmp_path):
    with CheckpointManager(tmp_path / "run" / "checkpoints") as mgr:
        for step in range(1, 4):
            mgr.save({"w": torch.full((4,), float(step))}, step)
    proc = subprocess.Popen(
        [sys.executable, "-m", "waypoint", "ls", str(tmp_path / "run")], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # the reader is gone before the first line is written (head -1 that already exited)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == ""


def test_ls_into_head_prints_one_line_and_no_error(tmp_path):
    with CheckpointManager(tmp_path / "run" / "checkpoints") as mgr:
        for step in range(1, 200):
            mgr.save({"w": torch.full((4,), float(step))}, step)
    proc = subprocess.run(
        f"'{sys.executable}' -m waypoint ls --json '{tmp_path / 'run'}' | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout == "[\n"
    assert proc.stderr == ""
