"""The run directory name is a function of the overrides that change what is trained, and never collides."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from waypoint.training.rundir import MAX_NAME, config_diff, job_name, run_name, sweep_name

DEFINING_KEYS = [
    "model.lr",
    "model.depth",
    "model.encoder_blocks",
    "data.batch_size",
    "data.root",
    "data.max_items",
    "seed",
    "experiment",
    "data",
    "trainer.gradient_clip_val",
]
STEERING_KEYS = [
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.val_every_n_steps",
    "trainer.val_every_n_epochs",
    "checkpoint.every_n_steps",
    "checkpoint",
    "hardware",
    "hardware.num_threads",
    "logger",
    "resume.mode",
    "data.num_workers",
    "hydra.run.dir",
    "name",
]
value = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n\0"), min_size=1, max_size=60)
defining = st.dictionaries(st.sampled_from(DEFINING_KEYS), value, max_size=len(DEFINING_KEYS))
steering = st.dictionaries(st.sampled_from(STEERING_KEYS), value, max_size=len(STEERING_KEYS))


def overrides(d: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in d.items()]


@settings(max_examples=300, deadline=None)
@given(defining, defining)
def test_different_run_defining_overrides_never_share_a_name(a: dict[str, str], b: dict[str, str]) -> None:
    if a != b:
        assert run_name(overrides(a)) != run_name(overrides(b))


@settings(max_examples=200, deadline=None)
@given(defining, steering)
def test_steering_overrides_and_their_order_do_not_change_the_name(a: dict[str, str], s: dict[str, str]) -> None:
    plain = run_name(overrides(a))
    assert run_name(list(reversed(overrides(a))) + overrides(s)) == plain


@settings(max_examples=200, deadline=None)
@given(defining)
def test_a_name_is_one_safe_path_component_of_bounded_length(a: dict[str, str]) -> None:
    name = run_name(overrides(a))
    assert 0 < len(name) <= MAX_NAME and "/" not in name and name not in (".", "..")
    assert all(c.isascii() and (c.isalnum() or c in "_.,=+:@-~") for c in name)


def test_a_model_override_is_part_of_the_name() -> None:
    assert run_name(["model.lr=0.001"], model_in_path="dino") == "model.lr=0.001"
    assert run_name(["model.lr=0.001"]) != run_name(["model.lr=0.003"])


def test_the_model_choice_is_left_out_only_where_the_path_names_it() -> None:
    assert run_name(["model=universeg", "seed=1"], model_in_path="universeg") == "seed=1"
    assert run_name(["model=universeg", "seed=1"], model_in_path="myexp") == "model=universeg,seed=1"
    assert run_name([]) == "default"


def test_a_long_name_keeps_a_readable_prefix_and_a_hash_of_everything() -> None:
    long = [f"model.option_{i}=value_{i}" for i in range(30)]
    a, b = run_name(long), run_name(long[:-1] + ["model.option_29=other"])
    assert len(a) <= MAX_NAME and a.startswith("model.option_0=value_0,model.option_10=value_10")
    assert a != b and a[:-11] == b[:-11]


def test_sweep_jobs_get_one_directory_per_value_and_the_sweep_dir_names_the_sweep() -> None:
    argv = ["model=universeg", "model.lr=0.001,0.003", "experiment=smoke"]
    assert sweep_name(argv) == "experiment=smoke,model.lr=0.001,0.003"
    jobs = {job_name(["model=universeg", f"model.lr={lr}", "experiment=smoke"], argv) for lr in ("0.001", "0.003")}
    assert jobs == {"experiment=smoke,model.lr=0.001", "experiment=smoke,model.lr=0.003"}


def test_a_sweep_over_models_names_the_model_in_each_job() -> None:
    argv = ["model=dino,universeg", "seed=0"]
    assert job_name(["model=dino", "seed=0"], argv) == "model=dino,seed=0"
    assert job_name(["model=universeg", "seed=0"], argv) == "model=universeg,seed=0"


def test_the_seed_is_part_of_the_config_check() -> None:
    saved = {"model": {"lr": 1}, "data": {"n": 2, "num_workers": 0}, "seed": 0}
    assert config_diff(saved, {**saved, "data": {"n": 2, "num_workers": 4}}) == ""
    assert "+seed: 1" in config_diff(saved, {**saved, "seed": 1})
