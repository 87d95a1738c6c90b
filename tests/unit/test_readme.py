"""The README (and the reference docs it links) name only what exists: make targets, `waypoint` subcommands,
config groups and options, config keys; the README stays a short user's document."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from waypoint import config
from waypoint.cli import COMMANDS
from waypoint.tasks import dino, stackwise, universeg

REPO = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "docs/configuration.md", "docs/checkpoints.md", "docs/cluster.md"]
GROUPS = ("model", "data", "trainer", "checkpoint", "hardware", "logger", "experiment", "hydra/launcher")
SECTIONS = {
    "trainer": config.TrainerConfig,
    "checkpoint": config.CheckpointConfig,
    "hardware": config.HardwareConfig,
    "logger": config.LoggerConfig,
    "resume": config.ResumeConfig,
    "init_from": config.InitFromConfig,
}


def fields(*schemas: type) -> set[str]:
    return {f.name for schema in schemas for f in dataclasses.fields(schema)}


def schemas_of(kind: str) -> list[type]:
    return [s for m in (dino, universeg, stackwise) for k, s in m.CONFIG_SCHEMAS.items() if k.startswith(kind + "/")]


@pytest.fixture(params=DOCS)
def doc(request: pytest.FixtureRequest) -> str:
    return (REPO / request.param).read_text()


def test_the_readme_gives_the_two_commands_on_its_first_screen() -> None:
    first = "\n".join((REPO / "README.md").read_text().splitlines()[:25])
    assert "make train" in first and "make test" in first and ".venv" in (REPO / "README.md").read_text()


def test_the_readme_is_at_most_300_lines() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 300


def test_every_make_target_named_exists(doc: str) -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), flags=re.M))
    named = set(re.findall(r"\bmake ([a-z][a-z-]*)", doc))
    assert named <= targets, named - targets


def test_every_waypoint_subcommand_named_exists(doc: str) -> None:
    named = set(re.findall(r"\bwaypoint ([a-z]+)\b", doc))
    assert named <= set(COMMANDS), named - set(COMMANDS)


def test_every_config_group_option_named_exists(doc: str) -> None:
    named = set(re.findall(rf"(?<![\w.]){'|'.join(GROUPS).join('()')}=([A-Za-z_][\w-]*)", doc))
    missing = [f"{g}={o}" for g, o in named if not (REPO / "conf" / g / f"{o}.yaml").is_file()]
    assert not missing, missing


def test_every_config_key_named_exists(doc: str) -> None:
    keys = set(re.findall(r"(?<![\w./-])(model|data|trainer|checkpoint|hardware|logger|resume|init_from)\.(\w+)(?![\w(])", doc))
    known = {
        **{s: fields(c) for s, c in SECTIONS.items()},
        "model": fields(*schemas_of("model")),
        "data": fields(*schemas_of("data")),
    }
    missing = [f"{s}.{k}" for s, k in keys if k not in known[s] and not (s == "model" and k in ("lora",))]
    assert not missing, missing
