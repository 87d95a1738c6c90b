"""The import direction of ARCHITECTURE.md, checked on the source: families stay apart, data stays below tasks."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "waypoint"
FAMILIES = ("dino", "universeg", "stackwise")


def imports_of(path: Path) -> set[str]:
    """Every module a file imports (absolute names)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_each_family_is_one_subpackage_and_imports_no_other_family():
    for family in FAMILIES:
        assert (SRC / "tasks" / family / "__init__.py").exists()
        others = [f"waypoint.tasks.{o}" for o in FAMILIES if o != family]
        for path in (SRC / "tasks" / family).rglob("*.py"):
            bad = sorted(m for m in imports_of(path) if any(m == o or m.startswith(o + ".") for o in others))
            assert not bad, f"{path.relative_to(SRC)} imports another family: {bad}"


def test_no_family_module_is_left_at_the_top_of_tasks():
    assert sorted(p.name for p in (SRC / "tasks").glob("*.py")) == ["__init__.py", "base.py", "common.py"]


def test_data_imports_nothing_from_tasks_or_training_and_defines_no_seeding_helper():
    for path in (SRC / "data").rglob("*.py"):
        bad = sorted(m for m in imports_of(path) if m.startswith(("waypoint.tasks", "waypoint.training")))
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"
        assert "def sample_generator" not in path.read_text()


#: modules that import nothing of Waypoint's: every package may use them
BOTTOM_FLOOR = {"waypoint.errors", "waypoint.units"}


def test_the_bottom_floor_imports_nothing_of_ours():
    for module in BOTTOM_FLOOR:
        path = SRC / (module.split(".", 1)[1] + ".py")
        assert not [m for m in imports_of(path) if m.startswith("waypoint")], f"{module} imports Waypoint modules"


def test_the_store_imports_nothing_of_ours_outside_the_checkpoint_package():
    for path in (SRC / "checkpoint").rglob("*.py"):
        ours = sorted(
            m
            for m in imports_of(path)  # the package root only gives its version
            if m.startswith("waypoint.") and not m.startswith("waypoint.checkpoint") and m not in BOTTOM_FLOOR
        )
        assert not ours, f"{path.relative_to(SRC)} imports {ours}"


def test_the_config_schema_imports_nothing_above_it():
    ours = sorted(m for m in imports_of(SRC / "config.py") if m.startswith("waypoint.") and m not in BOTTOM_FLOOR)
    assert not ours, f"config.py imports {ours}"


def test_only_the_runtime_module_reads_launcher_environment_variables():
    launcher = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "SLURM_")
    for path in SRC.rglob("*.py"):
        if path.name == "runtime.py":
            continue
        text = path.read_text()
        bad = [v for v in launcher if f'environ.get("{v}' in text or f'environ["{v}' in text]
        assert not bad, f"{path.relative_to(SRC)} reads {bad}"
