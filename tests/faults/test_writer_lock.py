"""One writer per checkpoints root: a second writer gets a clear error, a SIGKILLed holder frees the lock."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys

import pytest
import torch

from waypoint.checkpoint import CheckpointError, CheckpointManager, StoreLockedError

HOLDER = """
import sys
import torch
from waypoint.checkpoint import CheckpointError, CheckpointManager, StoreLockedError
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
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
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


FORKING_HOLDER = """
import os, sys, time
import torch
from waypoint.checkpoint import CheckpointManager
mgr = CheckpointManager(sys.argv[1])
mgr.save({"w": torch.arange(4.0), "step": 1}, step=1)
child = os.fork()  # like a DataLoader worker: inherits every descriptor, the LOCK one included
if child == 0:
    fds = os.listdir("/proc/self/fd")
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
sys.stdin.read()
"""


def test_lock_is_free_at_once_after_a_sigkill_while_a_forked_child_still_holds_the_descriptor(tmp_path):
    root = tmp_path / "ck"
    proc = subprocess.Popen(
        [sys.executable, "-c", FORKING_HOLDER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child = int(proc.stdout.readline())
    try:
        lock_inode = os.stat(root / "LOCK").st_ino
        held = [os.readlink(f"/proc/{child}/fd/{fd}") for fd in os.listdir(f"/proc/{child}/fd")]
        assert str(root / "LOCK") in held  # the child really holds the inherited descriptor
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert os.stat(root / "LOCK").st_ino == lock_inode
        with CheckpointManager(root) as mgr:  # at once: no StoreLockedError naming the dead pid
            mgr.save({"w": torch.zeros(4), "step": 2}, step=2)
    finally:
        os.kill(child, signal.SIGKILL)
    assert (root / "step_000000002" / "manifest.json").exists()


def test_a_lock_file_that_is_a_symlink_is_refused_in_one_sentence_and_its_target_untouched(tmp_path):
    root = tmp_path / "ck"
    root.mkdir()
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    os.symlink(target, root / "LOCK")
    with pytest.raises(CheckpointError, match="symbolic link") as caught:
        CheckpointManager(root)
    assert "\n" not in str(caught.value)
    assert target.read_text() == "keep"


def test_a_packs_entry_that_is_a_file_is_refused_in_one_sentence(tmp_path):
    root = tmp_path / "ck"
    root.mkdir()
    (root / "packs").write_text("not a directory")
    for read_only in (False, True):
        with pytest.raises(CheckpointError, match="not a directory"):
            CheckpointManager(root, read_only=read_only)
