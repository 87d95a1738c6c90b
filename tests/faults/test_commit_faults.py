"""Done-when of issue 10: an error, an abort or a SIGKILL injected at each step of the commit protocol
(pack write, pack fsync, pack rename, packs/ fsync, staging mkdir and writes, their fsyncs, the commit
rename, the root fsync after it, the index) leaves either the new checkpoint, verified, or nothing; never
a listed checkpoint with missing data."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from commit_faults import Syscalls, commit_step_2, states
from faultkit import assert_state_equal

from waypoint.checkpoint import CheckpointManager, CheckpointNotDurableError, CheckpointWriteError

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A store holding step 1, and the events a clean commit of step 2 makes."""
    root = tmp_path_factory.mktemp("base") / "ck"
    with CheckpointManager(root) as mgr:
        mgr.save(states()[0], step=1)
    probe = root.parent / "probe"
    shutil.copytree(root, probe)
    calls = Syscalls(probe)
    commit_step_2(probe, calls)
    return root, calls.events


def test_the_recorded_commit_walks_every_step_of_the_protocol(base):
    _, events = base
    expected = [
        "write packs/.tmp-*",
        "fsync packs/.tmp-*",
        "rename packs/.tmp-* -> packs/<pack>",
        "fsync packs",
        "mkdir .staging-*",
        "write .staging-*/state.json",
        "fsync .staging-*/state.json",
        "write .staging-*/manifest.json",
        "fsync .staging-*/manifest.json",
        "fsync .staging-*",
        "rename .staging-* -> step_000000002",
        "fsync .",
    ]
    positions = [events.index(e) for e in expected]
    assert positions == sorted(positions), events


def assert_new_checkpoint_or_nothing(root: Path) -> str:
    """The invariant, seen first by a lock-free reader, then after a writable open; returns which."""
    s1, s2 = states()
    for read_only in (True, False):
        with CheckpointManager(root, read_only=read_only) as mgr:
            names = [i.name for i in mgr.list()]
            assert all(i.valid for i in mgr.list()), [(i.name, i.problem) for i in mgr.list()]
            assert mgr.verify() == {n: [] for n in names}  # no listed checkpoint with missing data
            assert_state_equal(mgr.restore("step:1"), s1)
            if "step_000000002" in names:
                assert_state_equal(mgr.restore("step:2"), s2)
                outcome = "committed"
            else:
                assert names == ["step_000000001"]
                outcome = "nothing"
    leftovers = [p.name for p in root.iterdir() if p.name.startswith((".staging-", ".tmp-", ".trash-"))]
    assert not leftovers  # the writable open removed the debris
    return outcome


@pytest.mark.parametrize("mode", ["error", "abort"])
def test_a_fault_at_each_commit_step_leaves_the_new_checkpoint_verified_or_nothing(base, tmp_path, mode):
    root, events = base
    outcomes = {}
    for i, label in enumerate(events):
        trial = tmp_path / f"{i}"
        shutil.copytree(root, trial)
        calls = Syscalls(trial, fail_at=i, mode=mode)
        raised: BaseException | None = None
        try:
            commit_step_2(trial, calls)
        except (CheckpointWriteError, KeyboardInterrupt, OSError) as exc:
            raised = exc
        assert calls.fired == label
        outcome = assert_new_checkpoint_or_nothing(trial)
        outcomes[label] = outcome
        if isinstance(raised, CheckpointWriteError) and not isinstance(raised, CheckpointNotDurableError):
            assert outcome == "nothing", f"{label}: the error said nothing was committed: {raised}"
            assert "nothing was committed" in str(raised)
        if isinstance(raised, CheckpointNotDurableError):
            assert outcome == "committed" and "committed" in str(raised)
        if raised is None:
            assert outcome == "committed", f"{label}: the save returned, so its checkpoint must be there"
    assert outcomes["rename packs/.tmp-* -> packs/<pack>"] == "nothing"
    assert outcomes["fsync ."] == "committed"  # after the rename nothing is deleted


def test_a_root_fsync_that_fails_twice_reports_committed_but_not_durable_and_deletes_nothing(base, tmp_path):
    root, events = base
    trial = tmp_path / "t"
    shutil.copytree(root, trial)
    first = events.index("fsync .")

    class Twice(Syscalls):
        def _event(self, label):
            super()._event(label)
            if len(self.events) - 1 == first + 1:  # the retry
                raise OSError(5, "Input/output error (injected)")

    with pytest.raises(CheckpointNotDurableError, match="committed and intact but not yet durable"):
        commit_step_2(trial, Twice(trial, fail_at=first))
    assert assert_new_checkpoint_or_nothing(trial) == "committed"


KILL_CHILD = """
import os, shutil, sys
sys.path.insert(0, sys.argv[3])
from commit_faults import Syscalls, commit_step_2
import waypoint.checkpoint
base, out, n = sys.argv[1], sys.argv[2], int(sys.argv[4])
for i in range(n):
    trial = os.path.join(out, str(i))
    shutil.copytree(base, trial)
    pid = os.fork()
    if pid == 0:
        commit_step_2(trial, Syscalls(trial, fail_at=i, mode="kill"))
        os._exit(3)  # the kill did not happen
    _, status = os.waitpid(pid, 0)
    print(i, status, flush=True)
"""


@pytest.mark.slow
def test_a_sigkill_at_each_commit_step_leaves_the_new_checkpoint_verified_or_nothing(base, tmp_path):
    root, events = base
    proc = subprocess.run(
        [sys.executable, "-c", KILL_CHILD, str(root), str(tmp_path), str(HERE), str(len(events))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    statuses = dict(line.split() for line in proc.stdout.split("\n") if line)
    assert len(statuses) == len(events)
    for i, label in enumerate(events):
        assert int(statuses[str(i)]) & 0x7F == signal.SIGKILL, f"{label}: the child was not killed"
        assert assert_new_checkpoint_or_nothing(tmp_path / str(i)) in ("committed", "nothing"), label
