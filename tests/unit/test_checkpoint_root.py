"""checkpoint.root: where a run's checkpoints live is a function of the command (the run dir as it names it)."""

from pathlib import Path

from omegaconf import OmegaConf

from waypoint.training.storage import checkpoints_root


def ck(root):
    return OmegaConf.create({"root": root})


def test_without_a_root_checkpoints_live_in_the_run_dir(tmp_path):
    assert checkpoints_root(ck(None), tmp_path / "run") == tmp_path / "run" / "checkpoints"


def test_a_url_root_holds_the_run_dir_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    got = checkpoints_root(ck("s3://bkt/prefix/"), Path("outputs/dino/default"))
    assert got == "s3://bkt/prefix/outputs/dino/default/checkpoints"
    assert checkpoints_root(ck("s3://bkt/prefix"), tmp_path / "outputs" / "dino" / "default") == got  # same run, absolute


def test_a_run_dir_elsewhere_is_named_by_its_last_component(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert checkpoints_root(ck("s3://bkt/p"), Path("/somewhere/else/run7")) == "s3://bkt/p/run7/checkpoints"


def test_a_directory_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    want = tmp_path / "store" / "outputs" / "x" / "checkpoints"
    assert checkpoints_root(ck(str(tmp_path / "store")), Path("outputs/x")) == want
    assert checkpoints_root(ck(f"file://{tmp_path}/store"), Path("outputs/x")) == want
