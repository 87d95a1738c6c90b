"""The run directory as a function of the command, and the checks made before resuming into it.

``outputs/<name>/<overrides that define the run>``: overrides that only extend or steer a run (its length,
checkpointing, logging, hardware, data workers, resume) are left out, so re-running a command with more
epochs or another checkpoint policy continues the same run.
"""
from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, Mapping

import yaml

#: override keys (and key prefixes ending in ".") that do not change what a run computes
STEERING = ("trainer.max_epochs", "trainer.max_steps", "trainer.log_every_n_steps", "trainer.progress_bar",
            "checkpoint", "logger", "hardware", "resume", "data.num_workers", "model", "name", "hydra")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,=+:@-]")


def _key(override: str) -> str:
    key = override.split("=", 1)[0].lstrip("+~")
    return key


def is_steering(override: str) -> bool:
    """True when an override only steers a run (length, checkpointing, logging, hardware, resume)."""
    key = _key(override)
    return any(key == s or key.startswith(s + ".") or key.startswith(s + "@") for s in STEERING)


def run_name(overrides: Iterable[str]) -> str:
    """A directory name from the run-defining overrides, sorted; ``default`` when there are none."""
    kept = sorted(o for o in overrides if not is_steering(o))
    name = ",".join(_UNSAFE.sub("_", o.replace("/", "_")) for o in kept)
    return name[:200] or "default"


def sweep_name(overrides: Iterable[str]) -> str:
    """The sweep directory name: the run-defining overrides of the whole sweep (sweep values included)."""
    return run_name(overrides)


class ConfigChangedError(ValueError):
    """The model or data config differs from the one the checkpoint was trained with."""


def config_diff(saved: Mapping[str, Any], current: Mapping[str, Any], sections: Iterable[str] = ("model", "data")) -> str:
    """A unified diff of the run-defining sections, or an empty string when they agree."""
    ignore = {"data": {"num_workers"}}
    def part(cfg: Mapping[str, Any]) -> str:
        picked = {s: {k: v for k, v in (cfg.get(s) or {}).items() if k not in ignore.get(s, ())} for s in sections}
        return yaml.safe_dump(picked, sort_keys=True)
    a, b = part(saved), part(current)
    if a == b:
        return ""
    return "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), "saved", "now", n=1))
