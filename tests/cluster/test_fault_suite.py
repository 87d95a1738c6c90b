"""One fault suite for the one store, on both backends: a local directory and the S3 server (moto on
127.0.0.1, through s3fs). Real processes are killed, stopped and damaged; the store is never mocked.
Where a backend cannot promise something, the test reads that from its declared capabilities and says so.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from waypoint.checkpoint import CheckpointManager, StoreLockedError
from waypoint.checkpoint.storage import backend_for

HERE = Path(__file__).resolve().parent
FAULTS = HERE.parent / "faults"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

#: a writer saving a changing state with keep-last-2 retention (so it deletes, repacks and collects packs) until
#: killed or for argv[2] seconds; argv[3]: the first step; prints "saved N" after each commit. A lost lease (or any
#: store error) ends it with its one sentence on stderr and exit code 1.
WRITER = """
import sys, time
import torch
from waypoint.checkpoint import CheckpointManager, KeepLast, RetentionPolicy
from waypoint.errors import WaypointError
root, seconds, first = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
keep = int(sys.argv[4]) if len(sys.argv) > 4 else 2
g = torch.Generator().manual_seed(first)
frozen = torch.randn(64, 64, generator=g)
try:
    with CheckpointManager(root, RetentionPolicy((KeepLast(keep),))) as mgr:
        end, slow, step = time.monotonic() + seconds, torch.randn(128, 64, generator=g), first
        while time.monotonic() < end:
            if step % 3 == 0:  # packs holding a dead fast tensor and a live slow one become sparse: repacked
                slow = torch.randn(128, 64, generator=g)
            state = {"frozen": frozen, "slow": slow, "fast": torch.randn(256, 64, generator=g), "step": step}
            mgr.save(state, step=step, blocking=step % 2 == 0)
            mgr.wait()
            print("saved", step, flush=True)
            step += 1
except WaypointError as exc:
    print(exc, file=sys.stderr, flush=True)
    sys.exit(exc.exit_code)
"""


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path):
    """A checkpoints root on one backend: a directory, or a prefix of a fresh bucket on the moto server."""
    if request.param == "local":
        return str(tmp_path / "ck")
    bucket = request.getfixturevalue("bucket")
    return f"s3://{bucket}/run/checkpoints"


def writer(location: str, seconds: float, first: int = 1, keep: int = 2, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, location, str(seconds), str(first), str(keep)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def saves_seen(proc: subprocess.Popen, at_least: int, timeout: float = 60) -> list[int]:
    """Read the writer's "saved N" lines until ``at_least`` commits were reported."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while len(seen) < at_least and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(int(line.split()[1]))
    assert len(seen) >= at_least, (seen, proc.poll())
    return seen


def sound(location: str) -> dict[str, list[str]]:
    """What a lock-free reader finds: every listed checkpoint and its problems."""
    with CheckpointManager(location, read_only=True) as reader:
        listed = {i.name: ([i.problem] if not i.valid else []) for i in reader.list()}
        return {**listed, **reader.verify()}


# ---------------------------------------------------------------------------------------------- kills


def test_sigkill_at_random_points_during_save_repack_and_gc_leaves_only_verified_checkpoints(location):
    rng = random.Random(7)
    newest = 0
    for round_ in range(4):
        proc = writer(location, 60, first=newest + 1)
        saves_seen(proc, 1)
        time.sleep(rng.uniform(0.0, 1.5))  # somewhere inside a save, a retention delete, a repack or a collection
        proc.kill()
        proc.wait()
        report = sound(location)
        assert report and all(p == [] for p in report.values()), (round_, report)
        with CheckpointManager(location) as mgr:  # the next writer takes over at once (the killed one is gone)
            latest = mgr.latest()
            assert latest is not None and latest.step >= newest, "latest went back"
            newest = latest.step
            assert mgr.verify() == {n: [] for n in report}


# ---------------------------------------------------------------------------------------------- damage


def _flip(backend, key: str, offset: int) -> None:
    data = bytearray(backend.read(key))
    data[offset] ^= 0x10
    backend.put(key, bytes(data))


def _two_checkpoints(location: str) -> tuple[str, str, str]:
    """Steps 1 and 2, where step 2 has a pack of its own; returns (old, new, that pack's key)."""
    with CheckpointManager(location) as mgr:
        mgr.save({"shared": torch.arange(4096.0), "own": torch.zeros(1024)}, step=1)
        mgr.save({"shared": torch.arange(4096.0), "own": torch.ones(1024)}, step=2)
        packs = {i.name: set(mgr.manifest(i.name).packs) for i in mgr.list()}
    old, new = sorted(packs)
    (own,) = packs[new] - packs[old]
    return old, new, f"packs/{own}"


DAMAGE = {
    "a byte flipped in a pack": lambda b, new, pack: _flip(b, pack, -3),
    "a truncated pack": lambda b, new, pack: b.put(pack, b.read(pack)[:-100]),
    "a missing pack": lambda b, new, pack: b.delete(pack),
    "a byte flipped in a manifest": lambda b, new, pack: _flip(b, f"{new}/manifest.json", 40),
    "a truncated state file": lambda b, new, pack: b.put(f"{new}/state.json", b.read(f"{new}/state.json")[:-1]),
    "a missing state file": lambda b, new, pack: b.delete(f"{new}/state.json"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_objects_are_found_by_verify_and_skipped_by_restore(location, damage):
    old, new, pack = _two_checkpoints(location)
    DAMAGE[damage](backend_for(location), new, pack)
    report = sound(location)
    assert report[old] == [] and report[new], report
    with CheckpointManager(location, read_only=True) as reader, pytest.warns(UserWarning, match=new):
        assert reader.restore_with_info("latest")[1].name == old


def test_a_missing_manifest_is_damage_only_where_a_directory_commits_by_rename(location):
    old, new, _pack = _two_checkpoints(location)
    backend = backend_for(location)
    backend.delete(f"{new}/manifest.json")
    report = sound(location)
    if backend.caps.atomic_rename:  # the directory was renamed into place whole: a file missing from it is damage
        assert report[old] == [] and report[new]
    else:  # the manifest is the commit point: without it there is no checkpoint, only files a writer's open removes
        assert report == {old: []}


# ---------------------------------------------------------------------------------------------- two writers


def test_a_second_writer_is_refused_naming_the_first(location):
    with CheckpointManager(location) as first:
        first.save({"w": torch.ones(2)}, step=1)
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):
            CheckpointManager(location)


def test_a_writer_stopped_past_its_lease_is_fenced_and_nothing_of_the_new_holder_is_lost(location):
    ttl = "3"
    a = writer(location, 120, first=1, keep=100, WAYPOINT_LEASE_TTL_S=ttl)
    try:
        saves_seen(a, 3)
        os.kill(a.pid, signal.SIGSTOP)
        time.sleep(float(ttl) + 1.5)
        if backend_for(location).caps.lease == "lock":  # held until the process ends: a stopped writer is waited for
            with pytest.raises(StoreLockedError, match=f"pid {a.pid}"):
                CheckpointManager(location)
            os.kill(a.pid, signal.SIGCONT)
            return
        b = writer(location, 8, first=1000, keep=100, WAYPOINT_LEASE_TTL_S=ttl)
        b_saves = saves_seen(b, 2)
        os.kill(a.pid, signal.SIGCONT)  # the stale writer continues while the new holder writes
        a_out, a_err = a.communicate(timeout=60)
        b_out, b_err = b.communicate(timeout=60)
    finally:
        if a.poll() is None:
            os.kill(a.pid, signal.SIGCONT)
            a.kill()
    assert a.returncode == 1 and "lease" in a_err and a_err.strip().count("\n") == 0, a_err
    assert b.returncode == 0, b_err
    b_steps = set(b_saves) | {int(line.split()[1]) for line in b_out.splitlines() if line.startswith("saved")}
    report = sound(location)
    assert all(p == [] for p in report.values()), report
    with CheckpointManager(location, read_only=True) as reader:
        generations = {i.step: reader.manifest(i.name).generation for i in reader.list()}
    assert b_steps <= set(generations), "the new holder lost a checkpoint"
    assert {generations[s] for s in b_steps} == {max(generations.values())}, "the new holder wrote under an old lease"


# ---------------------------------------------------------------------------------------------- live readers


def test_verify_looping_during_a_live_writer_reports_no_false_damage(location):
    with CheckpointManager(location) as mgr:
        mgr.save({"seed": torch.zeros(1)}, step=0)
    proc = writer(location, 8, first=1)
    rounds, false_reports = 0, []
    try:
        while proc.poll() is None:
            false_reports += [(n, p) for n, p in sound(location).items() if p]
            rounds += 1
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert rounds >= 3 and out.count("saved") > 5, (rounds, out)
    assert false_reports == []
