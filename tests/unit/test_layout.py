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


def test_the_store_imports_nothing_of_ours_outside_the_checkpoint_package():
    for path in (SRC / "checkpoint").rglob("*.py"):
        ours = sorted(
            m
            for m in imports_of(path)  # the package root only gives its version
            if m.startswith("waypoint.") and not m.startswith("waypoint.checkpoint")
        )
        assert not ours, f"{path.relative_to(SRC)} imports {ours}"
