"""Fixtures of the integration tests (helpers live in trainkit.py)."""

from __future__ import annotations

import os
import random

import pytest


@pytest.fixture
def rng() -> random.Random:
    """A seeded random source for kill timings (WAYPOINT_TEST_SEED changes it)."""
    return random.Random(int(os.environ.get("WAYPOINT_TEST_SEED", "1234")))
