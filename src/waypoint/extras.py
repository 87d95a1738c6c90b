"""Optional extras: a missing one is a one-sentence error naming the extra to install, never a traceback."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

#: launcher choices (``hydra/launcher=...``) and the extra each needs
LAUNCHERS = {"slurm": "slurm", "submitit_slurm": "slurm", "submitit_local": "slurm"}


class MissingExtraError(ImportError):
    """An optional dependency is not installed."""


def require(extra: str, module: str, what: str) -> None:
    """Import ``module`` or raise MissingExtraError: "<what> needs the '<extra>' extra: pip install -e '.[<extra>]'"."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{what} needs the '{extra}' extra, which is not installed: pip install -e '.[{extra}]'"
        ) from None


def check_launcher(argv: Sequence[str]) -> None:
    """Exit 2 with one sentence when the command asks for a launcher whose extra is missing."""
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key == "hydra/launcher" and value in LAUNCHERS:
            try:
                require(LAUNCHERS[value], "hydra_plugins.hydra_submitit_launcher", f"hydra/launcher={value}")
            except MissingExtraError as exc:
                print(f"error: {exc}", file=sys.stderr)
                raise SystemExit(2) from None
