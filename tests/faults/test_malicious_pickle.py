"""Loading never executes code: a foreign checkpoint whose unpickling would run code is refused.

Every malicious file here would create MARKER if it were unpickled by a plain ``pickle.load`` /
``torch.load(weights_only=False)``; the control test shows that, so the marker's absence means refusal.
"""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
import sys

import pytest
import torch

from waypoint.checkpoint import CheckpointError, CheckpointManager
from waypoint.checkpoint.transfer import import_checkpoint
from waypoint.checkpoint.transfer.foreign import UnsafeCheckpointError, load_foreign


class RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class RunsPython:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


def torch_zip_with_os_system(path, marker):
    torch.save({"w": torch.ones(3), "payload": RunsShell(marker)}, path)


def torch_zip_with_exec(path, marker):
    torch.save({"state_dict": {"w": torch.ones(3)}, "global_step": 3, "hook": RunsPython(marker)}, path)


def raw_pickle_protocol_2(path, marker):
    path.write_bytes(pickle.dumps({"model": RunsShell(marker)}, protocol=2))


def raw_pickle_protocol_0(path, marker):
    path.write_bytes(pickle.dumps(RunsPython(marker), protocol=0))


MALICIOUS = {
    "torch.save zip, os.system (.pt)": ("evil.pt", torch_zip_with_os_system),
    "torch.save zip, builtins.exec (.ckpt)": ("evil.ckpt", torch_zip_with_exec),
    "raw pickle protocol 2 (.pth)": ("evil.pth", raw_pickle_protocol_2),
    "raw pickle protocol 0 (.pt)": ("evil0.pt", raw_pickle_protocol_0),
}


@pytest.fixture(params=list(MALICIOUS))
def evil_file(request, tmp_path):
    name, build = MALICIOUS[request.param]
    marker = tmp_path / "MARKER"
    path = tmp_path / name
    build(path, marker)
    assert not marker.exists()
    return path, marker


def test_control_plain_unpickling_of_the_file_would_create_the_marker(tmp_path):
    marker, path = tmp_path / "MARKER", tmp_path / "evil.pt"
    torch_zip_with_exec(path, marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_foreign_refuses_a_code_executing_pickle_and_never_runs_it(evil_file):
    path, marker = evil_file
    with pytest.raises(UnsafeCheckpointError) as caught:
        load_foreign(path)
    assert not marker.exists(), "loading a foreign checkpoint executed code from it"
    message = str(caught.value)
    assert str(path) in message and "refused" in message and "\n" not in message


def test_import_refuses_a_code_executing_pickle_and_commits_nothing(evil_file, tmp_path):
    path, marker = evil_file
    with CheckpointManager(tmp_path / "ck") as mgr:
        with pytest.raises(CheckpointError):
            import_checkpoint(path, mgr)
        assert mgr.list() == []
    assert not marker.exists()


def test_load_foreign_still_loads_a_weights_only_checkpoint(tmp_path):
    path = tmp_path / "ok.pt"
    torch.save({"state_dict": {"w": torch.arange(3.0)}, "global_step": 7}, path)
    obj = load_foreign(path)
    assert torch.equal(obj["state_dict"]["w"], torch.arange(3.0)) and obj["global_step"] == 7


def test_cli_import_of_a_malicious_file_exits_2_with_one_line_and_no_marker(tmp_path):
    marker, path = tmp_path / "MARKER", tmp_path / "evil.pth"
    torch_zip_with_os_system(path, marker)
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "waypoint", "import", str(path), str(run)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr  # refused input
    assert "refused" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()
    assert not list((run / "checkpoints").glob("step_*"))
