"""Hostile or broken input to `waypoint import` and the other commands: one sentence, exit 1 or 2 as
documented, bounded time and memory, and nothing written. One table, one row per input."""

from __future__ import annotations

import os
import resource
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from waypoint.checkpoint import CheckpointManager
from waypoint.cli import main

MiB = 1 << 20


def save(obj):
    return lambda path: torch.save(obj, path)


def nested(depth: int) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        value: object = torch.ones(1)
        for _ in range(depth):
            value = [value]
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(depth * 4 + 1000)  # only to write the file
        try:
            torch.save({"deep": value}, path)
        finally:
            sys.setrecursionlimit(old)

    return build


def shared_references(path: Path) -> None:
    value: object = [0]
    for _ in range(27):  # 2**27 > 10**8 leaves, each level two references to the one below
        value = [value, value]
    torch.save(value, path)
    assert path.stat().st_size < 4096


def deflated(numel: int) -> Callable[[Path], None]:
    """A real torch.save file whose members are recompressed with deflate: tiny on disk, big in memory."""

    def build(path: Path) -> None:
        plain = path.with_name("plain.pt")
        torch.save({"w": torch.zeros(numel)}, plain)
        with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                dst.writestr(info.filename, src.read(info.filename))
        plain.unlink()

    return build


IMPORT_CASES = {
    "empty file": (lambda p: p.write_bytes(b""), "is empty"),
    "text file": (lambda p: p.write_text("epoch: 3\nloss: 0.5\n" * 20), "not a readable PyTorch checkpoint"),
    "truncated zip": (lambda p: (torch.save({"w": torch.ones(1000)}, p), os.truncate(p, 600)), "not a readable"),
    "set": (save({"s": {1, 2}}), "cannot hold"),
    "complex": (save({"c": 1 + 2j}), "cannot hold"),
    "bytes": (save({"b": b"raw"}), "cannot hold"),
    "torch dtype": (save({"d": torch.float16}), "cannot hold"),
    "device": (save({"d": torch.device("cpu")}), "cannot hold"),
    "tuple keys": (save({(1, 2): torch.ones(1)}), "cannot hold"),
    "sparse tensor": (save({"s": torch.eye(3).to_sparse()}), "cannot hold"),
    "nesting 3000 deep": (nested(3000), "nested more than"),
    "10^8 shared references": (shared_references, "more than 1,000,000 values"),
    "deflate bomb": (deflated(24 * MiB // 4 * 4), "--max-bytes"),
    "negative step": (save({"step": -5, "w": torch.ones(1)}), "cannot be negative"),
}


@pytest.mark.parametrize("case", list(IMPORT_CASES))
def test_import_of_bad_input_is_one_sentence_exit_2_bounded_and_writes_nothing(tmp_path, capsys, case):
    build, phrase = IMPORT_CASES[case]
    src = tmp_path / "in.pth"
    build(src)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    code = main(["import", str(src), str(tmp_path / "run")])
    took = time.monotonic() - started
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024
    err = capsys.readouterr().err
    assert code == 2, err  # bad input: waypoint.errors
    assert err.startswith("waypoint: ") and err.count("\n") == 1 and phrase in err, err
    assert "Traceback" not in err
    assert took < 10, f"{case}: {took:.1f}s"
    assert grown < 300 * MiB, f"{case}: memory grew by {grown / MiB:.0f} MiB"
    assert not (tmp_path / "run").exists()  # nothing created for a refused file


def test_max_bytes_lets_a_trusted_compressed_file_in(tmp_path, capsys):
    src = tmp_path / "in.pth"
    deflated(24 * MiB // 4 * 4)(src)
    assert src.stat().st_size < MiB
    assert main(["import", str(src), str(tmp_path / "run"), "--max-bytes", str(200 * MiB)]) == 0
    with CheckpointManager(tmp_path / "run" / "checkpoints", read_only=True) as mgr:
        assert mgr.restore("tag:imported")["w"].numel() == 24 * MiB // 4 * 4
    assert main(["import", str(src), str(tmp_path / "run2"), "--max-bytes", str(MiB)]) == 2
    assert "--max-bytes" in capsys.readouterr().err


@pytest.fixture
def run(tmp_path):
    with CheckpointManager(tmp_path / "run" / "checkpoints") as mgr:
        mgr.save({"w": torch.ones(4)}, step=1)
    return tmp_path / "run"


def lock_symlink(run: Path) -> list[str]:
    lock = run / "checkpoints" / "LOCK"
    lock.unlink()
    lock.symlink_to(run.parent / "elsewhere")
    return ["tag", f"{run}@latest", "x"]


def packs_file(run: Path) -> list[str]:
    packs = run / "checkpoints" / "packs"
    for p in packs.iterdir():
        p.unlink()
    packs.rmdir()
    packs.write_text("not a directory")
    return ["ls", str(run)]


def export_under_a_file(run: Path) -> list[str]:
    (run.parent / "afile").write_text("x")
    return ["export", f"{run}@latest", str(run.parent / "afile" / "out.safetensors")]


def export_unwritable(run: Path) -> list[str]:
    locked = run.parent / "ro"
    locked.mkdir(mode=0o500)
    return ["export", f"{run}@latest", str(locked / "out.safetensors")]


def show_empty(run: Path) -> list[str]:
    empty = run.parent / "empty" / "checkpoints"
    empty.mkdir(parents=True)
    return ["show", str(empty.parent)]


CLI_CASES = {
    "LOCK is a symlink": (lock_symlink, 2, "symbolic link"),
    "packs/ is a file": (packs_file, 2, "not a directory"),
    "export under a regular file": (export_under_a_file, 2, "cannot write"),
    "export into an unwritable directory": (export_unwritable, 2, "cannot write"),
    "show on an empty store": (show_empty, 2, "no checkpoint"),
    "import --step -1": (lambda run: ["import", str(run.parent / "none.pth"), str(run), "--step", "-1"], 2, "negative"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_a_broken_store_or_destination_is_one_sentence_with_the_documented_exit_code(run, capsys, case):
    build, want, phrase = CLI_CASES[case]
    if case == "export into an unwritable directory" and os.geteuid() == 0:
        pytest.skip("root writes into any directory")
    argv = build(run)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == want and phrase in err and "Traceback" not in err, err
    if not case.startswith("import --step"):  # argparse prints its usage line first
        assert err.startswith("waypoint: ") and err.count("\n") == 1, err
    assert not (run.parent / "elsewhere").exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["LOCK symlink", "packs file"])
def test_train_py_on_a_store_with_a_broken_lock_or_packs_exits_2_in_one_sentence(tmp_path, damage):
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    root = tmp_path / "run" / "checkpoints"
    root.mkdir(parents=True)
    if damage == "LOCK symlink":
        (root / "LOCK").symlink_to(tmp_path / "elsewhere")
    else:
        (root / "packs").write_text("x")
    proc = subprocess.run(
        [sys.executable, str(repo / "train.py"), "experiment=smoke", "model=universeg", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert any(line.startswith("error: ") and str(root) in line for line in proc.stderr.splitlines()), proc.stderr
    assert not (tmp_path / "elsewhere").exists()
