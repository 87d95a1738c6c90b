"""Fixtures of the web-interface tests: stores written through the manager's API, and the integration helpers."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for helper in (HERE, HERE.parent / "integration"):  # uikit, and trainkit for real smoke runs; any import mode
    if str(helper) not in sys.path:
        sys.path.insert(0, str(helper))
