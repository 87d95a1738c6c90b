"""checkpoint.root: where a run's checkpoints live is a function of the command (the run dir as it names it), and a
run directory is followed there through its saved config."""

from pathlib import Path

import yaml

from waypoint.checkpoint.refs import checkpoints_root, run_checkpoints


def test_without_a_root_checkpoints_live_in_the_run_dir(tmp_path):
    assert run_checkpoints(None, tmp_path / "run", tmp_path) == tmp_path / "run" / "checkpoints"


def test_a_url_root_holds_the_run_dir_relative_to_the_working_directory(tmp_path):
    got = run_checkpoints("s3://bkt/prefix/", Path("outputs/dino/default"), Path("."))
    assert got == "s3://bkt/prefix/outputs/dino/default/checkpoints"
    assert run_checkpoints("s3://bkt/prefix", tmp_path / "outputs" / "dino" / "default", tmp_path) == got  # absolute


def test_a_run_dir_elsewhere_is_named_by_its_last_component(tmp_path):
    assert run_checkpoints("s3://bkt/p", Path("/somewhere/else/run7"), tmp_path) == "s3://bkt/p/run7/checkpoints"


def test_a_directory_root(tmp_path):
    want = tmp_path / "store" / "outputs" / "x" / "checkpoints"
    assert run_checkpoints(str(tmp_path / "store"), tmp_path / "outputs/x", tmp_path) == want
    assert run_checkpoints(f"file://{tmp_path}/store", tmp_path / "outputs/x", tmp_path) == want


def test_a_run_directory_is_followed_to_the_root_its_saved_config_names(tmp_path):
    run = tmp_path / "outputs" / "x"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"checkpoint": {"root": "s3://bkt/p"}}))
    (run / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"cwd": str(tmp_path), "output_dir": str(run)}}})
    )
    assert checkpoints_root(run) == "s3://bkt/p/outputs/x/checkpoints"
