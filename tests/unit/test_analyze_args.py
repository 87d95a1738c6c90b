"""analyze.py takes run and sweep directories as plain arguments, whatever their names hold; the rest goes to Hydra."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("analyze_entry", REPO / "analyze.py")
analyze = importlib.util.module_from_spec(spec)
spec.loader.exec_module(analyze)


@pytest.mark.parametrize(
    "name",
    [
        "default",
        "experiment=smoke",
        "experiment=smoke,model.lr=0.002,seed=1",
        "experiment=smoke,model.lr=0.002,0.008,seed=0,1,2",
        "model.encoder_blocks=[8,8],seed=0~1a2b3c4d5e",
        "my runs",
        'it\'s "quoted", a=b',
        "run=x",
        "compare.a=step:8",
    ],
)
def test_an_existing_directory_is_a_target_whatever_its_name_holds(tmp_path: Path, name: str) -> None:
    run = tmp_path / "outputs" / "universeg" / name
    run.mkdir(parents=True)
    assert analyze.split_args([str(run), "compare.a=step:8", "compare.b=best"]) == (
        [str(run)],
        ["compare.a=step:8", "compare.b=best"],
    )


def test_a_relative_path_that_does_not_exist_is_still_a_target_so_that_it_is_refused_as_a_directory() -> None:
    assert analyze.split_args(["outputs/dino/model=x,seed=1"]) == (["outputs/dino/model=x,seed=1"], [])


def test_run_equals_takes_the_path_as_written_and_a_hand_quoted_one_unquoted() -> None:
    assert analyze.split_args(["run=outputs/dino/seed=1,model.lr=0.1"]) == (["outputs/dino/seed=1,model.lr=0.1"], [])
    assert analyze.split_args(['run="outputs/dino/seed=1"']) == (["outputs/dino/seed=1"], [])
    assert analyze.split_args(["run=null"]) == ([], [])


def test_options_and_hydra_flags_go_to_hydra() -> None:
    argv = ["A", "B", "out=cmp", "pictures=false", "search_roots=[x]", "hydra.verbose=true", "--cfg", "job", "--info", "config"]
    assert analyze.split_args(argv) == (["A", "B"], argv[2:])
