"""The run directory as a function of the command, and the checks made before resuming into it.

``outputs/<name>/<overrides that define the run>``: overrides that change what is trained name the run; those
that only extend or steer it (length, validation cadence, checkpointing, logging, hardware, workers, resume) do
not, so more epochs continue the same run. A name longer than ``MAX_NAME`` or made safe for the file system keeps a
readable prefix and ends in a hash of the full override list, so two different commands never share a directory.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from waypoint.config import ConfigError

#: override keys (and key prefixes ending in ".") that do not change what a run computes
STEERING = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.log_every_n_steps",
    "trainer.val_every_n_epochs",
    "trainer.val_every_n_steps",
    "trainer.progress_bar",
    "checkpoint",
    "logger",
    "hardware",
    "resume",
    "data.num_workers",
    "name",
    "hydra",
)
#: the sections of the config that define a run: resuming with another value is refused with a diff
RUN_DEFINING = ("model", "data", "seed")
MAX_NAME = 120
_HASH_CHARS = 10
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,=+:@-]")
_SWEEP_VALUE = re.compile(r"^(glob|choice|range|interval|tag|sort|shuffle)\(|,")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def is_steering(override: str) -> bool:
    """True when an override only steers a run (length, checkpointing, logging, hardware, resume)."""
    key = _key(override)
    return any(key == s or key.startswith(s + ".") or key.startswith(s + "@") for s in STEERING)


def run_name(overrides: Iterable[str], model_in_path: str | None = None) -> str:
    """A directory name from the run-defining overrides, sorted (``default`` for none); ``model=<model_in_path>``,
    already a path component, is left out."""
    kept = sorted(o for o in overrides if not is_steering(o) and not (model_in_path and o == f"model={model_in_path}"))
    raw = ",".join(kept)
    name = _UNSAFE.sub("_", raw.replace("/", "_"))
    if name != raw or len(name) > MAX_NAME:
        digest = hashlib.sha256("\n".join(kept).encode()).hexdigest()[:_HASH_CHARS]
        name = f"{name[: MAX_NAME - _HASH_CHARS - 1]}~{digest}"
    return name or "default"


def _model_choice(overrides: Iterable[str]) -> str | None:
    return next((o.split("=", 1)[1] for o in overrides if _key(o) == "model" and "=" in o), None)


def _is_sweep(value: str | None) -> bool:
    return value is not None and bool(_SWEEP_VALUE.search(value))


def job_name(overrides: Iterable[str], command_line: Iterable[str]) -> str:
    """The directory of one sweep job inside its sweep directory (which names the model, unless the sweep varies it)."""
    overrides = list(overrides)
    return run_name(overrides, model_in_path=None if _is_sweep(_model_choice(command_line)) else _model_choice(overrides))


def sweep_name(overrides: Iterable[str]) -> str:
    """The sweep directory name (under ``multirun/<model>/``): the run-defining overrides, sweep values included."""
    overrides = list(overrides)
    model = _model_choice(overrides)
    return run_name(overrides, model_in_path=None if _is_sweep(model) else model)


class ConfigChangedError(ConfigError):
    """The model, data or seed differs from the one the checkpoint was trained with."""


def config_diff(saved: Mapping[str, Any], current: Mapping[str, Any], sections: Iterable[str] = RUN_DEFINING) -> str:
    """A unified diff of the run-defining sections, or an empty string when they agree."""
    ignore = {"data": {"num_workers"}}

    def section(cfg: Mapping[str, Any], name: str) -> Any:
        value = cfg.get(name)
        if isinstance(value, Mapping) or value is None and name in ("model", "data"):
            return {k: v for k, v in (value or {}).items() if k not in ignore.get(name, ())}
        return value

    def part(cfg: Mapping[str, Any]) -> str:
        return yaml.safe_dump({s: section(cfg, s) for s in sections}, sort_keys=True)

    a, b = part(saved), part(current)
    if a == b:
        return ""
    return "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), "saved", "now", n=1))


def save_hydra_files(run_dir: Path, cfg: DictConfig, hydra_cfg: DictConfig, task_overrides: Any) -> None:
    """Write ``<run_dir>/.hydra/{config,hydra,overrides}.yaml`` as Hydra does, each replaced atomically.

    Hydra's own copy is off (``hydra.output_subdir: null``), so a refused command changes nothing in the run dir.
    """
    out = run_dir / ".hydra"
    out.mkdir(parents=True, exist_ok=True)
    for filename, node in (("config.yaml", cfg), ("hydra.yaml", hydra_cfg), ("overrides.yaml", task_overrides)):
        tmp = out / f".{filename}.tmp"
        tmp.write_text(OmegaConf.to_yaml(node), encoding="utf-8")
        os.replace(tmp, out / filename)
