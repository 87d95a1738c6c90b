"""SIGKILL at random moments of repeated saves never loses or corrupts a committed checkpoint.

Children fork from a pre-imported server (save_zygote.py) and save a changing ~4 MiB state forever:
some tensors never change (dedup), half the saves are non-blocking, every third step retags a
manifest, keep-last-3 retention deletes checkpoints, collects packs and repacks
mostly-dead ones (rewriting manifests). The test kills each child
with SIGKILL after a random delay, then reopens the store and checks it from the files.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from faultkit import assert_state_equal, committed_dirs, debris, make_state, pack_files, referenced_packs

from waypoint.checkpoint import CheckpointManager, KeepLast, RetentionPolicy
from waypoint.checkpoint import manifest as mf

ZYGOTE = Path(__file__).resolve().parent / "save_zygote.py"


class Zygote:
    """Client of save_zygote.py."""

    def __init__(self, stderr_path: Path) -> None:
        self.stderr = open(stderr_path, "w+")
        self.proc = subprocess.Popen(
            [sys.executable, str(ZYGOTE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1
        )

    def _ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise AssertionError(f"save_zygote died: {self.errors()}")
        return answer.split()[1]

    def spawn(self, root: Path, seed: int, compression: str = "none") -> int:
        return int(self._ask(f"spawn {root} {seed} {compression}"))

    def reap(self, pid: int) -> int:
        return int(self._ask(f"reap {pid}"))

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.stderr.close()


def check_after_reopen(root: Path, previous_step: int) -> int:
    """Reopen the store as a resuming run would and check every invariant; returns the latest step."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with CheckpointManager(root, RetentionPolicy((KeepLast(3),))) as mgr:
            assert debris(root) == [], "reopening must remove staging dirs, trash and temp files"
            problems = mgr.verify()
            assert all(p == [] for p in problems.values()), f"a committed checkpoint does not verify: {problems}"
            assert pack_files(root) == referenced_packs(root), "a pack no manifest references was left behind"
            names = [i.name for i in mgr.list()]
            assert names == [d.name for d in committed_dirs(root)]
            assert sorted(r["name"] for r in mf.parse_index((root / "index.json").read_bytes())) == names
            if not names:
                return previous_step
            state, info = mgr.restore_with_info("latest")
    assert not [w for w in caught if "damaged" in str(w.message)], [str(w.message) for w in caught]
    assert info.step >= previous_step, f"latest went backwards: {previous_step} -> {info.step}"
    assert_state_equal(state, make_state(info.step))
    assert state["head"]["tied"] is state["live"]["w"], "an alias must come back as the same tensor"
    return info.step


def kill_loop(tmp_path: Path, kills: int, max_delay: float, seed: int, compression: str = "none") -> dict[str, int]:
    root = tmp_path / "ck"
    rng = random.Random(seed)
    zygote = Zygote(tmp_path / "zygote.err")
    stats = {"kills": 0, "mid_write": 0, "latest": 0}
    try:
        for i in range(kills):
            pid = zygote.spawn(root, rng.randrange(1 << 30), compression)
            time.sleep(rng.uniform(0.0, max_delay))
            os.kill(pid, signal.SIGKILL)
            status = zygote.reap(pid)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                f"child {i} ended on its own (wait status {status}) before the kill:\n{zygote.errors()}"
            )
            stats["kills"] += 1
            stats["mid_write"] += bool(root.exists() and debris(root))
            stats["latest"] = check_after_reopen(root, stats["latest"])
    finally:
        zygote.close()
    return stats


def test_thirty_random_sigkills_leave_only_verified_checkpoints_and_latest_never_goes_back(tmp_path):
    stats = kill_loop(tmp_path, kills=30, max_delay=0.6, seed=20260101)
    assert stats["kills"] == 30
    assert stats["latest"] >= 15, f"the children hardly saved anything: {stats}"
    assert stats["mid_write"] >= 3, f"too few kills landed inside a write to mean anything: {stats}"


def test_twenty_random_sigkills_during_compressed_saves_leave_only_verified_checkpoints(tmp_path):
    stats = kill_loop(tmp_path, kills=20, max_delay=0.8, seed=20261202, compression="zstd")
    assert stats["kills"] == 20
    assert stats["latest"] >= 8, f"the children hardly saved anything: {stats}"
    assert stats["mid_write"] >= 2, f"too few kills landed inside a write to mean anything: {stats}"
    packs = list((tmp_path / "ck" / "packs").glob("*.safetensors"))
    assert packs and all(b"waypoint-pack-3" in p.read_bytes()[:65536] for p in packs), "the saves were not compressed"


@pytest.mark.slow
def test_two_hundred_random_sigkills_leave_only_verified_checkpoints(tmp_path):
    stats = kill_loop(tmp_path, kills=200, max_delay=0.4, seed=7)
    assert stats["latest"] >= 100 and stats["mid_write"] >= 30, stats
