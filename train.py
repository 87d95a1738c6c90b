"""Train a model family on the checkpoint store: ``python train.py model=dino checkpoint=milestones``.

Running the same command again resumes the run from its newest checkpoint that verifies. See README.md.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from waypoint.config import register
from waypoint.training.rundir import run_name, sweep_name

register()
OmegaConf.register_new_resolver("waypoint_run_name", lambda overrides: run_name(overrides), replace=True)
# the sweep dir is a function of the whole command line (jobs re-resolve it with their own overrides)
OmegaConf.register_new_resolver("waypoint_sweep_name", lambda _: sweep_name(a for a in sys.argv[1:] if not a.startswith("-")),
                                replace=True)


#: ``GROUP=VALUE`` on the command line is shorthand for ``GROUP.FIELD=VALUE``
SHORTHANDS = {"resume": "mode", "init_from": "ref"}


def _resume_shorthand(argv: list[str]) -> list[str]:
    """``resume=VALUE`` is shorthand for ``resume.mode=VALUE``, ``init_from=REF`` for ``init_from.ref=REF``."""
    def expand(arg: str) -> str:
        key, eq, value = arg.partition("=")
        return f"{key}.{SHORTHANDS[key]}={value}" if eq and key in SHORTHANDS else arg
    return [expand(a) for a in argv]


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Run (or resume) one training job."""
    from waypoint.training.launch import launch
    launch(cfg)


if __name__ == "__main__":
    sys.argv = _resume_shorthand(sys.argv)
    main()
