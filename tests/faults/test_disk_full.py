"""A save that runs out of room fails with one clear sentence and loses nothing already saved.

Real child processes hit real limits: RLIMIT_FSIZE (EFBIG, SIGXFSZ ignored) everywhere, and, where
``unshare -rm`` can mount a private tmpfs, a genuinely full filesystem (ENOSPC).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from faultkit import debris

from waypoint.checkpoint import CheckpointManager, CheckpointWriteError
from waypoint.checkpoint import manifest as mf

HERE = Path(__file__).resolve().parent
FILL_CHILD = HERE / "fill_child.py"
FSIZE_LIMIT = 2 << 20  # the first checkpoint fits, the 16 MiB second one cannot


def run_fill_child(python, root: Path, mode: str, limit: int | None) -> dict:
    args = [str(FILL_CHILD), str(root), mode] + ([str(limit)] if limit is not None else [])
    proc = python("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')", *args)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_clean_failure(report: dict, expected_type: str) -> None:
    err = report["error"]
    assert err is not None, "the oversized save did not fail"
    assert err["type"] == expected_type
    message = err["message"]
    assert "\n" not in message and message.count(". ") == 0, f"not one sentence: {message!r}"
    assert "step 2" in message and "earlier checkpoints are intact" in message, message
    assert report["debris"] == [], f"a failed save left {report['debris']}"
    assert report["listed"] == ["step_000000001"]
    assert report["verify"] == {"step_000000001": []}
    assert report["restored_step"] == 1
    assert report["saved_after"] == "step_000000003", "the store must stay usable after a failed save"
    assert all(p == [] for p in report["verify_after"].values())


@pytest.mark.parametrize(
    "mode, expected_type",
    [("tensors", "CheckpointWriteError"), ("json", "CheckpointWriteError"), ("background", "BackgroundSaveError")],
)
def test_file_size_limit_mid_save_is_one_clear_error_and_earlier_checkpoints_survive(python, tmp_path, mode, expected_type):
    root = tmp_path / "ck"
    report = run_fill_child(python, root, mode, FSIZE_LIMIT)
    assert_clean_failure(report, expected_type)
    assert "File too large" in report["error"]["message"]
    # A fresh process (no limit) sees exactly the two good checkpoints and nothing else.
    assert debris(root) == []
    with CheckpointManager(root, read_only=True) as mgr:
        assert [i.name for i in mgr.list()] == ["step_000000001", "step_000000003"]
        assert all(p == [] for p in mgr.verify().values())
        assert mgr.restore("step:1")["step"] == 1


def _private_tmpfs_available() -> str | None:
    """None when ``unshare -rm`` can mount a tmpfs here, else the reason it cannot."""
    if shutil.which("unshare") is None:
        return "the unshare command is not installed"
    try:
        probe = subprocess.run(
            ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt || exit 9"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -rm failed: {exc}"
    if probe.returncode != 0:
        return f"unshare -rm cannot mount a private tmpfs here (exit {probe.returncode}: {probe.stderr.strip()})"
    return None


@pytest.mark.parametrize(
    "mode, says",
    [
        ("tensors", "it may need"),  # the tensors alone cannot fit: refused before anything is written
        ("json", "No space left on device"),  # the JSON state is not counted beforehand: the disk fills mid-write
    ],
)
def test_full_filesystem_is_one_clear_error_and_keeps_nothing_of_the_failed_save(tmp_path, mode, says):
    reason = _private_tmpfs_available()
    if reason:
        pytest.skip(f"ENOSPC variant needs a private tmpfs: {reason}")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = textwrap.dedent("""
        mount -t tmpfs -o size=4m tmpfs "$1" || exit 90
        cd "$2" && exec "$3" -c "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')" "$4" "$1/ck" "$5"
    """)
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(mnt), str(HERE), sys.executable, str(FILL_CHILD), mode],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(HERE)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert_clean_failure(report, "CheckpointWriteError")
    assert says in report["error"]["message"]
    assert report["free_after"] >= report["free_before"] - (64 << 10), (
        f"the failed save kept {report['free_before'] - report['free_after']} bytes of the full disk"
    )


def test_a_save_larger_than_the_free_space_is_refused_before_writing(tmp_path):
    with CheckpointManager(tmp_path / "ck") as mgr:
        mgr.save({"w": torch.zeros(4)}, step=1)
        packs = sorted((tmp_path / "ck" / "packs").iterdir())
        mgr.store.backend.free_bytes = lambda: 2 << 20  # a disk with 2 MiB left
        with pytest.raises(CheckpointWriteError, match=r"step 2 .* may need 5\.0 MiB and the disk has 2\.0 MiB free"):
            mgr.save({"w": torch.zeros(1 << 20)}, step=2)
        assert sorted((tmp_path / "ck" / "packs").iterdir()) == packs and [i.step for i in mgr.list()] == [1]
        assert mgr.save({"w": torch.ones(4)}, step=3).step == 3  # a save that fits goes on


INDEX_AFTER_COMMIT = """
import json, os, resource, signal, sys, warnings
import torch
from waypoint.checkpoint import CheckpointManager, KeepLast, RetentionPolicy
root, retention = sys.argv[1], sys.argv[2] == "retention"
mgr = CheckpointManager(root, RetentionPolicy((KeepLast(35),)) if retention else None)
for s in range(1, 41):
    mgr.save({"w": torch.full((4,), float(s)), "note": "x" * 50}, step=s,
             metrics={"loss": 1.0 / s, "accuracy": 1.0 - 1.0 / s, "learning_rate": 0.1 / s, "grad_norm": s / 7})
# Every file of the next checkpoint (a 16-byte tensor, a small manifest) fits far under the limit, with room
# to spare for a pack writer that pads its writes to 4 KiB; only the derived index.json does not fit.
limit = 8 << 10
assert os.path.getsize(os.path.join(root, "index.json")) > limit + (4 << 10), "fixture: the index must outgrow it"
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    info = mgr.save({"w": torch.full((4,), 41.0)}, step=41)
    if retention:
        mgr.tag("latest", "keep")
print(json.dumps({"name": info.name, "warnings": [str(w.message) for w in caught]}))
"""


def _save_with_an_index_that_cannot_grow(python, root: Path, mode: str) -> dict:
    proc = python(INDEX_AFTER_COMMIT, str(root), mode, check=False)
    committed = (root / "step_000000041" / "manifest.json").exists()
    assert committed, "fixture: step 41 should have been committed before the index write:\n" + proc.stderr[-2000:]
    assert proc.returncode == 0, (
        "save() raised although its checkpoint was committed (only index.json failed):\n" + proc.stderr[-2000:]
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["name"] == "step_000000041"
    assert report["warnings"], "the index that could not be rewritten was not reported"
    assert all("index.json could not be rewritten" in w and "rebuilt" in w for w in report["warnings"]), report
    return report


def test_a_committed_save_does_not_fail_because_the_derived_index_could_not_be_rewritten(python, tmp_path):
    root = tmp_path / "ck"
    report = _save_with_an_index_that_cannot_grow(python, root, "plain")
    assert "step_000000041 is committed" in report["warnings"][0]
    with CheckpointManager(root) as mgr:  # the writer's open rebuilds the index from the manifests
        names = [i.name for i in mgr.list()]
        assert "step_000000041" in names
        assert mgr.verify()["step_000000041"] == []
    assert sorted(r["name"] for r in mf.parse_index((root / "index.json").read_bytes())) == names


def test_retention_and_tagging_after_a_commit_do_not_fail_because_the_index_could_not_be_rewritten(python, tmp_path):
    root = tmp_path / "ck"
    _save_with_an_index_that_cannot_grow(python, root, "retention")
    with CheckpointManager(root) as mgr:
        infos = {i.name: i for i in mgr.list()}
        assert "step_000000006" not in infos, "retention after the commit did not run"
        assert "keep" in infos["step_000000041"].tags, "the tag was not saved"
        assert all(p == [] for p in mgr.verify().values())
    assert sorted(r["name"] for r in mf.parse_index((root / "index.json").read_bytes())) == sorted(infos)
