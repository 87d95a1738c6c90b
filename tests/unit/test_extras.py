"""A missing optional extra is one sentence naming the extra (exit 2), never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from waypoint.extras import check_launcher

REPO = Path(__file__).resolve().parents[2]
BLOCK = "import sys; sys.modules.update({m: None for m in sys.argv[1].split(',')}); sys.argv = sys.argv[1:];"


def run(blocked: str, code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code, blocked, *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_an_s3_url_without_the_s3_extra_names_the_extra():
    proc = run("s3fs", "from waypoint.cli import main; sys.exit(main(['ls', 's3://bucket/run']))")
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "waypoint: checkpoints on s3:// need the 's3' extra, which is not installed: pip install -e '.[s3]'"
    )


def test_the_slurm_launcher_without_the_slurm_extra_names_the_extra(monkeypatch, capsys):
    """train.py calls check_launcher on its arguments before Hydra composes anything."""
    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_submitit_launcher", None)  # as if not installed
    with pytest.raises(SystemExit) as exit_:
        check_launcher(["-m", "hydra/launcher=slurm", "seed=0,1"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: hydra/launcher=slurm needs the 'slurm' extra, which is not installed: pip install -e '.[slurm]'"
    )
    check_launcher(["hydra/launcher=basic", "seed=0"])  # other launchers need nothing
