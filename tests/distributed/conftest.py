"""Fixtures of the multi-process tests (helpers live in distkit.py)."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))  # trainkit: smoke commands, digests


@pytest.fixture
def rng() -> random.Random:
    """A seeded random source for kill timings (WAYPOINT_TEST_SEED changes it)."""
    return random.Random(int(os.environ.get("WAYPOINT_TEST_SEED", "1234")))
