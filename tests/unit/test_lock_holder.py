"""CheckpointManager.lock_holder(): who writes a store, asked without taking (or blocking) the writer lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from waypoint.checkpoint import CheckpointManager

WRITER_LOOP = textwrap.dedent(
    """
    import sys
    from waypoint.checkpoint import CheckpointManager
    for _ in range(int(sys.argv[2])):
        CheckpointManager(sys.argv[1]).close()  # a StoreLockedError here would fail the process
    print("ok", flush=True)
    """
)


def test_no_holder_for_a_store_nobody_writes(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path / "checkpoints") as mgr:
        mgr.save({"x": 1}, 1)
    with CheckpointManager(tmp_path / "checkpoints", read_only=True) as reader:
        assert reader.lock_holder() is None


def test_the_holder_in_another_process_is_named_and_asking_never_refuses_a_starting_writer(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    CheckpointManager(root).close()
    reader = CheckpointManager(root, read_only=True)
    writer = subprocess.Popen([sys.executable, "-c", WRITER_LOOP, str(root), "60"], stdout=subprocess.PIPE, text=True)
    seen = set()
    while writer.poll() is None:
        holder = reader.lock_holder()
        if holder:
            seen.add(holder["pid"])
    assert writer.stdout.read().strip() == "ok" and writer.returncode == 0
    assert seen <= {writer.pid}
    assert reader.lock_holder() is None


def test_a_lock_this_process_holds_is_answered_without_dropping_it(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    with CheckpointManager(root) as writer:
        assert CheckpointManager(root, read_only=True).lock_holder()["pid"] == writer.lock_holder()["pid"]
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from waypoint.checkpoint import CheckpointManager as C; C(sys.argv[1])",
                str(root),
            ],
            capture_output=True,
            text=True,
        )
        assert "already being written" in other.stderr  # still ours after the question
