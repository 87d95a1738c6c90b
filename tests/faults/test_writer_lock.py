"""One writer per checkpoints root: a second writer gets a clear error, a SIGKILLed holder frees the lock."""
from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys

import pytest
import torch

from waypoint.checkpoint import CheckpointManager, StoreLockedError

HOLDER = """
import sys
import torch
from waypoint.checkpoint import CheckpointManager, StoreLockedError
mgr = CheckpointManager(sys.argv[1])
mgr.save({"w": torch.arange(4.0), "step": 1}, step=1)
try:  # a second writer inside the holder's own process is refused too, and must not drop the lock
    CheckpointManager(sys.argv[1])
    print("second-in-process: opened", flush=True)
except StoreLockedError:
    print("second-in-process: refused", flush=True)
print("ready", flush=True)
sys.stdin.read()  # hold the lock until killed
"""


@pytest.fixture
def holder(tmp_path):
    """A live process holding the writer lock of tmp_path/ck (after saving step 1)."""
    root = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.strip() == "ready":
            break
    else:
        proc.wait(timeout=30)
        raise AssertionError(f"holder did not start: {proc.stderr.read()}")
    yield root, proc, lines
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def test_second_writer_gets_store_locked_error_naming_holder_pid_and_host(holder):
    root, proc, _ = holder
    with pytest.raises(StoreLockedError) as caught:
        CheckpointManager(root)
    message = str(caught.value)
    assert f"pid {proc.pid}" in message
    assert platform.node() in message
    assert "\n" not in message


def test_a_refused_second_writer_in_the_holders_own_process_does_not_release_the_lock(holder):
    root, _, lines = holder
    assert "second-in-process: refused" in lines
    with pytest.raises(StoreLockedError):
        CheckpointManager(root)


def test_readers_need_no_lock_while_a_writer_holds_it(holder):
    root, _, _ = holder
    with CheckpointManager(root, read_only=True) as reader:
        assert [i.name for i in reader.list()] == ["step_000000001"]
        assert reader.verify() == {"step_000000001": []}
        assert torch.equal(reader.restore("latest")["w"], torch.arange(4.0))


def test_lock_is_free_again_after_the_holder_is_sigkilled(holder):
    root, proc, _ = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with CheckpointManager(root) as mgr:  # no error, no waiting, no manual cleanup
        assert torch.equal(mgr.restore("latest")["w"], torch.arange(4.0))
        mgr.save({"w": torch.zeros(4), "step": 2}, step=2)
    assert (root / "step_000000002" / "manifest.json").exists()
