"""Train a model family on the checkpoint store: ``python train.py model=dino checkpoint=milestones``.

Running the same command again resumes the run from its newest checkpoint that verifies. See README.md.
"""

from __future__ import annotations

import os
import sys

from waypoint.training.signals import listen

if __name__ == "__main__":
    listen()  # from the first moment on, SIGTERM/SIGINT/SIGUSR1 are serviced (exit 75), never a bare death

import hydra  # noqa: E402 - after the signal handlers: importing takes seconds
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from waypoint.config import register  # noqa: E402
from waypoint.training.rundir import job_name, run_name, sweep_name  # noqa: E402

register()
OmegaConf.register_new_resolver(
    "waypoint_run_name", lambda overrides, name: run_name(overrides, model_in_path=name), replace=True
)
# the sweep dir is a function of the whole command line (jobs re-resolve it with their own overrides)
OmegaConf.register_new_resolver("waypoint_sweep_name", lambda _: sweep_name(_command_line()), replace=True)
OmegaConf.register_new_resolver("waypoint_job_name", lambda overrides: job_name(overrides, _command_line()), replace=True)


def _command_line() -> list[str]:
    return [a for a in sys.argv[1:] if not a.startswith("-")]


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
    from waypoint.config import hydra_errors_exit_2
    from waypoint.extras import check_launcher

    check_launcher(sys.argv[1:])  # hydra/launcher=slurm without the slurm extra: one sentence, exit 2
    sys.argv = _resume_shorthand(sys.argv)
    with hydra_errors_exit_2(full_error=bool(os.environ.get("HYDRA_FULL_ERROR"))):
        main()
